"""The streaming pass shared by the stages that run straight from a checkpoint (`metric`, `relate`).

One process (or one shard ``--shard i/N`` of a job array) runs the model over its share of the corpus
(every N-th selected utterance from the i-th), reduces each utterance's maps into per-head sums as
they are made (:mod:`satool.analysis.streaming`) and saves those sums as
``OUT/partial/KIND-i-of-N.npz`` (:class:`~satool.results.partial.PartialSums`), atomically, every
``flush_every`` seconds and at the end. A rerun of a finished shard does nothing; a rerun of an
interrupted one resumes after the utterances its last saved state covers (same settings; other
settings restart it from the start). ``satool merge OUT`` adds the N shards' sums (:mod:`.merge`).

``keep_maps`` (the first N utterances of each shard) or ``keep_ids`` keeps those utterances' whole
maps in an attention cache ``OUT/maps`` for looking at (``satool view``, the metric figures).
``maps`` chooses the map kind reduced (satool.maps: raw weights, value-norm or rollout); the partial
sums record it, so shards of different kinds never merge.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from satool.stages import Log, Progress

KEPT_MAPS = "maps"  # OUT/maps: the attention cache of the kept utterances
ACCUMULATORS = ("scores", "relations", "segments")  # what make_sums may return, by name


@dataclass
class StreamInputs:
    """What a streaming stage passes in (its Settings' fields of the same names)."""

    checkpoint: Path
    corpus: Path
    out: Path
    alignments: Path | None = None
    split: list[str] | None = None
    max_utts: int | None = None
    max_frames: int | None = None
    layers: list[int] | None = None  # 1-based; None = every layer
    shard: tuple[int, int] | None = None
    block_mb: float = 256.0
    keep_maps: int = 0
    keep_ids: list[str] = field(default_factory=list)
    flush_every: float = 60.0
    device: str = "auto"
    maps: str = "attention"  # map kind reduced (satool.maps)
    aligned_only: bool = False  # select only utterances with phone alignments (max_utts counts those)
    layers_from: str = "--layers"  # the option that chose ``layers`` (named when one is out of range)
    hidden_states: list[int] = field(default_factory=list)  # hidden states a stage needs too (0 = embedding)


@dataclass
class StreamOutcome:
    partial: Any  # PartialSums of this shard
    file: Path
    shard: tuple[int, int]
    reduced: int  # utterances reduced by this process now
    resumed: int  # utterances an earlier, interrupted run of this shard had reduced
    already_finished: bool
    skipped: list[tuple[str, str]]
    step_s: float
    seconds: float
    audio_seconds: float


def run_stream(kind: str, inputs: StreamInputs, make_sums: Callable[[Any, Any], dict[str, Any]],
               restore: Callable[[dict[str, Any], dict], dict[str, Any]], draw: dict[str, Any],
               progress: Progress, log: Log) -> StreamOutcome:
    """Run (or resume) this process's shard of a ``kind`` pass.

    ``make_sums(model, corpus, layers) -> {"scores": ScoreSums, "relations": RelationSums, "segments":
    SegmentSums}`` (any of them) builds empty accumulators; ``restore(settings, partial)`` rebuilds them from a saved state.
    ``draw``: settings the final results need (the same in every shard)."""
    from satool.analysis.streaming import model_utterances, segmented_heads, stream
    from satool.data.corpus import open_corpus
    from satool.errors import InputError, UsageError
    from satool.models.loading import load_model
    from satool.plugins import get_plugins
    from satool.results.partial import PartialSums, shard_file_name
    from satool.stages.extract import world_shard

    if inputs.block_mb <= 0:
        raise UsageError("--block-mb must be > 0")
    bound_kernel_cache()
    index, count = world_shard(inputs.shard)
    plugins = get_plugins()
    model = load_model(inputs.checkpoint, device=inputs.device, loaders=plugins.models.objects())
    corpus = open_corpus(inputs.corpus, inputs.alignments, readers=plugins.corpora.objects())
    utterances = select_utterances(corpus, inputs.split, inputs.max_utts, aligned_only=inputs.aligned_only)
    ids = [u.id for u in utterances]
    if len(set(ids)) != len(ids):
        raise InputError("an utterance id occurs more than once in this corpus", path=inputs.corpus)
    model.require_maps(inputs.maps)
    layers = _layers(inputs.layers, model.num_layers, inputs.layers_from)
    sums = make_sums(model, corpus, layers)
    accumulators = [s for s in (sums.get(k) for k in ACCUMULATORS) if s is not None]
    settings = {
        "checkpoint": str(Path(inputs.checkpoint).resolve()), "sha256": model.provenance().get("sha256"),
        "corpus": str(Path(inputs.corpus).resolve()),
        "alignments": None if inputs.alignments is None else str(Path(inputs.alignments).resolve()),
        "split": inputs.split, "max_utts": inputs.max_utts, "aligned_only": inputs.aligned_only,
        "max_frames": inputs.max_frames,
        "selected": len(ids), "step_s": model.step_s, "maps": inputs.maps,
        "analysis": {k: v for s in accumulators for k, v in s.describe().items()}, "draw": draw,
    }
    shard_utts = [u for i, u in enumerate(utterances) if i % count == index]
    keep = _kept(utterances, count, inputs.keep_maps, inputs.keep_ids)
    out = Path(inputs.out)
    file = out / PartialSums.DIR / shard_file_name(kind, index, count)
    began = time.perf_counter()
    with _ShardLock(file):
        state = PartialSums.load(file) if file.exists() else None
        if state is not None and (state.settings != _plain(settings) or state.kind != kind):
            log(f"{file}: saved by a run with other settings; this shard starts again", "note:")
            state = None
        if state is not None and state.complete:
            log(f"shard {index}/{count} already finished: using its saved sums in {file} (delete it to run again)",
                "note:")
            progress.total(len(shard_utts), len(shard_utts))
            return StreamOutcome(state, file, (index, count), 0, len(state.utterances), True,
                                 [tuple(s) for s in state.info.get("skipped", [])], model.step_s, 0.0, 0.0)
        covered: list[str] = []
        skipped: list[tuple[str, str]] = []
        failed: dict[str, str] = {}
        if state is not None:
            sums = restore(state.settings["analysis"], {"arrays": state.arrays, "failed": state.info.get("failed", {}),
                                                        "where": file})
            covered = list(state.utterances)
            skipped = [tuple(s) for s in state.info.get("skipped", [])]
            log(f"resuming shard {index}/{count} after {len(covered)} utterances", "note:")
        resumed, earlier_skips = len(covered), len(skipped)
        done = set(covered)
        todo = [u for u in shard_utts if u.id not in done]
        scores, relations, segments = (sums.get(k) for k in ACCUMULATORS)

        def snapshot(complete: bool) -> PartialSums:
            arrays, reduce = {}, {}
            for s in (scores, relations, segments):
                if s is not None:
                    a, r = s.arrays()
                    arrays.update(a)
                    reduce.update(r)
            if scores is not None:
                failed.update(scores.failed)
            return PartialSums(kind, (index, count), _plain(settings), arrays, reduce, list(covered), complete,
                               {"failed": dict(failed), "skipped": [list(s) for s in skipped]})

        writer = _KeptMaps(out / KEPT_MAPS, model, corpus, inputs, layers, keep, index) if keep else None
        last_save = time.monotonic()
        audio = [0.0]
        new_skips: list[tuple[str, str]] = []
        progress.total(len(shard_utts), len(covered))

        def after(utt_id: str) -> None:
            nonlocal last_save
            while new_skips:  # utterances the corpus or the model refused before this one
                skipped.append(new_skips[0])
                covered.append(new_skips.pop(0)[0])
                progress.advance(1)
            covered.append(utt_id)
            progress.advance(1)
            if time.monotonic() - last_save >= inputs.flush_every:
                snapshot(False).save(out)
                last_save = time.monotonic()

        def on_maps(meta, maps) -> None:
            writer.add(meta, maps)

        only_segments = scores is None and relations is None and segments is not None and not keep
        items = model_utterances(model, corpus, todo, [layer - 1 for layer in layers], max_frames=inputs.max_frames,
                                 block_bytes=int(inputs.block_mb * 2**20), skipped=new_skips, maps=inputs.maps,
                                 hidden_states=inputs.hidden_states,
                                 heads=segmented_heads(segments) if only_segments else None,
                                 whole_maps=lambda utt: utt.id in keep or _needs_whole_maps(scores))

        def counted(items):
            for item in items:
                audio[0] += item.meta.duration_s or 0.0
                yield item

        try:
            stream(counted(items), scores=scores, relations=relations, segments=segments, on_utterance=after,
                   on_maps=on_maps,
                   keep=lambda meta: meta.id in keep)
        finally:
            if writer is not None:
                writer.close()
        for s in new_skips:
            skipped.append(s)
            covered.append(s[0])
            progress.advance(1)
        partial = snapshot(True)
        partial.save(out)
    for utt_id, reason in skipped[earlier_skips:]:
        log(f"{utt_id}: {reason}", "skipped")
    reduced = len(covered) - resumed
    return StreamOutcome(partial, file, (index, count), reduced, resumed, False, skipped, model.step_s,
                         time.perf_counter() - began, audio[0])


def one_of_several(outcome: StreamOutcome, out: Path, log: Log) -> bool:
    """True when ``outcome`` is one shard of several (its results wait for ``satool merge``); says so."""
    index, count = outcome.shard
    if count == 1:
        return False
    log(f"shard {index}/{count}: {'already finished' if outcome.already_finished else 'finished'}, "
        f"{len(outcome.partial.utterances)} utterances in {outcome.file}; once all {count} shards are done: "
        f"satool merge {out}", "note:")
    return True


def select_utterances(corpus, split: list[str] | None, max_utts: int | None, *, aligned_only: bool = False) -> list:
    """The utterances of ``split`` (all if None) a pass covers, in the corpus's order: the first
    ``max_utts`` of them, or of those with phone alignments (``aligned_only``)."""
    if not aligned_only:
        return corpus.select(split or None, max_utts)
    return [u for u in corpus.select(split or None) if u.alignment is not None][:max_utts]


KERNEL_CACHE_ENTRIES = "8"


def bound_kernel_cache() -> None:
    """Keep oneDNN's cache of compiled kernels small (``ONEDNN_PRIMITIVE_CACHE_CAPACITY``, unless the
    user set it): it keeps one entry per input shape (the convolutions of a wav2vec 2.0-style front
    end see every utterance length), up to 1,024 by default, which grew a stream's peak memory by
    140 MB over 1,000 utterances of many lengths; with 8 entries it stays flat (docs/scale.md). oneDNN
    reads the variable when it first compiles a kernel, so this works only before the process's
    first convolution, as in a command-line run."""
    import os

    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", KERNEL_CACHE_ENTRIES)


def _needs_whole_maps(scores) -> bool:
    from satool.analysis.streaming import blockwise

    return scores is not None and not all(blockwise(m) for m in scores.metrics)


def _layers(chosen: list[int] | None, available: int, option: str = "--layers") -> list[int]:
    from satool.errors import UsageError

    if chosen is None:
        return list(range(1, available + 1))
    bad = [c for c in chosen if not 1 <= c <= available]
    if bad:
        raise UsageError(f"{option}: layer {','.join(map(str, bad))} out of range (1..{available})")
    return sorted(set(chosen))


def _kept(utterances, count: int, keep_maps: int, keep_ids: list[str]) -> set[str]:
    """The utterances whose whole maps are kept: the first ``keep_maps`` of every shard, and ``keep_ids``
    (the same set in every shard, so the kept maps' cache has one plan)."""
    from satool.errors import UsageError

    known = {u.id for u in utterances}
    unknown = [u for u in keep_ids if u not in known]
    if unknown:
        raise UsageError(f"--keep-maps: utterance {unknown[0]!r} is not among the selected ones")
    kept = set(keep_ids)
    for shard in range(count):
        kept.update(u.id for u in utterances[shard::count][:keep_maps])
    return kept


def _plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples as lists, numpy scalars as numbers)."""
    import json

    from satool.results.files import json_ready

    return json.loads(json.dumps(json_ready(value)))


class _ShardLock:
    """An exclusive lock on one shard's partial sums: two processes never run the same shard."""

    def __init__(self, file: Path):
        self.path = file.with_suffix(".lock")

    def __enter__(self):
        import fcntl

        from satool.errors import BusyError

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(self.path, "a")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.fh.close()
            raise BusyError("another process is running this shard", path=self.path) from None
        return self

    def __exit__(self, *exc):
        self.fh.close()
        return False


