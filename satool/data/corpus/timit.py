"""TIMIT layout: SPLIT/DIALECT/SPEAKER/UTT.WAV (NIST SPHERE) with .PHN, .WRD and .TXT.

Upper- or lower-case names; splits are the TRAIN/TEST folders. Utterance id =
``SPEAKER_UTT`` (e.g. ``FCJF0_SA1``), speaker = the speaker folder. Phones are
folded from 61 to 39 classes (Lee & Hon 1989); ``q`` frames are ignored.
All sentences are kept, SA1/SA2 included (filter with --exclude-sa).
"""

from __future__ import annotations

from pathlib import Path

from satool.data.corpus.base import Corpus, Utterance
from satool.data.phones import TIMIT39_SET


def _sibling(path: Path, suffix: str) -> Path | None:
    for candidate in (path.with_suffix(suffix.upper()), path.with_suffix(suffix.lower())):
        if candidate.exists():
            return candidate
    return None


def _phn_files(path: Path):
    return (p for p in path.rglob("*") if p.suffix.lower() == ".phn" and p.is_file())


class TimitReader:
    name = "timit"
    description = "SPLIT/DIALECT/SPEAKER/*.WAV (NIST SPHERE) with .PHN/.WRD/.TXT, 61 -> 39 phones"

    def __init__(self, exclude_sa: bool = False):
        self.exclude_sa = exclude_sa

    def detect(self, path: Path) -> float:
        for phn in _phn_files(path):
            if _sibling(phn, ".wav") is not None:
                return 0.95
        return 0.0

    def open(self, path: Path, alignments: Path | None = None) -> Corpus:
        utterances, notes = [], []
        for phn in sorted(_phn_files(path)):
            wav = _sibling(phn, ".wav")
            if wav is None:
                notes.append(f"{phn}: no matching .WAV")
                continue
            if self.exclude_sa and phn.stem.upper().startswith("SA"):
                continue
            speaker = phn.parent.name
            parts = phn.relative_to(path).parts
            split = next((p for p in parts[:-1] if p.lower() in ("train", "test")), path.name)
            txt = _sibling(phn, ".txt")
            transcript = None
            if txt is not None:
                words = txt.read_text(encoding="utf-8", errors="replace").split()[2:]
                transcript = " ".join(words) or None
            utterances.append(Utterance(f"{speaker}_{phn.stem}", split.lower(), speaker, wav, phn, transcript))
        return Corpus(path, self.name, TIMIT39_SET, utterances, notes)
