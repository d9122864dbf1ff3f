"""Choosing alpha and beta on a validation split (grid search for the best strict R-value) and the
precision-recall sweep over beta."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from satool.analysis.segmentation.algorithm import SegmentationWork, _pairwise_distances, distances
from satool.analysis.segmentation.checks import (
    ALPHA_MULTIPLIERS,
    DEFAULT_TOLERANCE_S,
    TOLERANCE_SLACK_S,
    _as_frames,
    _check_alpha,
    _check_beta,
    _check_frame_shift,
    _check_positive_int,
    _check_tolerance,
)
from satool.analysis.segmentation.evaluation import (
    _metrics,
    _near_count,
    _sorted_times,
    _strict_hits,
    scores_of_counts,
)
from satool.errors import UsageError


@dataclass(frozen=True)
class TuneResult:
    """Outcome of :func:`tune`.

    Attributes:
        alpha, beta: the best grid point (highest strict R-value; ties: higher
            F1, then smaller alpha, then smaller beta; NaN R-values rank last).
        metrics: the strict metrics at the best point (as
            :func:`evaluate_boundaries` returns them).
        table: one dict per grid point, alphas outer and betas inner in the
            order given: ``alpha``, ``beta`` and the strict metrics.
        tolerance, frame_shift_s: the evaluation settings used.
    """

    alpha: float
    beta: float
    metrics: dict[str, Any]
    table: list[dict[str, Any]] = field(repr=False)
    tolerance: float = DEFAULT_TOLERANCE_S
    frame_shift_s: float = 0.01


def _prepare(utterances: Iterable[Any]) -> list[tuple[np.ndarray, np.ndarray]]:
    prepared = []
    for n, item in enumerate(utterances):
        try:
            features, ref = item
        except (TypeError, ValueError):
            raise UsageError(
                f"utterance {n}: expected a pair (features [frame, dim], reference boundary times)"
            ) from None
        features = np.asarray(features)
        if features.ndim != 2:
            raise UsageError(f"utterance {n}: features must be [frame, dim], got shape {features.shape}")
        prepared.append((features, _sorted_times(ref, "reference")))
    if not prepared:
        raise UsageError("no utterances to segment")
    return prepared


def _grid(values: Any, name: str, check: Callable[[Any], float]) -> list[float]:
    if isinstance(values, str) or not isinstance(values, Iterable):
        values = [values]
    try:
        arr = np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise UsageError(f"the {name} grid must hold numbers, got {values!r}") from None
    if arr.size == 0:
        raise UsageError(f"the {name} grid is empty")
    return [check(v) for v in arr.tolist()]


def _sweep(
    prepared: list[tuple[np.ndarray, np.ndarray]],
    alphas: list[float],
    betas: list[float],
    tol: float,
    frame_shift_s: float,
    lenient: bool,
    progress: Callable[[], None] | None = None,
) -> list[dict[str, np.ndarray]]:
    """Counts per beta, summed over utterances, for each alpha (one dict per alpha). Each utterance's
    frame distances are computed once for every alpha, and every beta is read from one pass."""
    nb = len(betas)
    counts = [{k: np.zeros(nb, dtype=np.int64) for k in ("hits", "n_pred", "l_hits", "l_hits_ref")} for _ in alphas]
    n_ref = 0
    for features, ref in prepared:
        found = distances(features)
        n_ref += len(ref)
        for a, alpha in enumerate(alphas):
            _count_betas(SegmentationWork.from_distances(found, alpha), ref, betas, tol, frame_shift_s, lenient,
                         counts[a])
            if progress is not None:
                progress()
        del found
    for c in counts:
        c["n_ref"] = np.full(nb, n_ref, dtype=np.int64)
    return counts


def _count_betas(work: SegmentationWork, ref: np.ndarray, betas: list[float], tol: float, frame_shift_s: float,
                 lenient: bool, counts: dict[str, np.ndarray]) -> None:
    """Add one utterance's counts at every beta of ``betas`` (its K in ``work``) to ``counts``."""
    for b, frames in enumerate(work.boundary_frames_for(betas)):
        pred = frames * frame_shift_s
        counts["n_pred"][b] += len(pred)
        counts["hits"][b] += _strict_hits(ref, pred, tol)
        if lenient:
            counts["l_hits"][b] += _near_count(pred, ref, tol)
            counts["l_hits_ref"][b] += _near_count(ref, pred, tol)


