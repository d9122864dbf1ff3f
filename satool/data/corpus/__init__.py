"""Corpora: readers for LibriSpeech (+ MFA), TIMIT and plain audio directories.

``open_corpus(path, readers=...)`` auto-detects the layout among the given
:class:`CorpusReader` objects and returns a :class:`Corpus`. The readers are passed in: the stages,
the command line and :mod:`satool.api` pass every registered one (``get_plugins().corpora.objects()``);
without them only satool's own readers are asked.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    "builtin_readers", "detect_layout", "open_corpus",
]


def builtin_readers() -> list[CorpusReader]:
    """satool's own corpus readers, in registration order."""
    from satool.data.corpus.audiodir import AudioDirReader
    from satool.data.corpus.librispeech import LibriSpeechReader
    from satool.data.corpus.timit import TimitReader

    return [LibriSpeechReader(), TimitReader(), AudioDirReader()]


def detect_layout(path: str | Path, readers: Sequence[CorpusReader] | None = None) -> tuple[str, dict[str, float]]:
    """The best-scoring reader's name for ``path`` and every reader's score (``readers``: default
    :func:`builtin_readers`)."""
    path = Path(path)
    if not path.exists():
        raise InputError("corpus directory not found", path=path)
    if not path.is_dir():
        raise InputError("not a directory (a corpus is a directory of audio files)", path=path)
    readers = builtin_readers() if readers is None else list(readers)
    scores = {reader.name: float(reader.detect(path)) for reader in readers}
    best = max(scores, key=scores.get, default=None)
    if best is None or scores[best] <= 0:
        looked = "; ".join(f"{e.name}: {e.description}" for e in readers)
        raise InputError(f"no corpus layout recognised (looked for {looked})", path=path)
    return best, scores


def open_corpus(path: str | Path, alignments: str | Path | None = None, layout: str | None = None,
                readers: Sequence[CorpusReader] | None = None, splits: str | Path | None = None,
                phone_set: str = "auto") -> Corpus:
    """Open ``path`` with the reader named ``layout``, or the auto-detected one, among ``readers``
    (default: :func:`builtin_readers`).

    ``splits``: a split file (:mod:`satool.data.corpus.splitfile`) decides the splits and leaves unlisted
    utterances out. ``phone_set``: ``auto`` (from the alignments; TIMIT keeps its 39-phone folding),
    a name from :data:`satool.data.phones.PHONE_SETS`, or ``data`` (see :mod:`satool.data.phones`).
    """
    path = Path(path)
    readers = builtin_readers() if readers is None else list(readers)
    if alignments is not None and not Path(alignments).is_dir():
        raise InputError("alignment directory not found", path=alignments)
    if layout is None:
        layout, _ = detect_layout(path, readers)
    elif not path.is_dir():
        raise InputError("corpus directory not found", path=path)
    reader = _reader(readers, layout)
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


def _reader(readers: Sequence[CorpusReader], layout: str) -> CorpusReader:
    for reader in readers:
        if reader.name == layout:
            return reader
    from satool.errors import UsageError

    known = ", ".join(sorted(r.name for r in readers)) or "none"
    raise UsageError(f"unknown corpus reader {layout!r} (known: {known})")


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
