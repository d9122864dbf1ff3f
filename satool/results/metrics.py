"""Metric results: every head's G, V, D, W (and plugin metrics) over a corpus, its ranks and category
(docs/science.md §3), and its offset profile with locality (how much weight its favourite relative
offset carries, in units of uniform attention).

Written by ``satool metric`` as ``metrics.csv`` (one row per head) and ``metrics.json`` (everything,
read back by :meth:`HeadScores.load` with every field checked).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from satool.errors import InputError
from satool.heads import label as head_label  # results name heads 'L3.H7'
from satool.results.files import (
    MAX_RESULT_BYTES,
    Document,
    StoredResult,
    finite_or_none,
    read_json,
    write_csv,
    write_json,
)

CATEGORY_METRICS = ("globalness", "verticality", "diagonality")
CATEGORY_NAMES = {"globalness": "global", "verticality": "vertical", "diagonality": "diagonal"}
NEAR_TIE = 1e-4  # values closer than this share of the metric's largest magnitude are near-ties
LOCAL_RATIO = 5.0  # a head is "local" when its favourite offset carries >= 5x the uniform weight


def locality(offset_profile: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ratio[...], offset[...])`` from an offset profile ``[..., offset]`` over offsets -M..M: each
    head's largest profile value (in units of uniform attention) and its offset in steps (signed:
    negative = a key before the query)."""
    max_offset = (offset_profile.shape[-1] - 1) // 2
    filled = np.where(np.isfinite(offset_profile), offset_profile, -np.inf)
    best = filled.argmax(axis=-1)
    ratio = np.take_along_axis(filled, best[..., None], axis=-1)[..., 0]
    return np.where(np.isfinite(ratio), ratio, np.nan), best - max_offset


# attention weights per power of two (counted by satool.analysis.histogram): bin 0 = exactly 0, bin k =
# 1..25 = [2^(k-25), 2^(k-24)); each bin's smallest weight
HISTOGRAM_BINS = 26
HISTOGRAM_LOWER_EDGES = np.array([0.0] + [2.0 ** (k - 25) for k in range(1, HISTOGRAM_BINS)])


def histogram_shares(counts: np.ndarray) -> np.ndarray:
    """Counts ``[..., bin]`` as the share of each head's weights per bin (NaN for a head without any)."""
    total = counts.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, counts / np.maximum(total, 1), np.nan)


