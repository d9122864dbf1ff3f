"""`satool probe` command."""

from __future__ import annotations

from satool.errors import UsageError


def probe() -> None:
    """Train a probe (phone, speaker) on the model's representations."""
    raise UsageError("'satool probe' is not implemented yet (issue 8)")
