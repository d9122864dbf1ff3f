"""Built-in metrics (registered through the same hook as plugins)."""

from __future__ import annotations

from satool import hookimpl


@hookimpl
def register_metrics(register):
    pass
