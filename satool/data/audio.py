"""Reading audio: FLAC, WAV and NIST SPHERE (TIMIT) through soundfile.

Policy (docs/corpora.md): everything becomes mono float32 at 16 kHz.
Multi-channel audio is averaged to mono; other sample rates (8 kHz,
44.1 kHz, ...) are resampled with torchaudio's band-limited sinc resampler.
Empty files, files that are not audio, truncated files and NaN/inf samples are
errors naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from satool.errors import InputError
from satool.timebase import SAMPLE_RATE

AUDIO_SUFFIXES = (".flac", ".wav")
RATE_RANGE = (1000, 384000)  # Hz a header may claim (a 1 Hz header would resample 1 KB into gigabytes)
MAX_SECONDS = 3600.0  # longest audio read whole (230 MB as float32 at 16 kHz); longer needs max_seconds


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    frames: int
    channels: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


def audio_info(path: str | Path) -> AudioInfo:
    """Header information without reading the samples."""
    import soundfile

    path = Path(path)
    try:
        info = soundfile.info(str(path))
    except FileNotFoundError:
        raise InputError("audio file not found", path=path) from None
    except Exception as exc:
        raise InputError(f"not readable audio ({_reason(exc)})", path=path) from None
    return AudioInfo(int(info.samplerate), int(info.frames), int(info.channels))


def _reason(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def load_audio(path: str | Path, *, sample_rate: int = SAMPLE_RATE, max_seconds: float | None = None) -> np.ndarray:
    """Samples of ``path`` as mono float32 ``[sample]`` at ``sample_rate`` Hz.

    ``max_seconds`` reads at most that much from the start (bounded memory for
    very long files).
    """
    import soundfile

    path = Path(path)
    if not path.exists():
        raise InputError("audio file not found", path=path)
    if path.stat().st_size == 0:
        raise InputError("empty file (0 bytes)", path=path)
    if not path.is_file():
        raise InputError("not a regular file", path=path)
    try:
        with soundfile.SoundFile(str(path)) as f:
            native_rate = int(f.samplerate)
            # the header is checked before a sample is decoded: its claims decide the memory used
            if not RATE_RANGE[0] <= native_rate <= RATE_RANGE[1]:
                raise InputError(f"the header claims {native_rate} Hz, outside {RATE_RANGE[0]}..{RATE_RANGE[1]} Hz",
                                 path=path)
            if not 1 <= f.channels <= 64:
                raise InputError(f"the header claims {f.channels} channels", path=path)
            seconds = f.frames / native_rate if f.frames >= 0 else float("inf")
            limit = MAX_SECONDS if max_seconds is None else min(max_seconds, MAX_SECONDS)
            if max_seconds is None and seconds > MAX_SECONDS:
                raise InputError(f"{seconds:.0f} s long, more than the {MAX_SECONDS:.0f} s satool reads whole "
                                 "(use --max-frames to read its start)", path=path)
            data = f.read(frames=int(limit * native_rate), dtype="float32", always_2d=True)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"not readable audio ({_reason(exc)})", path=path) from None
    if data.shape[0] == 0:
        raise InputError("no samples", path=path)
    wave = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.all(np.isfinite(wave)):
        raise InputError("audio contains NaN or infinite samples", path=path)
    if native_rate != sample_rate:
        wave = resample(wave, native_rate, sample_rate)
    return np.ascontiguousarray(wave, dtype=np.float32)


def resample(wave: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Band-limited resampling (torchaudio.functional.resample)."""
    import torch
    import torchaudio.functional as AF

    return AF.resample(torch.from_numpy(np.ascontiguousarray(wave)), from_rate, to_rate).numpy()


def audio_checksum(path: str | Path) -> int:
    """CRC-32 of an audio file's bytes: the cache records it, so that a stage reading the corpus again
    (MFCC for segmentation, say) notices a corpus regenerated or edited under an existing cache."""
    import zlib

    checksum = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            checksum = zlib.crc32(block, checksum)
    return checksum