@dataclass
class HeadScores(StoredResult):
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
    example: str | None = None  # the utterance whose maps the metric figures draw
    step_s: float | None = None  # seconds per model step (offsets in seconds: offset * step_s)
    # bootstrap replicates over utterances: metric name -> [replicate, layer, head] means (mean metrics
    # only), and the offset profile [replicate, layer, head, offset]; None when not measured
    bootstrap: dict[str, np.ndarray] | None = None
    bootstrap_offset_profile: np.ndarray | None = None
    # [layer, head, bin]: how many weights fell in each power-of-two bin (satool.analysis.histogram);
    # None for results saved before satool recorded it
    weight_histogram: np.ndarray | None = None

    CSV: ClassVar[str] = "metrics.csv"
    JSON: ClassVar[str] = "metrics.json"
    BOOTSTRAP: ClassVar[str] = "metrics_bootstrap.npz"

    def locality(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(weight at the favourite offset / uniform weight, favourite offset in steps), ``[layer, head]``."""
        if self.offset_profile is None:
            return None
        return locality(self.offset_profile)

    def diagonality_vs_uniform(self) -> np.ndarray | None:
        """``[layer, head]``: a head's mean query-key distance relative to uniform attention's
        (D / D_uniform: 1 = as far as uniform attention, 0 = every weight on the diagonal)."""
        if self.uniform_diagonality is None or "diagonality" not in self.values:
            return None
        return self.values["diagonality"] / self.uniform_diagonality

    def rank(self, name: str) -> np.ndarray:
        """int ``[layer, head]``: 1 = highest value of ``name`` (NaN last; ties by head order)."""
        return rank_of(self.values[name])

    def categories(self) -> np.ndarray:
        """str ``[layer, head]``: global / vertical / diagonal by best rank (ties: that order);
        '' for a head without a value in one of the three (NaN is never ranked into a category)."""
        return categories_of(self.values, (len(self.layers), len(self.heads)))

    def replicate_categories(self) -> list[np.ndarray] | None:
        """The categories of every bootstrap replicate (None without replicates of G, V and D)."""
        if not self.bootstrap or not all(n in self.bootstrap for n in CATEGORY_METRICS):
            return None
        count = len(self.bootstrap[CATEGORY_METRICS[0]])
        return [categories_of({n: self.bootstrap[n][b] for n in CATEGORY_METRICS}, (len(self.layers), len(self.heads)))
                for b in range(count)]

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
        boot = {**{n: v for n, v in (previous.bootstrap or {}).items() if n not in self.values},
                **(self.bootstrap or {})}
        return HeadScores(self.layers, self.heads, values, counts, self.utterances, prune_first, self.source,
                          self.offset_profile, self.uniform_diagonality, failed, self.example, self.step_s,
                          boot or None, self.bootstrap_offset_profile, self.weight_histogram)

    def pruning_order(self, name: str) -> list[tuple[int, int]]:
        """(layer, head) numbers in the order ``satool prune --by name`` removes them."""
        values = self.values[name].ravel()
        lowest = self.prune_first.get(name, "highest") == "lowest"
        key = np.where(np.isnan(values), np.inf, values if lowest else -values)
        order = np.argsort(key, kind="stable")
        n_heads = len(self.heads)
        return [(self.layers[i // n_heads], self.heads[i % n_heads]) for i in order]

    def top(self, values: np.ndarray | str, k: int) -> list[tuple[int, int]]:
        """The ``k`` heads (1-based layer, head) with the highest ``values[layer, head]`` (or the
        highest values of the metric named so); NaN last, ties in head order."""
        flat = (self.values[values] if isinstance(values, str) else np.asarray(values)).ravel()
        order = np.argsort(-np.where(np.isnan(flat), -np.inf, flat), kind="stable")[:k]
        n = len(self.heads)
        return [(self.layers[i // n], self.heads[i % n]) for i in order]

    def index(self, layer: int, head: int) -> tuple[int, int]:
        """Array position ``(i, j)`` of head ``layer``.``head`` (1-based numbers)."""
        return self.layers.index(layer), self.heads.index(head)

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
                    row["diagonality_vs_uniform"] = finite_or_none(relative[i, j])
                if local is not None:
                    row["locality"] = finite_or_none(local[0][i, j])
                    row["favourite_offset"] = int(local[1][i, j]) if np.isfinite(local[0][i, j]) else None
                rows.append(row)
        return rows

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        """Write ``metrics.csv`` and ``metrics.json`` (records plus provenance) into ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        rows = self.records()
        write_csv(out / self.CSV, rows)
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
        if self.weight_histogram is not None:
            document["weight_histogram"] = {"lower_edges": HISTOGRAM_LOWER_EDGES, "counts": self.weight_histogram}
        if self.failed:
            document["failed"] = self.failed
        if self.example is not None:
            document["example_utterance"] = self.example
        if self.step_s is not None:
            document["step_s"] = self.step_s
        write_json(out / self.JSON, document)  # NaN as null
        paths = {"csv": out / self.CSV, "json": out / self.JSON}
        if self.bootstrap is not None and self.bootstrap_offset_profile is not None:
            np.savez_compressed(out / self.BOOTSTRAP, offset_profile=self.bootstrap_offset_profile,
                                **{f"metric/{n}": v for n, v in self.bootstrap.items()})
            paths["bootstrap"] = out / self.BOOTSTRAP
        elif (out / self.BOOTSTRAP).exists():
            (out / self.BOOTSTRAP).unlink()  # replicates of other values must not be read beside these
        return paths


    @classmethod
    def load(cls, path: str | Path) -> HeadScores:
        """Read ``metrics.json`` (or the directory holding it), every field checked."""
        path = Path(path)
        file = path / cls.JSON if path.is_dir() else path
        if not file.exists():
            raise InputError("no metric results here (run 'satool metric' first)", path=file)
        doc = Document(read_json(file), file)
        layers = [int(v) for v in _numbers(doc, "layers")]
        heads = [int(v) for v in _numbers(doc, "heads")]
        shape = (len(layers), len(heads))
        metrics = doc.child("metrics")
        values, counts, prune_first = {}, {}, {}
        for name in metrics.value:
            entry = metrics.child(name)
            values[name] = entry.grid("values", shape)
            count = entry.grid("counts", shape)
            if np.isnan(count).any() or (count < 0).any() or (count != np.round(count)).any():
                doc.fail(f"metrics.{name}.counts must hold whole numbers >= 0")
            counts[name] = count.astype(np.int64)
            order = entry.text("prune_first", "highest")
            if order not in ("highest", "lowest"):
                doc.fail(f"metrics.{name}.prune_first must be 'highest' or 'lowest', found {order!r}")
            prune_first[name] = order
        profile = None
        if doc.has("offset_profile"):
            offsets = doc.child("offset_profile")
            width = len(offsets.items("offsets"))
            if width % 2 != 1 or width > 2 * 1000 + 1:
                doc.fail("offset_profile.offsets must list an odd number of offsets (-M..M)")
            profile = offsets.grid("ratio_to_uniform", (*shape, width))
        uniform = doc.number("uniform_diagonality") if doc.has("uniform_diagonality") else None
        histogram = _histogram(doc, shape) if doc.has("weight_histogram") else None
        failed = doc.child("failed").value if doc.has("failed") else {}
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in failed.items()):
            doc.fail("field 'failed' must map metric names to reasons")
        boot, boot_profile = _load_bootstrap(file.parent / cls.BOOTSTRAP, shape, profile, values)
        return cls(layers=layers, heads=heads, values=values, counts=counts,
                   utterances=doc.integer("utterances", minimum=0), prune_first=prune_first,
                   source=doc.child("source").value if doc.has("source") else {},
                   offset_profile=profile, uniform_diagonality=uniform, failed=dict(failed),
                   example=doc.text("example_utterance", None), step_s=_step(doc), bootstrap=boot,
                   bootstrap_offset_profile=boot_profile, weight_histogram=histogram)


