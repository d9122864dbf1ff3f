"""The same heads' metrics on two map kinds side by side (``satool metric ... --beside DIR``).

Written as ``maps_side_by_side.csv`` (one row per head: every metric's value and rank under both kinds,
both categories, and whether the category changed) and ``maps_side_by_side.json`` (the same, plus each
metric's rank correlation between the kinds), read back by :meth:`MapsSideBySide.load` with every
field checked. The report shows it beside the head metrics (docs/maps.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from satool.results.files import Document, StoredResult, read_json, write_csv, write_json


@dataclass
class MapsSideBySide(StoredResult):
    """``kinds``: this run's map kind, then the other's; ``rows``: one per head with ``label``, ``layer``,
    ``head``, ``{metric} ({kind})``, ``{metric} rank ({kind})`` for both kinds, ``category ({kind})`` for
    both and ``category changed``; ``rank_correlation[metric]``: Spearman's rho between the kinds' values
    (None when undefined)."""

    kinds: list[str]
    metrics: list[str]
    rows: list[dict[str, Any]]
    rank_correlation: dict[str, float | None]
    sources: list[dict[str, Any]] = field(default_factory=list)

    CSV: ClassVar[str] = "maps_side_by_side.csv"
    JSON: ClassVar[str] = "maps_side_by_side.json"

    @property
    def category_changes(self) -> int:
        return sum(1 for r in self.rows if r["category changed"])

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        out = Path(out_dir)
        document = {"kinds": self.kinds, "metrics": self.metrics, "rank_correlation": self.rank_correlation,
                    "category_changes": self.category_changes, "sources": self.sources, "heads_table": self.rows}
        return {"side_by_side_csv": write_csv(out / self.CSV, self.rows),
                "side_by_side_json": write_json(out / self.JSON, document)}

    @classmethod
    def load(cls, directory: str | Path) -> MapsSideBySide:
        from satool.maps import MAP_KINDS

        path = Path(directory) / cls.JSON
        doc = Document(read_json(path), path)
        kinds = doc.items("kinds")
        if len(kinds) != 2 or not all(k in MAP_KINDS for k in kinds) or kinds[0] == kinds[1]:
            doc.fail(f"kinds must name two different map kinds ({', '.join(MAP_KINDS)})")
        metrics = doc.items("metrics")
        if not all(isinstance(m, str) for m in metrics):
            doc.fail("metrics must list metric names")
        correlation = doc.child("rank_correlation")
        rho = {m: correlation.number(m) for m in metrics}
        rows = []
        for row in doc.children("heads_table"):
            out: dict[str, Any] = {"label": row.text("label"), "layer": row.integer("layer", minimum=1),
                                   "head": row.integer("head", minimum=1)}
            for m in metrics:
                for kind in kinds:
                    out[f"{m} ({kind})"] = row.number(f"{m} ({kind})")
                    out[f"{m} rank ({kind})"] = row.integer(f"{m} rank ({kind})", None, minimum=1)
            for kind in kinds:
                out[f"category ({kind})"] = row.text(f"category ({kind})")
            out["category changed"] = row.flag("category changed")
            rows.append(out)
        sources = [s.value for s in doc.children("sources")] if doc.has("sources") else []
        return cls(list(kinds), list(metrics), rows, {m: (None if v != v else v) for m, v in rho.items()}, sources)
