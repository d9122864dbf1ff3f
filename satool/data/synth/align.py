"""eSpeak phoneme events + audio -> contiguous phone and word segments.

eSpeak reports when each phoneme *starts*; a stop's silent closure and a
short gap between words arrive before the next phoneme's event, i.e. at the
end of the previous phone. This module finds silent runs in the audio and
re-labels them (MFA convention):

* a silent run right before a stop or affricate, inside speech, is that
  stop's closure (the stop segment starts at the run; ``closure`` says how
  many of its samples are silent);
* any other silent run of at least ``min_silence_s`` between phones (and
  the audio before the first / after the last phone) is silence;
* audio that eSpeak puts inside a pause but is not silent (the tail of the
  previous phone) goes back to the neighbouring phone;
* phones are then split into ARPAbet (two-part vowels) and grouped into words.

All positions are sample indices at the synthesis rate; ``end`` is exclusive.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field, replace

import numpy as np

from satool.data.synth import phones as ph
from satool.data.synth.engine import Synthesis

PAUSE = -1  # owner code of samples eSpeak put in a pause phoneme
SIL = -2  # owner code of silence samples
VOWEL_ENDING_SHARE = 0.4  # share of a vowel given to the coda l / audio-less phone after it


@dataclass(frozen=True)
class Segment:
    """One labelled stretch of audio, samples [start, end).

    label: ARPAbet with stress ("AA1", "T") or "" for silence. timit: TIMIT
    symbol of the phone ("aa", "dx"; "" for silence). closure: number of
    silent samples at the start that are the stop's closure. word: index
    into :attr:`Alignment.words` or None (silence).
    """

    start: int
    end: int
    label: str
    timit: str = ""
    closure: int = 0
    word: int | None = None


@dataclass(frozen=True)
class Alignment:
    """Contiguous segments covering [0, n_samples) and word labels (lower case)."""

    segments: list[Segment]
    words: list[str]
    n_samples: int
    dropped: list[str] = field(default_factory=list)  # eSpeak phones left with no audio


@dataclass(frozen=True)
class SilenceRule:
    """Silent-run detection. Levels in dB relative to the utterance's speech
    level (95th percentile of 10 ms frame RMS); durations in seconds."""

    threshold_db: float = -40.0
    window_s: float = 0.002
    min_silence_s: float = 0.025
    min_closure_s: float = 0.010


def silent_runs(audio: np.ndarray, rate: int, rule: SilenceRule) -> list[tuple[int, int]]:
    """[start, end) sample runs whose short-time RMS is ``rule.threshold_db`` below speech."""
    x = audio.astype(np.float64)
    n = len(x)
    if n == 0:
        return []
    frame = max(1, int(0.010 * rate))
    n_fr = max(1, n // frame)
    frame_rms = np.sqrt((x[: n_fr * frame].reshape(n_fr, -1) ** 2).mean(1) + 1e-12)
    level = np.percentile(frame_rms, 95)
    thr = level * 10 ** (rule.threshold_db / 20)
    # centred moving RMS over window_s
    w = max(1, int(rule.window_s * rate))
    c = np.concatenate([[0.0], np.cumsum(x * x)])
    lo = np.clip(np.arange(n) - w // 2, 0, n)
    hi = np.clip(np.arange(n) + w - w // 2, 0, n)
    rms = np.sqrt((c[hi] - c[lo]) / np.maximum(hi - lo, 1))
    quiet = rms < thr
    runs: list[tuple[int, int]] = []
    for s, e in _runs(quiet):
        # the window blurs edges: extend sample by sample while still quiet
        while s > 0 and abs(x[s - 1]) < thr:
            s -= 1
        while e < n and abs(x[e]) < thr:
            e += 1
        if runs and s <= runs[-1][1]:
            runs[-1] = (runs[-1][0], max(e, runs[-1][1]))
        else:
            runs.append((s, e))
    return runs


def _word_groups(text: str, synth: Synthesis) -> tuple[list[str], list[int]]:
    """Words as eSpeak spoke them and the 1-based text position of each.

    A multi-word dictionary entry ("with the") gets one word event, so its
    words share one group, labelled "with the".
    """
    starts = sorted({w.text_position for w in synth.words})
    groups: dict[int, list[str]] = {}
    for m in re.finditer(r"[A-Za-z']+", text):
        g = max(0, bisect.bisect_right(starts, m.start() + 1) - 1)
        groups.setdefault(g, []).append(m.group().lower())
    keys = sorted(groups)
    return [" ".join(groups[g]) for g in keys], [starts[g] if starts else 1 for g in keys]


def align(synth: Synthesis, text: str, rule: SilenceRule | None = None) -> Alignment:
    """Segments for one eSpeak utterance (see the module docstring)."""
    rule = rule or SilenceRule()
    audio, rate = synth.audio, synth.sample_rate
    n = len(audio)
    words, group_pos = _word_groups(text, synth)

    # 1. eSpeak phones: [start, next start); pauses and the lead-in are PAUSE.
    events = [e for e in synth.phonemes if e.sample < n]
    names: list[str] = []  # eSpeak name with stress marks, per phone id
    word_of: list[int | None] = []
    owner = np.full(n, PAUSE, dtype=np.int32)  # owner[sample] = phone id, PAUSE or SIL
    for i, ev in enumerate(events):
        end = events[i + 1].sample if i + 1 < len(events) else n
        base, _ = ph.split_stress(ev.name)
        if end <= ev.sample or base.startswith("_"):
            continue
        if base in ph.ESPEAK_MERGE_BACK:
            if names:
                owner[ev.sample:end] = len(names) - 1
            continue
        ph.to_arpabet(base)  # fail early, naming the phoneme
        owner[ev.sample:end] = len(names)
        names.append(ev.name)
        g = int(np.searchsorted(group_pos, ev.text_position, side="right")) - 1
        word_of.append(max(g, 0) if words else None)
    bases = [ph.split_stress(nm)[0] for nm in names]
    is_stop = [ph.to_arpabet(b)[0] in ph.CLOSURES and b not in ph.FLAPS for b in bases]

    # 2. silent runs -> closures or silence
    closures: dict[int, int] = {}  # phone id -> closure length (samples)
    for s, e in silent_runs(audio, rate, rule):
        after = int(owner[e]) if e < n else SIL
        before = int(owner[s - 1]) if s > 0 else SIL
        if before >= 0 and before == after:
            continue  # silence inside one phone stays part of it
        if (after >= 0 and is_stop[after] and before >= 0 and e - s >= rule.min_closure_s * rate
                and not (owner[s:e] == PAUSE).any() and after not in closures):
            owner[s:e] = after
            closures[after] = e - s
        elif e - s >= rule.min_silence_s * rate:
            owner[s:e] = SIL

    # 3. non-silent pause audio joins the phone on its left (else right)
    for s, e in _runs(owner == PAUSE):
        left = int(owner[s - 1]) if s > 0 else SIL
        right = int(owner[e]) if e < n else SIL
        owner[s:e] = left if left >= 0 else right if right >= 0 else SIL

    # 4. eSpeak renders a coda l ("school was", "golden") as the ending of the
    #    vowel before it, leaving the l's own segment short or silent; a phone
    #    left without audio likewise takes the end of the vowel before it
    present = set(np.unique(owner[owner >= 0]).tolist())
    for k in range(1, len(names)):
        coda_l = bases[k] in ("l", "l/") and (k + 1 == len(names) or not _is_vowel(bases[k + 1]))
        if (k in present and not coda_l) or (k - 1) not in present or not _is_vowel(bases[k - 1]):
            continue
        a, b = _runs(owner == k - 1)[-1]
        if k in present and (b >= n or owner[b] != k):
            continue  # something (a silence) lies between the vowel and the l
        owner[a + int(round((1 - VOWEL_ENDING_SHARE) * (b - a))):b] = k
        present.add(k)

    # 5. one segment per phone (ARPAbet-expanded) and per silence
    segments: list[Segment] = []
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(owner)) + 1, [n]])
    for s, e in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        k = int(owner[s])
        if k == SIL:
            segments.append(Segment(s, e, ""))
        else:
            nxt = bases[k + 1] if k + 1 < len(bases) else None
            segments.extend(_expand(bases[k], names[k], s, e, closures.get(k, 0), word_of[k], nxt))
    dropped = [names[k] for k in range(len(names)) if k not in present]
    return Alignment(_merge_silence(segments), words, n, dropped)


def _is_vowel(base: str) -> bool:
    return ph.to_arpabet(base)[0] in ph.ARPABET_VOWELS


def _expand(base: str, name: str, s: int, e: int, closure: int, word: int | None,
            next_base: str | None) -> list[Segment]:
    """ARPAbet segment(s) for one eSpeak phone occupying [s, e)."""
    _, stress = ph.split_stress(name)
    parts = ph.to_arpabet(base)
    if len(parts) == 2 and parts[1] == "R" and next_base in ph.R_PHONEMES:
        parts = parts[:1]  # eSpeak says the r itself next
    labels = [p + (stress if j == 0 else "0") if p in ph.ARPABET_VOWELS else p
              for j, p in enumerate(parts)]
    timit = ["dx" if base in ph.FLAPS else p.lower() for p in parts]
    if len(parts) == 1:
        return [Segment(s, e, labels[0], timit[0], closure, word)]
    cut = s + int(round(ph.SPLIT_FIRST.get(base, ph.SPLIT_FIRST_DEFAULT) * (e - s)))
    cut = min(max(cut, s + 1), e - 1)
    return [Segment(s, cut, labels[0], timit[0], 0, word), Segment(cut, e, labels[1], timit[1], 0, word)]


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) runs where ``mask`` is true."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _merge_silence(segments: list[Segment]) -> list[Segment]:
    """Join adjacent silences."""
    out: list[Segment] = []
    for seg in segments:
        if out and not seg.label and not out[-1].label:
            out[-1] = replace(out[-1], end=seg.end)
        else:
            out.append(seg)
    return out


def resample_segments(al: Alignment, rate_in: int, rate_out: int, n_out: int, offset: int = 0,
                      n_total: int | None = None) -> Alignment:
    """Move boundaries to ``rate_out`` (rounded), shift by ``offset`` samples and
    pad with silence to ``n_total``; the last boundary becomes exactly ``n_total``."""
    n_total = n_total if n_total is not None else n_out + offset

    def conv(b: int) -> int:
        return offset + min(n_out, int(round(b * rate_out / rate_in)))

    out: list[Segment] = [Segment(0, offset, "")] if offset else []
    for seg in al.segments:
        s, e = conv(seg.start), conv(seg.end)
        if seg is al.segments[-1]:
            e = offset + n_out
        if e <= s:
            continue
        cl = min(conv(seg.start + seg.closure) - s, e - s - 1) if seg.closure else 0
        out.append(replace(seg, start=s, end=e, closure=max(cl, 0)))
    if n_total > offset + n_out:
        out.append(Segment(offset + n_out, n_total, ""))
    # close any rounding gaps so segments stay contiguous
    for i in range(1, len(out)):
        if out[i].start != out[i - 1].end:
            out[i] = replace(out[i], start=out[i - 1].end)
    return Alignment(_merge_silence(out), al.words, n_total, al.dropped)
