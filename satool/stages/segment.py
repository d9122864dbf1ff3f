"""Stage `segment`: phone boundaries from attention rows, hidden states, MFCC or log-Mel (kernel-Gram
method), tuned on one split and scored once on another, beside an evenly spaced baseline.

From an attention cache, or straight from a checkpoint over a corpus (``checkpoint`` and ``corpus``):
then alpha and beta are tuned on at most ``tune_utts`` (default :data:`STREAM_TUNE_UTTS`) tuning
utterances held in memory, and the test split is streamed, each utterance's maps segmented and
dropped, keeping counts only (:mod:`satool.analysis.segmentation.streamed`), in shards with
``shard`` or ``submit`` that ``satool merge`` adds up."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from satool.models.base import DEFAULT_BLOCK_MB
from satool.stages import Log, NoProgress, Progress, quiet
from satool.stages.submit import Cluster

STREAM_TUNE_UTTS = 100  # from a checkpoint, tuning holds this many utterances' features in memory at most


@dataclass
class Settings:
    cache: Path | None = None  # an attention cache with alignments; or ``checkpoint`` and ``corpus``
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
    # straight from a checkpoint (satool.stages.streaming; docs/scale.md): attn:L.H, hidden:S, mfcc, mel
    checkpoint: Path | None = None
    corpus: Path | None = None
    alignments: Path | None = None
    max_frames: int | None = None
    shard: tuple[int, int] | None = None  # (i, N): this process's share of the test split
    block_mb: float = DEFAULT_BLOCK_MB
    flush_every: float = 60.0
    submit: str | None = None  # "local" or "slurm": the shards as a job array (satool.stages.submit)
    shards: int = 4
    cluster: Cluster = field(default_factory=Cluster)
    device: str = "auto"


@dataclass
class Outputs:
    results: Any  # satool.results.segment.SegmentResults (None for one shard of several)
    paths: dict[str, Path]
    stream: Any = None  # satool.stages.streaming.StreamOutcome of a checkpoint run


def run(settings: Settings, progress: Progress | None = None, log: Log = quiet) -> Outputs:
    from satool.errors import UsageError

    if (settings.cache is None) == (settings.checkpoint is None):
        raise UsageError("give an attention cache, or a checkpoint and a corpus")
    if settings.checkpoint is not None:
        return _from_checkpoint(settings, progress or NoProgress(), log)
    if settings.shard is not None or settings.submit is not None:
        raise UsageError(f"{settings.cache} is a cache: --shard and --submit are for checkpoints "
                         "(shard a cache with 'satool extract --shard')")
    return _from_cache(settings, progress, log)


def _from_cache(settings: Settings, progress: Progress | None, log: Log) -> Outputs:
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


def _from_checkpoint(settings: Settings, progress: Progress, log: Log) -> Outputs:
    """Tune on the tuning split in memory, then stream the test split (this shard of it) counting."""
    from satool.analysis.segmentation import DEFAULT_BETAS
    from satool.analysis.segmentation.streamed import EVENLY, SegmentSums
    from satool.analysis.segmentation.study import boundary_rate, parse_sources, tune_source
    from satool.errors import InputError, UsageError
    from satool.stages.streaming import StreamInputs, one_of_several, run_stream, select_utterances

    if settings.corpus is None:
        raise UsageError(f"{settings.checkpoint}: give the CORPUS (with alignments) to run the model on")
    if "hidden:all" in settings.features:
        raise UsageError("hidden:all needs a cache: from a checkpoint, name the states (e.g. hidden:0,hidden:6)")
    unsupported = [f for f in settings.features if f == "attn:best"]
    if unsupported or settings.all_heads:
        what = unsupported[0] if unsupported else "--all-heads"
        raise UsageError(f"{what} needs a cache: from a checkpoint, segment streams attn:L.H, hidden:S, mfcc and mel "
                         "sources (rank the heads on a small cache: 'satool extract --split dev --max-utts 40 "
                         "--alignments ...', 'satool segment CACHE -f attn:best'; then stream the chosen head)")
    if settings.maps not in (None, "attention"):
        raise UsageError("from a checkpoint, segment reads raw attention weights: for other map kinds extract a "
                         "cache (satool extract --maps KIND)")
    if settings.examples or settings.example:
        raise UsageError("example figures need a cache (satool extract --keep ... then satool segment CACHE)")
    sources = parse_sources(",".join(settings.features))
    if settings.submit is not None:
        from satool.stages.submit import run_array

        return finish(run_array("segment", settings, progress, log), settings.out, log)
    fixed = settings.alpha is not None and settings.beta is not None
    inputs = StreamInputs(
        checkpoint=settings.checkpoint, corpus=settings.corpus, out=settings.out, alignments=settings.alignments,
        split=[settings.test_on], max_utts=settings.test_utts, aligned_only=True, max_frames=settings.max_frames,
        layers=sorted({s.layer for s in sources if s.kind == "attn"}), layers_from="--features attn:",
        shard=settings.shard, block_mb=settings.block_mb, flush_every=settings.flush_every, device=settings.device,
        hidden_states=sorted({s.layer for s in sources if s.kind == "hidden"}))
    tuned: list[dict[str, Any]] = []

    def make_sums(model, corpus, layers):
        from satool.heads import check

        check([(s.layer, s.head) for s in sources if s.kind == "attn"], range(1, model.num_layers + 1),
              range(1, model.num_heads + 1))
        states = len(model.hidden_state_names)
        bad = [s.label for s in sources if s.kind == "hidden" and not 0 <= s.layer < states]
        if bad:
            raise UsageError(f"--features {bad[0]}: this model has hidden states 0..{states - 1} "
                             f"({model.hidden_state_names[0]} .. {model.hidden_state_names[-1]})")
        tune = select_utterances(corpus, [settings.tune_on], settings.tune_utts or STREAM_TUNE_UTTS, aligned_only=True)
        if not tune:
            raise InputError(f"split {settings.tune_on!r} has no utterances with phone alignments (the evenly spaced "
                             "baseline's rate and the tuning come from it; choose one with --tune-on)",
                             path=settings.corpus)
        progress.info(f"tuning on {len(tune)} utterances")
        frames = _tuning_frames(model, corpus, tune, sources, inputs, log)
        metas = frames.pop(None)
        tuned[:] = [{"label": f"evenly spaced ({boundary_rate(metas):.1f}/s)", "kind": EVENLY, "alpha": float("nan"),
                     "beta": float("nan"), "tune_r_value": None, "n_tune": len(metas), "curve": False,
                     "rate": boundary_rate(metas)}]
        for source in sources:
            pairs = [(f, m.boundaries) for f, m in zip(frames[source.label], metas)] if not fixed else []
            alpha, beta, tune_r = tune_source(pairs, settings.alpha, settings.beta, tolerance=settings.tolerance,
                                              where=settings.corpus)
            tuned.append({"label": source.label, "kind": source.kind, "alpha": alpha, "beta": beta,
                          "tune_r_value": tune_r, "n_tune": 0 if fixed else len(metas),
                          "curve": settings.curve_hidden or source.kind != "hidden",
                          **({"layer": source.layer, "head": source.head} if source.kind == "attn" else {}),
                          **({"state": source.layer} if source.kind == "hidden" else {})})
        del frames
        test = select_utterances(corpus, [settings.test_on], settings.test_utts, aligned_only=True)
        return {"segments": SegmentSums(tuned, [u.id for u in test], DEFAULT_BETAS, settings.tolerance,
                                        None if fixed else settings.tune_on)}

    def restore(described, state):
        return {"segments": SegmentSums.from_arrays(described, state["arrays"], where=state["where"])}

    draw = {"tune_on": settings.tune_on, "test_on": settings.test_on}
    outcome = run_stream("segment", inputs, make_sums, restore, draw, progress, log)
    if one_of_several(outcome, settings.out, log):
        return Outputs(None, {"partial": outcome.file}, outcome)
    result = finish(outcome.partial, settings.out, log, where=outcome.file)
    result.stream = outcome
    return result


def _tuning_frames(model, corpus, utterances, sources, inputs, log: Log) -> dict:
    """Each source's frames of the tuning utterances (and their UtteranceMeta under the key None),
    computed as a stream computes the test utterances'. An utterance the corpus or the model refuses,
    or whose alignment gives no boundaries, is left out (and logged)."""
    from satool.analysis.segmentation.streamed import source_frames
    from satool.analysis.streaming import model_utterances, segmented_heads, stream

    skipped: list[tuple[str, str]] = []

    class Collect:  # what stream() feeds a SegmentSums, kept instead of counted
        def __init__(self):
            self.frames: dict = {None: [], **{s.label: [] for s in sources}}

        def heads(self):
            return sorted({(s.layer, s.head) for s in sources if s.kind == "attn"})

        def layers(self):
            return sorted({layer for layer, _ in self.heads()})

        def add_utterance(self, meta, wave, head_maps, hidden):
            if meta.boundaries is None:
                skipped.append((meta.id, "no phone boundaries"))
                return
            self.frames[None].append(meta)
            for s in sources:
                self.frames[s.label].append(source_frames(s.kind, meta, wave, head_maps.get((s.layer, s.head)),
                                                          hidden.get(s.layer)))

    collect = Collect()
    stream(model_utterances(model, corpus, utterances, [layer - 1 for layer in collect.layers()],
                            max_frames=inputs.max_frames, block_bytes=int(inputs.block_mb * 2**20), skipped=skipped,
                            hidden_states=inputs.hidden_states, heads=segmented_heads(collect)),
           segments=collect)
    for utt_id, reason in skipped:
        log(f"{utt_id}: {reason} (left out of the tuning)", "skipped")
    return collect.frames


def finish(partial, out: Path, log: Log = quiet, where: Path | None = None) -> Outputs:
    """The results of a whole streamed segmentation from its (merged) partial sums: saved and drawn in ``out``."""
    from satool.analysis.segmentation.streamed import SegmentSums
    from satool.errors import InputError
    from satool.output import segment as figures
    from satool.results.segment import SegmentResults

    try:
        sums = SegmentSums.from_arrays(partial.settings["analysis"], partial.arrays, where=where)
        draw = partial.settings["draw"]
        tune_on, test_on = str(draw["tune_on"]), str(draw["test_on"])
    except (KeyError, TypeError, ValueError):
        raise InputError("not the partial sums of a segmentation pass (settings incomplete)", path=where) from None
    for utt_id, reason in partial.info.get("skipped", []):
        log(f"{utt_id}: {reason}", "skipped")
    if not sums.seen.any():
        raise InputError(f"no test utterance of split {test_on!r} could be segmented", path=where)
    scored = sums.results()
    hidden = [r for r in scored if r.source.startswith("hidden:") and r.tune_r_value is not None]
    best_hidden = max(hidden, key=lambda r: r.tune_r_value).source if hidden else None  # chosen on tuning
    results = SegmentResults(scored, sums.tolerance, None, tune_on, test_on, None, best_hidden, None,
                             sums.scored_ids(), "attention")
    return Outputs(results, {**results.save(out), **figures.draw(results, out)})


def _workers(asked: int) -> int:
    """``asked`` processes, or one per core this process may use (0)."""
    import os

    if asked:
        return asked
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def record(workspace, settings: Settings, outputs: Outputs) -> None:
    if settings.cache is not None:
        workspace.record("segment", {"cache": settings.cache, "segment": settings.out},
                         features=",".join(settings.features))
    elif outputs.results is not None:
        workspace.record("segment", {"checkpoint": settings.checkpoint, "corpus": settings.corpus,
                                     "segment": settings.out}, features=",".join(settings.features))
