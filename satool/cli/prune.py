"""`satool prune` command."""

from __future__ import annotations

from satool.errors import UsageError


def prune() -> None:
    """Prune heads in a metric's order and measure what is lost."""
    raise UsageError("'satool prune' is not implemented yet (issue 8)")
