"""Phone alignments: MFA TextGrids and TIMIT .PHN files, frame labels, reference boundaries.

Conventions (docs/corpora.md):

- Frame ``i`` of the 10 ms feature stream is centred at ``t_i = i * 0.01`` s
  (torch.stft with ``center=True``); its label is the phone whose interval
  ``[start, end)`` contains ``t_i``. Frames outside every interval (gaps in a
  TextGrid, past the last interval) and TIMIT's deleted ``q`` are IGNORE (-1).
- Reference boundaries are the interval edges strictly inside the utterance:
  every start and end time except the utterance's own start (0 s) and end.
- Overlapping intervals, non-monotonic times, unknown phones and empty
  alignments are errors naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from satool.errors import InputError
from satool.phones import IGNORE, PhoneSet

TIME_TOLERANCE_S = 1e-4  # rounding slack when checking contiguity/overlap
TIMIT_SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Interval:
    start: float  # seconds
    end: float  # seconds
    label: str  # raw label as written in the file


@dataclass(frozen=True)
class Alignment:
    """The phone (and word) intervals of one utterance, as read from ``source``."""

    phones: tuple[Interval, ...]
    words: tuple[Interval, ...]
    source: Path

    @property
    def end(self) -> float:
        return self.phones[-1].end

    def frame_labels(self, n_frames: int, phone_set: PhoneSet, frame_shift_s: float = 0.01) -> np.ndarray:
        """int16 ``[frame]`` class ids at the frame centres ``i * frame_shift_s``."""
        starts = np.array([p.start for p in self.phones])
        ends = np.array([p.end for p in self.phones])
        ids = np.array([phone_set.index(p.label, source=str(self.source)) for p in self.phones])
        centres = np.arange(n_frames) * frame_shift_s
        which = np.searchsorted(starts, centres + 1e-9, side="right") - 1
        labels = np.full(n_frames, IGNORE, dtype=np.int16)
        inside = (which >= 0) & (centres < ends[np.clip(which, 0, None)] - 1e-9)
        labels[inside] = ids[which[inside]]
        return labels

    def boundaries(self, duration_s: float | None = None) -> np.ndarray:
        """float64 ``[boundary]`` times (s) of phone boundaries strictly inside the utterance."""
        end = self.end if duration_s is None else duration_s
        edges = np.unique(np.round([t for p in self.phones for t in (p.start, p.end)], 6))
        return edges[(edges > TIME_TOLERANCE_S) & (edges < end - TIME_TOLERANCE_S)]

    def check_phones(self, phone_set: PhoneSet) -> None:
        """InputError naming the file if a label is outside ``phone_set``."""
        for p in self.phones:
            phone_set.fold(p.label, source=str(self.source))


def _validated(intervals: list[Interval], source: Path, what: str) -> tuple[Interval, ...]:
    if not intervals:
        raise InputError(f"no {what} intervals", path=source)
    previous = None
    for iv in intervals:
        if not (np.isfinite(iv.start) and np.isfinite(iv.end)) or iv.end < iv.start:
            raise InputError(f"{what} interval {iv.label!r} has bad times {iv.start}..{iv.end}", path=source)
        if previous is not None:
            if iv.start < previous.start:
                raise InputError(
                    f"{what} times are not monotonic: {iv.label!r} at {iv.start:.3f} s after "
                    f"{previous.label!r} at {previous.start:.3f} s", path=source,
                )
            if iv.start < previous.end - TIME_TOLERANCE_S:
                raise InputError(
                    f"overlapping {what} intervals: {previous.label!r} ends at {previous.end:.3f} s "
                    f"after {iv.label!r} starts at {iv.start:.3f} s", path=source,
                )
        previous = iv
    return tuple(intervals)


def read_textgrid(path: str | Path, *, phone_tier: str = "phones", word_tier: str = "words") -> Alignment:
    """Read an MFA-style Praat TextGrid (long or short format).

    Empty-label intervals are kept (they are silence); gaps between intervals
    stay unlabelled. Raises InputError naming the file on any problem.
    """
    import textgrid

    path = Path(path)
    try:
        grid = textgrid.TextGrid.fromFile(str(path))
    except FileNotFoundError:
        raise InputError("alignment file not found", path=path) from None
    except Exception as exc:  # the parser raises assorted errors on bad input
        pair = exc.args if isinstance(exc, ValueError) and len(exc.args) == 2 else ()
        if all(hasattr(a, "minTime") and hasattr(a, "maxTime") for a in pair) and pair:
            a, b = pair  # textgrid's own overlap check
            raise InputError(
                f"overlapping intervals: {a.mark!r} ends at {float(a.maxTime):.3f} s "
                f"after {b.mark!r} starts at {float(b.minTime):.3f} s", path=path,
            ) from None
        raise InputError(f"not a readable TextGrid ({type(exc).__name__}: {exc})", path=path) from None
    tiers = {t.name.strip().lower(): t for t in grid.tiers}
    tier = tiers.get(phone_tier) or next((t for n, t in tiers.items() if "phone" in n), None)
    if tier is None:
        raise InputError(f"no {phone_tier!r} tier (tiers: {', '.join(tiers) or 'none'})", path=path)

    def intervals(t) -> list[Interval]:
        out = []
        for iv in getattr(t, "intervals", []):
            out.append(Interval(float(iv.minTime), float(iv.maxTime), str(iv.mark or "")))
        return out

    phones = _validated(intervals(tier), path, "phone")
    word_t = tiers.get(word_tier)
    words = tuple(intervals(word_t)) if word_t is not None else ()
    return Alignment(phones, words, path)


def read_phn(path: str | Path, *, sample_rate: int = TIMIT_SAMPLE_RATE, wrd: str | Path | None = None) -> Alignment:
    """Read a TIMIT .PHN file (``start_sample end_sample label`` per line) and optional .WRD."""
    path = Path(path)

    def parse(file: Path, what: str) -> list[Interval]:
        try:
            text = file.read_text(encoding="utf-8", errors="strict")
        except FileNotFoundError:
            raise InputError(f"{what} file not found", path=file) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"unreadable {what} file ({exc})", path=file) from None
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 3:
                raise InputError(f"line {number}: expected 'start end label', got {line.strip()!r}", path=file)
            try:
                start, end = int(parts[0]), int(parts[1])
            except ValueError:
                raise InputError(f"line {number}: sample numbers are not integers: {line.strip()!r}", path=file) from None
            rows.append(Interval(start / sample_rate, end / sample_rate, parts[2]))
        return rows

    phones = _validated(parse(path, "PHN"), path, "phone")
    words = tuple(parse(Path(wrd), "WRD")) if wrd is not None and Path(wrd).exists() else ()
    return Alignment(phones, words, path)


def read_alignment(path: str | Path) -> Alignment:
    """Read a TextGrid or a .PHN file, chosen by extension."""
    path = Path(path)
    if path.suffix.lower() == ".phn":
        wrd = path.with_suffix(".WRD" if path.suffix == ".PHN" else ".wrd")
        return read_phn(path, wrd=wrd)
    return read_textgrid(path)
