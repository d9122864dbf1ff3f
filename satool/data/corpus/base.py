"""What every corpus reader produces: utterances, splits, audio and alignments.

A :class:`CorpusReader` (registered through the ``register_corpora`` hook)
recognises a directory layout and opens it as a :class:`Corpus`: a list of
:class:`Utterance` records plus the phone set its alignments use. Loading is
lazy, one utterance at a time; :meth:`Corpus.load` validates audio against its
alignment and raises :class:`~satool.errors.InputError` naming the file, so a
stage can skip a bad utterance, list it, and keep going.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np

from satool.data.alignment import Alignment, read_alignment
from satool.data.audio import SAMPLE_RATE, load_audio
from satool.data.phones import PhoneSet
from satool.errors import InputError, UsageError
from satool.prefetch import prefetched
from satool.timebase import FRAME_S, HOP_SAMPLES

T = TypeVar("T")

MAX_ALIGNMENT_MISMATCH_S = 0.05
FRAME_SHIFT_S = FRAME_S


@dataclass(frozen=True)
class Utterance:
    """One recording: where it is and who speaks."""

    id: str
    split: str
    speaker: str
    audio: Path
    alignment: Path | None = None
    transcript: str | None = None


@dataclass
class LoadedUtterance:
    """An utterance's samples and, when aligned, its labels at the 10 ms frame rate."""

    utterance: Utterance
    wave: np.ndarray  # float32 [sample] at 16 kHz
    alignment: Alignment | None
    frame_labels: np.ndarray | None  # int16 [frame], ids into Corpus.phone_set, -1 = none
    boundaries: np.ndarray | None  # float64 [boundary] seconds, inside the utterance

    @property
    def n_frames(self) -> int:
        """Number of 10 ms feature frames (centred STFT): 1 + samples // 160."""
        return 1 + len(self.wave) // HOP_SAMPLES

    @property
    def duration_s(self) -> float:
        return len(self.wave) / SAMPLE_RATE


@dataclass
class Skipped:
    utterance_id: str
    reason: str


@dataclass
class Corpus:
    """A corpus as opened by a reader."""

    root: Path
    layout: str
    phone_set: PhoneSet
    utterances: list[Utterance]
    notes: list[str] = field(default_factory=list)

    @property
    def splits(self) -> list[str]:
        return sorted({u.split for u in self.utterances})

    def resolve_splits(self, split: str | Iterable[str]) -> set[str]:
        """The corpus's split names meant by ``split``: a name it has, or a family (``train`` means
        every ``train-*`` split of LibriSpeech, ``dev`` ``dev-clean`` and ``dev-other``, ``test``
        every ``test-*``; see :func:`split_family`). A UsageError lists the splits otherwise."""
        names = [split] if isinstance(split, str) else list(split)
        resolved: set[str] = set()
        for name in names:
            if name in self.splits:
                resolved.add(name)
                continue
            family = [s for s in self.splits if split_family(s) == name]
            if not family:
                raise UsageError(f"{self.root}: no split {name!r} (splits: {', '.join(self.splits)}; families: "
                                 f"{', '.join(sorted({split_family(s) for s in self.splits}))})")
            resolved.update(family)
        return resolved

    def select(self, split: str | Iterable[str] | None = None, max_utts: int | None = None, *,
               balanced: bool = False) -> list[Utterance]:
        """Utterances of ``split`` (a name or a family, see :meth:`resolve_splits`; all splits if None),
        in a stable order.

        ``balanced``: take the ``max_utts`` round-robin over speakers (see :func:`speaker_balanced`)
        instead of the first ones, so that every speaker is in the subset when it can be.
        """
        if split is None:
            chosen = list(self.utterances)
        else:
            wanted = self.resolve_splits(split)
            chosen = [u for u in self.utterances if u.split in wanted]
        if max_utts is None:
            return chosen
        return speaker_balanced(chosen, max_utts) if balanced else chosen[:max_utts]

    def load(self, utt: Utterance, *, require_alignment: bool = False,
             max_seconds: float | None = None) -> LoadedUtterance:
        """Read and check one utterance (InputError naming the file on any problem)."""
        wave = load_audio(utt.audio, max_seconds=max_seconds)
        if utt.alignment is None:
            if require_alignment:
                raise InputError("no alignment found for this utterance", path=utt.audio)
            return LoadedUtterance(utt, wave, None, None, None)
        alignment = read_alignment(utt.alignment)
        alignment.check_phones(self.phone_set)
        duration = len(wave) / SAMPLE_RATE
        truncated = max_seconds is not None and duration >= max_seconds - 1e-3
        if not truncated and abs(alignment.end - duration) > MAX_ALIGNMENT_MISMATCH_S:
            raise InputError(
                f"alignment ends at {alignment.end:.3f} s but the audio lasts {duration:.3f} s "
                f"(more than {MAX_ALIGNMENT_MISMATCH_S * 1000:.0f} ms apart)",
                path=utt.alignment,
            )
        n_frames = 1 + len(wave) // HOP_SAMPLES
        labels = alignment.frame_labels(n_frames, self.phone_set, FRAME_SHIFT_S)
        return LoadedUtterance(utt, wave, alignment, labels, alignment.boundaries(duration))

    def prepared(self, utterances: Iterable[Utterance], prepare: Callable[[LoadedUtterance], T], *,
                 max_seconds: float | None = None,
                 strict: bool = False) -> Iterator[tuple[Utterance, LoadedUtterance | None, T | str]]:
        """``(utt, loaded, prepare(loaded))`` for each utterance in order, loaded and prepared (the model's
        input, say) up to two ahead in a background thread. An utterance whose audio, alignment or
        prepared input is refused (``InputError``) comes as ``(utt, None, reason)``, or raises if ``strict``."""
        def work(utt: Utterance):
            try:
                loaded = self.load(utt, max_seconds=max_seconds)
                return loaded, prepare(loaded)
            except InputError as exc:
                if strict:
                    raise
                return None, str(exc)

        for utt, (loaded, value) in prefetched(utterances, work):
            yield utt, loaded, value

    def iter_loaded(self, utterances: Iterable[Utterance], skipped: list[Skipped], *,
                    require_alignment: bool = False, strict: bool = False,
                    max_seconds: float | None = None) -> Iterator[LoadedUtterance]:
        """Load utterances one by one; bad ones are appended to ``skipped`` (or raise if ``strict``)."""
        for utt in utterances:
            try:
                yield self.load(utt, require_alignment=require_alignment, max_seconds=max_seconds)
            except InputError as exc:
                if strict:
                    raise
                skipped.append(Skipped(utt.id, str(exc)))


