"""`satool segment` command."""

from __future__ import annotations

from satool.errors import UsageError


def segment() -> None:
    """Phoneme segmentation from attention maps or features."""
    raise UsageError("'satool segment' is not implemented yet (issue 7)")
