"""The stage layer: what `satool <stage>`, `satool demo` and Python users all call.

One module per stage, each with the same shape:

- ``Settings``: a dataclass with every input of the stage (paths and options, typed), built by keyword.
  Every field has a default except the stage's required inputs; those defaults are the ones the
  command line shows (its options read them with :func:`default`, so a default lives in one place).
  A library settings dataclass that is public API on its own (``PretrainSettings``, ``ProbeSettings``)
  is nested whole as one field (``training``, ``probing``), never copied field by field; the stage's
  inputs shared by two stages are nested the same way (``probe.Data``);
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

import dataclasses
import typing
from collections.abc import Callable
from typing import Any, Protocol

STAGES = ("pretrain", "health", "extract", "metric", "segment", "relate", "probe", "prune", "report", "compare",
          "merge")

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


def default(settings: type, name: str) -> Any:
    """The default of a field of a settings dataclass: ``default(Settings, "steps")``; a dotted name
    reads a nested dataclass's field (``default(Settings, "training.steps")``, ``"data.train_split"``).

    The command line takes its option defaults from here, so ``--help`` shows the stage's own defaults.
    A nested field with a default of its own is read from that default; a required one (``data``) from
    its class. Raises ``KeyError`` for a field without a default.
    """
    head, _, rest = name.partition(".")
    fields = {f.name: f for f in dataclasses.fields(settings)}
    if head not in fields:
        raise KeyError(f"{settings.__qualname__} has no field {head!r}")
    f = fields[head]
    if rest:
        if f.default_factory is not dataclasses.MISSING:
            return _read(f.default_factory(), rest)
        if f.default is not dataclasses.MISSING and f.default is not None:
            return _read(f.default, rest)
        return default(typing.get_type_hints(settings)[head], rest)
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise KeyError(f"{settings.__qualname__}.{head} has no default (a required input)")


def _read(value: Any, name: str) -> Any:
    for part in name.split("."):
        value = getattr(value, part)
    return value


def default_csv(settings: type, name: str) -> str | None:
    """A list default as the command line writes it (``"phone,speaker"``; None for None or empty)."""
    value = default(settings, name)
    return ",".join(str(v) for v in value) if value else None
