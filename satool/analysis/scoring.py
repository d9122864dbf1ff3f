"""Scoring every head with head metrics in one streaming pass (`satool metric`).

Utterances arrive one at a time as ``(attn[layer, head, query, key], meta)``
(from a cache, or straight from a model for corpora whose maps would not fit
on disk); every registered metric turns them into ``[layer, head]`` values,
which are accumulated over the corpus (mean, max or min; NaN values are left
out). :class:`HeadScores` holds the result, ranks heads per metric, assigns
categories (docs/science.md §3) and saves CSV/JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from satool.analysis.metrics import HeadMetric
from satool.cache import to_float32
from satool.errors import InputError
from satool.heads import label as head_label  # results name heads 'L3.H7'
from satool.output.tables import write_csv, write_json
from satool.prefetch import prefetched
from satool.timebase import frames_to_seconds
from satool.utterance import UtteranceMeta

CATEGORY_METRICS = ("globalness", "verticality", "diagonality")
NEAR_TIE = 1e-4  # values closer than this share of the metric's largest magnitude are near-ties
CATEGORY_NAMES = {"globalness": "global", "verticality": "vertical", "diagonality": "diagonal"}




@dataclass
class HeadScores:
    """Corpus-level metric values per head.

    ``values[name]`` and ``counts[name]`` are ``[layer, head]`` arrays over the
    stored ``layers`` x ``heads`` (1-based numbers).
    """

    layers: list[int]
    heads: list[int]
    values: dict[str, np.ndarray]
    counts: dict[str, np.ndarray]
    utterances: int
    prune_first: dict[str, str] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    # [layer, head, offset]: mean weight at offsets -MAX_OFFSET..MAX_OFFSET in units of uniform
    # attention (satool.analysis.locality); None for results saved before satool recorded it
    offset_profile: np.ndarray | None = None
    uniform_diagonality: float | None = None  # mean over utterances of D under uniform attention
    failed: dict[str, str] = field(default_factory=dict)  # metric name -> why it stopped (its values are NaN)

    def locality(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(weight at the favourite offset / uniform weight, favourite offset in steps), ``[layer, head]``."""
        if self.offset_profile is None:
            return None
        from satool.analysis.locality import locality

        return locality(self.offset_profile)

    def diagonality_vs_uniform(self) -> np.ndarray | None:
        """``[layer, head]``: a head's mean query-key distance relative to uniform attention's
        (D / D_uniform: 1 = as far as uniform attention, 0 = every weight on the diagonal)."""
        if self.uniform_diagonality is None or "diagonality" not in self.values:
            return None
        return self.values["diagonality"] / self.uniform_diagonality

    def rank(self, name: str) -> np.ndarray:
        """int ``[layer, head]``: 1 = highest value of ``name`` (NaN last; ties by head order)."""
        flat = self.values[name].ravel()
        key = np.where(np.isnan(flat), -np.inf, flat)
        order = np.argsort(-key, kind="stable")
        ranks = np.empty(len(flat), dtype=int)
        ranks[order] = np.arange(1, len(flat) + 1)
        return ranks.reshape(self.values[name].shape)

    def categories(self) -> np.ndarray:
        """str ``[layer, head]``: global / vertical / diagonal by best rank (ties: that order);
        '' for a head without a value in one of the three (NaN is never ranked into a category)."""
        names = [n for n in CATEGORY_METRICS if n in self.values]
        if len(names) < len(CATEGORY_METRICS):
            return np.full((len(self.layers), len(self.heads)), "", dtype=object)
        ranks = np.stack([self.rank(n) for n in names])  # [metric, layer, head]
        best = np.argmin(ranks, axis=0)
        out = np.array([CATEGORY_NAMES[n] for n in names], dtype=object)[best]
        missing = np.any(np.stack([np.isnan(self.values[n]) for n in names]), axis=0)
        out[missing] = ""
        return out

    def to_frame(self):
        """The per-head table (:meth:`records`) as a pandas DataFrame indexed by head label
        (pandas is not a dependency of satool: install it to use this)."""
        try:
            import pandas
        except ImportError:
            from satool.errors import EnvironmentProblem

            raise EnvironmentProblem("HeadScores.to_frame() needs pandas: pip install pandas") from None
        return pandas.DataFrame(self.records()).set_index("label")

    def near_ties(self, name: str, relative: float = NEAR_TIE) -> np.ndarray:
        """bool ``[layer, head]``: the head's value lies within ``relative`` x the largest magnitude of
        ``name`` of another head's value, so the order of those heads is arbitrary."""
        values = self.values[name]
        finite = values[np.isfinite(values)]
        if finite.size < 2:
            return np.zeros(values.shape, dtype=bool)
        tolerance = relative * float(np.abs(finite).max())
        flat = values.ravel()
        order = np.argsort(np.where(np.isfinite(flat), flat, np.inf), kind="stable")
        ordered = flat[order]
        close = np.isfinite(ordered[1:]) & np.isfinite(ordered[:-1]) & (np.diff(ordered) <= tolerance)
        tied = np.zeros(flat.size, dtype=bool)
        tied[order[1:][close]] = True
        tied[order[:-1][close]] = True
        return tied.reshape(values.shape)

    def merged_into(self, previous: HeadScores) -> HeadScores:
        """These results with the metrics of ``previous`` that were not recomputed now (same heads);
        this run's values replace a metric's earlier ones."""
        if previous.layers != self.layers or previous.heads != self.heads:
            return self
        values = {**{n: v for n, v in previous.values.items() if n not in self.values}, **self.values}
        counts = {**{n: v for n, v in previous.counts.items() if n not in self.counts}, **self.counts}
        prune_first = {**previous.prune_first, **self.prune_first}
        failed = {n: r for n, r in previous.failed.items() if n not in self.values}
        failed.update(self.failed)
        return HeadScores(self.layers, self.heads, values, counts, self.utterances, prune_first, self.source,
                          self.offset_profile, self.uniform_diagonality, failed)

    def pruning_order(self, name: str) -> list[tuple[int, int]]:
        """(layer, head) numbers in the order ``satool prune --by name`` removes them."""
        values = self.values[name].ravel()
        lowest = self.prune_first.get(name, "highest") == "lowest"
        key = np.where(np.isnan(values), np.inf, values if lowest else -values)
        order = np.argsort(key, kind="stable")
        n_heads = len(self.heads)
        return [(self.layers[i // n_heads], self.heads[i % n_heads]) for i in order]

    def records(self) -> list[dict[str, Any]]:
        """One dict per head: layer, head, every metric, its rank, category."""
        ranks = {n: self.rank(n) for n in self.values}
        categories = self.categories()
        relative, local = self.diagonality_vs_uniform(), self.locality()
        ties = {n: self.near_ties(n) for n in self.values}
        rows = []
        for i, layer in enumerate(self.layers):
            for j, head in enumerate(self.heads):
                row: dict[str, Any] = {"layer": layer, "head": head, "label": head_label(layer, head)}
                for name in self.values:
                    value = float(self.values[name][i, j])
                    row[name] = None if np.isnan(value) else value
                for name in self.values:
                    missing = np.isnan(self.values[name][i, j])
                    row[f"rank_{name}"] = None if missing else int(ranks[name][i, j])  # NaN is never ranked
                for name in self.values:
                    row[f"utterances_{name}"] = int(self.counts[name][i, j])  # what each value rests on
                for name in self.values:
                    row[f"near_tie_{name}"] = bool(ties[name][i, j])
                row["category"] = categories[i, j]
                if relative is not None:
                    row["diagonality_vs_uniform"] = _finite_or_none(relative[i, j])
                if local is not None:
                    row["locality"] = _finite_or_none(local[0][i, j])
                    row["favourite_offset"] = int(local[1][i, j]) if np.isfinite(local[0][i, j]) else None
                rows.append(row)
        return rows

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        """Write ``metrics.csv`` and ``metrics.json`` (records plus provenance) into ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        rows = self.records()
        write_csv(out / "metrics.csv", rows)
        document = {
            "layers": self.layers, "heads": self.heads, "utterances": self.utterances,
            "metrics": {n: {"prune_first": self.prune_first.get(n, "highest"),
                            "values": self.values[n],
                            "counts": self.counts[n].tolist()} for n in self.values},
            "source": self.source, "heads_table": rows,
        }
        if self.offset_profile is not None:
            document["offset_profile"] = {
                "offsets": list(range(-(self.offset_profile.shape[-1] // 2), self.offset_profile.shape[-1] // 2 + 1)),
                "ratio_to_uniform": self.offset_profile,
            }
        if self.uniform_diagonality is not None:
            document["uniform_diagonality"] = self.uniform_diagonality
        if self.failed:
            document["failed"] = self.failed
        write_json(out / "metrics.json", document)  # NaN as null
        return {"csv": out / "metrics.csv", "json": out / "metrics.json"}

    @classmethod
    def load(cls, path: str | Path) -> HeadScores:
        """Read ``metrics.json`` (or the directory holding it)."""
        path = Path(path)
        file = path / "metrics.json" if path.is_dir() else path
        try:
            doc = json.loads(file.read_text())
            metrics = doc["metrics"]
            return cls(
                layers=list(doc["layers"]), heads=list(doc["heads"]),
                values={n: np.array(m["values"], dtype=float) for n, m in metrics.items()},
                counts={n: np.array(m["counts"]) for n, m in metrics.items()},
                utterances=int(doc["utterances"]),
                prune_first={n: m["prune_first"] for n, m in metrics.items()},
                source=doc.get("source", {}),
                offset_profile=(np.array(doc["offset_profile"]["ratio_to_uniform"], dtype=float)
                                if "offset_profile" in doc else None),
                uniform_diagonality=(float(doc["uniform_diagonality"]) if "uniform_diagonality" in doc else None),
                failed=dict(doc.get("failed", {})),
            )
        except FileNotFoundError:
            raise InputError("no metric results here (run 'satool metric' first)", path=file) from None
        except (KeyError, ValueError, TypeError) as exc:
            raise InputError(f"not a satool metrics.json ({exc})", path=file) from None


def _finite_or_none(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


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
) -> HeadScores:
    """Accumulate ``metrics`` over a stream of ``(attn[layer, head, query, key], meta)``."""
    from satool.analysis.locality import offset_sums, profile, uniform_diagonality

    shape = (len(layers), len(heads))
    accumulators = [_Accumulator(m, shape) for m in metrics]
    n = 0
    offset_totals, offset_queries, uniform_d = 0.0, 0.0, 0.0
    # one BLAS thread: the metric kernels are single BLAS calls, and a second BLAS
    # thread would compete with the thread reading the cache (docs/performance.md)
    failed: dict[str, str] = {}
    with threadpool_limits(limits=1, user_api="blas"):
        for attn, meta in stream:
            for acc in accumulators:
                if acc.metric.name in failed or (acc.metric.needs_labels and meta.get("frame_labels") is None):
                    continue
                try:
                    acc.add(acc.metric.per_utterance(attn, meta))
                except Exception as exc:  # a (plugin) metric that fails is reported; the others finish
                    where = meta.get("id", f"utterance {n + 1}") if hasattr(meta, "get") else f"utterance {n + 1}"
                    failed[acc.metric.name] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:120]} (on {where})"
                    acc.count[:] = 0
            sums, queries = offset_sums(attn)
            offset_totals, offset_queries = offset_totals + sums, offset_queries + queries
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
    )


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


def _top_by(values: np.ndarray, scores: HeadScores, k: int) -> list[tuple[int, int]]:
    """The ``k`` heads with the highest ``values[layer, head]`` (NaN last)."""
    flat = values.ravel()
    order = np.argsort(-np.where(np.isnan(flat), -np.inf, flat), kind="stable")[:k]
    n = len(scores.heads)
    return [(scores.layers[i // n], scores.heads[i % n]) for i in order]


def top_heads(scores: HeadScores, name: str, k: int) -> list[tuple[int, int]]:
    """The ``k`` heads with the highest ``name`` (1-based layer and head numbers)."""
    return _top_by(scores.values[name], scores, k)


def write_outputs(scores: HeadScores, out_dir: str | Path, example_id: str | None,
                  example: np.ndarray | None, *, k: int = 4, step_s: float | None = None) -> dict[str, Path]:
    """metrics.csv/json, head_distribution.png, top_heads.png (+ top_heads.npz with the maps drawn) and
    offset_profiles.png/.csv (the most local and the most diagonal heads; ``step_s``: seconds per step)."""
    from satool.output import figures

    out = Path(out_dir)
    paths = scores.save(out)
    paths["distribution"] = figures.head_distribution(scores, out / "head_distribution.png")
    local = scores.locality()
    if local is not None:
        ranked = [("locality", h) for h in _top_by(local[0], scores, k)]
        if "diagonality" in scores.values:
            ranked += [("diagonality", h) for h in top_heads(scores, "diagonality", k) if ("locality", h) not in ranked]
        heads = list(dict.fromkeys(h for _, h in ranked))
        index = [(scores.layers.index(layer), scores.heads.index(head)) for layer, head in heads]
        rows = np.array([scores.offset_profile[i, j] for i, j in index])
        labels = [f"{head_label(*h)} ({local[0][i, j]:.1f}x at {int(local[1][i, j]):+d})"
                  for h, (i, j) in zip(heads, index)]
        paths["offset_profiles"] = figures.offset_profiles(
            rows, labels, out / "offset_profiles.png", step_s=step_s,
            title=f"Offset profiles of the {k} most local and the {k} most diagonal heads")
        max_offset = (scores.offset_profile.shape[-1] - 1) // 2
        paths["offset_profiles_csv"] = write_csv(out / "offset_profiles.csv", [
            {"label": head_label(*h), "offset_steps": d - max_offset,
             "offset_s": None if step_s is None else round((d - max_offset) * step_s, 6),
             "weight_vs_uniform": _finite_or_none(scores.offset_profile[i, j, d])}
            for h, (i, j) in zip(heads, index) for d in range(scores.offset_profile.shape[-1])])
    if example is not None:
        rows: dict[str, list] = {}
        arrays: dict[str, np.ndarray] = {}
        for name in scores.values:
            items = []
            for layer, head in top_heads(scores, name, k):
                i, j = scores.layers.index(layer), scores.heads.index(head)
                items.append((f"{head_label(layer, head)}", example[i, j]))
                arrays[f"{name}/{head_label(layer, head)}"] = example[i, j]
            rows[f"top {name}"] = items
        paths["top_heads"] = figures.attention_grid(
            rows, out / "top_heads.png", f"Top {k} heads per metric, utterance {example_id}", step_s=step_s
        )
        np.savez_compressed(out / "top_heads.npz", utterance=np.array(example_id), **arrays)
        paths["top_heads_npz"] = out / "top_heads.npz"
    return paths
