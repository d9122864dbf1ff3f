"""Tiny corpora in every supported layout, for tests (satool's and plugins').

The audio is a sum of tones that changes with each "phone" (so features and
boundaries are meaningful) and is silent in silence intervals.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from satool.timebase import SAMPLE_RATE

SR = SAMPLE_RATE

# (phone label, duration s); label "" = silence.
DEFAULT_PHONES: tuple[tuple[str, float], ...] = (
    ("", 0.12), ("HH", 0.08), ("AH0", 0.1), ("L", 0.07), ("OW1", 0.15), ("", 0.1),
    ("W", 0.06), ("ER1", 0.14), ("L", 0.06), ("D", 0.05), ("", 0.12),
)


def tone_audio(phones: Sequence[tuple[str, float]], seed: int = 0) -> np.ndarray:
    """float32 ``[sample]`` at 16 kHz: one random chord per phone, silence for ''."""
    rng = np.random.default_rng(seed)
    pieces = []
    for label, duration in phones:
        n = int(round(duration * SR))
        t = np.arange(n) / SR
        if label.strip() in ("", "sil", "h#", "pau", "sp"):
            pieces.append(rng.normal(0, 1e-4, n))
        else:
            freqs = rng.uniform(150, 3000, 3)
            pieces.append(sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in freqs) * 0.2)
    return np.concatenate(pieces).astype(np.float32)


def intervals_from(phones: Sequence[tuple[str, float]]) -> list[tuple[float, float, str]]:
    out, t = [], 0.0
    for label, duration in phones:
        end = t + int(round(duration * SR)) / SR
        out.append((t, end, label))
        t = end
    return out


def write_textgrid(path: Path, phones: Sequence[tuple[float, float, str]],
                   words: Sequence[tuple[float, float, str]] | None = None) -> None:
    """A Praat long-format TextGrid with 'words' and 'phones' tiers."""
    xmax = phones[-1][1]
    words = list(words) if words is not None else [(0.0, xmax, "")]
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0", f"xmax = {xmax}",
             "tiers? <exists>", "size = 2", "item []:"]
    for number, (name, intervals) in enumerate((("words", words), ("phones", phones)), 1):
        lines += [f"    item [{number}]:", '        class = "IntervalTier"', f'        name = "{name}"',
                  "        xmin = 0", f"        xmax = {xmax}", f"        intervals: size = {len(intervals)}"]
        for i, (start, end, label) in enumerate(intervals, 1):
            lines += [f"        intervals [{i}]:", f"            xmin = {start}", f"            xmax = {end}",
                      f'            text = "{label}"']
    path.write_text("\n".join(lines) + "\n")


def write_sphere(path: Path, wave: np.ndarray, sample_rate: int = SR) -> None:
    """A NIST SPHERE file (1024-byte header, 16-bit little-endian PCM) like TIMIT's .WAV."""
    samples = np.clip(np.round(wave * 32767), -32768, 32767).astype("<i2")
    fields = [
        "database_id -s5 TIMIT", "database_version -s3 1.0", "utterance_id -s8 test_utt",
        "channel_count -i 1", f"sample_count -i {len(samples)}", f"sample_rate -i {sample_rate}",
        "sample_min -i -32768", "sample_max -i 32767", "sample_n_bytes -i 2",
        "sample_byte_format -s2 01", "sample_sig_bits -i 16", "end_head",
    ]
    header = ("NIST_1A\n   1024\n" + "\n".join(fields) + "\n").encode("ascii")
    path.write_bytes(header.ljust(1024, b" ") + samples.tobytes())


