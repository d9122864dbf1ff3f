"""Generate the synthetic corpus: LibriSpeech layout + TextGrid + PHN + manifest.

Layout (see docs/synthetic-corpus.md)::

    OUT/manifest.json
    OUT/{train,dev,test}/SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt
    OUT/{train,dev,test}/SPEAKER/CHAPTER/SPEAKER-CHAPTER-NNNN.{flac,TextGrid,PHN}
    OUT/test-unseen/...        (only with heldout_speakers > 0)

train/dev/test hold different utterances of the *same* speakers; only
test-unseen is speaker-disjoint from the rest.
"""

from __future__ import annotations

import functools
import json
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

import satool
from satool.data.synth import phones as ph
from satool.data.synth.align import Alignment, SilenceRule, align, resample_segments
from satool.data.synth.engine import EspeakEngine, get_engine
from satool.data.synth.text import COVERAGE_WORDS, make_sentence, transcript
from satool.data.synth.voices import Voice, make_voices
from satool.data.synth.writers import phn_lines, write_labels
from satool.errors import UsageError

GENERATOR = "satool.data.synth"
SPLITS = ("train", "dev", "test")
UNSEEN_SPLIT = "test-unseen"


@dataclass(frozen=True)
class SynthConfig:
    """Settings of :func:`synthesize_corpus` (all recorded in the manifest).

    sample_rate: Hz of the written audio. duration_s: accepted utterance
    length including edge silence, seconds (sentences are redrawn until
    one fits, at most ``max_attempts`` times). split_fractions: share of
    each speaker's utterances in train/dev/test. edge_silence_s: range of
    the silence added before and after each utterance, seconds.
    peak_dbfs: peak level of speech. noise_dbfs: level (RMS, dB re full
    scale) of the white noise floor added everywhere; None for none.
    """

    sample_rate: int = 16000
    duration_s: tuple[float, float] = (1.5, 5.0)
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    edge_silence_s: tuple[float, float] = (0.15, 0.35)
    peak_dbfs: float = -3.0
    noise_dbfs: float | None = -70.0
    max_attempts: int = 30
    silence: SilenceRule = field(default_factory=SilenceRule)


@dataclass(frozen=True)
class RenderedUtterance:
    """One generated utterance: ``audio[sample]`` int16 at the config's rate."""

    text: str
    audio: np.ndarray
    alignment: Alignment


def speaker_id(index: int) -> str:
    return str(1001 + index)


def chapter_id(index: int) -> str:
    return str(101 + index)


