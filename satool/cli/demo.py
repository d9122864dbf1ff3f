"""`satool demo` command."""

from __future__ import annotations

from satool.errors import UsageError


def demo() -> None:
    """Run the whole study on a generated corpus and write an HTML report."""
    raise UsageError("'satool demo' is not implemented yet (issue 9)")