def _histogram(doc: Document, shape: tuple[int, int]) -> np.ndarray:
    """The ``weight_histogram`` counts ``[layer, head, bin]``: whole numbers >= 0 in satool's bins."""
    entry = doc.child("weight_histogram")
    edges = entry.items("lower_edges")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in edges) \
            or len(edges) != HISTOGRAM_BINS or not np.allclose(np.array(edges, float), HISTOGRAM_LOWER_EDGES,
                                                              rtol=1e-12, atol=0):
        doc.fail(f"weight_histogram.lower_edges must be satool's {HISTOGRAM_BINS} power-of-two bins")
    counts = entry.grid("counts", (*shape, HISTOGRAM_BINS))
    if np.isnan(counts).any() or (counts < 0).any() or (counts != np.round(counts)).any():
        doc.fail("weight_histogram.counts must hold whole numbers >= 0")
    return counts


def rank_of(values: np.ndarray) -> np.ndarray:
    """int ranks of ``values[layer, head]``: 1 = highest (NaN last; ties by head order)."""
    flat = values.ravel()
    key = np.where(np.isnan(flat), -np.inf, flat)
    order = np.argsort(-key, kind="stable")
    ranks = np.empty(len(flat), dtype=int)
    ranks[order] = np.arange(1, len(flat) + 1)
    return ranks.reshape(values.shape)


def categories_of(values: dict[str, np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """str ``[layer, head]`` categories from G, V and D values (docs/science.md §3): the metric in
    whose ranking a head ranks best; '' where a value is missing."""
    names = [n for n in CATEGORY_METRICS if n in values]
    if len(names) < len(CATEGORY_METRICS):
        return np.full(shape, "", dtype=object)
    ranks = np.stack([rank_of(values[n]) for n in names])  # [metric, layer, head]
    out = np.array([CATEGORY_NAMES[n] for n in names], dtype=object)[np.argmin(ranks, axis=0)]
    out[np.any(np.stack([np.isnan(values[n]) for n in names]), axis=0)] = ""
    return out


def _load_bootstrap(file: Path, shape: tuple[int, int], profile: np.ndarray | None, values: dict[str, np.ndarray]
                    ) -> tuple[dict[str, np.ndarray] | None, np.ndarray | None]:
    """The bootstrap replicates beside metrics.json (None, None when absent), every array checked."""
    import zipfile

    if not file.is_file():
        return None, None
    if file.stat().st_size > MAX_RESULT_BYTES:
        raise InputError(f"larger than {MAX_RESULT_BYTES // 2**20} MB: not a satool result file", path=file)
    try:
        with np.load(file, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"not a satool bootstrap file ({' '.join(str(exc).split())[:160]})", path=file) from None
    boot_profile = arrays.pop("offset_profile", None)
    if boot_profile is None or profile is None or boot_profile.ndim != 4 or boot_profile.shape[1:] != profile.shape \
            or boot_profile.dtype.kind != "f" or not 1 <= len(boot_profile) <= 10_000:
        raise InputError("offset_profile must be [replicate, layer, head, offset] like the metric results'", path=file)
    boot = {}
    for key, array in arrays.items():
        name = key.removeprefix("metric/")
        if not key.startswith("metric/") or name not in values:
            raise InputError(f"{key!r} is not a metric of these results", path=file)
        if array.shape != (len(boot_profile), *shape) or array.dtype.kind != "f":
            raise InputError(f"{key} must be [replicate, layer, head] = {[len(boot_profile), *shape]}", path=file)
        if np.isinf(array).any():
            raise InputError(f"{key} holds infinite values", path=file)
        boot[name] = array.astype(np.float64)
    if np.isinf(boot_profile).any():
        raise InputError("offset_profile holds infinite values", path=file)
    return boot, boot_profile.astype(np.float64)


def _step(doc: Document) -> float | None:
    if not doc.has("step_s"):
        return None
    step = doc.number("step_s")
    if not 0 < step < 10:
        doc.fail(f"step_s must lie between 0 and 10 s, found {step}")
    return step


def _numbers(doc: Document, key: str) -> list[int]:
    """A list of distinct whole numbers >= 1 (layer or head numbers)."""
    values = doc.items(key)
    if not values or len(values) > 10_000 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                                                      for v in values) or len(set(values)) != len(values):
        doc.fail(f"field {key!r} must list distinct numbers >= 1")
    return values