def _progress_counter(progress: Callable[[int, int], Any] | None, total: int) -> Callable[[], None] | None:
    if progress is None:
        return None
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        progress(done, total)

    return step


def tune(
    utterances: Iterable[tuple[np.ndarray, Any]],
    alphas: Iterable[float],
    betas: Iterable[float],
    *,
    tolerance: float = DEFAULT_TOLERANCE_S,
    frame_shift_s: float = 0.01,
    progress: Callable[[int, int], Any] | None = None,
) -> TuneResult:
    """Grid search of (alpha, beta) for the best strict R-value on a validation set.

    Args:
        utterances: ``(features [frame, dim], reference boundary times in s)``
            pairs; features at the label frame rate (up-sample model outputs first).
        alphas, betas: the grid (e.g. :func:`default_alpha_grid` and :data:`DEFAULT_BETAS`).
        tolerance: hit tolerance in seconds (strict counting).
        frame_shift_s: seconds per frame.
        progress: optional ``callable(done, total)`` called after each
            (alpha, utterance) pair; ``total = len(alphas) * len(utterances)``.

    Frame distances are computed once per utterance, K once per (utterance, alpha), and every beta
    is read from K in one pass.
    """
    prepared = _prepare(utterances)
    alpha_list = _grid(alphas, "alpha", _check_alpha)
    beta_list = _grid(betas, "beta", _check_beta)
    tolerance = _check_tolerance(tolerance)
    frame_shift_s = _check_frame_shift(frame_shift_s)
    step = _progress_counter(progress, len(alpha_list) * len(prepared))
    tol = tolerance + TOLERANCE_SLACK_S
    table: list[dict[str, Any]] = []
    for alpha, c in zip(alpha_list, _sweep(prepared, alpha_list, beta_list, tol, frame_shift_s, lenient=False,
                                           progress=step)):
        for b, beta in enumerate(beta_list):
            row: dict[str, Any] = {"alpha": alpha, "beta": beta, "mode": "strict", "tolerance": tolerance,
                                   "n_utterances": len(prepared)}
            row.update(_metrics(int(c["hits"][b]), int(c["hits"][b]), int(c["n_ref"][b]), int(c["n_pred"][b]),
                                "strict"))
            table.append(row)

    def rank(row: dict[str, Any]) -> tuple[float, float, float, float]:
        rv = row["r_value"]
        return (-math.inf if math.isnan(rv) else rv, row["f1"], -row["alpha"], -row["beta"])

    best = max(table, key=rank)
    metrics = {k: v for k, v in best.items() if k not in ("alpha", "beta")}
    return TuneResult(alpha=best["alpha"], beta=best["beta"], metrics=metrics, table=table,
                      tolerance=tolerance, frame_shift_s=frame_shift_s)


def pr_curve(
    utterances: Iterable[tuple[np.ndarray, Any]],
    alpha: float,
    betas: Iterable[float],
    *,
    tolerance: float = DEFAULT_TOLERANCE_S,
    frame_shift_s: float = 0.01,
) -> list[dict[str, Any]]:
    """Precision-recall sweep over beta at a fixed alpha.

    Returns one dict per beta, in the order given:
    ``{"beta": beta, "strict": metrics, "lenient": metrics}`` where both
    metrics dicts are as :func:`evaluate_boundaries` returns them.
    """
    prepared = _prepare(utterances)
    alpha = _check_alpha(alpha)
    beta_list = _grid(betas, "beta", _check_beta)
    tolerance = _check_tolerance(tolerance)
    frame_shift_s = _check_frame_shift(frame_shift_s)
    c = _sweep(prepared, [alpha], beta_list, tolerance + TOLERANCE_SLACK_S, frame_shift_s, lenient=True)[0]
    counts = _curve_counts(c)
    return [{"beta": beta, **{mode: scores_of_counts(counts[b, m], tolerance, mode, len(prepared))
                              for m, mode in enumerate(("strict", "lenient"))}}
            for b, beta in enumerate(beta_list)]


