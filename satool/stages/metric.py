"""Stage `metric`: every head's G, V, D, W (and plugin metrics), categories, offset profiles, figures."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from satool.stages import Log, NoProgress, Progress, quiet
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


@dataclass
class Outputs:
    scores: Any  # satool.results.metrics.HeadScores (merged with the earlier results of the same source)
    paths: dict[str, Path]
    kept: list[str] = field(default_factory=list)  # metrics kept from earlier results
    from_cache: bool = True


def is_cache(path: Path) -> bool:
    return (Path(path) / "manifest.json").exists()


def run(settings: Settings, progress: Progress | None = None, log: Log = quiet) -> Outputs:
    from satool.errors import UsageError
    from satool.output import metric as figures
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
        cache = open_cache(settings.source)
        cache.require_complete(settings.allow_partial, warn=lambda m: log(m, "warning:"))
        progress.total(len(cache.utterance_ids), 0)
        scores = score_cache(cache, metrics, progress=progress.advance)
        example_id = cache.utterance_ids[0]
        example = cache.attention(example_id)
        step_s = cache.frames_per_step * FRAME_S
    else:
        from satool.analysis.scoring import model_stream, score_heads
        from satool.data.corpus import open_corpus
        from satool.models.loading import load_model

        if settings.corpus is None:
            raise UsageError(f"{settings.source} is not a cache: give the CORPUS to run the model on")
        model = load_model(settings.source, device=settings.device, loaders=plugins.models.objects())
        opened = open_corpus(settings.corpus, settings.alignments, readers=plugins.corpora.objects())
        utterances = opened.select(settings.split or None, settings.max_utts)
        skipped: list = []
        first: dict = {}
        progress.total(len(utterances), 0)
        stream = model_stream(model, opened, utterances, max_frames=settings.max_frames, skipped=skipped, first=first)
        scores = score_heads(stream, metrics, list(range(1, model.num_layers + 1)), list(range(1, model.num_heads + 1)),
                             progress=progress.advance,
                             source={"checkpoint": str(settings.source), "corpus": str(settings.corpus)})
        progress.advance(len(skipped))
        for utt, reason in skipped:
            log(f"{utt}: {reason}", "skipped")
        example_id, example = first.get("id"), first.get("attention")
        step_s = model.step_s
    kept: list[str] = []
    previous = earlier_results(settings.out, scores)
    if previous is not None:  # --by X adds or replaces X's columns; the other metrics stay
        kept = [n for n in previous.values if n not in scores.values]
        scores = scores.merged_into(previous)
        if kept:
            log(f"kept {', '.join(kept)} from the earlier results in {settings.out} (same cache and heads)", "note:")
    for name, reason in scores.failed.items():
        log(f"metric {name!r} failed and has no values: {reason}", "warning:")
    scores.example, scores.step_s = example_id, step_s
    paths = {**scores.save(settings.out), **figures.draw(scores, settings.out, example, k=settings.top, step_s=step_s)}
    return Outputs(scores, paths, kept, is_cache(settings.source))


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
    same = all(previous.source.get(k) == scores.source.get(k) for k in ("cache", "sha256", "checkpoint", "corpus"))
    return previous if same else None


def record(workspace, settings: Settings, outputs: Outputs) -> None:
    paths = ({"cache": settings.source} if outputs.from_cache else
             {"checkpoint": settings.source, "corpus": settings.corpus})
    workspace.record("metric", {**paths, "metrics": settings.out}, metrics=",".join(outputs.scores.values))