def split_counts(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """(train, dev, test) utterance counts for one speaker (round half up; train keeps the rest)."""
    n_dev = int(np.floor(n * fractions[1] + 0.5))
    n_test = int(np.floor(n * fractions[2] + 0.5))
    n_dev, n_test = min(n_dev, max(n - 1, 0)), min(n_test, max(n - 1 - n_dev, 0))
    return n - n_dev - n_test, n_dev, n_test


@functools.cache
def _resampler(rate_in: int, rate_out: int):
    """torchaudio's windowed-sinc resampler (float64), its kernel built once."""
    import torch
    import torchaudio.transforms as T

    return T.Resample(rate_in, rate_out, dtype=torch.float64)


def render_utterance(engine: EspeakEngine, voice: Voice, rng: np.random.Generator,
                     cfg: SynthConfig, force: tuple[str, str] | None = None) -> RenderedUtterance:
    """Draw a sentence, speak it, align it, resample to ``cfg.sample_rate``, pad, add noise."""
    import torch

    voice_name = engine.select_variant(voice.variant_text())
    lo, hi = cfg.duration_s
    best = None
    for _ in range(cfg.max_attempts):
        text = make_sentence(rng, force)
        syn = engine.synthesize(text, voice_name, int(rng.integers(2**31)))
        pads = rng.uniform(*cfg.edge_silence_s, size=2)
        dur = len(syn.audio) / syn.sample_rate + pads.sum()
        miss = max(lo - dur, dur - hi, 0.0)
        if best is None or miss < best[0]:
            best = (miss, text, syn, pads)
        if miss == 0.0:
            break
    _, text, syn, pads = best
    al = align(syn, text, cfg.silence)
    x = torch.from_numpy(syn.audio.astype(np.float64) / 32768.0)[None]
    y = _resampler(syn.sample_rate, cfg.sample_rate)(x)[0].numpy()
    y = y * (10 ** (cfg.peak_dbfs / 20) / max(np.abs(y).max(), 1e-9))
    pad_l, pad_r = (int(round(p * cfg.sample_rate)) for p in pads)
    y = np.concatenate([np.zeros(pad_l), y, np.zeros(pad_r)])
    if cfg.noise_dbfs is not None:
        y = y + rng.normal(0.0, 10 ** (cfg.noise_dbfs / 20), len(y))
    audio = np.clip(np.round(y * 32767), -32768, 32767).astype(np.int16)
    al16 = resample_segments(al, syn.sample_rate, cfg.sample_rate, len(y) - pad_l - pad_r,
                             offset=pad_l, n_total=len(y))
    return RenderedUtterance(text, audio, al16)


def synthesize_corpus(
    out_dir: str | Path,
    speakers: int = 40,
    utterances_per_speaker: int = 30,
    seed: int = 0,
    heldout_speakers: int = 0,
    progress: Callable[[int, int], None] | None = None,
    config: SynthConfig | None = None,
    overwrite: bool = False,
) -> dict:
    """Generate the corpus under ``out_dir`` and return its manifest (also written
    to ``out_dir/manifest.json``, last, so its presence means the corpus is complete).

    speakers: speakers in train/dev/test (same speakers, disjoint utterances).
    heldout_speakers: extra speakers, all their utterances in ``test-unseen``.
    progress: called as ``progress(done, total)`` after each utterance.
    Same arguments -> byte-identical files.
    """
    import soundfile as sf

    cfg = config or SynthConfig()
    if speakers < 1 or utterances_per_speaker < 1 or heldout_speakers < 0:
        raise UsageError("speakers and utterances_per_speaker must be >= 1, heldout_speakers >= 0")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise UsageError("output directory is not empty (pass overwrite=True to replace it)", path=out)
        for name in (*SPLITS, UNSEEN_SPLIT, "manifest.json"):
            p = out / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    engine = get_engine()
    n_total_spk = speakers + heldout_speakers
    voices = make_voices(n_total_spk, seed)
    counts = split_counts(utterances_per_speaker, cfg.split_fractions)

    # (global order, speaker index, utterance index, split); utterance-major order so the
    # coverage words land in the first utterance of many speakers
    jobs = []
    for u in range(utterances_per_speaker):
        for s in range(n_total_spk):
            if s >= speakers:
                split = UNSEEN_SPLIT
            else:
                split = SPLITS[0] if u < counts[0] else SPLITS[1] if u < counts[0] + counts[1] else SPLITS[2]
            jobs.append((s, u, split))

    trans: dict[Path, list[str]] = {}
    spk_stats: dict[str, Counter] = {}
    arpa, timit, folded = Counter(), Counter(), Counter()
    seconds: Counter = Counter()
    dropped = 0
    for done, (s, u, split) in enumerate(jobs, 1):
        force = None
        if done - 1 < len(COVERAGE_WORDS) and s < speakers:
            force = COVERAGE_WORDS[done - 1][:2]
        rng = np.random.default_rng([seed, s, u])
        utt = render_utterance(engine, voices[s], rng, cfg, force)
        spk, chap = speaker_id(s), chapter_id(s)
        folder = out / split / spk / chap
        folder.mkdir(parents=True, exist_ok=True)
        uid = f"{spk}-{chap}-{u:04d}"
        sf.write(folder / f"{uid}.flac", utt.audio, cfg.sample_rate, format="FLAC", subtype="PCM_16")
        write_labels(utt.alignment, cfg.sample_rate, folder / uid)
        trans.setdefault(folder / f"{spk}-{chap}.trans.txt", []).append(f"{uid} {' '.join(transcript(utt.text))}")
        for seg in utt.alignment.segments:
            arpa[seg.label or "sil"] += 1
        for _, _, lab in phn_lines(utt.alignment):
            timit[lab] += 1
            folded[ph.fold_timit(lab)] += 1
        dropped += len(utt.alignment.dropped)
        seconds[split] += len(utt.audio) / cfg.sample_rate
        spk_stats.setdefault(spk, Counter())[split] += 1
        if progress is not None:
            progress(done, len(jobs))
    for path, lines in trans.items():
        path.write_text("".join(line + "\n" for line in sorted(lines)), encoding="utf-8", newline="\n")

    split_names = [*SPLITS, *([UNSEEN_SPLIT] if heldout_speakers else [])]
    manifest = {
        "generator": {
            "name": GENERATOR,
            "satool_version": satool.__version__,
            "espeak_ng_version": engine.version,
            "espeakng_loader_version": _dist_version("espeakng-loader"),
            "voice_language": "en-us",
        },
        "settings": {
            "seed": seed,
            "speakers": speakers,
            "utterances_per_speaker": utterances_per_speaker,
            "heldout_speakers": heldout_speakers,
            **_jsonable(asdict(cfg)),
            "synthesis_sample_rate": engine.sample_rate,
        },
        "splits": {
            name: {
                "speakers": sorted(k for k, c in spk_stats.items() if c[name]),
                "utterances": sum(c[name] for c in spk_stats.values()),
                "hours": round(seconds[name] / 3600, 6),
                "speaker_disjoint": name == UNSEEN_SPLIT,
            }
            for name in split_names
        },
        "speaker_disjoint_splits": [UNSEEN_SPLIT] if heldout_speakers else [],
        "note": "train/dev/test share speakers (utterance-disjoint); test-unseen is speaker-disjoint",
        "counts": {
            "speakers": n_total_spk,
            "utterances": len(jobs),
            "phones": sum(v for k, v in arpa.items() if k != "sil"),
            "phones_without_audio": dropped,
        },
        "total_hours": round(sum(seconds.values()) / 3600, 6),
        "phone_inventory": {
            "arpabet": dict(sorted(arpa.items())),
            "timit": dict(sorted(timit.items())),
            "folded_39": dict(sorted(folded.items())),
            "missing_folded_39": sorted(ph.FOLDED_39 - set(folded)),
        },
        "voices": {speaker_id(i): v.to_dict() for i, v in enumerate(voices)},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, tuple | list):
        return [_jsonable(v) for v in obj]
    return obj
