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

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from satool.data.phones import IGNORE, PhoneSet
from satool.errors import InputError

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


_TOKEN = re.compile(r'"((?:[^"]|"")*)"|(<exists>|<absent>)|\[[^\]]*\]|'
                    r'(?<![\w.])([-+]?(?:nan|inf|\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?))(?![\w.])',
                    re.IGNORECASE)
MAX_TEXTGRID_BYTES = 64 << 20


def _textgrid_tokens(text: str) -> list[str | float]:
    """The values of a Praat text TextGrid in order: quoted strings (``""`` unescaped), ``<exists>``,
    and numbers (NaN and infinities included, so that they can be refused); labels such as
    ``xmin =`` and indices such as ``[3]`` are skipped. Long and short formats give the same list."""
    out: list[str | float] = []
    for match in _TOKEN.finditer(text):
        string, flag, number = match.groups()
        if string is not None:
            out.append(string.replace('""', '"'))
        elif flag is not None:
            out.append(flag)
        elif number is not None:
            out.append(float(number))
    return out


def read_textgrid(path: str | Path, *, phone_tier: str = "phones", word_tier: str = "words") -> Alignment:
    """Read an MFA-style Praat TextGrid (long or short text format; UTF-8 or UTF-16).

    satool parses the file itself, so that every interval as written reaches the checks (a NaN end,
    reversed times, overlaps and gaps are reported, not dropped). Empty-label intervals are kept (they
    are silence); gaps between intervals stay unlabelled. Raises InputError naming the file on any
    problem.
    """
    path = Path(path)
    try:
        if path.stat().st_size > MAX_TEXTGRID_BYTES:
            raise InputError(f"larger than {MAX_TEXTGRID_BYTES >> 20} MB: not an alignment", path=path)
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError("alignment file not found", path=path) from None
    except OSError as exc:
        raise InputError(f"cannot read ({exc.strerror or exc})", path=path) from None
    if raw.startswith(b"ooBinaryFile"):
        raise InputError("a binary TextGrid: save it from Praat as a text file", path=path)
    try:
        if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
            text = raw.decode("utf-16")
        else:
            text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError("not UTF-8 or UTF-16 text", path=path) from None
    tokens = _textgrid_tokens(text)
    tiers = _textgrid_tiers(tokens, path)
    by_name = {name.strip().lower(): intervals for name, intervals in tiers}
    chosen = by_name.get(phone_tier) or next((t for n, t in by_name.items() if "phone" in n), None)
    if chosen is None:
        raise InputError(f"no {phone_tier!r} tier (tiers: {', '.join(by_name) or 'none'})", path=path)
    phones = _validated(chosen, path, "phone")
    words = by_name.get(word_tier)
    return Alignment(phones, _validated(words, path, "word") if words else (), path)


def _textgrid_tiers(tokens: list, path: Path) -> list[tuple[str, list[Interval]]]:
    """(name, intervals) of every interval tier; point tiers are read and left out."""
    position = 0

    def take(kind: type, what: str):
        nonlocal position
        if position >= len(tokens) or not isinstance(tokens[position], kind) or \
                (kind is float and isinstance(tokens[position], str)):
            found = tokens[position] if position < len(tokens) else "the end of the file"
            raise InputError(f"not a readable TextGrid: expected {what}, found {found!r}", path=path)
        position += 1
        return tokens[position - 1]

    def count(what: str) -> int:
        value = take(float, what)
        if not value.is_integer() or not 0 <= value <= 10**6:
            raise InputError(f"not a readable TextGrid: {what} = {value!r}", path=path)
        return int(value)

    if take(str, "the file type") != "ooTextFile" or take(str, "the object class") != "TextGrid":
        raise InputError("not a TextGrid (its header does not say ooTextFile / TextGrid)", path=path)
    take(float, "xmin")
    take(float, "xmax")
    if position < len(tokens) and tokens[position] in ("<exists>", "<absent>"):
        if tokens[position] == "<absent>":
            return []
        position += 1
    tiers = []
    for _ in range(count("the number of tiers")):
        kind = take(str, "a tier class")
        name = take(str, "a tier name")
        take(float, "the tier's xmin")
        take(float, "the tier's xmax")
        size = count("the number of intervals")
        if kind == "IntervalTier":
            tiers.append((name, [Interval(take(float, "an interval start"), take(float, "an interval end"),
                                          take(str, "an interval label")) for _ in range(size)]))
        elif kind == "TextTier":
            for _ in range(size):
                take(float, "a point time")
                take(str, "a point label")
        else:
            raise InputError(f"not a readable TextGrid: unknown tier class {kind!r}", path=path)
    return tiers


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
