"""`satool pretrain` command."""

from __future__ import annotations

from satool.errors import UsageError


def pretrain() -> None:
    """Pre-train a Mockingjay model by masked acoustic modelling."""
    raise UsageError("'satool pretrain' is not implemented yet (issue 4)")
