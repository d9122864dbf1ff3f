"""How a person names an attention head: ``L3.H7`` is head 7 of layer 3, both counted from 1.

Everything satool prints names heads this way, and every option that takes heads
(``--heads``, ``--head-mask``, ``--features attn:L3.H7``) and the Python API
(``cache.attention(utt, head="L3.H7")``) accept it. The older ``3.7`` is read too.
Array positions in Python (``cache.attention(utt, layer=2, head=6)``) are 0-based
positions into the stored layers and heads, and are documented as such.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from satool.errors import UsageError

_HEAD = re.compile(r"^\s*(?:L(\d+)\s*\.\s*H(\d+)|(\d+)\s*\.\s*(\d+))\s*$", re.IGNORECASE)
FORM = "L3.H7 (layer 3, head 7, counted from 1)"


def label(layer: int, head: int) -> str:
    """'L3.H7' for 1-based layer 3, head 7."""
    return f"L{layer}.H{head}"


def parse(text: str) -> tuple[int, int]:
    """'L3.H7' (or '3.7') -> (3, 7), 1-based; a UsageError saying how to write it otherwise."""
    match = _HEAD.match(str(text))
    if not match:
        raise UsageError(f"cannot read head {text!r}: write {FORM}")
    layer, head = (int(g) for g in match.groups() if g is not None)
    if layer < 1 or head < 1:
        raise UsageError(f"head {text!r}: layers and heads are counted from 1 ({FORM})")
    return layer, head


def parse_list(text: str | None) -> list[tuple[int, int]]:
    """'L1.H3, L2.H7' -> [(1, 3), (2, 7)]; None or '' -> []."""
    return [parse(part) for part in (text or "").split(",") if part.strip()]


def check(heads: Sequence[tuple[int, int]], layers: Sequence[int], head_numbers: Sequence[int]) -> None:
    """A UsageError naming the valid range if a head is not among ``layers`` x ``head_numbers``."""
    for layer, head in heads:
        if layer not in layers or head not in head_numbers:
            raise UsageError(f"{label(layer, head)} is not available: layers {_span(layers)}, heads {_span(head_numbers)}")


def _span(numbers: Sequence[int]) -> str:
    numbers = list(numbers)
    if numbers and numbers == list(range(numbers[0], numbers[-1] + 1)):
        return f"{numbers[0]}..{numbers[-1]}"
    return ", ".join(map(str, numbers))
