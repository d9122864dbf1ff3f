"""Stage `compare`: several runs side by side (the paper's M3 / M6 / M9 design): one table per
measurement across models with its noise, figures, and a verdict on every finding, including those
that compare mask spans (satool.analysis.comparison, satool.analysis.study_verdicts)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from satool.stages import Log, NoProgress, Progress, quiet


@dataclass
class Settings:
    runs: list[Path]  # run directories (each with satool.toml or results/), in the order to show
    names: list[str] | None = None  # default: each directory's name
    spans: list[int] | None = None  # mask span Cnum of each run's model (default: read from its checkpoint)
    out: Path = Path("study")
    judge: bool = True  # False: every verdict inconclusive (sizes too small to measure the noise)
    why_not: str = ""  # the reason given when judge is False


@dataclass
class Outputs:
    study: Any  # satool.results.study.Study
    comparison: Any  # satool.results.study.Comparison
    verdicts: Any  # satool.results.verdicts.VerdictReport
    report: Path
    paths: dict[str, Path] = field(default_factory=dict)


def run(settings: Settings, progress: Progress | None = None, log: Log = quiet) -> Outputs:
    from satool.analysis.comparison import compare, heads_that_matter
    from satool.analysis.study_verdicts import judge_study
    from satool.errors import UsageError
    from satool.output import compare as figures
    from satool.output import relate as relation_figures
    from satool.results.study import Study

    progress = progress or NoProgress()
    if not settings.runs:
        raise UsageError("give at least one run directory to compare")
    if settings.spans is not None and len(settings.spans) != len(settings.runs):
        raise UsageError(f"--spans gives {len(settings.spans)} values for {len(settings.runs)} runs")
    progress.total(len(settings.runs) + 3, 0)
    study = Study.load(list(settings.runs), settings.names, settings.spans)
    curves = {}
    for i, run in enumerate(study.runs):
        checkpoint = run.paths.get("checkpoint")
        found_span, curves[run.name] = _from_checkpoint(checkpoint, log)
        if study.spans[i] is None:
            study.spans[i] = found_span
        progress.advance()
    comparison = compare(study, curves)
    progress.advance()
    verdicts = judge_study(study, judge=settings.judge, why_not=settings.why_not)
    for model in comparison.models:
        state = verdicts.health.get(model["name"])
        model["healthy"] = None if state is None else state.passed
    out = Path(settings.out)
    paths = {**comparison.save(out), **{f"verdicts_{k}": p for k, p in verdicts.save(out).items()}}
    progress.advance()
    drawn = figures.draw(comparison, out)
    maps = {}
    for run in study.runs:
        if run.relations is None or run.metrics is None:
            continue
        index = {(int(a), int(b)): i for i, (a, b) in enumerate(zip(run.relations.layers, run.relations.heads))}
        chosen = [index[h] for h in heads_that_matter(run.metrics) if h in index]
        maps[run.name] = relation_figures.draw(run.relations, chosen, out / "relations", prefix=f"{run.name}_")["maps"]
    report = figures.render(study, comparison, verdicts, drawn, out / "report.html", relation_maps=maps)
    progress.advance()
    return Outputs(study, comparison, verdicts, report, {**paths, **drawn})


def _from_checkpoint(checkpoint: Path | None, log: Log):
    """(mask span Cnum, TrainingCurves) recorded in a satool checkpoint, (None, None) when there is none."""
    if checkpoint is None or not Path(checkpoint).is_file():
        return None, None
    from satool.errors import InputError
    from satool.models.mockingjay.checkpoint import load_checkpoint
    from satool.results.training import TrainingCurves
    from satool.timebase import FRAME_S

    try:
        loaded = load_checkpoint(checkpoint)
    except InputError as exc:
        log(f"{exc}: no mask span or training curves from it", "note:")
        return None, None
    span = (loaded.task or {}).get("mask_consecutive_min")
    span = span if isinstance(span, int) and not isinstance(span, bool) and span > 0 else None
    try:
        curves = TrainingCurves.of_checkpoint(loaded.satool, 1000 * loaded.config.downsample_rate * FRAME_S)
    except InputError as exc:
        log(f"{checkpoint}: {exc.message}; its training curves are left out", "warning:")
        return span, None
    return span, curves if curves.head_checks else None


def record(workspace, settings: Settings, outputs: Outputs) -> None:
    workspace.record("compare", {"report": outputs.report}, runs=",".join(str(r) for r in settings.runs))
