"""Built-in probing tasks (docs/science.md §7), registered like any plugin's."""

from __future__ import annotations

from satool import hookimpl


@hookimpl
def register_tasks(register):
    from satool.analysis.probing.tasks import BUILTIN_TASKS

    for task in BUILTIN_TASKS:
        register(task)
