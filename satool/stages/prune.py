"""Stage `prune`: prune heads cumulatively in each metric's order (and random orders) or limit the
attention span, and measure what the probes lose (paper Fig. 5 and 6)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from satool.analysis.probing.tasks import ProbeSettings
from satool.stages import Log, NoProgress, Progress, quiet
from satool.stages.probe import Data


@dataclass
class Settings:
    data: Data
    by: list[str] = field(default_factory=lambda: ["globalness", "verticality", "diagonality", "weight", "random"])
    tasks: list[str] = field(default_factory=lambda: ["phone", "speaker", "speaker-utt"])
    step: int | None = None  # heads per level (default all / 12)
    levels: list[int] | None = None  # or these numbers of pruned heads (0 is always added)
    random_seeds: int = 5  # their spread is the noise the report's verdicts compare with
    spans: list[int] | None = None  # span pruning instead: r values
    metrics: Path | None = None  # 'satool metric' results (orders)
    layer: int = -1
    probing: ProbeSettings = field(default_factory=ProbeSettings)  # training budget (at most steps; early stop)
    seed: int = 0
    out: Path = Path("results/prune")
    maps: str | None = None  # map kind the ``metrics`` must describe (satool.maps); None = whichever they do


@dataclass
class Outputs:
    sweep: Any  # satool.results.prune.PruneSweep (or SpanSweep with ``spans``)
    paths: dict[str, Path]
    configurations: int  # distinct pruned models represented
    skipped: list[tuple[str, str]]


def run(settings: Settings, progress: Progress | None = None, log: Log = quiet) -> Outputs:
    from satool.analysis.probing.passes import Configuration, ProbeData
    from satool.analysis.pruning import distinct, plan, sweep_heads, sweep_spans, work_count
    from satool.output import prune as figures
    from satool.plugins import get_plugins
    from satool.results.metrics import HeadScores
    from satool.results.prune import RANDOM
    from satool.stages.probe import open_data, resolve_tasks, state_index

    progress = progress or NoProgress()
    for name in settings.by:
        if name != RANDOM:
            get_plugins().metrics.get(name)  # unknown names fail here, with the known ones listed
    model, corpus, train, test = open_data(settings.data)
    tasks = resolve_tasks(settings.tasks, model)
    state = state_index(model, settings.layer)
    probe = settings.probing
    need_recon = any("reconstruction" in t.needs for t in tasks)
    total = model.num_layers * model.num_heads
    scores = None
    if (any(n != RANDOM for n in settings.by) or settings.spans is None) and HeadScores.exists(settings.metrics):
        scores = HeadScores.load(settings.metrics)
        _check_orders(scores, settings.metrics, log, settings.maps)
    progress.total(len(train) + len(test), 0)
    data = [ProbeData(model, corpus, utts, reconstruction=need_recon, max_frames=settings.data.max_frames,
                      progress=progress.advance) for utts in (train, test)]
    pair = (data[0], data[1])
    device = str(getattr(model, "device", "cpu"))
    common = {"seed": settings.seed, "settings": probe, "state": state, "device": device, "progress": progress.advance}
    if settings.spans is not None:
        spans = [None, *settings.spans]
        configurations = [Configuration(None, span, state) for span in spans]
        what = f"{len(configurations)} spans x {len(tasks)} probes"
        measure = lambda: sweep_spans(pair, spans, tasks, **common)  # noqa: E731
    else:
        orders = plan(settings.by, scores, model.num_layers, model.num_heads, step=settings.step,
                      random_seeds=range(settings.random_seeds), chosen_levels=settings.levels)
        configurations = distinct([Configuration.pruned(model.num_layers, model.num_heads, order[:level], state)
                                   for many in orders.orders.values() for order in many for level in orders.levels])
        points = sum(len(o) for o in orders.orders.values()) * len(orders.levels)
        what = f"{points} points, {len(configurations)} pruned models x {len(tasks)} probes"
        measure = lambda: sweep_heads(pair, orders, tasks, **common)  # noqa: E731
    progress.total(work_count(pair, configurations, tasks), 0)
    progress.info(what)
    sweep = measure()
    for row in sweep.rows:
        row.layer = settings.layer
    if settings.spans is not None:
        paths = {**sweep.save(settings.out), **figures.draw_spans(sweep, settings.out)}
    else:
        first = orders.levels[1] if len(orders.levels) > 1 else 1
        paths = {**sweep.save(settings.out),
                 **figures.draw_sweep(sweep, settings.out, total_heads=total, scores=scores, first=first)}
    skipped = data[0].skipped + data[1].skipped
    for utt, reason in skipped[:5]:
        log(f"{utt}: {reason}", "skipped")
    return Outputs(sweep, paths, len(configurations), skipped)


def _check_orders(scores, where, log: Log, asked: str | None = None) -> None:
    """Metric results of rollout maps (one per layer) order no heads: a UsageError; value-norm orders are
    orders of real heads, said in a note. ``asked``: the kind the results must describe (``--maps``)."""
    from satool.errors import UsageError
    from satool.maps import ATTENTION, PER_LAYER, check_kind, kind_of

    kind = kind_of(scores.source)
    if asked is not None and check_kind(asked) != kind:
        raise UsageError(f"{where}: metrics of {kind} maps, not {asked}: run 'satool metric' on a cache extracted "
                         f"with --maps {asked} and pass its results with --metrics")
    if kind in PER_LAYER:
        raise UsageError(f"{where}: metrics of {kind} maps (one map per layer) cannot order heads for pruning; "
                         "use metric results of an attention or value-norm cache")
    if kind != ATTENTION:
        log(f"pruning orders from metrics of {kind} maps ({where}); pruning still zeroes each head's weights", "note:")


def record(workspace, settings: Settings, outputs: Outputs) -> None:
    d = settings.data
    workspace.record("prune", {"checkpoint": d.checkpoint, "corpus": d.corpus, "alignments": d.alignments,
                               "prune": settings.out}, by=",".join(settings.by), task=",".join(settings.tasks))
