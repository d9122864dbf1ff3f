"""A study: several runs side by side (the paper's M3, M6 and M9, or any models a user compares).

:class:`Study` holds each run's typed results (:class:`~satool.results.run.RunResults`), its label
and its mask span Cnum. :class:`Comparison` is what comparing them produced: one table per question
(every head's favourite offset and locality, categories per layer, segmentation, probes per layer,
pruning and span pruning, the masked-query measurement), each saved as CSV beside one
``comparison.json`` that :meth:`Comparison.load` reads back with every table checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from satool.errors import InputError
from satool.results.files import Document, read_json, write_csv, write_json
from satool.results.run import RunResults


@dataclass
class Study:
    """Runs compared, in order; ``spans[i]``: Cnum of run i's model (None when unknown)."""

    runs: list[RunResults]
    spans: list[int | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.spans:
            self.spans = [r.mask_span for r in self.runs]
        names = [r.name for r in self.runs]
        if len(set(names)) != len(names):
            raise InputError(f"runs must have distinct names, got {', '.join(names)}")

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.runs]

    @classmethod
    def load(cls, directories: list[str | Path], names: list[str] | None = None,
             spans: list[int | None] | None = None) -> Study:
        if names is not None and len(names) != len(directories):
            raise InputError(f"{len(names)} names for {len(directories)} runs")
        runs = [RunResults.load(d, None if names is None else names[i]) for i, d in enumerate(directories)]
        return cls(runs, list(spans) if spans else [])

    def by_span(self) -> list[tuple[int, RunResults]]:
        """The runs whose Cnum is known, smallest Cnum first."""
        return sorted(((s, r) for s, r in zip(self.spans, self.runs) if s is not None), key=lambda p: p[0])


TABLES = ("heads", "categories", "segmentation", "probes", "pruning", "spans", "masked_queries", "training")


@dataclass
class Comparison:
    """The tables of a study (``tables[name]``: rows of plain values; names in :data:`TABLES`)."""

    models: list[dict[str, Any]]  # name, mask span, directory, healthy
    tables: dict[str, list[dict[str, Any]]]

    JSON: ClassVar[str] = "comparison.json"

    def table(self, name: str) -> list[dict[str, Any]]:
        return self.tables.get(name, [])

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        out = Path(out_dir)
        paths = {name: write_csv(out / f"{name}.csv", rows) for name, rows in self.tables.items() if rows}
        paths["json"] = write_json(out / self.JSON, {"models": self.models, "tables": self.tables})
        return paths

    @classmethod
    def load(cls, directory: str | Path) -> Comparison:
        file = Path(directory) / cls.JSON
        doc = Document(read_json(file), file)
        models = [m.value for m in doc.children("models")]
        tables = {}
        for name in doc.child("tables").value:
            if name not in TABLES:
                doc.fail(f"tables.{name} is not one of {', '.join(TABLES)}")
            rows = doc.child("tables").children(name)
            for row in rows:
                for key, value in row.value.items():
                    if not isinstance(value, (str, int, float, bool, type(None))):
                        row.fail(f"{row.where}.{key} must be a plain value")
            tables[name] = [r.value for r in rows]
        return cls(models, tables)
