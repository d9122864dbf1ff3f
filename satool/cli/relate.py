"""`satool relate` command."""

from __future__ import annotations

from satool.errors import UsageError


def relate() -> None:
    """Phone relation maps of heads (which phones attend to which)."""
    raise UsageError("'satool relate' is not implemented yet (issue 6)")
