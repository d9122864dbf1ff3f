"""Corpora: readers for LibriSpeech (+ MFA), TIMIT and plain audio directories.

``open_corpus(path)`` auto-detects the layout among every registered
:class:`CorpusReader` (built-ins and plugins) and returns a :class:`Corpus`.
"""

from __future__ import annotations

from pathlib import Path

from satool.corpus.base import (
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
                plugins=None, splits: str | Path | None = None) -> Corpus:
    """Open ``path`` with the named reader, or the auto-detected one; with ``splits``, a split file
    (:mod:`satool.corpus.splitfile`) decides the splits and leaves unlisted utterances out."""
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
    if splits is not None:
        from satool.corpus import splitfile

        corpus = splitfile.apply(corpus, splitfile.read(Path(splits)), Path(splits))
    if not corpus.utterances:
        raise InputError(f"no utterances found for layout {layout!r}", path=path)
    return corpus


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
