"""Kaldi-style ``audio`` blocks of s3prl checkpoints (``upstream/baseline/extracter.py``), e.g. TERA's
240-dimensional fbank models: ``torchaudio.compliance.kaldi`` features, then deltas, then per-utterance
CMVN, computed exactly as s3prl does.

The block comes from an untrusted checkpoint: s3prl ``eval``s the feature type and passes every option
to torchaudio; satool maps the three feature types by name and accepts only the options torchaudio
documents for them, each checked for type and range. Refused, one line each: another feature type,
an unknown option, a frame shift other than 10 ms (satool's label grid), dithering (random input), a
sampling rate other than 16 kHz.

    audio:
      kaldi: {feat_type: fbank, fbank: {num_mel_bins: 80, frame_length: 25.0, frame_shift: 10.0, ...}}
      delta: {order: 2, win_length: 5}      # absent: s3prl's defaults (order 2, window 5)
      cmvn: {use_cmvn: true}                # required (s3prl cannot build the pipeline without it)

The waveform is used as read (float, [-1, 1]), not scaled to a dB level: s3prl's builder does not
scale it for Kaldi blocks either. Frames follow Kaldi's ``snip_edges`` (default true: frame t covers
samples [160 t, 160 t + 400), an utterance of N samples has 1 + (N - 400) // 160 frames).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

from satool.errors import InputError

FEATURE_TYPES = ("fbank", "mfcc", "spectrogram")
WINDOWS = ("hamming", "hanning", "povey", "rectangular", "blackman")
DELTA_MODES = ("replicate", "reflect", "constant", "circular")

_COMMON = {  # option: (kind, low, high); kind bool/int/float/window
    "frame_length": ("float", 1.0, 200.0), "frame_shift": ("float", 1.0, 200.0),
    "dither": ("float", 0.0, 0.0), "preemphasis_coefficient": ("float", 0.0, 1.0),
    "remove_dc_offset": ("bool",), "round_to_power_of_two": ("bool",), "snip_edges": ("bool",),
    "window_type": ("window",), "blackman_coeff": ("float", -10.0, 10.0), "energy_floor": ("float", 0.0, 1e10),
    "raw_energy": ("bool",), "subtract_mean": ("bool",), "min_duration": ("float", 0.0, 0.0),
    "sample_frequency": ("float", 16000.0, 16000.0),
}
_MEL = {"num_mel_bins": ("int", 1, 512), "low_freq": ("float", 0.0, 8000.0), "high_freq": ("float", -8000.0, 8000.0),
        "htk_compat": ("bool",), "use_energy": ("bool",), "vtln_low": ("float", 0.0, 8000.0),
        "vtln_high": ("float", -8000.0, 8000.0), "vtln_warp": ("float", 0.5, 2.0)}
OPTIONS = {
    "fbank": {**_COMMON, **_MEL, "use_log_fbank": ("bool",), "use_power": ("bool",)},
    "mfcc": {**_COMMON, **_MEL, "num_ceps": ("int", 1, 512), "cepstral_lifter": ("float", 0.0, 1000.0)},
    "spectrogram": dict(_COMMON),
}


def _flag(value: Any, where: str) -> bool:
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if isinstance(value, (bool, int)) and value in (0, 1):
        return bool(value)
    raise InputError(f"audio block: {where} = {value!r} is not true or false")


def _number(value: Any, kind: str, low: float, high: float, where: str) -> int | float:
    try:
        if isinstance(value, bool) or (kind == "int" and isinstance(value, float) and not value.is_integer()):
            raise ValueError
        converted = int(value) if kind == "int" else float(value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"audio block: {where} = {value!r} is not a{'n integer' if kind == 'int' else ' number'}") \
            from None
    if not (math.isfinite(converted) and low <= converted <= high):
        if where.endswith(".dither"):
            raise InputError(f"audio block: {where} = {value!r}: dithering adds random noise to every input, "
                             "satool analyses deterministic inputs only")
        raise InputError(f"audio block: {where} = {value!r} is outside {low:g}..{high:g}")
    return converted


def _block(audio: dict, key: str, required: bool) -> dict:
    value = audio.get(key)
    if value is None:
        if required:
            raise InputError(f"audio block: Kaldi-style block without {key!r} (s3prl cannot build it either)")
        return {}
    if not isinstance(value, dict):
        raise InputError(f"audio block: {key!r} is a {type(value).__name__}, expected a dictionary")
    return value


@dataclass(frozen=True)
class KaldiFeatureConfig:
    """A checked Kaldi-style ``audio`` block."""

    feat_type: str = "fbank"
    options: tuple[tuple[str, Any], ...] = ()  # torchaudio.compliance.kaldi keyword arguments, checked
    delta_order: int = 2
    delta_win_length: int = 5
    delta_mode: str = "replicate"
    use_cmvn: bool = True
    cmvn_eps: float = 1e-10
    source: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    kind = "kaldi"

    @staticmethod
    def is_kaldi(audio: Any) -> bool:
        return isinstance(audio, dict) and "kaldi" in audio

    @classmethod
    def from_s3prl(cls, audio: Any) -> KaldiFeatureConfig:
        if not isinstance(audio, dict):
            raise InputError(f"the 'audio' block is a {type(audio).__name__}, expected a dictionary")
        kaldi = _block(audio, "kaldi", True)
        feat_type = kaldi.get("feat_type", "fbank")
        if feat_type not in FEATURE_TYPES:
            raise InputError(f"audio block: kaldi.feat_type = {feat_type!r} (satool knows {', '.join(FEATURE_TYPES)})")
        extra = sorted(str(k) for k in kaldi if k not in ("feat_type", feat_type))
        if extra:
            raise InputError(f"audio block: kaldi has an entry satool does not know: {extra[0]!r}")
        raw = kaldi.get(feat_type)
        if not isinstance(raw, dict):
            raise InputError(f"audio block: kaldi.{feat_type} is missing or not a dictionary "
                             "(s3prl cannot build it either)")
        allowed = OPTIONS[feat_type]
        options: dict[str, Any] = {}
        for key, value in raw.items():
            where = f"kaldi.{feat_type}.{key}"
            spec = allowed.get(key) if isinstance(key, str) else None
            if spec is None:
                raise InputError(f"audio block: {where} is not an option satool knows for Kaldi {feat_type}")
            if spec[0] == "bool":
                options[key] = _flag(value, where)
            elif spec[0] == "window":
                if value not in WINDOWS:
                    raise InputError(f"audio block: {where} = {value!r} (one of {', '.join(WINDOWS)})")
                options[key] = value
            else:
                options[key] = _number(value, spec[0], spec[1], spec[2], where)
        options.pop("sample_frequency", None)  # 16000 (checked); passed explicitly, as s3prl does
        if options.get("frame_shift", 10.0) != 10.0:
            raise InputError(f"audio block: kaldi.{feat_type}.frame_shift = {options['frame_shift']!r} ms; satool's "
                             "label frames are 10 ms, so only a 10 ms shift is supported")
        if options.get("frame_length", 25.0) < 10.0:
            raise InputError(f"audio block: kaldi.{feat_type}.frame_length must be at least the 10 ms shift")
        delta = _block(audio, "delta", False)
        unknown = sorted(str(k) for k in delta if k not in ("order", "win_length", "mode"))
        if unknown:
            raise InputError(f"audio block: delta has an entry satool does not know: {unknown[0]!r}")
        order = int(_number(delta.get("order", 2), "int", 0, 3, "delta.order"))
        win = int(_number(delta.get("win_length", 5), "int", 3, 15, "delta.win_length"))
        mode = delta.get("mode", "replicate")
        if mode not in DELTA_MODES:
            raise InputError(f"audio block: delta.mode = {mode!r} (one of {', '.join(DELTA_MODES)})")
        cmvn = _block(audio, "cmvn", True)
        unknown = sorted(str(k) for k in cmvn if k not in ("use_cmvn", "eps"))
        if unknown or "use_cmvn" not in cmvn:
            raise InputError("audio block: cmvn must hold use_cmvn (and optionally eps)"
                             + (f", not {unknown[0]!r}" if unknown else ""))
        use_cmvn = _flag(cmvn["use_cmvn"], "cmvn.use_cmvn")
        eps = float(_number(cmvn.get("eps", 1e-10), "float", 0.0, 1.0, "cmvn.eps"))
        sample_rate = audio.get("sample_rate", 16000)
        if sample_rate != 16000:
            raise InputError(f"audio block: sample_rate {sample_rate!r}; satool reads audio at 16000 Hz")
        return cls(feat_type, tuple(sorted(options.items())), order, win, mode, use_cmvn, eps,
                   source=copy.deepcopy(audio))

    def to_s3prl(self) -> dict[str, Any]:
        return {
            "kaldi": {"feat_type": self.feat_type, self.feat_type: dict(self.options)},
            "delta": {"order": self.delta_order, "win_length": self.delta_win_length, "mode": self.delta_mode},
            "cmvn": {"use_cmvn": self.use_cmvn, "eps": self.cmvn_eps},
        }

    @property
    def min_samples(self) -> int:
        """Samples needed for two frames (CMVN's standard deviation needs two)."""
        length = int(dict(self.options).get("frame_length", 25.0) * 16)
        return length + 160 if dict(self.options).get("snip_edges", True) else 161

    @property
    def input_dim(self) -> int:
        import numpy as np

        wave = np.sin(np.arange(3200, dtype=np.float32) * 0.05) * 0.1
        return int(KaldiExtractor(self)(wave).shape[1])


class KaldiExtractor:
    """``extractor(wave) -> [frame, dim]`` as s3prl's ``get_extracter`` pipeline; the pre-training
    target of such models is their input (s3prl builds the head with ``output_dim = input_dim``)."""

    def __init__(self, config: KaldiFeatureConfig, device: str = "cpu"):
        import torch

        self.config = config
        self.device = torch.device(device)

    def __call__(self, wave):
        import torch
        import torchaudio.compliance.kaldi as kaldi
        from torchaudio.transforms import ComputeDeltas

        c = self.config
        x = torch.as_tensor(wave, dtype=torch.float32).reshape(-1)
        if len(x) < c.min_samples:
            raise InputError(f"too short: {len(x)} samples, the Kaldi {c.feat_type} front end needs at least "
                             f"{c.min_samples} for two frames")
        extract = {"fbank": kaldi.fbank, "mfcc": kaldi.mfcc, "spectrogram": kaldi.spectrogram}[c.feat_type]
        feats = extract(x.view(1, -1), sample_frequency=16000, **dict(c.options))  # [frame, dim]
        stream = [feats]
        deltas = ComputeDeltas(win_length=c.delta_win_length, mode=c.delta_mode)
        for _ in range(c.delta_order):
            stream.append(deltas(stream[-1].transpose(0, 1).unsqueeze(0)).squeeze(0).transpose(0, 1))
        out = torch.cat(stream, dim=-1)
        if c.use_cmvn:
            out = (out - out.mean(dim=0, keepdim=True)) / (c.cmvn_eps + out.std(dim=0, keepdim=True))
        return out.to(self.device)

    def input_and_target(self, wave):
        features = self(wave)
        return features, features
