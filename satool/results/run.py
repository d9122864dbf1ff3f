"""A run: every result one model's study saved in a directory, loaded as typed results.

A run directory is what ``satool demo`` writes, or any directory where stages ran with a
``satool.toml`` (the workspace records where each stage wrote its results; ``results/<stage>`` is
looked at when it does not). :meth:`RunResults.load` loads every result it finds, each checked as it
is read; a result that is absent is None. ``satool report`` and ``satool compare`` read runs this way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from satool.errors import InputError
from satool.results.files import Document, read_json
from satool.results.health import HealthCheck
from satool.results.maps import MapsSideBySide
from satool.results.metrics import HeadScores
from satool.results.probe import ProbeResults
from satool.results.prune import PruneSweep, SpanSweep
from satool.results.relations import Relations
from satool.results.segment import SegmentResults

# workspace path name -> default folder under DIR/results
RESULT_DIRS = {"health": "health", "metrics": "metric", "segment": "segment", "relate": "relate", "probe": "probe",
               "prune": "prune", "spans": "spans"}
DEMO_STATE = "demo-state.json"
# attribute of RunResults <- typed result, read from the folder of that workspace path (in this order)
LOADED = (("health", HealthCheck, "health"), ("metrics", HeadScores, "metrics"), ("segment", SegmentResults, "segment"),
          ("relations", Relations, "relate"), ("probe", ProbeResults, "probe"), ("prune", PruneSweep, "prune"),
          ("spans", SpanSweep, "spans"), ("spans", SpanSweep, "prune"),
          ("maps_side_by_side", MapsSideBySide, "metrics"))


@dataclass
class RunResults:
    """The results of one run (None where a stage did not run). ``name``: how studies label it."""

    directory: Path
    name: str
    paths: dict[str, Path | None] = field(default_factory=dict)  # checkpoint, corpus, cache, result dirs
    health: HealthCheck | None = None
    metrics: HeadScores | None = None
    segment: SegmentResults | None = None
    relations: Relations | None = None
    probe: ProbeResults | None = None
    prune: PruneSweep | None = None
    spans: SpanSweep | None = None
    maps_side_by_side: MapsSideBySide | None = None  # the metrics beside those of another map kind
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)  # demo stages: seconds, model provenance
    corpus: dict[str, Any] | None = None  # the synthetic corpus's manifest (hours, counts)

    @property
    def model(self) -> dict[str, Any] | None:
        """The shipped reference model's provenance, when the run analysed one."""
        reference = self.stages.get("model", {}).get("reference")
        return reference if isinstance(reference, dict) else None

    @property
    def mask_span(self) -> int | None:
        """Cnum of the model, when its provenance says."""
        span = ((self.model or {}).get("training_settings") or {}).get("mask_span")
        return span if isinstance(span, int) and not isinstance(span, bool) else None

    @classmethod
    def load(cls, directory: str | Path, name: str | None = None) -> RunResults:
        from satool.workspace import Workspace

        directory = Path(directory).resolve()
        if not directory.is_dir():
            raise InputError("not a directory", path=directory)
        workspace = Workspace(directory / "satool.toml")
        paths: dict[str, Path | None] = {k: workspace.path(k) for k in ("checkpoint", "corpus", "cache")}
        for key, folder in RESULT_DIRS.items():
            recorded = workspace.path(key)
            candidate = directory / "results" / folder
            paths[key] = recorded if recorded is not None else (candidate if candidate.is_dir() else None)
        run = cls(directory, name or directory.name, paths)
        for attribute, result, where in LOADED:
            if getattr(run, attribute) is None and result.exists(paths[where]):
                setattr(run, attribute, result.load(paths[where]))
        if (directory / DEMO_STATE).is_file():
            run.stages = _stages(directory / DEMO_STATE)
        manifest = paths["corpus"] / "manifest.json" if paths["corpus"] else None
        if manifest is not None and manifest.is_file():
            run.corpus = _corpus_summary(manifest)
        if not any((run.health, run.metrics, run.segment, run.relations, run.probe, run.prune, run.spans)):
            raise InputError("no satool results here (no satool.toml paths and no results/ directory)",
                             path=directory)
        return run


def _stages(file: Path) -> dict[str, dict[str, Any]]:
    doc = Document(read_json(file), file)
    done = doc.child("done", {})
    out = {}
    for stage in done.value:
        entry = done.child(stage)
        seconds = entry.number("seconds", 0.0)
        out[stage] = {**entry.value, "seconds": seconds}
        if "reference" in entry.value:
            entry.child("reference")  # must be an object
    return out


def _corpus_summary(file: Path) -> dict[str, Any]:
    doc = Document(read_json(file), file)
    counts = doc.child("counts", {}).value
    return {"total_hours": doc.number("total_hours", float("nan")),
            "counts": {str(k): v for k, v in counts.items() if isinstance(v, int) and not isinstance(v, bool)}}
