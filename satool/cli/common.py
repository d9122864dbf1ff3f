"""Small helpers shared by the stage commands (no torch at import time)."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

console = Console(stderr=True, highlight=False)
"""Progress and messages go to stderr; stdout stays clean for --json."""

_results = sys.stdout


def set_results_stream(stream) -> None:
    """Where results (JSON, tables) go. The CLI sets the real stdout here, then sends everything else
    printed to stdout while a command runs (a plugin's print, say) to stderr."""
    global _results
    _results = stream


def results_console() -> Console:
    """A rich console writing to the results stream (stdout), for tables."""
    return Console(file=_results, highlight=False)


def say(text: str, label: str | None = None, style: str = "yellow", out: Console | None = None) -> None:
    """Print one message line, ``text`` taken literally (a path or an error
    that contains "[...]" is not read as rich markup), after an optional
    coloured ``label`` such as "skipped" or "warning:"."""
    from rich.text import Text

    line = Text(str(text))
    if label:
        line = Text(label + " ", style=style) + line
    (out or console).print(line, soft_wrap=True)


def log(text: str, label: str = "note:") -> None:
    """The stages' ``log``: one line on stderr after a coloured label."""
    say(text, label)


def print_json(data: Any) -> None:
    """Write ``data`` as indented JSON to the results stream (stdout)."""
    from satool.results.files import json_ready

    _results.write(json.dumps(json_ready(data), indent=2, default=_json_default, allow_nan=False) + "\n")
    _results.flush()


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
    """A rich progress bar on stderr; ``advance(n)`` moves it, ``info(text)`` changes its text.

    When stderr is not a terminal (a job under nohup, a log file), a plain line
    ``description: done/total (percent) elapsed info`` is written at most once a
    minute instead, so long runs leave a readable trace.
    """

    def __init__(self, total: int | None, description: str):
        import time

        self._plain = not console.is_terminal
        self._description, self._total, self._done, self._text = description, total, 0, ""
        self._began = self._last = time.monotonic()
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
        if not self._plain:
            self._progress.__enter__()
        return self

    def __exit__(self, *exc):
        if self._plain:
            if self._done or self._total:
                self._log(force=exc[0] is None)
            return False
        return self._progress.__exit__(*exc)

    def _log(self, force: bool = False) -> None:
        import time

        now = time.monotonic()
        if not force and now - self._last < 60:
            return
        self._last = now
        share = f" ({100 * self._done / self._total:.0f} %)" if self._total else ""
        minutes, seconds = divmod(int(now - self._began), 60)
        say(f"{self._description}: {self._done}/{self._total or '?'}{share} {minutes}m{seconds:02d}s {self._text}")

    def advance(self, n: int = 1) -> None:
        self._done += n
        if self._plain:
            self._log()
        else:
            self._progress.advance(self._task, n)

    def info(self, text: str) -> None:
        self._text = text
        if not self._plain:
            self._progress.update(self._task, info=text)

    def total(self, total: int, completed: int | None = None) -> None:
        self._total = total
        if completed is not None:
            self._done = completed
        if self._plain:
            self._log()
        else:
            self._progress.update(self._task, total=total, completed=completed)


def progress_bar(total: int | None, description: str) -> _Progress:
    """``with progress_bar(n, 'extract') as bar: bar.advance()``."""
    return _Progress(total, description)


def parse_csv(value: str | None) -> list[str]:
    """'a, b,c' -> ['a', 'b', 'c'] (None or '' -> [])."""
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def parse_numbers(value: str | None) -> list[int] | None:
    """'1,3-5' -> [1, 3, 4, 5]; None or '' -> None (all)."""
    from satool.errors import UsageError

    if not value:
        return None
    out: list[int] = []
    for part in value.split(","):
        part = part.strip()
        try:
            if "-" in part:
                a, b = part.split("-", 1)
                out.extend(range(int(a), int(b) + 1))
            elif part:
                out.append(int(part))
        except ValueError:
            raise UsageError(f"cannot read {value!r} as numbers (e.g. '1,3-5')") from None
    return out
