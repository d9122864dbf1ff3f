"""Whisper's log-Mel front end, computed as ``WhisperFeatureExtractor`` does, on the utterance alone.

    power = |STFT(x)|^2             400-point Hann window, hop 160, centred (reflect padding); last frame dropped
    mel   = filters^T power         slaney-normalised, slaney-scale filters from 0 to 8000 Hz (80 or 128 bands)
    L     = log10(max(mel, 1e-10))
    L     = max(L, max(L) - 8)      per utterance
    feat  = (L + 4) / 4

An utterance of N samples gives N // 160 frames of 10 ms. WhisperFeatureExtractor first pads every
waveform with zeros to 30 s; satool does not (see :mod:`satool.models.whisper.model`), so only the
last 1-2 frames (whose window reaches past the end: reflect padding instead of zeros) and, rarely,
the clamp level ``max(L)`` can differ from the padded computation.
"""

from __future__ import annotations

import numpy as np

from satool.errors import InputError

N_FFT = 400
HOP = 160


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    log_part = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) * (27.0 / np.log(6.4))
    return np.where(f >= 1000.0, log_part, 3.0 * f / 200.0)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp(np.log(6.4) / 27.0 * (m - 15.0)), 200.0 * m / 3.0)


def mel_filters(n_mels: int, n_freq: int = 1 + N_FFT // 2, sample_rate: int = 16000) -> np.ndarray:
    """``[freq, mel]`` triangular filters from 0 to 8000 Hz, slaney scale and area normalisation, computed in
    float64 (as Whisper's feature extractor does; the float32 rounding happens once, at use)."""
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(8000.0), n_mels + 2))
    fft_freqs = np.linspace(0, sample_rate // 2, n_freq)
    widths = np.diff(edges)
    slopes = edges[None, :] - fft_freqs[:, None]
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    return filters * (2.0 / (edges[2:] - edges[:-2]))[None, :]


class WhisperFeatures:
    def __init__(self, n_mels: int, device: str = "cpu"):
        import torch

        self.n_mels = n_mels
        self.device = torch.device(device)
        self.window = torch.hann_window(N_FFT, device=self.device)
        self.filters = torch.from_numpy(mel_filters(n_mels)).to(self.device, torch.float32)  # [freq, mel]

    def __call__(self, wave: np.ndarray):
        """``[frame, n_mels]`` float32."""
        import torch

        x = torch.as_tensor(np.asarray(wave, dtype=np.float32).reshape(-1), device=self.device)
        if len(x) < 2 * HOP:
            raise InputError(f"too short for Whisper: {len(x)} samples, fewer than two 10 ms frames")
        spec = torch.stft(x, N_FFT, HOP, window=self.window, return_complex=True)
        power = spec[..., :-1].abs() ** 2  # [freq, frame]
        mel = self.filters.T @ power
        log_spec = torch.clamp(mel, min=1e-10).log10()
        log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
        return ((log_spec + 4.0) / 4.0).transpose(0, 1).contiguous()
