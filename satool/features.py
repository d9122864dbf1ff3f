"""Acoustic features matching s3prl's Mockingjay front end, plus MFCC.

The Mockingjay front end (s3prl ``OnlinePreprocessor``, SPEC section 1):
waveform scaled to ``target_level`` dB (RMS), STFT (n_fft 400, Hann 400, hop
160, centred, reflect padding), power spectrum, HTK Mel filterbank without
normalisation (80 bands), ``log(x + 1e-10)``, optional deltas, then
per-utterance mean/variance normalisation with the unbiased standard
deviation. The pre-training target is the 201-bin log-linear spectrogram,
normalised the same way. Frames are 10 ms apart; frame ``i`` is centred at
``i * 160`` samples, and an utterance of N samples has ``1 + N // 160``
frames.

All functions take one utterance (no batch axis) and return
``[frame, feature]`` float32 tensors.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field, replace
from typing import Any

EPS = 1e-10


@dataclass(frozen=True)
class FeatureSpec:
    """One feature stream in s3prl's vocabulary (feat_type mel/linear/mfcc)."""

    feat_type: str = "mel"
    log: bool = True
    delta: int = 0
    cmvn: bool = True


@dataclass(frozen=True)
class FeatureConfig:
    """Feature settings; ``to_s3prl()`` gives the 'audio' block of an s3prl config."""

    sample_rate: int = 16000
    win_ms: int = 25
    hop_ms: int = 10
    n_freq: int = 201
    n_mels: int = 80
    n_mfcc: int = 13
    target_level: float | None = -25
    input: FeatureSpec = field(default_factory=FeatureSpec)
    target: FeatureSpec = field(default_factory=lambda: FeatureSpec("linear", True, 0, True))

    @property
    def hop_length(self) -> int:
        return round(self.hop_ms * self.sample_rate / 1000)

    @property
    def win_length(self) -> int:
        return round(self.win_ms * self.sample_rate / 1000)

    @property
    def n_fft(self) -> int:
        return (self.n_freq - 1) * 2

    @property
    def frame_shift_s(self) -> float:
        return self.hop_length / self.sample_rate

    def dim(self, spec: FeatureSpec) -> int:
        base = {"mel": self.n_mels, "linear": self.n_freq, "mfcc": self.n_mfcc}[spec.feat_type]
        return base * (1 + spec.delta)

    @property
    def input_dim(self) -> int:
        return self.dim(self.input)

    @property
    def target_dim(self) -> int:
        return self.dim(self.target)

    def to_s3prl(self) -> dict[str, Any]:
        block = {k: v for k, v in asdict(self).items() if k not in ("input", "target", "sample_rate")}
        block["input"] = {"channel": 0, **asdict(self.input)}
        block["target"] = {"channel": 0, **asdict(self.target)}
        return block

    @classmethod
    def from_s3prl(cls, audio: dict[str, Any]) -> FeatureConfig:
        """Read an s3prl 'audio' block (OnlinePreprocessor style; 'kaldi' blocks are not supported)."""
        from satool.errors import InputError

        if "kaldi" in audio:
            raise InputError("Kaldi-style 'audio' configs (torchaudio.compliance.kaldi) are not supported")

        def spec(d: dict | None, default: FeatureSpec) -> FeatureSpec:
            if not d:
                return default
            return FeatureSpec(str(d.get("feat_type", "mel")), bool(d.get("log", False)),
                               int(d.get("delta", 0)), bool(d.get("cmvn", False)))

        inp = spec(audio.get("input"), FeatureSpec())
        level = audio.get("target_level", -25)
        return cls(
            sample_rate=int(audio.get("sample_rate", 16000)), win_ms=int(audio.get("win_ms", 25)),
            hop_ms=int(audio.get("hop_ms", 10)), n_freq=int(audio.get("n_freq", 201)),
            n_mels=int(audio.get("n_mels", 40)), n_mfcc=int(audio.get("n_mfcc", 13)),
            target_level=None if level in (None, "None") else float(level),
            input=inp, target=spec(audio.get("target"), inp),
        )

    def with_input(self, **changes: Any) -> FeatureConfig:
        return replace(self, input=replace(self.input, **changes))


