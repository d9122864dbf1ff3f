"""`satool extract` command."""

from __future__ import annotations

from satool.errors import UsageError


def extract() -> None:
    """Run a model over a corpus and cache its attention maps (HDF5)."""
    raise UsageError("'satool extract' is not implemented yet (issue 5)")