class _KeptMaps:
    """The whole maps of the kept utterances, written into an attention cache (float16, like extract)."""

    def __init__(self, path: Path, model, corpus, inputs: StreamInputs, layers: list[int], keep: set[str], rank: int):
        from satool.cache import CacheWriter
        from satool.cache.schema import DEFAULT_COMPRESSION, build_manifest
        from satool.maps import heads_of

        planned = sorted(keep)
        manifest = build_manifest(
            model, corpus, corpus_path=inputs.corpus, alignments=inputs.alignments, layers=layers,
            heads=heads_of(inputs.maps, model.num_heads), hidden_states=[], planned=planned,
            compression=DEFAULT_COMPRESSION, maps=inputs.maps,
            settings={"split": inputs.split, "phone_set": corpus.phone_set.name, "max_utts": inputs.max_utts,
                      "max_frames": inputs.max_frames, "attention": True})
        self.writer = CacheWriter(path, manifest, rank=rank, compression=DEFAULT_COMPRESSION)
        self.writer.__enter__()
        self.order = {u: i for i, u in enumerate(planned)}

    def add(self, meta, maps) -> None:
        import dataclasses

        import numpy as np

        if meta.id in self.writer.done:
            return
        meta = dataclasses.replace(meta, order=self.order[meta.id])
        self.writer.add(meta.id, attention=maps.astype(np.float16), meta=meta)

    def close(self) -> None:
        self.writer.__exit__(None, None, None)