class FeatureExtractor:
    """Computes the model input (and pre-training target) of one utterance.

    ``extractor(wave)`` -> input features ``[frame, input_dim]``;
    ``extractor.input_and_target(wave)`` -> both from one STFT.
    Construct once and reuse (window and filterbank are cached).
    """

    def __init__(self, config: FeatureConfig | None = None, device: str = "cpu", mfcc_n_mels: int = 128):
        import torch
        from torchaudio.transforms import MelScale

        self.config = config or FeatureConfig()
        self.device = torch.device(device)
        c = self.config
        self._window = torch.hann_window(c.win_length, device=self.device)
        self._mel = MelScale(n_mels=c.n_mels, sample_rate=c.sample_rate, n_stft=c.n_freq).to(self.device)
        self._mfcc = None
        self._mfcc_n_mels = mfcc_n_mels  # torchaudio's (and s3prl's) default is 128

    def _scaled(self, wave):
        import torch

        x = torch.as_tensor(wave, dtype=torch.float32, device=self.device)
        if self.config.target_level is not None:
            rms = x.pow(2).mean().pow(0.5)
            x = x * ((10 ** (self.config.target_level / 20)) / (rms + EPS))  # s3prl's order of operations
        return x

    def _power(self, x):
        import torch

        c = self.config
        # A batch of one, as s3prl calls it: the same FFT code path gives bit-identical
        # spectra (1-D and batched calls may differ by float rounding, which log(x + 1e-10)
        # magnifies in near-silent bins).
        spec = torch.stft(
            x[None], n_fft=c.n_fft, hop_length=c.hop_length, win_length=c.win_length, window=self._window,
            center=True, pad_mode="reflect", normalized=False, onesided=True, return_complex=True,
        )[0]
        return spec.abs().pow(2)  # [freq, frame]

    def _stream(self, spec: FeatureSpec, x, power):
        import torch
        from torchaudio.functional import compute_deltas

        if spec.feat_type == "linear":
            raw = power
        elif spec.feat_type == "mel":
            raw = self._mel(power)
        elif spec.feat_type == "mfcc":
            raw = self._mfcc_transform()(x)
        else:
            from satool.errors import UsageError

            raise UsageError(f"unsupported feature type {spec.feat_type!r} (mel, linear, mfcc)")
        if spec.log:
            raw = (raw + EPS).log()
        feats = [raw]
        for _ in range(spec.delta):
            feats.append(compute_deltas(feats[-1]))
        out = torch.cat(feats, dim=0)  # [dim, frame]
        if spec.cmvn:
            out = (out - out.mean(dim=-1, keepdim=True)) / (out.std(dim=-1, keepdim=True) + EPS)
        return out.transpose(0, 1).contiguous()  # [frame, dim]

    def _mfcc_transform(self):
        if self._mfcc is None:
            from torchaudio.transforms import MFCC

            c = self.config
            self._mfcc = MFCC(
                sample_rate=c.sample_rate, n_mfcc=c.n_mfcc, log_mels=True,
                melkwargs={"n_fft": c.n_fft, "hop_length": c.hop_length, "win_length": c.win_length,
                           "n_mels": self._mfcc_n_mels},
            ).to(self.device)
        return self._mfcc

    def __call__(self, wave):
        """Model input features ``[frame, input_dim]`` (float32 tensor)."""
        x = self._scaled(wave)
        return self._stream(self.config.input, x, self._power(x))

    def input_and_target(self, wave):
        """(input ``[frame, input_dim]``, target ``[frame, target_dim]``) from one STFT."""
        x = self._scaled(wave)
        power = self._power(x)
        return self._stream(self.config.input, x, power), self._stream(self.config.target, x, power)


def mfcc(wave, *, n_mfcc: int = 13, deltas: int = 2, cmvn: bool = True, sample_rate: int = 16000):
    """MFCC baseline for segmentation: 13 coefficients + deltas + delta-deltas, ``[frame, 39]``.

    torchaudio's MFCC (40 HTK Mel bands, log, DCT-II ortho) on 25 ms Hann
    windows every 10 ms (centred), then deltas (window 5) and per-utterance
    mean/variance normalisation. Not scaled to -25 dB (MFCC is level-invariant
    after CMVN except for c0's offset).
    """
    config = FeatureConfig(
        sample_rate=sample_rate, n_mfcc=n_mfcc, target_level=None,
        input=FeatureSpec("mfcc", log=False, delta=deltas, cmvn=cmvn),
    )
    return _mfcc_extractor(config)(wave)


@functools.lru_cache(maxsize=4)
def _mfcc_extractor(config: FeatureConfig) -> FeatureExtractor:
    return FeatureExtractor(config, mfcc_n_mels=40)


def n_frames(n_samples: int, hop_length: int = 160) -> int:
    """Frames of a centred STFT over ``n_samples``."""
    return 1 + n_samples // hop_length
