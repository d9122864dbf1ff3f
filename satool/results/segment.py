"""Segmentation results: phone boundaries found by the kernel-Gram method (paper sec. 5) from each
feature source, tuned on one split and scored once on another, beside an evenly spaced baseline.

``satool segment`` saves a :class:`SegmentResults` as ``segment_results.csv`` (one row per source),
``segment_results.json`` (everything, including each source's per-utterance strict counts for
bootstraps and the precision-recall sweep), ``pr_curve.csv`` and, when every head was ranked,
``heads_by_r_value.csv``; :meth:`SegmentResults.load` reads the JSON back with every field checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from satool.results.files import Document, StoredResult, read_json, write_csv, write_json

BOUNDARY_CONVENTION = (
    "reference boundaries = phone interval edges strictly inside the utterance (its own start and end "
    "excluded); strict = one-to-one maximum matching within the tolerance (inclusive); lenient = a "
    "prediction within the tolerance of any reference is a hit (as in widely used public code)"
)
SCORES = ("precision", "recall", "f1", "os", "r_value", "hits", "n_ref", "n_pred")
COUNTS = ("hits", "n_ref", "n_pred")


@dataclass
class SourceResult:
    """Tuned parameters and test-split scores of one feature source (``strict``/``lenient``: the
    :data:`SCORES` of each way of counting hits; ``curve``: one point per beta, each with both)."""

    source: str
    alpha: float
    beta: float
    tuned_on: str | None
    n_tune: int
    n_test: int
    strict: dict[str, Any]
    lenient: dict[str, Any]
    curve: list[dict[str, Any]] = field(default_factory=list)
    tune_r_value: float | None = None  # strict R-value on the tuning split at the chosen parameters
    per_utterance: list[dict[str, int]] = field(default_factory=list)  # strict hits, n_ref, n_pred per test utt

    def row(self) -> dict[str, Any]:
        row: dict[str, Any] = {"source": self.source, "alpha": self.alpha, "beta": self.beta,
                               "tuned_on": self.tuned_on, "n_tune": self.n_tune, "n_test": self.n_test,
                               "tune_r_value": self.tune_r_value}
        for mode, m in (("strict", self.strict), ("lenient", self.lenient)):
            for key in SCORES:
                row[f"{mode}_{key}"] = m.get(key)
        return row

    def curve_rows(self) -> list[dict[str, Any]]:
        return [{"source": self.source, "alpha": self.alpha, "beta": point["beta"], "mode": mode,
                 **{k: point[mode][k] for k in ("precision", "recall", "f1", "os", "r_value", "n_pred")}}
                for point in self.curve for mode in ("strict", "lenient")]

    @classmethod
    def from_document(cls, doc: Document, per_utterance: list[dict[str, int]],
                      curve: list[dict[str, Any]]) -> SourceResult:
        modes = {}
        for mode in ("strict", "lenient"):
            modes[mode] = {k: doc.number(f"{mode}_{k}") for k in SCORES}
            for k in COUNTS:
                value = modes[mode][k]
                if not np.isfinite(value) or value < 0 or value != int(value):
                    doc.fail(f"field {doc.where}.{mode}_{k} must be a whole number >= 0")
                modes[mode][k] = int(value)
        tune_r = doc.number("tune_r_value") if doc.has("tune_r_value") else None
        return cls(doc.text("source"), doc.number("alpha"), doc.number("beta"), doc.text("tuned_on", None),
                   doc.integer("n_tune", minimum=0), doc.integer("n_test", minimum=0), modes["strict"],
                   modes["lenient"], curve, tune_r, per_utterance)


@dataclass
class SegmentResults(StoredResult):
    """Every source of one ``satool segment`` run, the evenly spaced baseline first.

    ``best_head`` / ``best_hidden``: the head and the hidden state chosen on the tuning split (None
    when not asked for); ``ranking``: every head tuned and tested (rows sorted by strict R-value).
    """

    results: list[SourceResult]
    tolerance_s: float
    cache: str | None = None
    tune_on: str | None = None
    test_on: str | None = None
    best_head: str | None = None
    best_hidden: str | None = None
    ranking: list[dict[str, Any]] | None = None
    test_ids: list[str] = field(default_factory=list)  # the test utterances, in per_utterance's order
    maps: str = "attention"  # the map kind of the cache's attn: sources (satool.maps)

    CSV: ClassVar[str] = "segment_results.csv"
    JSON: ClassVar[str] = "segment_results.json"
    CURVE_CSV: ClassVar[str] = "pr_curve.csv"
    RANKING_CSV: ClassVar[str] = "heads_by_r_value.csv"

    def source(self, label: str | None) -> SourceResult | None:
        return next((r for r in self.results if r.source == label), None) if label else None

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        out = Path(out_dir)
        rows = [r.row() for r in self.results]
        extra = {k: v for k, v in (("cache", self.cache), ("tune_on", self.tune_on), ("test_on", self.test_on),
                                   ("best_head", self.best_head), ("best_hidden", self.best_hidden)) if v is not None}
        curve = [row for r in self.results for row in r.curve_rows()]
        document = {"tolerance_s": self.tolerance_s, "boundary_convention": BOUNDARY_CONVENTION, "maps": self.maps,
                    "results": rows,
                    **extra, "strict_per_utterance": {r.source: r.per_utterance for r in self.results},
                    "pr_curve": curve}
        if self.ranking is not None:
            document["heads_by_r_value"] = self.ranking
        if self.test_ids:
            document["test_utterances"] = self.test_ids
        paths = {"csv": write_csv(out / self.CSV, rows), "json": write_json(out / self.JSON, document)}
        if curve:
            paths["pr_csv"] = write_csv(out / self.CURVE_CSV, curve)
        if self.ranking is not None:
            paths["heads"] = write_csv(out / self.RANKING_CSV, self.ranking)
        return paths


    @classmethod
    def load(cls, directory: str | Path) -> SegmentResults:
        file = Path(directory) / cls.JSON
        doc = Document(read_json(file), file)
        counts = doc.child("strict_per_utterance")
        curve = doc.children("pr_curve") if doc.has("pr_curve") else []
        results = []
        for row in doc.children("results"):
            label = row.text("source")
            per_utt = []
            if counts.has(label):
                for entry in counts.children(label):
                    per_utt.append({k: entry.integer(k, minimum=0) for k in COUNTS})
            points: dict[float, dict[str, Any]] = {}
            for point in curve:
                if point.text("source") != label:
                    continue
                mode = point.text("mode")
                if mode not in ("strict", "lenient"):
                    point.fail(f"{point.where}.mode must be 'strict' or 'lenient'")
                beta = point.number("beta", allow_missing_value=False)
                points.setdefault(beta, {"beta": beta})[mode] = {
                    k: point.number(k) for k in ("precision", "recall", "f1", "os", "r_value", "n_pred")}
            results.append(SourceResult.from_document(row, per_utt, [p for p in points.values()
                                                                      if {"strict", "lenient"} <= set(p)]))
        tolerance = doc.number("tolerance_s", allow_missing_value=False)
        if not 0 < tolerance < 1:
            doc.fail(f"tolerance_s must lie between 0 and 1 s, found {tolerance}")
        ranking = None
        if doc.has("heads_by_r_value"):
            ranking = [r.value for r in doc.children("heads_by_r_value")]
        test_ids = doc.items("test_utterances", [])
        if not all(isinstance(u, str) for u in test_ids):
            doc.fail("test_utterances must list utterance ids")
        if test_ids and any(r.per_utterance and len(r.per_utterance) != len(test_ids) for r in results):
            doc.fail("per-utterance counts and test_utterances disagree in length")
        out = cls(results, tolerance, doc.text("cache", None), doc.text("tune_on", None), doc.text("test_on", None),
                  doc.text("best_head", None), doc.text("best_hidden", None), ranking, list(test_ids),
                  _map_kind(doc))
        for label in (out.best_head, out.best_hidden):
            if label is not None and out.source(label) is None:
                doc.fail(f"names {label!r} as chosen, but has no results for it")
        return out


def _map_kind(doc) -> str:
    from satool.maps import MAP_KINDS

    kind = doc.text("maps", None) or "attention"  # results written before map kinds hold raw weights
    if kind not in MAP_KINDS:
        doc.fail(f"maps must name a map kind ({', '.join(MAP_KINDS)}), found {kind!r}")
    return kind


@dataclass
class SegmentationExample:
    """What paper Fig. 2 draws for one source and utterance: the frame vectors ``[frame, dim]`` at the
    10 ms label rate, their kernel-Gram matrix ``[frame, frame]``, the score curve ``[frame]`` and the
    predicted and reference boundaries (frame indices)."""

    utterance: str
    source: str
    kind: str  # attn | hidden | mfcc | mel
    frames: np.ndarray
    gram: np.ndarray
    score: np.ndarray
    predicted: np.ndarray
    reference: np.ndarray
    alpha: float
    beta: float
