"""`satool metric` command."""

from __future__ import annotations

from satool.errors import UsageError


def metric() -> None:
    """Score every head"""
    raise UsageError("'satool metric' is not implemented yet (issue 6)")
