"""Write one utterance's labels: MFA-style TextGrid and TIMIT-style PHN.

Times in the TextGrid are seconds (sample / rate, written exactly: 16 kHz
sample times are finite decimals); PHN lines are ``start end label`` in
samples, end exclusive, as in TIMIT.
"""

from __future__ import annotations

from pathlib import Path

from satool.data.synth.align import Alignment
from satool.data.synth.phones import CLOSURES


def _seconds(sample: int, rate: int) -> str:
    text = f"{sample / rate:.9f}".rstrip("0").rstrip(".")
    return text or "0"


def word_intervals(al: Alignment) -> list[tuple[int, int, str]]:
    """(start, end, word) for the words tier; "" fills the gaps. A silence
    inside a word (rare) is part of that word's interval."""
    spans: dict[int, list[int]] = {}
    for seg in al.segments:
        if seg.word is not None:
            span = spans.setdefault(seg.word, [seg.start, seg.end])
            span[1] = seg.end
    out: list[tuple[int, int, str]] = []
    t = 0
    for w in sorted(spans):
        s, e = spans[w]
        if s > t:
            out.append((t, s, ""))
        out.append((s, e, al.words[w]))
        t = e
    if t < al.n_samples:
        out.append((t, al.n_samples, ""))
    return out


def phone_intervals(al: Alignment) -> list[tuple[int, int, str]]:
    """(start, end, ARPAbet label) for the phones tier; a closure is part of its stop."""
    return [(s.start, s.end, s.label) for s in al.segments]


def phn_lines(al: Alignment) -> list[tuple[int, int, str]]:
    """TIMIT (start, end, label): h# at the ends, pau inside, xcl + stop for closures."""
    out: list[tuple[int, int, str]] = []
    last = len(al.segments) - 1
    for i, seg in enumerate(al.segments):
        if not seg.label:
            out.append((seg.start, seg.end, "h#" if i in (0, last) else "pau"))
        elif seg.closure:
            out.append((seg.start, seg.start + seg.closure, CLOSURES[seg.label]))
            out.append((seg.start + seg.closure, seg.end, seg.timit))
        else:
            out.append((seg.start, seg.end, seg.timit))
    return out


def textgrid_text(al: Alignment, rate: int) -> str:
    """Praat TextGrid, long text format, tiers "words" then "phones"."""
    xmax = _seconds(al.n_samples, rate)
    tiers = [("words", word_intervals(al)), ("phones", phone_intervals(al))]
    lines = [
        'File type = "ooTextFile"', 'Object class = "TextGrid"', "",
        "xmin = 0 ", f"xmax = {xmax} ", "tiers? <exists> ", f"size = {len(tiers)} ", "item []: ",
    ]
    for i, (name, intervals) in enumerate(tiers, 1):
        lines += [
            f"    item [{i}]:", '        class = "IntervalTier" ', f'        name = "{name}" ',
            "        xmin = 0 ", f"        xmax = {xmax} ", f"        intervals: size = {len(intervals)} ",
        ]
        for j, (s, e, text) in enumerate(intervals, 1):
            text = text.replace('"', '""')
            lines += [
                f"        intervals [{j}]:", f"            xmin = {_seconds(s, rate)} ",
                f"            xmax = {_seconds(e, rate)} ", f'            text = "{text}" ',
            ]
    return "\n".join(lines) + "\n"


def write_labels(al: Alignment, rate: int, stem: Path) -> None:
    """Write ``stem``.TextGrid and ``stem``.PHN."""
    stem.with_suffix(".TextGrid").write_text(textgrid_text(al, rate), encoding="utf-8", newline="\n")
    stem.with_suffix(".PHN").write_text(
        "".join(f"{s} {e} {lab}\n" for s, e, lab in phn_lines(al)), encoding="ascii", newline="\n"
    )
