"""Split files: which utterance belongs to which split, when a corpus's own splits do not fit a study.

A split file is tab-separated text, one ``UTTERANCE_ID<TAB>SPLIT`` line per utterance (``#`` starts
a comment). ``satool corpus split`` writes one; ``satool probe --splits FILE`` and ``satool prune
--splits FILE`` read it: utterances it lists take its split, the others are left out.

Two ways to divide (``by``):

- ``speaker``: speakers are shuffled and dealt to the parts, so the parts share no speaker (for
  phone probes that must generalise to new voices);
- ``utterance``: every speaker's utterances are shuffled and divided, so every speaker is in every
  part (what speaker-identification probes need: a test speaker unseen in training can only be
  wrong).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from satool.data.corpus.base import Corpus, Utterance
from satool.errors import InputError, UsageError

MAX_LINES = 10_000_000


def divide(utterances: Sequence[Utterance], by: str, fractions: Sequence[float], names: Sequence[str],
           seed: int = 0) -> dict[str, str]:
    """{utterance id: split name}, dividing ``utterances`` by speaker or within speakers."""
    if by not in ("speaker", "utterance"):
        raise UsageError(f"--by {by!r}: choose speaker or utterance")
    if len(fractions) != len(names) or not fractions or any(f <= 0 for f in fractions):
        raise UsageError("give one positive fraction per split name")
    if len(set(names)) != len(names):
        raise UsageError("split names must differ")
    shares = np.cumsum(np.asarray(fractions, float) / sum(fractions))
    rng = np.random.default_rng(seed)

    def deal(items: list) -> list[str]:
        order = rng.permutation(len(items))
        cut = np.searchsorted(shares, (np.arange(len(items)) + 0.5) / max(len(items), 1))
        labels = [""] * len(items)
        for rank, index in enumerate(order):
            labels[index] = names[min(int(cut[rank]), len(names) - 1)]
        return labels

    by_speaker: dict[str, list[Utterance]] = {}
    for u in utterances:
        by_speaker.setdefault(u.speaker, []).append(u)
    out: dict[str, str] = {}
    if by == "speaker":
        speakers = sorted(by_speaker)
        for speaker, name in zip(speakers, deal(speakers)):
            out.update({u.id: name for u in by_speaker[speaker]})
    else:
        for speaker in sorted(by_speaker):
            items = by_speaker[speaker]
            out.update({u.id: name for u, name in zip(items, deal(items))})
    return out


def write(path: Path, assignment: dict[str, str], header: str = "") -> Path:
    lines = [f"# {line}" for line in header.splitlines()] + [f"{u}\t{s}" for u, s in assignment.items()]
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)


def read(path: Path) -> dict[str, str]:
    """{utterance id: split} from a split file (InputError naming the line on a bad one)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("split file not found (or not a regular file)", path=path)
    out: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if number > MAX_LINES:
                raise InputError(f"more than {MAX_LINES} lines", path=path)
            text = line.rstrip("\n")
            if not text.strip() or text.lstrip().startswith("#"):
                continue
            parts = text.split("\t")
            if len(parts) != 2 or not parts[0] or not parts[1]:
                raise InputError(f"line {number}: expected 'UTTERANCE<TAB>SPLIT', got {text[:60]!r}", path=path)
            if parts[0] in out and out[parts[0]] != parts[1]:
                raise InputError(f"line {number}: {parts[0]!r} is in two splits", path=path)
            out[parts[0]] = parts[1]
    if not out:
        raise InputError("no utterances listed", path=path)
    return out


def apply(corpus: Corpus, assignment: dict[str, str], source: Path) -> Corpus:
    """The corpus with the listed utterances in their file's splits and the others left out."""
    from dataclasses import replace

    known = {u.id for u in corpus.utterances}
    unknown = [u for u in assignment if u not in known]
    if unknown:
        raise InputError(f"{len(unknown)} utterance(s) are not in {corpus.root} (e.g. {unknown[0]!r})", path=source)
    kept = [replace(u, split=assignment[u.id]) for u in corpus.utterances if u.id in assignment]
    left = len(corpus.utterances) - len(kept)
    notes = list(corpus.notes) + ([f"{left} utterances not in {source} were left out"] if left else [])
    return Corpus(corpus.root, corpus.layout, corpus.phone_set, kept, notes)