_FAMILIES = (("train", "train"), ("dev", "dev"), ("valid", "dev"), ("test", "test"), ("eval", "test"))


def split_family(name: str) -> str:
    """``train``, ``dev`` or ``test`` for split names such as LibriSpeech's ``train-clean-100``,
    ``dev-other``, ``test-clean`` or TIMIT's ``TRAIN``; the name itself otherwise."""
    lowered = name.lower()
    for prefix, family in _FAMILIES:
        if lowered == prefix or lowered.startswith((prefix + "-", prefix + "_")):
            return family
    return name


def speaker_balanced(utterances: list[Utterance], n: int) -> list[Utterance]:
    """``n`` utterances taken round-robin over speakers (sorted by id), each speaker's in their order.

    With ``n`` at least the number of speakers every speaker is present, and no speaker has more
    than one utterance more than another (until a speaker runs out). The result keeps the input order.
    """
    by_speaker: dict[str, list[int]] = {}
    for i, u in enumerate(utterances):
        by_speaker.setdefault(u.speaker, []).append(i)
    queues = [by_speaker[s] for s in sorted(by_speaker)]
    picked: list[int] = []
    depth = 0
    while len(picked) < min(n, len(utterances)):
        for queue in queues:
            if depth < len(queue) and len(picked) < n:
                picked.append(queue[depth])
        depth += 1
    return [utterances[i] for i in sorted(picked)]


class CorpusReader(Protocol):
    """What a ``register_corpora`` plugin registers."""

    name: str
    description: str

    def detect(self, path: Path) -> float:
        """0 = not this layout ... 1 = certainly this layout."""

    def open(self, path: Path, alignments: Path | None = None) -> Corpus:
        """Scan ``path`` (and the alignment directory, if given)."""


def index_alignments(directory: Path, suffixes: tuple[str, ...] = (".textgrid",)) -> dict[str, Path]:
    """Alignment files under ``directory`` (any depth) by utterance id (file stem)."""
    if not directory.is_dir():
        raise InputError("alignment directory not found", path=directory)
    found: dict[str, Path] = {}
    for path in sorted(directory.rglob("*")):
        if path.suffix.lower() in suffixes and path.is_file():
            found.setdefault(path.stem, path)
    return found
