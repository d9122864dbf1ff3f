"""Stage `relate`: phone relation maps P'_h, P_U, P_h and concentrations of every head, and figures.

From an attention cache, or straight from a checkpoint over a corpus (``checkpoint`` and ``corpus``):
then the maps are reduced as they are made (satool.stages.streaming), in shards with ``shard`` or
``submit``, and ``satool merge`` adds the shards' sums.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from satool.models.base import DEFAULT_BLOCK_MB
from satool.stages import Log, NoProgress, Progress, quiet
from satool.stages.submit import Cluster


@dataclass
class Settings:
    cache: Path | None = None  # an attention cache with alignments; or ``checkpoint`` and ``corpus``
    heads: list[tuple[int, int]] | None = None  # (layer, head), 1-based, to draw; else the top ones by ``by``
    top: int = 4
    by: str = "verticality"  # from this pass; other metrics come from ``metrics`` results
    metrics: Path | None = None
    out: Path = Path("results/relate")
    allow_partial: bool = False
    # straight from a checkpoint (satool.stages.streaming; docs/scale.md)
    checkpoint: Path | None = None
    corpus: Path | None = None
    alignments: Path | None = None
    split: list[str] | None = None
    max_utts: int | None = None
    max_frames: int | None = None
    layers: list[int] | None = None  # 1-based layers whose maps are computed; None = every layer
    shard: tuple[int, int] | None = None  # (i, N): this process's share
    block_mb: float = DEFAULT_BLOCK_MB
    keep_maps: int = 0
    keep: list[str] | None = None
    flush_every: float = 60.0
    submit: str | None = None  # "local" or "slurm": the shards as a job array (satool.stages.submit)
    shards: int = 4
    cluster: Cluster = field(default_factory=Cluster)
    device: str = "auto"
    # map kind (satool.maps): None = the cache's own kind, raw weights from a checkpoint
    maps: str | None = None


@dataclass
class Outputs:
    relations: Any  # satool.results.relations.Relations (None for one shard of several)
    chosen: list[int]  # indices of the drawn heads
    paths: dict[str, Any]
    stream: Any = None  # satool.stages.streaming.StreamOutcome of a checkpoint run


def run(settings: Settings, progress: Progress | None = None, log: Log = quiet) -> Outputs:
    from satool.errors import UsageError

    progress = progress or NoProgress()
    if (settings.cache is None) == (settings.checkpoint is None):
        raise UsageError("give an attention cache, or a checkpoint and a corpus")
    if settings.checkpoint is not None:
        return _from_checkpoint(settings, progress, log)
    if settings.shard is not None or settings.submit is not None:
        raise UsageError(f"{settings.cache} is a cache: --shard and --submit are for checkpoints "
                         "(shard a cache with 'satool extract --shard')")
    from satool.analysis.relations import relate
    from satool.analysis.scoring import cache_stream
    from satool.cache import open_cache
    from satool.heads import check
    from satool.stages.metric import cache_kind

    cache = open_cache(settings.cache)
    kind = cache_kind(cache, settings.maps)
    cache.require_complete(settings.allow_partial, warn=lambda m: log(m, "warning:"))
    if settings.heads is not None:  # checked before the pass over the cache, not after it
        check(settings.heads, cache.layers, cache.heads)
    draw = _draw_settings(settings)
    _ranking(draw)  # a missing ranking fails before the pass, not after it
    progress.total(len(cache.utterance_ids), 0)
    relations = relate(cache_stream(cache, reuse_buffer=True), cache.layers, cache.heads, cache.phone_set,
                       progress=progress.advance)
    relations.maps = kind
    return _save(relations, draw, settings.out)


def _from_checkpoint(settings: Settings, progress, log) -> Outputs:
    from satool.analysis.relations import RelationSums
    from satool.errors import UsageError
    from satool.heads import check
    from satool.stages.streaming import StreamInputs, one_of_several, run_stream

    if settings.corpus is None:
        raise UsageError(f"{settings.checkpoint}: give the CORPUS (with alignments) to run the model on")
    draw = _draw_settings(settings)
    _ranking(draw)
    if settings.submit is not None:
        from satool.stages.submit import run_array

        return finish(run_array("relate", settings, progress, log), settings.out, log)

    from satool.maps import DEFAULT_MAPS, heads_of

    kind = settings.maps or DEFAULT_MAPS

    def make_sums(model, corpus, layers):
        heads = heads_of(kind, model.num_heads)
        if settings.heads is not None:
            check(settings.heads, layers, heads)
        return {"relations": RelationSums(layers, heads, list(corpus.phone_set.names))}

    def restore(described, state):
        return {"relations": RelationSums.from_arrays(described, state["arrays"], where=state["where"])}

    inputs = StreamInputs(
        checkpoint=settings.checkpoint, corpus=settings.corpus, out=settings.out, alignments=settings.alignments,
        split=settings.split, max_utts=settings.max_utts, max_frames=settings.max_frames, layers=settings.layers,
        shard=settings.shard, block_mb=settings.block_mb, keep_maps=settings.keep_maps,
        keep_ids=list(settings.keep or []), flush_every=settings.flush_every, device=settings.device, maps=kind)
    outcome = run_stream("relate", inputs, make_sums, restore, draw, progress, log)
    if one_of_several(outcome, settings.out, log):
        return Outputs(None, [], {"partial": outcome.file}, outcome)
    result = finish(outcome.partial, settings.out, log, where=outcome.file)
    result.stream = outcome
    return result


def finish(partial, out: Path, log: Log = quiet, where: Path | None = None) -> Outputs:
    """The results of a whole relation pass from its (merged) partial sums: saved and drawn in ``out``."""
    from satool.analysis.relations import RelationSums
    from satool.errors import InputError

    try:
        sums = RelationSums.from_arrays(partial.settings["analysis"], partial.arrays, where=where)
        draw = partial.settings["draw"]
        draw = {"heads": None if draw["heads"] is None else [(int(a), int(b)) for a, b in draw["heads"]],
                "top": int(draw["top"]), "by": str(draw["by"]), "metrics": draw["metrics"]}
    except (KeyError, TypeError, ValueError):
        raise InputError("not the partial sums of a relation pass (settings incomplete)", path=where) from None
    for utt_id, reason in partial.info.get("skipped", []):
        log(f"{utt_id}: {reason}", "skipped")
    relations = sums.relations()
    relations.maps = str(partial.settings.get("maps") or "attention")
    return _save(relations, draw, out)


def _draw_settings(settings: Settings) -> dict[str, Any]:
    return {"heads": settings.heads, "top": settings.top, "by": settings.by,
            "metrics": None if settings.metrics is None else str(settings.metrics)}


def _ranking(draw: dict[str, Any]):
    """The metric results ranking the drawn heads (None: verticality of this pass, or chosen heads)."""
    from satool.errors import UsageError
    from satool.results.metrics import HeadScores

    if draw["heads"] is not None or draw["by"] == "verticality":
        return None
    if draw["metrics"] is None:
        raise UsageError(f"no metric results to rank heads by {draw['by']!r}: run 'satool metric --by "
                         f"{draw['by']}' first")
    scores = HeadScores.load(draw["metrics"])
    if draw["by"] not in scores.values:
        raise UsageError(f"{draw['metrics']}: no {draw['by']!r} values (run 'satool metric --by {draw['by']}')")
    return scores


def _save(relations, draw: dict[str, Any], out: Path) -> Outputs:
    import numpy as np

    from satool.analysis.relations import select_heads, top_heads
    from satool.output import relate as figures

    scores = _ranking(draw)
    if draw["heads"] is not None:
        chosen = select_heads(relations, draw["heads"])
    elif scores is None:
        chosen = top_heads(relations.verticality, draw["top"])
    else:
        values = np.array([scores.values[draw["by"]][scores.index(int(layer), int(head))]
                           for layer, head in zip(relations.layers, relations.heads)])
        chosen = top_heads(values, draw["top"])
    return Outputs(relations, chosen, {**relations.save(out), **figures.draw(relations, chosen, out)})


def record(workspace, settings: Settings, outputs: Outputs) -> None:
    if settings.cache is not None:
        workspace.record("relate", {"cache": settings.cache, "relate": settings.out})
    elif outputs.relations is not None:
        workspace.record("relate", {"checkpoint": settings.checkpoint, "corpus": settings.corpus,
                                    "relate": settings.out})
