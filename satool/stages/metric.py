"""Stage `metric`: every head's G, V, D, W (and plugin metrics), categories, offset profiles, figures."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from satool.models.base import DEFAULT_BLOCK_MB
from satool.stages import Log, NoProgress, Progress, quiet
from satool.stages.submit import Cluster
from satool.timebase import FRAME_S


@dataclass
class Settings:
    source: Path  # an attention cache, or a checkpoint (then ``corpus`` is needed)
    corpus: Path | None = None
    by: list[str] | None = None  # registered metric names; None = every one
    out: Path = Path("results/metric")
    top: int = 4  # heads per metric in the attention-map figure
    allow_partial: bool = False
    alignments: Path | None = None  # checkpoint mode
    split: list[str] | None = None
    max_utts: int | None = None
    max_frames: int | None = None
    device: str = "auto"  # cpu, cuda, mps or auto (checkpoint mode)
    # streaming from a checkpoint (satool.stages.streaming; docs/scale.md)
    layers: list[int] | None = None  # 1-based layers whose maps are computed; None = every layer
    shard: tuple[int, int] | None = None  # (i, N): this process's share; None = torchrun's RANK/WORLD_SIZE or all
    block_mb: float = DEFAULT_BLOCK_MB  # attention weights computed in query blocks of at most this many MB
    keep_maps: int = 0  # keep the whole maps of the first N utterances of each shard (OUT/maps, a cache)
    keep: list[str] | None = None  # and of these utterances
    flush_every: float = 60.0  # seconds between saves of a shard's partial sums (it resumes from the last)
    submit: str | None = None  # run the shards as a job array: "local" or "slurm" (satool.stages.submit)
    shards: int = 4  # with ``submit``: how many
    cluster: Cluster = field(default_factory=Cluster)
    # map kind (satool.maps): None = the cache's own kind (a cache holds one), raw weights from a checkpoint
    maps: str | None = None
    # metric results of the same heads on another map kind: both set side by side (maps_side_by_side.csv)
    beside: Path | None = None


@dataclass
class Outputs:
    scores: Any  # satool.results.metrics.HeadScores (merged with the earlier results of the same source)
    paths: dict[str, Path]
    kept: list[str] = field(default_factory=list)  # metrics kept from earlier results
    from_cache: bool = True
    stream: Any = None  # satool.stages.streaming.StreamOutcome of a checkpoint run
    beside: Any = None  # satool.results.maps.MapsSideBySide with ``Settings.beside``


def is_cache(path: Path) -> bool:
    return (Path(path) / "manifest.json").exists()


def run(settings: Settings, progress: Progress | None = None, log: Log = quiet) -> Outputs:
    beside = _beside_scores(settings.beside)  # fails before the pass, not after it
    outputs = _run(settings, progress, log)
    if beside is not None and outputs.scores is not None:
        from satool.analysis.maps import side_by_side

        outputs.beside = side_by_side(outputs.scores, beside)
        outputs.paths.update(outputs.beside.save(settings.out))
    return outputs


def _beside_scores(where: Path | None):
    if where is None:
        return None
    from satool.errors import UsageError
    from satool.results.metrics import HeadScores

    if not HeadScores.exists(where):
        raise UsageError(f"--beside {where}: no metric results there (run 'satool metric' on the other kind first)")
    return HeadScores.load(where)


def _run(settings: Settings, progress: Progress | None = None, log: Log = quiet) -> Outputs:
    from satool.errors import UsageError
    from satool.plugins import get_plugins

    progress = progress or NoProgress()
    plugins = get_plugins()
    registry = plugins.metrics
    metrics = [registry.get(n) for n in (settings.by or registry.names())]
    if is_cache(settings.source):
        from satool.analysis.scoring import score_cache
        from satool.cache import open_cache

        if settings.corpus is not None:
            raise UsageError(f"{settings.source} is a cache: CORPUS is only for checkpoints")
        if settings.shard is not None or settings.submit is not None:
            raise UsageError(f"{settings.source} is a cache: --shard and --submit are for checkpoints "
                             "(shard a cache with 'satool extract --shard')")
        cache = open_cache(settings.source)
        cache_kind(cache, settings.maps)
        cache.require_complete(settings.allow_partial, warn=lambda m: log(m, "warning:"))
        progress.total(len(cache.utterance_ids), 0)
        scores = score_cache(cache, metrics, progress=progress.advance)
        example_id = cache.utterance_ids[0]
        example = cache.attention(example_id)
        step_s = cache.frames_per_step * FRAME_S
    else:
        if settings.corpus is None:
            raise UsageError(f"{settings.source} is not a cache: give the CORPUS to run the model on")
        if settings.submit is not None:
            from satool.stages.submit import run_array

            return finish(run_array("metric", settings, progress, log), settings.out, log)
        from satool.stages.streaming import one_of_several

        outcome = stream_pass(settings, metrics, progress, log)
        if one_of_several(outcome, settings.out, log):
            return Outputs(None, {"partial": outcome.file}, [], False, outcome)
        result = finish(outcome.partial, settings.out, log, where=outcome.file)
        result.stream = outcome
        return result
    return _save(scores, settings.out, log, example_id, example, step_s, settings.top, True)


def cache_kind(cache, asked: str | None) -> str:
    """The cache's map kind, or a UsageError when ``--maps`` asks for another (a cache holds one kind,
    chosen at extraction)."""
    from satool.errors import UsageError
    from satool.maps import check_kind

    if asked is not None and check_kind(asked) != cache.maps:
        raise UsageError(f"{cache.path} holds {cache.maps} maps, not {asked}: extract a cache with --maps {asked} "
                         f"(or run from the checkpoint: satool metric CHECKPOINT CORPUS --maps {asked})")
    return cache.maps


def stream_pass(settings: Settings, metrics, progress, log):
    """This process's shard of a metric pass straight from the checkpoint (satool.stages.streaming)."""
    from satool.analysis.scoring import ScoreSums
    from satool.maps import DEFAULT_MAPS, heads_of
    from satool.stages.streaming import StreamInputs, run_stream

    kind = settings.maps or DEFAULT_MAPS

    def make_sums(model, corpus, layers):
        return {"scores": ScoreSums(metrics, layers, heads_of(kind, model.num_heads))}

    def restore(described, state):
        return {"scores": ScoreSums.from_arrays(described, state["arrays"], state["failed"], where=state["where"],
                                                   metrics=metrics)}

    inputs = StreamInputs(
        checkpoint=settings.source, corpus=settings.corpus, out=settings.out, alignments=settings.alignments,
        split=settings.split, max_utts=settings.max_utts, max_frames=settings.max_frames, layers=settings.layers,
        shard=settings.shard, block_mb=settings.block_mb, keep_maps=settings.keep_maps,
        keep_ids=list(settings.keep or []), flush_every=settings.flush_every, device=settings.device, maps=kind)
    return run_stream("metric", inputs, make_sums, restore, {"top": settings.top}, progress, log)