def pr_curve_counts(work: SegmentationWork, reference: Any, betas: Sequence[float], *,
                    tolerance: float = DEFAULT_TOLERANCE_S, frame_shift_s: float = 0.01) -> np.ndarray:
    """One utterance's counts of :func:`pr_curve` at the alpha of ``work`` (its SegmentationWork),
    ``[beta, mode (strict, lenient), 4]`` with ``[hits, hits_ref, n_ref, n_pred]`` (int64): the counts
    of several utterances add up to theirs."""
    ref = _sorted_times(reference, "reference")
    betas = list(betas)
    counts = {k: np.zeros(len(betas), dtype=np.int64) for k in ("hits", "n_pred", "l_hits", "l_hits_ref")}
    _count_betas(work, ref, betas, tolerance + TOLERANCE_SLACK_S, frame_shift_s, True, counts)
    counts["n_ref"] = np.full(len(betas), len(ref), dtype=np.int64)
    return _curve_counts(counts)


def _curve_counts(c: dict[str, np.ndarray]) -> np.ndarray:
    """``[beta, mode, 4]`` counts from one alpha's :func:`_sweep` dict."""
    strict = np.stack([c["hits"], c["hits"], c["n_ref"], c["n_pred"]], axis=-1)
    lenient = np.stack([c["l_hits"], c["l_hits_ref"], c["n_ref"], c["n_pred"]], axis=-1)
    return np.stack([strict, lenient], axis=1)


def default_alpha_grid(
    utterances: Iterable[Any],
    *,
    multipliers: Sequence[float] | np.ndarray = ALPHA_MULTIPLIERS,
    max_utterances: int = 32,
    max_frames: int = 200,
) -> np.ndarray:
    """A data-derived alpha grid: ``multipliers x`` the median within-utterance frame distance.

    alpha is a distance scale and is "not comparable across feature types",
    so the grid is anchored on the data: the median Euclidean distance over
    all pairs of distinct frames (i < j) of the same utterance, pooled over
    at most ``max_utterances`` utterances (evenly spaced in the list), each
    thinned to at most ``max_frames`` evenly spaced frames. The default
    multipliers are 9 log-spaced values from 0.1 to 10. Falls back to the
    mean of the non-zero distances if the median is 0, and to 1.0 if every
    distance is 0.

    ``utterances``: ``(features, reference)`` pairs as for :func:`tune`, or
    bare feature arrays ``[frame, dim]``.
    """
    items = list(utterances)
    if not items:
        raise UsageError("no utterances to derive an alpha grid from")
    mult = np.asarray(multipliers, dtype=np.float64).ravel()
    if mult.size == 0 or not np.all(np.isfinite(mult)) or np.any(mult <= 0):
        raise UsageError("alpha multipliers must be positive finite numbers")
    max_utterances = _check_positive_int(max_utterances, "max_utterances")
    max_frames = _check_positive_int(max_frames, "max_frames")
    picks = np.unique(np.linspace(0, len(items) - 1, min(len(items), max_utterances)).round().astype(int))
    pooled = []
    for n in picks.tolist():
        item = items[n]
        features = item[0] if isinstance(item, tuple | list) else item
        x = _as_frames(features)
        if len(x) < 2:
            continue
        rows = np.unique(np.linspace(0, len(x) - 1, min(len(x), max_frames)).round().astype(int))
        d = _pairwise_distances(x[rows])
        pooled.append(d[np.triu_indices(len(rows), k=1)])
    dist = np.concatenate(pooled) if pooled else np.zeros(0)
    scale = float(np.median(dist)) if dist.size else 0.0
    if not scale > 0:
        positive = dist[dist > 0]
        scale = float(positive.mean()) if positive.size else 1.0
    return scale * mult
