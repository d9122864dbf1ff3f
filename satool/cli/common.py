"""Small helpers shared by the stage commands (no torch at import time)."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

console = Console(stderr=True, highlight=False)
"""Progress and messages go to stderr; stdout stays clean for --json."""


def say(text: str, label: str | None = None, style: str = "yellow", out: Console | None = None) -> None:
    """Print one message line, ``text`` taken literally (a path or an error
    that contains "[...]" is not read as rich markup), after an optional
    coloured ``label`` such as "skipped" or "warning:"."""
    from rich.text import Text

    line = Text(str(text))
    if label:
        line = Text(label + " ", style=style) + line
    (out or console).print(line, soft_wrap=True)


def print_json(data: Any) -> None:
    """Write ``data`` as indented JSON to stdout."""
    sys.stdout.write(json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(value)


class _Progress:
    """A rich progress bar on stderr; ``advance(n)`` moves it, ``update(**fields)`` changes text."""

    def __init__(self, total: int | None, description: str):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
            console=console, transient=False,
        )
        self._task = self._progress.add_task(description, total=total, info="")

    def __enter__(self):
        self._progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self._progress.__exit__(*exc)

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._task, n)

    def info(self, text: str) -> None:
        self._progress.update(self._task, info=text)

    def total(self, total: int, completed: int | None = None) -> None:
        self._progress.update(self._task, total=total, completed=completed)


def progress_bar(total: int | None, description: str) -> _Progress:
    """``with progress_bar(n, 'extract') as bar: bar.advance()``."""
    return _Progress(total, description)


def parse_csv(value: str | None) -> list[str]:
    """'a, b,c' -> ['a', 'b', 'c'] (None or '' -> [])."""
    return [v.strip() for v in (value or "").split(",") if v.strip()]
