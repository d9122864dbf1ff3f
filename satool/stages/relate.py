"""Stage `relate`: phone relation maps P'_h, P_U, P_h and concentrations of every head, and figures."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from satool.stages import Log, NoProgress, Progress, quiet


@dataclass
class Settings:
    cache: Path
    heads: list[tuple[int, int]] | None = None  # (layer, head), 1-based, to draw; else the top ones by ``by``
    top: int = 4
    by: str = "verticality"  # from this pass; other metrics come from ``metrics`` results
    metrics: Path | None = None
    out: Path = Path("results/relate")
    allow_partial: bool = False


@dataclass
class Outputs:
    relations: Any  # satool.results.relations.Relations
    chosen: list[int]  # indices of the drawn heads
    paths: dict[str, Any]


def run(settings: Settings, progress: Progress | None = None, log: Log = quiet) -> Outputs:
    import numpy as np

    from satool.analysis.relations import relate, select_heads, top_heads
    from satool.analysis.scoring import cache_stream
    from satool.cache import open_cache
    from satool.errors import UsageError
    from satool.heads import check
    from satool.output import relate as figures
    from satool.results.metrics import HeadScores

    progress = progress or NoProgress()
    cache = open_cache(settings.cache)
    cache.require_complete(settings.allow_partial, warn=lambda m: log(m, "warning:"))
    if settings.heads is not None:  # checked before the pass over the cache, not after it
        check(settings.heads, cache.layers, cache.heads)
    scores = None
    if settings.heads is None and settings.by != "verticality":
        if settings.metrics is None:
            raise UsageError(f"no metric results to rank heads by {settings.by!r}: run 'satool metric --by "
                             f"{settings.by}' first")
        scores = HeadScores.load(settings.metrics)
        if settings.by not in scores.values:
            raise UsageError(f"{settings.metrics}: no {settings.by!r} values (run 'satool metric --by {settings.by}')")
    progress.total(len(cache.utterance_ids), 0)
    relations = relate(cache_stream(cache, reuse_buffer=True), cache.layers, cache.heads, cache.phone_set,
                       progress=progress.advance)
    if settings.heads is not None:
        chosen = select_heads(relations, settings.heads)
    elif scores is None:
        chosen = top_heads(relations.verticality, settings.top)
    else:
        values = np.array([scores.values[settings.by][scores.index(int(layer), int(head))]
                           for layer, head in zip(relations.layers, relations.heads)])
        chosen = top_heads(values, settings.top)
    return Outputs(relations, chosen, {**relations.save(settings.out), **figures.draw(relations, chosen, settings.out)})


def record(workspace, settings: Settings, outputs: Outputs) -> None:
    workspace.record("relate", {"cache": settings.cache, "relate": settings.out})
