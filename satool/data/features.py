"""Acoustic features matching s3prl's Mockingjay front end, plus MFCC.

The Mockingjay front end (s3prl ``OnlinePreprocessor``, docs/science.md §1):
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
        """Read an s3prl 'audio' block (OnlinePreprocessor style; 'kaldi' blocks are not supported).

        Every value is checked (type and range) before use: the block comes from an untrusted
        checkpoint. Raises :class:`~satool.errors.InputError` naming the key.
        """
        from satool.errors import InputError

        if not isinstance(audio, dict):
            raise InputError(f"the 'audio' block is a {type(audio).__name__}, expected a dictionary")
        if "kaldi" in audio:
            raise InputError("Kaldi-style 'audio' configs (torchaudio.compliance.kaldi) are not supported")

        def number(key: str, default: Any, low: float, high: float, kind: type = int) -> Any:
            value = audio.get(key, default)
            try:
                if isinstance(value, bool) or (kind is int and isinstance(value, float) and not value.is_integer()):
                    raise ValueError
                converted = kind(value)
            except (TypeError, ValueError, OverflowError):
                raise InputError(f"audio block: {key} = {value!r} is not a {kind.__name__}") from None
            if not (low <= converted <= high):  # also false for NaN
                raise InputError(f"audio block: {key} = {value!r} is outside {low:g}..{high:g}")
            return converted

        def flag(d: dict, key: str, default: bool) -> bool:
            value = d.get(key, default)
            if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
                return value.strip().lower() in ("true", "1", "yes")
            if isinstance(value, (bool, int)) and value in (0, 1):
                return bool(value)
            raise InputError(f"audio block: {key} = {value!r} is not true or false")

        def spec(d: Any, default: FeatureSpec) -> FeatureSpec:
            if not d:
                return default
            if not isinstance(d, dict):
                raise InputError(f"audio block: a feature stream is a {type(d).__name__}, expected a dictionary")
            kind = d.get("feat_type", "mel")
            if kind not in ("mel", "linear", "mfcc"):
                raise InputError(f"audio block: feat_type = {kind!r} (satool knows mel, linear, mfcc)")
            delta = d.get("delta", 0)
            if isinstance(delta, bool) or not isinstance(delta, int) or not 0 <= delta <= 3:
                raise InputError(f"audio block: delta = {delta!r} is not 0..3")
            return FeatureSpec(kind, flag(d, "log", False), delta, flag(d, "cmvn", False))

        rate = number("sample_rate", 16000, 1, 10**6)
        if rate != 16000:
            raise InputError(f"audio block: sample_rate {rate} Hz; satool reads audio at 16000 Hz")
        win = number("win_ms", 25, 1, 200)
        hop = number("hop_ms", 10, 1, win)
        n_freq = number("n_freq", 201, 2, 4097)
        if win * rate // 1000 > (n_freq - 1) * 2:
            raise InputError(f"audio block: a {win} ms window does not fit the FFT of n_freq {n_freq}")
        level = audio.get("target_level", -25)
        inp = spec(audio.get("input"), FeatureSpec())
        return cls(
            sample_rate=rate, win_ms=win, hop_ms=hop, n_freq=n_freq,
            n_mels=number("n_mels", 40, 1, 512), n_mfcc=number("n_mfcc", 13, 1, 512),
            target_level=None if level in (None, "None") else number("target_level", -25, -120.0, 0.0, float),
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

        from satool.errors import InputError

        if len(wave) <= self.config.n_fft // 2:
            raise InputError(f"too short: {len(wave)} samples (the {self.config.win_ms} ms analysis window needs "
                             f"more than {self.config.n_fft // 2})")
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
