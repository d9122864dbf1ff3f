"""One utterance's metadata, the same record wherever it comes from.

The extractor writes it into the cache, ``AttentionCache.meta`` reads it back, and the
checkpoint path of the metric pass builds it directly; metrics (built-in and plugin) read it.
Read it by attribute (``meta.n_steps``, ``meta.frames_per_step``, ``meta.frame_labels``); it also
reads as a mapping of the same names (``meta["n_steps"]``), with no other names.

Times are in seconds, frames are 10 ms feature frames, steps are model positions
(``frames_per_step`` frames each).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Keys stored per utterance in the cache: scalars go into one JSON attribute, arrays into datasets.
# ``id``, ``frames_per_step`` and ``phone_set`` belong to the cache as a whole and are not repeated.
STORED_SCALARS = ("speaker", "split", "order", "n_samples", "duration_s", "n_frames", "n_steps",
                  "audio_crc32", "transcript")
STORED_ARRAYS = ("frame_labels", "boundaries")


@dataclass(frozen=True, eq=False)
class UtteranceMeta(Mapping):
    """Metadata of one utterance.

    Attributes:
        id, speaker, split: the corpus's names.
        n_frames: 10 ms feature frames; n_steps: model positions; frames_per_step: frames per step (R).
        n_samples, duration_s: the audio as analysed (16 kHz samples; seconds).
        frame_labels: int ``[frame]`` phone ids into ``phone_set`` (-1 = unlabelled), or None.
        boundaries: float ``[boundary]`` phone-boundary times in seconds, sorted, or None.
        transcript: words, if the corpus has them; audio_crc32: CRC-32 of the audio file's bytes.
        order: position in the extraction order (None outside a cache).
    """

    id: str
    speaker: str
    split: str
    n_frames: int | None  # None only in caches written without it
    n_steps: int
    frames_per_step: int
    phone_set: list[str] = field(default_factory=list)
    frame_labels: np.ndarray | None = None
    boundaries: np.ndarray | None = None
    n_samples: int | None = None
    duration_s: float | None = None
    transcript: str | None = None
    audio_crc32: int | None = None
    order: int | None = None

    @classmethod
    def of_loaded(cls, utt, loaded, *, n_steps: int, frames_per_step: int, phone_set: list[str],
                  audio_crc32: int | None = None, order: int | None = None) -> UtteranceMeta:
        """The record for a corpus utterance ``utt`` as loaded (``LoadedUtterance``) and encoded.

        Labels are cut to the analysed frames and boundaries to the analysed duration, so the record
        matches what the model saw when audio was shortened by ``max_seconds``.
        """
        labels = loaded.frame_labels[:loaded.n_frames] if loaded.frame_labels is not None else None
        bounds = loaded.boundaries
        if bounds is not None:
            bounds = bounds[bounds < loaded.duration_s]
        return cls(id=utt.id, speaker=utt.speaker, split=utt.split, n_frames=loaded.n_frames, n_steps=n_steps,
                   frames_per_step=frames_per_step, phone_set=list(phone_set), frame_labels=labels,
                   boundaries=bounds, n_samples=len(loaded.wave), duration_s=loaded.duration_s,
                   transcript=utt.transcript, audio_crc32=audio_crc32, order=order)

    @classmethod
    def of_stored(cls, utt_id: str, stored: Mapping[str, Any], *, frames_per_step: int,
                  phone_set: list[str]) -> UtteranceMeta:
        """The record read back from a cache (``stored``: the checked scalars and arrays of one utterance)."""
        known = {key: stored.get(key) for key in (*STORED_SCALARS, *STORED_ARRAYS)}
        return cls(id=utt_id, frames_per_step=frames_per_step, phone_set=list(phone_set),
                   **{**known, "speaker": known["speaker"] or "", "split": known["split"] or ""})

    def stored(self) -> dict[str, Any]:
        """What the cache keeps for this utterance (None values left out)."""
        return {key: getattr(self, key) for key in (*STORED_SCALARS, *STORED_ARRAYS)
                if getattr(self, key) is not None}

    # -- read-only mapping view (the fields, nothing else) ----------------------------------------------
    def _keys(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self))

    def __getitem__(self, key: str) -> Any:
        if key not in self._keys():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())
