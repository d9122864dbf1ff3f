"""`satool report` command."""

from __future__ import annotations

from satool.errors import UsageError


def report() -> None:
    """Rebuild the HTML report from saved results."""
    raise UsageError("'satool report' is not implemented yet (issue 9)")