def make_librispeech(root: Path, speakers: Sequence[str] = ("19", "26"), per_speaker: int = 2,
                     split: str = "dev-clean", aligned: bool = True, seed: int = 0,
                     chapter_id: str = "198") -> list[str]:
    """SPLIT/SPEAKER/CHAPTER/*.flac + trans.txt (+ TextGrids beside). Returns utterance ids."""
    import soundfile

    ids = []
    for s, speaker in enumerate(speakers):
        chapter = root / split / speaker / chapter_id
        chapter.mkdir(parents=True, exist_ok=True)
        lines = []
        for n in range(per_speaker):
            utt = f"{speaker}-{chapter_id}-{n:04d}"
            soundfile.write(chapter / f"{utt}.flac", tone_audio(DEFAULT_PHONES, seed + 10 * s + n), SR)
            if aligned:
                write_textgrid(chapter / f"{utt}.TextGrid", intervals_from(DEFAULT_PHONES))
            lines.append(f"{utt} HELLO WORLD")
            ids.append(utt)
        (chapter / f"{speaker}-{chapter_id}.trans.txt").write_text("\n".join(lines) + "\n")
    return ids


TIMIT_PHONES: tuple[tuple[str, float], ...] = (
    ("h#", 0.1), ("hh", 0.06), ("ax", 0.05), ("l", 0.07), ("ow", 0.14), ("pau", 0.08),
    ("q", 0.03), ("w", 0.06), ("er", 0.12), ("l", 0.05), ("dcl", 0.04), ("d", 0.03), ("h#", 0.1),
)


def make_timit(root: Path, upper: bool = True, seed: int = 0) -> list[str]:
    """TRAIN/TEST/DR1/SPEAKER/UTT.WAV (SPHERE) + .PHN/.WRD/.TXT. Returns utterance ids."""
    ids = []
    for split, speaker, utt in (("TRAIN", "FCJF0", "SA1"), ("TRAIN", "MDAB0", "SX139"), ("TEST", "MDAB1", "SI1039")):
        def name(x: str) -> str:
            return x if upper else x.lower()

        folder = root / name(split) / name("DR1") / name(speaker)
        folder.mkdir(parents=True, exist_ok=True)
        wave = tone_audio(TIMIT_PHONES, seed + len(ids))
        write_sphere(folder / name(f"{utt}.WAV"), wave)
        rows, t = [], 0
        for label, duration in TIMIT_PHONES:
            n = int(round(duration * SR))
            rows.append(f"{t} {t + n} {label}")
            t += n
        (folder / name(f"{utt}.PHN")).write_text("\n".join(rows) + "\n")
        (folder / name(f"{utt}.WRD")).write_text(f"1600 {t - 1600} hello\n")
        (folder / name(f"{utt}.TXT")).write_text(f"0 {t} Hello world.\n")
        ids.append(f"{name(speaker)}_{name(utt)}")
    return ids


def make_checkpoint(path: Path, preset: str = "tiny", downsample: int = 3, seed: int = 0, **overrides) -> Path:
    """A randomly initialised Mockingjay checkpoint in satool's (s3prl current) layout."""
    import torch

    from satool.data.features import FeatureConfig
    from satool.models.mockingjay import MockingjayConfig, MockingjayEncoder, SpecHead
    from satool.models.mockingjay.checkpoint import save_checkpoint

    features = FeatureConfig()
    config = MockingjayConfig.preset(preset, input_dim=features.input_dim, output_dim=features.target_dim,
                                     downsample_rate=downsample, **overrides)
    torch.manual_seed(seed)
    save_checkpoint(path, MockingjayEncoder(config), SpecHead(config), audio=features.to_s3prl())
    return Path(path)


def kill_at_random_moments(cmd: Sequence, duration: float, seed: int, window: tuple[float, float],
                           times: int = 4, after_kill=None, **popen_kwargs) -> int:
    """Start ``cmd`` ``times`` times, SIGKILL it after a random fraction (drawn from ``window``)
    of ``duration`` seconds (the uninterrupted run time) and call ``after_kill()`` after each
    run ends. Returns how many runs were really killed (not finished first)."""
    import signal
    import subprocess
    import time

    rng = np.random.default_rng(seed)
    kills = 0
    for _ in range(times):
        proc = subprocess.Popen([str(part) for part in cmd], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, **popen_kwargs)
        time.sleep(float(rng.uniform(*window)) * duration)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        if after_kill is not None:
            after_kill()
    return kills
