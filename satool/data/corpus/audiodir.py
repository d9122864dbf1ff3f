"""A plain directory of audio files (wav/flac, any depth), TextGrids optional.

Speaker = the LibriSpeech-style id prefix when the file name looks like
``SPEAKER-CHAPTER-NNNN``, else the parent folder's name. Split = the top-level
folder when it is named like a split (train*, dev*, valid*, test*, eval*),
else ``all``. Alignments: ``--alignments DIR`` or a TextGrid beside the audio.
"""

from __future__ import annotations

import re
from pathlib import Path

from satool.data.audio import AUDIO_SUFFIXES
from satool.data.corpus.base import Corpus, Utterance, index_alignments
from satool.data.phones import ARPABET_SET

LIBRI_ID = re.compile(r"^(\d+)-\d+-\d+$")
SPLIT_NAME = re.compile(r"^(train|dev|valid|test|eval)", re.I)


def _audio_files(path: Path):
    return (p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())


class AudioDirReader:
    name = "audio-dir"
    description = "any directory of .wav/.flac files; TextGrids beside them or in --alignments"

    def detect(self, path: Path) -> float:
        return 0.2 if next(_audio_files(path), None) is not None else 0.0

    def open(self, path: Path, alignments: Path | None = None) -> Corpus:
        aligned = index_alignments(alignments) if alignments is not None else {}
        utterances = []
        for audio in sorted(_audio_files(path)):
            parts = audio.relative_to(path).parts
            split = parts[0] if len(parts) > 1 and SPLIT_NAME.match(parts[0]) else "all"
            match = LIBRI_ID.match(audio.stem)
            speaker = match.group(1) if match else (audio.parent.name if audio.parent != path else "unknown")
            beside = next(
                (c for c in (audio.with_suffix(".TextGrid"), audio.with_suffix(".textgrid")) if c.exists()), None
            )
            utterances.append(Utterance(audio.stem, split, speaker, audio, aligned.get(audio.stem) or beside))
        return Corpus(path, self.name, ARPABET_SET, utterances)
