"""Features: parity with s3prl's Mockingjay front end, MFCC, frame counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from satool import testing
from satool.data.features import FeatureConfig, FeatureExtractor, mfcc, n_frames


def _s3prl_preprocessor(audio_block):
    pre = pytest.importorskip(
        "s3prl.upstream.baseline.preprocessor", reason="s3prl==0.4.18 (pip install --no-deps) not installed"
    )
    return pre.get_preprocessor(dict(audio_block), process_input_only=False)[0]


def _level(wave, target=-25):
    """s3prl's _normalize_wav_decibel, operation for operation."""
    rms = wave.pow(2).mean().pow(0.5)
    scalar = (10 ** (target / 20)) / (rms + 1e-10)
    return wave * scalar


@pytest.mark.s3prl
@pytest.mark.parametrize("seconds", [0.5, 1.37, 3.0])
def test_logmel_and_linear_match_s3prl(seconds):
    config = FeatureConfig()
    preprocessor = _s3prl_preprocessor(config.to_s3prl())
    phones = [(p, d * seconds / 1.12) for p, d in testing.DEFAULT_PHONES]
    wave = torch.from_numpy(testing.tone_audio(phones, seed=3))
    ours_in, ours_target = FeatureExtractor(config).input_and_target(wave)
    # s3prl's upstream scales to -25 dB before its preprocessor; do the same
    theirs_in, theirs_target = preprocessor(_level(wave).view(1, 1, -1))
    assert ours_in.shape == theirs_in[0].shape == (n_frames(len(wave)), 80)
    assert ours_target.shape == theirs_target[0].shape == (n_frames(len(wave)), 201)
    assert (ours_in - theirs_in[0]).abs().max().item() <= 1e-4
    assert (ours_target - theirs_target[0]).abs().max().item() <= 1e-4


@pytest.mark.s3prl
def test_deltas_and_mfcc_streams_match_s3prl():
    config = FeatureConfig(n_mels=40).with_input(delta=2)
    block = config.to_s3prl()
    preprocessor = _s3prl_preprocessor(block)
    wave = torch.from_numpy(testing.tone_audio(testing.DEFAULT_PHONES, seed=5))
    ours = FeatureExtractor(config)(wave)
    theirs = preprocessor(_level(wave).view(1, 1, -1))[0][0]
    assert ours.shape == (n_frames(len(wave)), 120)
    assert (ours - theirs).abs().max().item() <= 1e-4


def test_config_round_trip():
    config = FeatureConfig(n_mels=40, target_level=None).with_input(delta=1, cmvn=False)
    assert FeatureConfig.from_s3prl(config.to_s3prl()) == config
    assert config.input_dim == 80 and config.target_dim == 201


def test_mfcc_shape_and_normalisation():
    wave = testing.tone_audio(testing.DEFAULT_PHONES)
    feats = mfcc(wave)
    assert feats.shape == (n_frames(len(wave)), 39)
    np.testing.assert_allclose(feats.mean(0).numpy(), 0, atol=1e-4)
    np.testing.assert_allclose(feats.std(0).numpy(), 1, atol=1e-3)
