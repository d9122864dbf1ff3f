"""LibriSpeech layout: SPLIT/SPEAKER/CHAPTER/SPEAKER-CHAPTER-NNNN.flac plus SPEAKER-CHAPTER.trans.txt.

The root may be the directory holding the splits (``LibriSpeech/``) or one
split (``LibriSpeech/dev-clean``). MFA TextGrids come from ``--alignments DIR``
(same relative layout or flat, matched by utterance id) or lie beside the audio.
Speaker = the first field of the utterance id.
"""

from __future__ import annotations

from pathlib import Path

from satool.data.corpus.base import Corpus, Utterance, index_alignments
from satool.data.phones import ARPABET_SET
from satool.errors import InputError


class LibriSpeechReader:
    name = "librispeech"
    description = "SPLIT/SPEAKER/CHAPTER/*.flac with *.trans.txt; MFA TextGrids beside or in --alignments"

    def detect(self, path: Path) -> float:
        return 0.9 if next(path.rglob("*.trans.txt"), None) is not None else 0.0

    def open(self, path: Path, alignments: Path | None = None) -> Corpus:
        aligned = index_alignments(alignments) if alignments is not None else {}
        utterances, notes = [], []
        for trans in sorted(path.rglob("*.trans.txt")):
            chapter_dir = trans.parent
            parts = chapter_dir.relative_to(path).parts
            split = parts[-3] if len(parts) >= 3 else path.name
            try:
                lines = trans.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise InputError(f"unreadable transcript ({exc})", path=trans) from None
            for line in lines:
                if not line.strip():
                    continue
                utt_id, _, text = line.strip().partition(" ")
                audio = chapter_dir / f"{utt_id}.flac"
                if not audio.exists():
                    notes.append(f"{trans}: {utt_id} has no {audio.name}")
                    continue
                beside = chapter_dir / f"{utt_id}.TextGrid"
                alignment = aligned.get(utt_id) or (beside if beside.exists() else None)
                utterances.append(
                    Utterance(utt_id, split, utt_id.split("-")[0], audio, alignment, text.strip() or None)
                )
        return Corpus(path, self.name, ARPABET_SET, utterances, notes)
