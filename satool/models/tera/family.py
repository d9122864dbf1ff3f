"""Which s3prl transformer family a Mockingjay-layout checkpoint holds: Mockingjay, TERA or Audio ALBERT.

The three share one architecture and one checkpoint layout, so the family is read from what the
trainer recorded, first match wins:

1. ``Args.upstream`` (s3prl's ``run_pretrain.py -u tera``), when it names one of the three;
2. the ``Satool`` block's ``family`` (satool's own checkpoints);
3. the model config: ``share_layer`` true -> Audio ALBERT;
4. the masking settings (s3prl's ``task`` block, or the paper-era model block): a channel
   (``mask_frequency`` > 0) or magnitude (``noise_proportion`` > 0) alteration -> TERA;
5. otherwise Mockingjay (time masking only).

A TERA model trained with time alteration only is indistinguishable from Mockingjay by 3-5; its
``Args`` normally says ``tera``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

FAMILIES = ("mockingjay", "tera", "audio_albert")
DISPLAY = {"mockingjay": "Mockingjay", "tera": "TERA", "audio_albert": "Audio ALBERT"}


@dataclass(frozen=True)
class Family:
    name: str  # one of FAMILIES
    source: str  # what decided it, for the provenance

    @property
    def display(self) -> str:
        return DISPLAY[self.name]


def _positive(value: Any) -> bool:
    try:
        return not isinstance(value, bool) and float(value) > 0
    except (TypeError, ValueError):
        return False


def alterations(settings: Mapping[str, Any] | None) -> list[str]:
    """The pre-training alterations a masking block asks for: time, channel, magnitude."""
    if not isinstance(settings, Mapping):
        return []
    found = []
    if _positive(settings.get("mask_proportion")):
        found.append("time")
    if _positive(settings.get("mask_frequency")):
        found.append("channel")
    if _positive(settings.get("noise_proportion")):
        found.append("magnitude")
    return found


def detect_family(*, upstream: Any = None, satool: Mapping[str, Any] | None = None, share_layer: bool = False,
                  task: Mapping[str, Any] | None = None, model_block: Mapping[str, Any] | None = None) -> Family:
    """The family of a loaded checkpoint (see the module docstring for the order of the rules)."""
    if isinstance(upstream, str) and upstream in FAMILIES:
        return Family(upstream, f"Args.upstream = {upstream!r}")
    recorded = satool.get("family") if isinstance(satool, Mapping) else None
    if isinstance(recorded, str) and recorded in FAMILIES:
        return Family(recorded, "the Satool block")
    if share_layer:
        return Family("audio_albert", "share_layer = true (one layer's weights for every layer)")
    for where, block in (("task", task), ("model block", model_block)):
        altered = alterations(block)
        if "channel" in altered or "magnitude" in altered:
            return Family("tera", f"{where}: {' + '.join(altered)} alteration")
    return Family("mockingjay", "time masking only, layers not shared")
