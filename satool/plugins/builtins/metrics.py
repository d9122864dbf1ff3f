"""Built-in head metrics (docs/science.md §3), registered like any plugin's."""

from __future__ import annotations

from satool import hookimpl


@hookimpl
def register_metrics(register):
    from satool.analysis.metrics import BUILTIN_METRICS

    for metric in BUILTIN_METRICS:
        register(metric)
