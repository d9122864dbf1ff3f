"""Scoring every head with head metrics in one streaming pass (`satool metric`).

Utterances arrive one at a time as ``(attn[layer, head, query, key], meta)``
(from a cache, or straight from a model for corpora whose maps would not fit
on disk); every registered metric turns them into ``[layer, head]`` values,
which are accumulated over the corpus (mean, max or min; NaN values are left
out). The result is a :class:`~satool.results.metrics.HeadScores`, which ranks heads per metric,
assigns categories (docs/science.md §3) and saves itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from satool.analysis.metrics import HeadMetric
from satool.cache import to_float32
from satool.errors import InputError
from satool.prefetch import prefetched
from satool.results.metrics import HeadScores
from satool.timebase import frames_to_seconds
from satool.utterance import UtteranceMeta

BOOTSTRAP_REPLICATES = 200  # bootstrap replicates over utterances accumulated by every metric pass


class _Accumulator:
    def __init__(self, metric: HeadMetric, shape: tuple[int, int]):
        self.metric = metric
        self.count = np.zeros(shape, dtype=np.int64)
        fill = {"mean": 0.0, "max": -np.inf, "min": np.inf}[metric.reduce]
        self.total = np.full(shape, fill, dtype=np.float64)

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64)
        if values.shape != self.total.shape:
            raise ValueError(
                f"metric {self.metric.name!r} returned shape {values.shape}, expected {self.total.shape}"
            )
        ok = ~np.isnan(values)
        self.count += ok
        if self.metric.reduce == "mean":
            self.total[ok] += values[ok]
        elif self.metric.reduce == "max":
            self.total[ok] = np.maximum(self.total[ok], values[ok])
        else:
            self.total[ok] = np.minimum(self.total[ok], values[ok])

    def result(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            out = self.total / self.count if self.metric.reduce == "mean" else self.total.copy()
        out[self.count == 0] = np.nan
        return out


def score_heads(
    stream: Iterable[tuple[np.ndarray, dict[str, Any]]],
    metrics: Sequence[HeadMetric],
    layers: list[int],
    heads: list[int],
    *,
    progress: Callable[[int], None] | None = None,
    source: dict[str, Any] | None = None,
    replicates: int = BOOTSTRAP_REPLICATES,
) -> HeadScores:
    """Accumulate ``metrics`` over a stream of ``(attn[layer, head, query, key], meta)``.

    Besides the corpus means, ``replicates`` bootstrap replicates over utterances are accumulated in
    the same pass (the Poisson bootstrap: replicate b weighs utterance u by a Poisson(1) count drawn
    from a generator seeded by the utterance id, so the replicates do not depend on the order or the
    sharding of the corpus): every mean metric and the offset profile, per replicate. They are what
    the noise of rank-based categories and of favourite offsets is measured with."""
    from satool.analysis.locality import offset_sums, profile, uniform_diagonality

    shape = (len(layers), len(heads))
    accumulators = [_Accumulator(m, shape) for m in metrics]
    n = 0
    offset_totals, offset_queries, uniform_d = 0.0, 0.0, 0.0
    boot_sums = {m.name: np.zeros((replicates, *shape)) for m in metrics if m.reduce == "mean"}
    boot_weights = {name: np.zeros((replicates, *shape)) for name in boot_sums}
    boot_offsets: np.ndarray | float = 0.0
    boot_queries: np.ndarray | float = 0.0
    # one BLAS thread: the metric kernels are single BLAS calls, and a second BLAS
    # thread would compete with the thread reading the cache (docs/performance.md)
    failed: dict[str, str] = {}
    with threadpool_limits(limits=1, user_api="blas"):
        for attn, meta in stream:
            weights = bootstrap_weights(_utterance_id(meta, n), replicates)
            for acc in accumulators:
                if acc.metric.name in failed or (acc.metric.needs_labels and meta.get("frame_labels") is None):
                    continue
                try:
                    values = np.asarray(acc.metric.per_utterance(attn, meta), dtype=np.float64)
                    acc.add(values)
                except Exception as exc:  # a (plugin) metric that fails is reported; the others finish
                    where = meta.get("id", f"utterance {n + 1}") if hasattr(meta, "get") else f"utterance {n + 1}"
                    failed[acc.metric.name] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:120]} (on {where})"
                    acc.count[:] = 0
                    continue
                if acc.metric.name in boot_sums:
                    w = weights[:, None, None]
                    finite = np.isfinite(values)
                    boot_sums[acc.metric.name] += w * np.where(finite, values, 0.0)
                    boot_weights[acc.metric.name] += w * finite
            sums, queries = offset_sums(attn)
            offset_totals, offset_queries = offset_totals + sums, offset_queries + queries
            boot_offsets = boot_offsets + weights[:, None, None, None] * sums
            boot_queries = boot_queries + weights[:, None] * queries
            uniform_d += uniform_diagonality(attn.shape[-1])
            n += 1
            if progress is not None:
                progress(1)
    if n == 0:
        raise InputError("no utterances to score")
    return HeadScores(
        layers, heads, {a.metric.name: a.result() for a in accumulators},
        {a.metric.name: a.count for a in accumulators}, n,
        {m.name: m.prune_first for m in metrics}, source or {},
        offset_profile=profile(offset_totals, offset_queries), uniform_diagonality=uniform_d / n,
        failed=failed,
        bootstrap=({name: _ratio(boot_sums[name], boot_weights[name]) for name in boot_sums
                    if name not in failed} if replicates else None),
        bootstrap_offset_profile=profile(boot_offsets, boot_queries[:, None, None, :]) if replicates else None,
    )



def bootstrap_weights(utterance_id: str, replicates: int) -> np.ndarray:
    """float64 ``[replicate]``: how often utterance ``utterance_id`` is drawn in each bootstrap replicate
    (Poisson(1), seeded by the id: the same in every pass, shard and order)."""
    seed = int.from_bytes(hashlib.sha256(utterance_id.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).poisson(1.0, replicates).astype(np.float64)


def _utterance_id(meta, n: int) -> str:
    found = getattr(meta, "id", None)
    if found is None and hasattr(meta, "get"):
        found = meta.get("id")
    return str(found) if found is not None else f"#{n}"


def _ratio(sums: np.ndarray, weights: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weights > 0, sums / np.where(weights > 0, weights, 1.0), np.nan)


def cache_stream(cache, utterance_ids: Sequence[str] | None = None, *,
                 reuse_buffer: bool = False) -> Iterator[tuple[np.ndarray, dict]]:
    """(float32 attention, meta) of each cached utterance.

    A background thread reads (decompresses) the stored float16 maps one
    utterance ahead; the float32 copy is made here. With ``reuse_buffer`` every
    utterance is copied into the same buffer, so a map is only valid until the
    next one is yielded (no fresh 4-byte-per-value allocation per utterance:
    see docs/performance.md).
    """
    ids = cache.utterance_ids if utterance_ids is None else list(utterance_ids)
    buffer = np.empty(0, dtype=np.float32)
    for utt, stored in prefetched(ids, lambda u: cache.attention(u, stored=True)):
        out = None
        if reuse_buffer:
            if buffer.size < stored.size:
                buffer = np.empty(stored.size, dtype=np.float32)
            out = buffer[:stored.size].reshape(stored.shape)
        yield to_float32(stored, out), LazyMeta(cache, utt)


class LazyMeta(Mapping):
    """An utterance's metadata, read from the cache on first access (most metrics never look)."""

    def __init__(self, cache, utt_id: str):
        self._cache, self._id, self._meta = cache, utt_id, None

    @property
    def id(self) -> str:
        return self._id

    def _load(self) -> dict[str, Any]:
        if self._meta is None:
            self._meta = self._cache.meta(self._id)
        return self._meta

    def __getitem__(self, key: str) -> Any:
        return self._load()[key]

    def __iter__(self):
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


