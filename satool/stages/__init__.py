"""The stage layer: what `satool <stage>`, `satool demo` and Python users all call.

One module per stage, each with the same shape:

- ``Settings``: a dataclass with every input of the stage (paths and options, typed);
- ``run(settings, progress=None, log=None) -> Outputs``: does the work; ``progress`` is a
  :class:`Progress` (``total``, ``advance``, ``info``), ``log(text, label)`` receives one-line notes
  (skipped utterances, warnings);
- ``record(workspace, settings, outputs)``: what the stage writes into ``satool.toml`` so that later
  stages find its outputs.

The command-line commands only parse, call ``run`` and ``record``, and print; the demo
(:mod:`satool.stages.demo`) is a list of stages with their settings. Plugins that add stages can follow
the same shape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

STAGES = ("pretrain", "health", "extract", "metric", "segment", "relate", "probe", "prune", "report")

Log = Callable[..., None]  # log(text, label="note:")


class Progress(Protocol):
    def total(self, total: int, completed: int | None = None) -> None: ...
    def advance(self, n: int = 1) -> None: ...
    def info(self, text: str) -> None: ...


class NoProgress:
    """A :class:`Progress` that shows nothing (also a context manager)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def total(self, total: int, completed: int | None = None) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass

    def info(self, text: str) -> None:
        pass


def quiet(text: str, label: str = "note:") -> None:
    """The default ``log``: say nothing."""