def finish(partial, out: Path, log: Log = quiet, where: Path | None = None) -> Outputs:
    """The results of a whole metric pass from its (merged) partial sums: saved and drawn in ``out``."""
    from satool.analysis.scoring import ScoreSums
    from satool.cache import open_cache
    from satool.errors import InputError
    from satool.stages.streaming import KEPT_MAPS

    settings = partial.settings
    try:
        sums = ScoreSums.from_arrays(settings["analysis"], partial.arrays, partial.info.get("failed", {}), where=where)
        source = {"checkpoint": str(settings["checkpoint"]), "corpus": str(settings["corpus"]),
                  "maps": str(settings.get("maps") or "attention")}
        step_s, top = float(settings["step_s"]), int(settings["draw"]["top"])
    except (KeyError, TypeError, ValueError):
        raise InputError("not the partial sums of a metric pass (settings incomplete)", path=where) from None
    if not (0 < step_s < 10 and top >= 1):
        raise InputError("the partial sums' settings hold an impossible step or figure size", path=where)
    scores = sums.scores(source)
    example_id, example = None, None
    if (Path(out) / KEPT_MAPS / "manifest.json").exists():
        kept = open_cache(Path(out) / KEPT_MAPS)
        if kept.utterance_ids and kept.layers == scores.layers and kept.heads == scores.heads:
            example_id = kept.utterance_ids[0]
            example = kept.attention(example_id)
    for utt_id, reason in partial.info.get("skipped", []):
        log(f"{utt_id}: {reason}", "skipped")
    return _save(scores, out, log, example_id, example, step_s, top, False)


def _save(scores, out: Path, log: Log, example_id, example, step_s: float, top: int, from_cache: bool) -> Outputs:
    from satool.output import metric as figures

    kept: list[str] = []
    previous = earlier_results(out, scores)
    if previous is not None:  # --by X adds or replaces X's columns; the other metrics stay
        kept = [n for n in previous.values if n not in scores.values]
        scores = scores.merged_into(previous)
        if kept:
            log(f"kept {', '.join(kept)} from the earlier results in {out} (same source and heads)", "note:")
    for name, reason in scores.failed.items():
        log(f"metric {name!r} failed and has no values: {reason}", "warning:")
    scores.example, scores.step_s = example_id, step_s
    paths = {**scores.save(out), **figures.draw(scores, out, example, k=top, step_s=step_s)}
    return Outputs(scores, paths, kept, from_cache)


def earlier_results(out: Path, scores):
    """Results already in ``out`` for the same source (cache and model), or None."""
    from satool.errors import InputError
    from satool.results.metrics import HeadScores

    if not HeadScores.exists(out):
        return None
    try:
        previous = HeadScores.load(out)
    except InputError:
        return None
    from satool.maps import kind_of

    same = all(previous.source.get(k) == scores.source.get(k) for k in ("cache", "sha256", "checkpoint", "corpus"))
    return previous if same and kind_of(previous.source) == kind_of(scores.source) else None


def record(workspace, settings: Settings, outputs: Outputs) -> None:
    if outputs.scores is None:  # one shard of several: nothing to record until 'satool merge'
        return
    paths = ({"cache": settings.source} if outputs.from_cache else
             {"checkpoint": settings.source, "corpus": settings.corpus})
    from satool.maps import kind_of

    workspace.record("metric", {**paths, "metrics": settings.out}, metrics=",".join(outputs.scores.values),
                     maps=kind_of(outputs.scores.source))
