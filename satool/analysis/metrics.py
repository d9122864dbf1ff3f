"""Head metrics: globalness, verticality, diagonality, weight (docs/science.md §3).

A metric maps one utterance's attention maps ``attn[layer, head, query, key]``
(float32, rows sum to 1 or are all zero for pruned heads) to one value per head
``[layer, head]``; values are accumulated over a corpus (mean over utterances,
E_u in the paper). Metrics are plugins: register a :class:`HeadMetric` through
the ``register_metrics`` hook and it works in ``satool metric`` and
``satool prune --by NAME``.

Conventions for degenerate maps (documented in docs/metrics.md):
- entropy uses the natural log and 0 log 0 = 0, so an all-zero row (a pruned
  head) has entropy 0; its column mean is all zero and also has entropy 0;
- T = 1: every metric is defined (G = V = D = 0, W = the single weight).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

PruneOrder = Literal["highest", "lowest"]


@dataclass(frozen=True)
class HeadMetric:
    """A per-head score computed from attention maps.

    Attributes:
        name: identifier used on the command line (``--by NAME``).
        per_utterance: ``fn(attn, meta) -> values``; ``attn`` is float32
            ``[layer, head, query, key]`` at the model's step rate, ``meta`` the
            utterance's metadata (speaker, step labels, ... see
            :func:`satool.cache.open_cache`); returns float ``[layer, head]``.
            ``attn`` may be overwritten by the next utterance: do not keep it.
        prune_first: which heads ``satool prune --by NAME`` removes first:
            ``"highest"`` values or ``"lowest"`` values.
        description: one line for ``--help`` and reports.
        reduce: how per-utterance values become a corpus value: ``"mean"``
            (E_u, the paper's choice), ``"max"`` or ``"min"``.
        needs_labels: True if ``per_utterance`` reads step labels from meta;
            utterances without alignments are then skipped for this metric.
    """

    name: str
    per_utterance: Callable[[np.ndarray, Mapping[str, Any]], np.ndarray]
    prune_first: PruneOrder
    description: str = ""
    reduce: Literal["mean", "max", "min"] = "mean"
    needs_labels: bool = False
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.prune_first not in ("highest", "lowest"):
            raise ValueError(f"metric {self.name!r}: prune_first must be 'highest' or 'lowest'")
        if self.reduce not in ("mean", "max", "min"):
            raise ValueError(f"metric {self.name!r}: reduce must be 'mean', 'max' or 'min'")


_TINY = np.float32(1e-30)  # p * log(p + tiny) is exactly 0 where p = 0, and log(p) wherever p matters
_LN2 = np.log(2.0)


def _log_p(p: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """log2(p + tiny) as float32: finite at p = 0 (into ``out`` when given: a buffer reused between
    blocks saves touching fresh memory each time). (np.add then np.log2 is about 2.5x faster
    than np.maximum then np.log here; the factor ln 2 is applied to the sums.)"""
    logs = np.add(p, _TINY, out=out)
    np.log2(logs, out=logs)
    return logs


def _xlogx_sum(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """sum over ``axis`` of p * ln(p) with 0 ln 0 = 0 (float32 in, float64 out)."""
    terms = _log_p(p)
    terms *= p
    return terms.sum(axis=axis, dtype=np.float64) * _LN2


def _per_head(attn: np.ndarray) -> np.ndarray:
    """``attn[..., query, key]`` as ``[..., query * key]`` (a view when contiguous)."""
    return attn.reshape(*attn.shape[:-2], attn.shape[-2] * attn.shape[-1])


# The kernels below are single BLAS calls (dot, gemv) on whole maps: 2-4x faster than
# numpy's reductions. `satool metric` limits BLAS to one thread while scoring, so they
# never compete with the thread that reads the cache (headscores.score_heads).


def globalness(attn: np.ndarray, meta: Mapping[str, Any] | None = None) -> np.ndarray:
    """G = (1/T) sum_q H(A[q]): mean entropy of the attention rows. ``[layer, head]``."""
    steps = attn.shape[-1]
    maps = _per_head(attn)
    # sum over q and k of p * log2(p): one dot product per head, ([1, T*T] @ [T*T, 1])
    totals = np.matmul(maps[..., None, :], _per_head(_log_p(attn))[..., :, None])[..., 0, 0]
    return -totals.astype(np.float64) * (_LN2 / steps)


def verticality(attn: np.ndarray, meta: Mapping[str, Any] | None = None) -> np.ndarray:
    """V = -H((1/T) sum_q A[q]): negative entropy of the mean row. ``[layer, head]``."""
    steps = attn.shape[-2]
    mean_row = np.matmul(np.full((1, steps), 1 / steps, dtype=np.float32), attn)[..., 0, :]
    return _xlogx_sum(mean_row)


def diagonality(attn: np.ndarray, meta: Mapping[str, Any] | None = None) -> np.ndarray:
    """D = -(1/T^2) sum_q sum_k |q - k| A[q, k]: how close weights sit to the diagonal."""
    steps = attn.shape[-1]
    maps = _per_head(attn)
    # np.dot (BLAS gemv) releases the GIL; the @ operator holds it
    totals = np.dot(maps.reshape(-1, steps * steps), _distances(steps)).reshape(maps.shape[:-1])
    return -totals.astype(np.float64) / float(steps * steps)


@functools.lru_cache(maxsize=4)
def _distances(steps: int) -> np.ndarray:
    """|q - k| for a T x T map, flattened to ``[query * key]`` (float32, read-only)."""
    index = np.arange(steps, dtype=np.float32)
    distance = np.abs(index[:, None] - index[None, :]).reshape(-1)
    distance.flags.writeable = False
    return distance


def weight(attn: np.ndarray, meta: Mapping[str, Any] | None = None) -> np.ndarray:
    """W = max_{q,k} A[q, k]: the largest weight (baseline importance of prior work)."""
    return _per_head(attn).max(axis=-1).astype(np.float64)


BUILTIN_METRICS = (
    HeadMetric(
        "globalness",
        globalness,
        prune_first="highest",
        description="mean entropy of a head's attention rows (high = attends broadly)",
    ),
    HeadMetric(
        "verticality",
        verticality,
        prune_first="highest",
        description="negative entropy of the mean attention row (high = all queries look at the same keys)",
    ),
    HeadMetric(
        "diagonality",
        diagonality,
        prune_first="highest",
        description="negative mean query-key distance, normalised by T^2 (high = attends near itself)",
    ),
    HeadMetric(
        "weight",
        weight,
        prune_first="lowest",
        description="largest attention weight (prior work's importance; prune the lowest first)",
    ),
)