def score_cache(cache, metrics: Sequence[HeadMetric], *, progress=None) -> HeadScores:
    """Score the finished utterances of an :class:`~satool.cache.AttentionCache` in one pass.

    Maps are read one utterance ahead in a background thread while the metrics
    run (see docs/performance.md for how much the two overlap). Metrics must
    not keep a reference to the maps they are given: the buffer is reused.
    """
    return score_heads(
        cache_stream(cache, reuse_buffer=True), metrics, cache.layers, cache.heads, progress=progress,
        source={"cache": str(cache.path), "model": cache.attrs.get("model", {}).get("checkpoint"),
                "sha256": cache.attrs.get("model", {}).get("sha256")},
    )


def model_stream(model, corpus, utterances, *, max_frames: int | None = None, skipped: list | None = None,
                 first: dict | None = None) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
    """(attention, meta) straight from a model, one utterance at a time (nothing stored).

    ``first`` (a dict) receives the first utterance's id and maps for the figures.
    """
    max_seconds = None if max_frames is None else frames_to_seconds(max_frames)

    def prepare(loaded):
        features = model.input_features(loaded.wave)
        model.check_attention_size(features)
        return features

    phone_set = list(corpus.phone_set.names)
    for utt, loaded, features in corpus.prepared(utterances, prepare, max_seconds=max_seconds):
        if loaded is None:  # features holds the reason
            if skipped is not None:
                skipped.append((utt.id, features))
            continue
        encoded = model.encode([features])[0]
        attn = encoded.attentions.float().cpu().numpy()
        meta = UtteranceMeta.of_loaded(utt, loaded, n_steps=encoded.n_steps, frames_per_step=model.frames_per_step,
                                       phone_set=phone_set)
        if first is not None and not first:
            first.update(id=utt.id, attention=attn)
        yield attn, meta
