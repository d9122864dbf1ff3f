"""Stage `segment`: phone boundaries from attention rows, hidden states, MFCC or log-Mel (kernel-Gram
method), tuned on one split and scored once on another, beside an evenly spaced baseline."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from satool.stages import Log, NoProgress, Progress, quiet


@dataclass
class Settings:
    cache: Path
    # sources: mfcc, mel, attn:L3.H7, hidden:S, plus attn:best (the head ranked best on the tuning split,
    # tuned on one half of it and scored on the other: the test split is never used to choose) and
    # hidden:all (every stored hidden state)
    features: list[str] = field(default_factory=lambda: ["mfcc"])
    tune_on: str = "dev"
    test_on: str = "test"
    tune_utts: int | None = None  # at most this many utterances of each split
    test_utts: int | None = None
    alpha: float | None = None
    beta: float | None = None
    tolerance: float = 0.02
    all_heads: bool = False  # tune on --tune-on and score on --test-on every head (heads_by_r_value.csv)
    curve_hidden: bool = True  # precision-recall sweep for hidden states too
    examples: list[str] | None = None  # sources drawn as Fig. 2 (default every requested source)
    example: str | None = None  # utterance of the figures (default the first test one)
    workers: int = 1  # processes ranking the heads (attn:best, all_heads); 0 = one per usable core
    out: Path = Path("results/segment")
    allow_partial: bool = False
    maps: str | None = None  # map kind of the attn: sources (satool.maps); None = the cache's own


@dataclass
class Outputs:
    results: Any  # satool.results.segment.SegmentResults
    paths: dict[str, Path]


def run(settings: Settings, progress: Progress | None = None, log: Log = quiet) -> Outputs:
    from satool.analysis.segmentation.study import (
        FeatureSource,
        FrameSource,
        aligned_ids,
        example,
        parse_sources,
        rank_heads,
        study,
    )
    from satool.cache import open_cache
    from satool.output import segment as figures
    from satool.plugins import get_plugins
    from satool.results.segment import SegmentResults

    progress = progress or NoProgress()
    from satool.stages.metric import cache_kind

    cache = open_cache(settings.cache)
    kind = cache_kind(cache, settings.maps)
    cache.require_complete(settings.allow_partial, warn=lambda m: log(m, "warning:"))
    wanted = [f for f in settings.features if f not in ("attn:best", "hidden:all")]
    sources = parse_sources(",".join(wanted)) if wanted else []
    frames = FrameSource(cache, readers=get_plugins().corpora.objects())
    frames.check(sources)  # before any work: heads, hidden states and the corpus exist
    fixed = settings.alpha is not None and settings.beta is not None
    test_ids = aligned_ids(cache, settings.test_on, option="--test-on")[: settings.test_utts]
    tune_ids = [] if fixed else aligned_ids(cache, settings.tune_on,
                                            option="--tune-on (or give --alpha and --beta)")[: settings.tune_utts]
    ranking, best_head = None, None
    if "attn:best" in settings.features:
        half = len(tune_ids) // 2
        progress.total(len(cache.layers) * len(cache.heads), 0)
        ranking = rank_heads(frames, tune_ids[:half], tune_ids[half:], tolerance=settings.tolerance,
                             progress=progress.advance, workers=_workers(settings.workers))
        best_head = FeatureSource("attn", ranking[0]["layer"], ranking[0]["head"])
    requested = []
    for name in settings.features:  # the order asked for
        if name == "attn:best":
            requested.append(best_head)
        elif name == "hidden:all":
            requested += [FeatureSource("hidden", h) for h in cache.hidden_states]
        else:
            requested.append(sources[wanted.index(name)])
    study_results = study(frames, requested, tune_ids, test_ids, tuned_on=None if fixed else settings.tune_on,
                          alpha=settings.alpha, beta=settings.beta, tolerance=settings.tolerance,
                          curve=lambda source: settings.curve_hidden or source.kind != "hidden",
                          progress=lambda label, done, total: (progress.total(total, done), progress.info(label)))
    hidden = [r for r in study_results if r.source.startswith("hidden:") and r.tune_r_value is not None]
    # the hidden state is chosen on the tuning split, like the head: the test split only scores it
    best_hidden = max(hidden, key=lambda r: r.tune_r_value).source if hidden else None
    examples = requested if settings.examples is None else [
        best_head if e == "attn:best" else parse_sources(e)[0] for e in settings.examples]
    if settings.all_heads and ranking is None:
        progress.total(len(cache.layers) * len(cache.heads), 0)
        ranking = rank_heads(frames, tune_ids or test_ids, test_ids, tolerance=settings.tolerance,
                             progress=progress.advance, workers=_workers(settings.workers))
    results = SegmentResults(study_results, settings.tolerance, str(settings.cache), settings.tune_on,
                             settings.test_on, best_head.label if best_head else None, best_hidden, ranking,
                             list(test_ids), kind)
    paths = {**results.save(settings.out), **figures.draw(results, settings.out)}
    example_id = settings.example or test_ids[0]
    for source in examples:
        chosen = results.source(source.label)
        paths[f"example {source.label}"] = figures.draw_example(
            example(frames, source, example_id, chosen.alpha, chosen.beta),
            settings.out / f"example_{source.label.replace(':', '_')}.png")
    return Outputs(results, paths)


def _workers(asked: int) -> int:
    """``asked`` processes, or one per core this process may use (0)."""
    import os

    if asked:
        return asked
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def record(workspace, settings: Settings, outputs: Outputs) -> None:
    workspace.record("segment", {"cache": settings.cache, "segment": settings.out}, features=",".join(settings.features))
