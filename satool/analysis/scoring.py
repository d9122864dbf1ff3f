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

from satool.analysis.histogram import BINS, weight_histogram
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


class ScoreSums:
    """The per-head sums a metric pass accumulates: every metric's totals and counts, the offset sums
    and query counts, and the bootstrap replicates of both (``replicates`` Poisson weights per
    utterance, seeded by its id). Utterances are added one at a time, from whole maps
    (:meth:`add_maps`) or from values computed elsewhere (:meth:`add`, the streaming pass); the sums
    of several shards merge by adding (:meth:`to_partial`, :meth:`from_partial`), and
    :meth:`scores` turns them into :class:`HeadScores`."""

    def __init__(self, metrics: Sequence[HeadMetric], layers: list[int], heads: list[int], *,
                 replicates: int = BOOTSTRAP_REPLICATES, max_offset: int | None = None):
        from satool.analysis.locality import MAX_OFFSET

        self.metrics, self.layers, self.heads, self.replicates = list(metrics), list(layers), list(heads), replicates
        shape = self.shape = (len(layers), len(heads))
        width = 2 * (MAX_OFFSET if max_offset is None else max_offset) + 1
        self.accumulators = [_Accumulator(m, shape) for m in self.metrics]
        self.n = 0
        self.offset_totals, self.offset_queries = np.zeros((*shape, width)), np.zeros(width)
        self.uniform_d = 0.0
        self.boot_sums = {m.name: np.zeros((replicates, *shape)) for m in self.metrics if m.reduce == "mean"}
        self.boot_weights = {name: np.zeros((replicates, *shape)) for name in self.boot_sums}
        self.boot_offsets = np.zeros((replicates, *shape, width))
        self.boot_queries = np.zeros((replicates, width))
        self.histogram = np.zeros((*shape, BINS))  # weights per power of two (satool.analysis.histogram)
        self.failed: dict[str, str] = {}

    def add_maps(self, attn: np.ndarray, meta) -> None:
        """One utterance's maps ``attn[layer, head, query, key]``: every metric, the offset sums."""
        from satool.analysis.locality import offset_sums

        self.add(_utterance_id(meta, self.n), lambda metric: metric.per_utterance(attn, meta),
                 offset_sums(attn, (len(self.offset_queries) - 1) // 2), attn.shape[-1],
                 histogram=weight_histogram(attn), has_labels=lambda: meta.get("frame_labels") is not None,
                 where=lambda: meta.get("id", f"utterance {self.n + 1}") if hasattr(meta, "get")
                 else f"utterance {self.n + 1}")

    def add(self, utterance_id: str, values_of: Callable[[HeadMetric], np.ndarray],
            offsets: tuple[np.ndarray, np.ndarray], steps: int, *, histogram: np.ndarray,
            has_labels: Callable[[], bool], where: Callable[[], str]) -> None:
        """One utterance: ``values_of(metric)`` gives its ``[layer, head]`` values (a metric that raises
        is reported in ``failed`` and left out from then on), ``offsets`` its (offset sums
        ``[layer, head, offset]``, query counts ``[offset]``), ``steps`` its length, ``histogram`` its
        weight counts ``[layer, head, bin]``."""
        from satool.analysis.locality import uniform_diagonality

        weights = bootstrap_weights(utterance_id, self.replicates)
        for acc in self.accumulators:
            name = acc.metric.name
            if name in self.failed or (acc.metric.needs_labels and not has_labels()):
                continue
            try:
                values = np.asarray(values_of(acc.metric), dtype=np.float64)
                acc.add(values)
            except Exception as exc:  # a (plugin) metric that fails is reported; the others finish
                self.failed[name] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:120]} (on {where()})"
                acc.count[:] = 0
                continue
            if name in self.boot_sums:
                w = weights[:, None, None]
                finite = np.isfinite(values)
                self.boot_sums[name] += w * np.where(finite, values, 0.0)
                self.boot_weights[name] += w * finite
        sums, queries = offsets
        self.offset_totals += sums
        self.offset_queries += queries
        self.boot_offsets += weights[:, None, None, None] * sums
        self.boot_queries += weights[:, None] * queries
        self.uniform_d += uniform_diagonality(steps)
        self.histogram += histogram
        self.n += 1

    def scores(self, source: dict[str, Any] | None = None) -> HeadScores:
        from satool.analysis.locality import profile

        if self.n == 0:
            raise InputError("no utterances to score")
        replicates = self.replicates
        return HeadScores(
            self.layers, self.heads, {a.metric.name: a.result() for a in self.accumulators},
            {a.metric.name: a.count for a in self.accumulators}, self.n,
            {m.name: m.prune_first for m in self.metrics}, source or {},
            offset_profile=profile(self.offset_totals, self.offset_queries), uniform_diagonality=self.uniform_d / self.n,
            failed=dict(self.failed),
            bootstrap=({name: _ratio(self.boot_sums[name], self.boot_weights[name]) for name in self.boot_sums
                        if name not in self.failed} if replicates else None),
            bootstrap_offset_profile=(profile(self.boot_offsets, self.boot_queries[:, None, None, :])
                                      if replicates else None),
            weight_histogram=self.histogram.copy(),
        )

    # -- shards -------------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """What two shards' sums must share to be added (part of the partial file's settings)."""
        return {"layers": self.layers, "heads": self.heads, "replicates": self.replicates,
                "max_offset": (len(self.offset_queries) - 1) // 2, "histogram_bins": BINS,
                "metrics": [{"name": m.name, "prune_first": m.prune_first, "reduce": m.reduce,
                             "needs_labels": m.needs_labels} for m in self.metrics]}

    def arrays(self) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """(name -> array, name -> how it merges) of everything accumulated."""
        arrays: dict[str, np.ndarray] = {}
        reduce: dict[str, str] = {}
        for acc in self.accumulators:
            name = acc.metric.name
            arrays[f"metric/{name}/total"] = acc.total
            reduce[f"metric/{name}/total"] = {"mean": "sum", "max": "max", "min": "min"}[acc.metric.reduce]
            arrays[f"metric/{name}/count"] = acc.count.astype(np.float64)
            if name in self.boot_sums:
                arrays[f"boot/{name}/sum"], arrays[f"boot/{name}/weight"] = self.boot_sums[name], self.boot_weights[name]
        arrays.update({"offset/sums": self.offset_totals, "offset/queries": self.offset_queries,
                       "boot/offset/sums": self.boot_offsets, "boot/offset/queries": self.boot_queries,
                       "uniform_diagonality": np.float64(self.uniform_d), "utterances": np.float64(self.n),
                       "weights/histogram": self.histogram})
        reduce.update({k: "sum" for k in arrays if k not in reduce})
        return arrays, reduce

    @classmethod
    def from_arrays(cls, described: dict[str, Any], arrays: dict[str, np.ndarray], failed: dict[str, str],
                    *, where=None, metrics: Sequence[HeadMetric] = ()) -> ScoreSums:
        """The sums back from :meth:`describe` and :meth:`arrays` (of a partial file, or several merged);
        InputError when a field or an array does not fit. ``metrics``: the registered metrics of those
        names, to go on scoring (a resumed shard); otherwise the metrics only describe themselves."""
        def fail(message: str):
            raise InputError(message, path=where)

        try:
            layers = [int(v) for v in described["layers"]]
            heads = [int(v) for v in described["heads"]]
            replicates, max_offset = int(described["replicates"]), int(described["max_offset"])
            if int(described["histogram_bins"]) != BINS:
                raise ValueError(f"histograms of {described['histogram_bins']} bins (this satool keeps {BINS})")
            metrics_ = [HeadMetric(str(m["name"]), _not_in_a_merge, m["prune_first"], reduce=m["reduce"],
                                   needs_labels=bool(m["needs_labels"])) for m in described["metrics"]]
        except (KeyError, TypeError, ValueError) as exc:
            fail(f"the metric settings do not describe a metric pass ({' '.join(str(exc).split())[:100]})")
        known = {m.name: m for m in metrics}
        metrics = [known[m.name] if m.name in known and known[m.name].reduce == m.reduce else m for m in metrics_]
        if not (layers and heads and 0 <= replicates <= 10_000 and 0 <= max_offset <= 1000
                and len(layers) * len(heads) <= 100_000):
            fail("the metric settings hold impossible layers, heads, replicates or offsets")
        sums = cls(metrics, layers, heads, replicates=replicates, max_offset=max_offset)
        expected, _ = sums.arrays()
        for name, template in expected.items():
            got = arrays.get(name)
            if got is None or np.shape(got) != np.shape(template):
                fail(f"{name} must be an array of shape {list(np.shape(template))}, found "
                     f"{'none' if got is None else list(np.shape(got))}")
        for name in expected:
            if name.endswith(("/count", "/queries", "/weight", "/histogram")) and (
                    (arrays[name] < 0).any() or (arrays[name] != np.round(arrays[name])).any()):
                fail(f"{name} must hold whole numbers >= 0")
        n = arrays["utterances"]
        if n < 0 or n != np.round(n):
            fail("utterances must be a whole number >= 0")
        for acc in sums.accumulators:
            name = acc.metric.name
            acc.total = arrays[f"metric/{name}/total"].copy()
            acc.count = arrays[f"metric/{name}/count"].astype(np.int64)
            if name in sums.boot_sums:
                sums.boot_sums[name] = arrays[f"boot/{name}/sum"].copy()
                sums.boot_weights[name] = arrays[f"boot/{name}/weight"].copy()
            if name in failed:
                acc.count[:] = 0
        sums.offset_totals, sums.offset_queries = arrays["offset/sums"].copy(), arrays["offset/queries"].copy()
        sums.boot_offsets, sums.boot_queries = arrays["boot/offset/sums"].copy(), arrays["boot/offset/queries"].copy()
        sums.uniform_d, sums.n = float(arrays["uniform_diagonality"]), int(n)
        sums.histogram = arrays["weights/histogram"].copy()
        sums.failed = {str(k): str(v) for k, v in failed.items() if k in {m.name for m in metrics}}
        return sums


def _not_in_a_merge(attn, meta):  # metrics rebuilt from partial sums only describe; they never compute
    raise RuntimeError("a metric rebuilt from partial sums cannot score maps")


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
    sums = ScoreSums(metrics, layers, heads, replicates=replicates)
    # one BLAS thread: the metric kernels are single BLAS calls, and a second BLAS
    # thread would compete with the thread reading the cache (docs/performance.md)
    with threadpool_limits(limits=1, user_api="blas"):
        for attn, meta in stream:
            sums.add_maps(attn, meta)
            if progress is not None:
                progress(1)
    return sums.scores(source)


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
    """An utterance's metadata (an :class:`UtteranceMeta`, by key or by attribute), read from the cache on
    first access (most metrics never look)."""

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

    def __getattr__(self, name: str) -> Any:  # meta.frame_labels, as on UtteranceMeta (the plugin API reads so)
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._load(), name)

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
                "sha256": cache.attrs.get("model", {}).get("sha256"), "maps": cache.maps},
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
