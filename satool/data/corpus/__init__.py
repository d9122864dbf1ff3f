"""Corpora: readers for LibriSpeech (+ MFA), TIMIT and plain audio directories.

``open_corpus(path)`` auto-detects the layout among every registered
:class:`CorpusReader` (built-ins and plugins) and returns a :class:`Corpus`.
"""

from __future__ import annotations

from pathlib import Path

from satool.data.corpus.base import (
    Corpus,
    CorpusReader,
    LoadedUtterance,
    Skipped,
    Utterance,
    index_alignments,
)
from satool.errors import InputError

__all__ = [
    "Corpus", "CorpusReader", "LoadedUtterance", "Skipped", "Utterance", "index_alignments",
    "detect_layout", "open_corpus",
]


def detect_layout(path: str | Path, plugins=None) -> tuple[str, dict[str, float]]:
    """The best-scoring reader's name for ``path`` and every reader's score."""
    from satool.plugins import get_plugins

    path = Path(path)
    if not path.exists():
        raise InputError("corpus directory not found", path=path)
    if not path.is_dir():
        raise InputError("not a directory (a corpus is a directory of audio files)", path=path)
    readers = (plugins or get_plugins()).corpora
    scores = {entry.name: float(entry.obj.detect(path)) for entry in readers}
    best = max(scores, key=scores.get, default=None)
    if best is None or scores[best] <= 0:
        looked = "; ".join(f"{e.name}: {e.obj.description}" for e in readers)
        raise InputError(f"no corpus layout recognised (looked for {looked})", path=path)
    return best, scores


def open_corpus(path: str | Path, alignments: str | Path | None = None, layout: str | None = None,
                plugins=None, splits: str | Path | None = None, phone_set: str = "auto") -> Corpus:
    """Open ``path`` with the named reader, or the auto-detected one.

    ``splits``: a split file (:mod:`satool.data.corpus.splitfile`) decides the splits and leaves unlisted
    utterances out. ``phone_set``: ``auto`` (from the alignments; TIMIT keeps its 39-phone folding),
    a name from :data:`satool.data.phones.PHONE_SETS`, or ``data`` (see :mod:`satool.data.phones`).
    """
    from satool.plugins import get_plugins

    path = Path(path)
    if alignments is not None and not Path(alignments).is_dir():
        raise InputError("alignment directory not found", path=alignments)
    if layout is None:
        layout, _ = detect_layout(path, plugins)
    elif not path.is_dir():
        raise InputError("corpus directory not found", path=path)
    reader = (plugins or get_plugins()).corpora.get(layout)
    corpus = reader.open(path, Path(alignments) if alignments is not None else None)
    kept = []
    for utt in corpus.utterances:
        problem = id_problem(utt.id)
        if problem:
            corpus.notes.append(f"{utt.audio}: left out, its utterance id {utt.id!r} {problem}")
        else:
            kept.append(utt)
    corpus.utterances = kept
    corpus.phone_set = _phone_set(corpus, phone_set)
    if splits is not None:
        from satool.data.corpus import splitfile

        corpus = splitfile.apply(corpus, splitfile.read(Path(splits)), Path(splits))
    if not corpus.utterances:
        raise InputError(f"no utterances found for layout {layout!r}", path=path)
    return corpus


SAMPLE_ALIGNMENTS = 500


def _phone_set(corpus: Corpus, name: str):
    """The phone set ``name`` asks for, reading the corpus's alignments when it has to."""
    from satool.data import phones
    from satool.errors import UsageError

    if name not in phones.CHOICES:
        raise UsageError(f"unknown phone set {name!r} (choose from {', '.join(phones.CHOICES)})")
    if name in phones.PHONE_SETS:
        return phones.PHONE_SETS[name]
    files = sorted({u.alignment for u in corpus.utterances if u.alignment is not None})
    if not files or (name == "auto" and corpus.phone_set.kind == "timit"):
        return corpus.phone_set
    if name == "auto":  # a spread sample decides between the known sets
        step = max(1, len(files) // SAMPLE_ALIGNMENTS)
        chosen = phones.choose(_labels(files[::step]))
        if chosen.kind != "inventory" or chosen.name != "data":
            return chosen
    return phones.inventory(_labels(files))


def _labels(files) -> dict[str, int]:
    """label -> occurrences over the phone tiers of ``files``."""
    from collections import Counter

    from satool.data.alignment import read_alignment

    labels: Counter[str] = Counter()
    for path in files:
        try:
            labels.update(p.label for p in read_alignment(path).phones)
        except InputError:
            continue  # reported when the utterance is loaded
    return labels


def id_problem(utt_id: str) -> str | None:
    """Why an utterance id cannot name an entry of a cache or a result row (None when it can)."""
    if not utt_id or utt_id in (".", ".."):
        return "is empty or a dot name"
    if "/" in utt_id or "\\" in utt_id:
        return "contains a path separator"
    if any(ord(c) < 32 or ord(c) == 127 for c in utt_id):
        return "contains control characters"
    if len(utt_id) > 200:
        return "is longer than 200 characters"
    return None
