"""The front end an s3prl ``audio`` block describes: OnlinePreprocessor (``FeatureConfig``) or Kaldi-style."""

from __future__ import annotations

from typing import Any

from satool.data.features import FeatureConfig
from satool.models.tera.kaldi import KaldiFeatureConfig


def front_end_config(audio: dict[str, Any]) -> FeatureConfig | KaldiFeatureConfig:
    """The checked feature settings of an s3prl ``audio`` block (InputError naming the key if unusable)."""
    if KaldiFeatureConfig.is_kaldi(audio):
        return KaldiFeatureConfig.from_s3prl(audio)
    return FeatureConfig.from_s3prl(audio)
