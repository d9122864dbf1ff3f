"""Mockingjay, TERA and Audio ALBERT checkpoints behind satool's model interface.

:class:`S3prlTransformerModel` is :class:`~satool.models.mockingjay.model.MockingjayModel` (the same
network, chunking, masks and probing) with the family named (``name``, provenance ``type`` and
``family``) and the Kaldi-style front end of some TERA checkpoints next to the online one.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from satool.errors import InputError
from satool.models.mockingjay.checkpoint import LAYOUT_PAPER, MockingjayCheckpoint
from satool.models.mockingjay.model import MockingjayModel
from satool.models.tera.family import Family, alterations, detect_family
from satool.models.tera.kaldi import KaldiExtractor, KaldiFeatureConfig


def checkpoint_family(checkpoint: MockingjayCheckpoint) -> Family:
    recorded = checkpoint.recorded or {}
    return detect_family(upstream=recorded.get("upstream"), satool=checkpoint.satool,
                         share_layer=checkpoint.config.share_layer, task=checkpoint.task,
                         model_block=recorded.get("model_block"))


class S3prlTransformerModel(MockingjayModel):
    """A Mockingjay-architecture checkpoint (Mockingjay, TERA or Audio ALBERT) with its front end."""

    def __init__(self, checkpoint: MockingjayCheckpoint, device: str = "cpu"):
        family = checkpoint_family(checkpoint)
        # s3prl writes the 'audio' block of every online front end; without one, a TERA or ALBERT file of the
        # current layout was trained on pre-extracted features. (Paper-era files name no front end at all:
        # they get the paper-era log-Mel front end, as paper-era Mockingjay files do.)
        if family.name != "mockingjay" and not checkpoint.audio and checkpoint.layout != LAYOUT_PAPER:
            raise InputError(f"{checkpoint.path}: a {family.name} checkpoint without its 'audio' block was trained on "
                             "pre-extracted features (e.g. Kaldi fMLLR) that satool cannot compute; it will not "
                             "substitute log-Mel (docs/other-models.md)")
        kaldi = KaldiFeatureConfig.is_kaldi(checkpoint.audio)
        # MockingjayModel builds the online front end; a Kaldi block is swapped in below.
        super().__init__(dataclasses.replace(checkpoint, audio=None) if kaldi else checkpoint, device=device)
        self.checkpoint = checkpoint
        if kaldi:
            self.features = KaldiFeatureConfig.from_s3prl(checkpoint.audio)
            self.extractor = KaldiExtractor(self.features, device=str(self.device))
        self.family = family
        self.name = self.family.name

    def provenance(self) -> dict[str, Any]:
        recorded = self.checkpoint.recorded or {}
        altered = alterations(self.checkpoint.task) or alterations(recorded.get("model_block"))
        return {
            **super().provenance(),
            "type": self.family.name,
            "family": {"name": self.family.name, "display": self.family.display, "source": self.family.source,
                       "alterations": altered, "share_layer": self.config.share_layer},
            "front_end": "kaldi" if isinstance(self.features, KaldiFeatureConfig) else "online",
        }
