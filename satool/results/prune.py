"""Pruning results: probe scores after pruning heads cumulatively in each order (paper Fig. 5), or
after limiting every head's attention span (paper sec. 7.2).

``satool prune`` saves a :class:`PruneSweep` as ``prune_results.csv``/``.json`` (one row per order,
random seed, level and task) or a :class:`SpanSweep` as ``span_results.csv``/``.json`` (one row per
span and task); ``load`` reads the JSON back with every field checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from satool.results.files import Document, RowTable
from satool.results.probe import ProbeScore

RANDOM = "random"  # the order name of random pruning orders (one per seed)


@dataclass
class PruneRow:
    """A probe's score with ``pruned`` heads removed in order ``by`` (``order_seed``: the random
    order's seed, None for a metric's order). ``level``: index into the sweep's levels."""

    by: str
    order_seed: int | None
    level: int
    pruned: int
    pruned_fraction: float
    score: ProbeScore
    layer: int = -1  # the hidden state the probes read (0 = embedding output, L = layer L, -1 = the last)

    KEYS: ClassVar[tuple[str, ...]] = ("by", "order_seed", "level", "pruned", "pruned_fraction", "layer")

    @property
    def task(self) -> str:
        return self.score.task

    def as_dict(self) -> dict[str, Any]:
        return {"by": self.by, "order_seed": self.order_seed, "level": self.level, "pruned": self.pruned,
                "pruned_fraction": self.pruned_fraction, "layer": self.layer, **self.score.as_dict()}

    @classmethod
    def from_document(cls, doc: Document) -> PruneRow:
        fraction = doc.number("pruned_fraction", allow_missing_value=False)
        if not 0 <= fraction <= 1:
            doc.fail(f"field {doc.where}.pruned_fraction must lie in 0..1, found {fraction}")
        return cls(doc.text("by"), doc.integer("order_seed", None), doc.integer("level", minimum=0),
                   doc.integer("pruned", minimum=0), fraction, ProbeScore.from_document(doc, cls.KEYS),
                   doc.integer("layer", -1, minimum=-1))


@dataclass
class SpanRow:
    """A probe's score with every head limited to keys within ``span`` steps of the query
    (None = no limit)."""

    span: int | None
    score: ProbeScore
    layer: int = -1  # the hidden state the probes read

    @property
    def task(self) -> str:
        return self.score.task

    def as_dict(self) -> dict[str, Any]:
        return {"span": "none" if self.span is None else self.span, "layer": self.layer, **self.score.as_dict()}

    @classmethod
    def from_document(cls, doc: Document) -> SpanRow:
        span = doc.raw("span")
        if span == "none":
            span = None
        elif isinstance(span, bool) or not isinstance(span, int) or span < 0:
            doc.fail(f"field {doc.where}.span must be a whole number >= 0 or \"none\"")
        return cls(span, ProbeScore.from_document(doc, ("span", "layer")), doc.integer("layer", -1, minimum=-1))


@dataclass
class PruneSweep(RowTable):
    """Every (order, random seed, level, task) of a head-pruning sweep."""

    rows: list[PruneRow]

    CSV: ClassVar[str] = "prune_results.csv"
    JSON: ClassVar[str] = "prune_results.json"
    ROW: ClassVar[type] = PruneRow

    @classmethod
    def load(cls, directory: str | Path) -> PruneSweep:
        sweep = super().load(directory)
        if 0 not in {r.pruned for r in sweep.rows}:
            Document({}, Path(directory) / cls.JSON).fail("has no row without pruning (pruned = 0): nothing to "
                                                          "compare with")
        return sweep

    @property
    def total(self) -> int:
        """Heads pruned at the last level (every head of the model in a full sweep)."""
        return max((r.pruned for r in self.rows), default=0)

    @property
    def levels(self) -> list[int]:
        return sorted({r.pruned for r in self.rows})

    @property
    def orders(self) -> list[str]:
        return list(dict.fromkeys(r.by for r in self.rows))

    def scores(self, by: str, task: str, pruned: int) -> list[float]:
        return [r.score.score for r in self.rows if r.by == by and r.task == task and r.pruned == pruned]

    def first(self, task: str) -> ProbeScore:
        return next(r.score for r in self.rows if r.task == task)

    @property
    def layer(self) -> int:
        """The hidden state the probes read (-1: the last)."""
        return self.rows[0].layer if self.rows else -1


@dataclass
class SpanSweep(RowTable):
    """Every (span, task) of a span-pruning sweep."""

    rows: list[SpanRow]

    CSV: ClassVar[str] = "span_results.csv"
    JSON: ClassVar[str] = "span_results.json"
    ROW: ClassVar[type] = SpanRow

    def spans(self) -> list[int | None]:
        return list(dict.fromkeys(r.span for r in self.rows))

    def score(self, task: str, span: int | None) -> float | None:
        return next((r.score.score for r in self.rows if r.task == task and r.span == span), None)

