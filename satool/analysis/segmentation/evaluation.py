"""Scoring predicted boundaries against reference ones (Räsänen et al. 2009): strict one-to-one hits
or the lenient counting of public code, and the R-value (docs/science.md §5)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from satool.analysis.segmentation.checks import (
    DEFAULT_TOLERANCE_S,
    TOLERANCE_SLACK_S,
    _check_number,
    _check_tolerance,
)
from satool.errors import UsageError


def _sorted_times(x: Any, what: str) -> np.ndarray:
    if np.ndim(x) == 0:
        raise UsageError(
            f"{what} must be a list with one sequence of boundary times per utterance, "
            f"got a scalar entry {x!r}"
        )
    try:
        a = np.asarray(x, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise UsageError(f"{what} boundaries must be numbers (seconds)") from None
    if not np.isfinite(a).all():
        raise UsageError(f"{what} boundaries must be finite numbers (seconds)")
    return np.sort(a)


def _windows(targets: np.ndarray, points: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """For each point, the index range ``[lo, hi)`` of sorted targets within ``tol``."""
    lo = np.searchsorted(targets, points - tol, side="left")
    hi = np.searchsorted(targets, points + tol, side="right")
    return lo, hi


def _strict_hits(ref: np.ndarray, pred: np.ndarray, tol: float) -> int:
    """Size of a maximum one-to-one matching (both arrays sorted; ``tol`` includes the slack).

    Each prediction, in time order, takes the earliest still-free reference
    within tolerance. All windows have the same width, so their starts and
    ends are sorted alike, and this greedy is optimal (the exchange argument
    of interval scheduling; tests/test_segmentation.py checks it against a
    brute-force maximum bipartite matching). References before the pointer
    are taken or out of reach of every later prediction.
    """
    if len(ref) == 0 or len(pred) == 0:
        return 0
    lo, hi = _windows(ref, pred, tol)
    reach = hi > lo
    hits = 0
    j = 0
    for a, b in zip(lo[reach].tolist(), hi[reach].tolist(), strict=True):
        if j < a:
            j = a
        if j < b:
            hits += 1
            j += 1
    return hits


def _near_count(points: np.ndarray, targets: np.ndarray, tol: float) -> int:
    """How many points have at least one target within ``tol`` (targets sorted)."""
    if len(points) == 0 or len(targets) == 0:
        return 0
    lo, hi = _windows(targets, points, tol)
    return int(np.count_nonzero(hi > lo))


def _metrics(hits: int, hits_ref: int, n_ref: int, n_pred: int, mode: str) -> dict[str, float | int]:
    """Ratios from counts (docs/science.md §5), with the zero-denominator conventions of the docs."""
    precision = hits / n_pred if n_pred else 0.0
    recall = hits_ref / n_ref if n_ref else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    if n_ref:
        if mode == "lenient" and precision > 0:
            os_ = recall / precision - 1.0  # as Kreuk et al.'s code; = n_pred/n_ref - 1 if hits == hits_ref
        else:
            os_ = n_pred / n_ref - 1.0
        r1 = math.sqrt((1.0 - recall) ** 2 + os_**2)
        r2 = (-os_ + recall - 1.0) / math.sqrt(2.0)
        r_value = 1.0 - (abs(r1) + abs(r2)) / 2.0
    else:
        os_ = r_value = math.nan
    return {
        "hits": int(hits), "hits_ref": int(hits_ref), "n_ref": int(n_ref), "n_pred": int(n_pred),
        "precision": precision, "recall": recall, "f1": f1, "os": os_, "r_value": r_value,
    }


def r_value_from_counts(hits, n_ref, n_pred):
    """Strict R-value from pooled counts; numpy arrays broadcast (NaN where ``n_ref`` is 0).

    The same formula as :func:`evaluate_boundaries` in strict mode, vectorised for bootstrapping.
    """
    hits, n_ref, n_pred = (np.asarray(x, dtype=np.float64) for x in (hits, n_ref, n_pred))
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(n_ref > 0, hits / np.maximum(n_ref, 1), np.nan)
        over = np.where(n_ref > 0, n_pred / np.maximum(n_ref, 1) - 1.0, np.nan)
    r1 = np.sqrt((1.0 - recall) ** 2 + over**2)
    r2 = (-over + recall - 1.0) / np.sqrt(2.0)
    return 1.0 - (np.abs(r1) + np.abs(r2)) / 2.0


_MODES = ("strict", "lenient")


def _check_mode(mode: Any) -> str:
    if mode not in _MODES:
        raise UsageError(f"unknown evaluation mode {mode!r}; choose 'strict' or 'lenient'")
    return mode


def evaluate_boundaries(
    reference: Iterable[Sequence[float] | np.ndarray],
    predicted: Iterable[Sequence[float] | np.ndarray],
    tolerance: float = DEFAULT_TOLERANCE_S,
    mode: str = "strict",
) -> dict[str, Any]:
    """Boundary precision, recall, F1, over-segmentation and R-value (Räsänen et al. 2009).

    Args:
        reference, predicted: one entry per utterance (same order and length),
            each a 1-D sequence of boundary times in seconds. Entries may be
            unsorted (they are sorted) and may hold duplicates (kept: each copy
            is a boundary of its own). Reference boundaries should be the phone
            boundaries inside the utterance, not its start and end.
        tolerance: seconds; a prediction can hit a reference when
            ``|t_pred - t_ref| <= tolerance + 1e-9`` (inclusive; the 1 ns
            slack absorbs float rounding).
        mode: ``"strict"`` (the paper's counting): hits = the size of a
            maximum one-to-one matching between predictions and references
            within tolerance, per utterance; precision = hits / n_pred and
            recall = hits / n_ref. ``"lenient"`` (the counting of widely used
            public code, e.g. Kreuk et al. 2020): ``hits`` = predictions with at
            least one reference within tolerance (precision = hits / n_pred)
            and ``hits_ref`` = references with at least one prediction within
            tolerance (recall = hits_ref / n_ref); a reference may be hit by
            several predictions and a prediction may hit several references,
            which inflates the scores. As in that code, lenient OS is
            ``recall / precision - 1`` (it equals ``n_pred / n_ref - 1`` when
            ``hits == hits_ref``; with no hits at all it falls back to that
            count formula); the count formula would not do here, because
            lenient recall can exceed ``n_pred / n_ref`` and the R-value
            geometry then breaks.

    Strict mode uses the formulas of docs/science.md §5 throughout: P = hits / n_pred,
    HR = hits / n_ref, F1 = 2PR / (P + R), OS = n_pred / n_ref - 1,
    r1 = sqrt((1 - HR)^2 + OS^2), r2 = (-OS + HR - 1) / sqrt(2),
    R-value = 1 - (|r1| + |r2|) / 2.

    Counts are summed over all utterances before the ratios are taken.

    Returns:
        dict with ``mode``, ``tolerance``, ``n_utterances``, ``hits``,
        ``hits_ref`` (equal to ``hits`` in strict mode), ``n_ref``,
        ``n_pred``, ``precision``, ``recall``, ``f1``, ``os``, ``r_value``
        (ratios as fractions, not percent). Zero denominators: precision is
        0.0 without predictions, recall is 0.0 without references, F1 is 0.0
        when precision + recall is 0; ``os`` and ``r_value`` are NaN without
        references (they are relative to the reference count).

    Raises:
        UsageError: unknown mode, negative or non-finite tolerance, different
            numbers of utterances, a scalar instead of a per-utterance list,
            non-numeric or non-finite boundary times.
    """
    mode = _check_mode(mode)
    tolerance = _check_tolerance(tolerance)
    refs = list(reference)
    preds = list(predicted)
    if len(refs) != len(preds):
        raise UsageError(
            f"reference has {len(refs)} utterances but predicted has {len(preds)}; "
            "pass one list of boundary times per utterance in both"
        )
    totals = np.zeros(4, np.int64)
    for r, p in zip(refs, preds, strict=True):
        totals += boundary_counts(r, p, tolerance, mode)
    return scores_of_counts(totals, tolerance, mode, len(refs))


def boundary_counts(reference: Sequence[float] | np.ndarray, predicted: Sequence[float] | np.ndarray,
                    tolerance: float, mode: str) -> np.ndarray:
    """One utterance's ``[hits, hits_ref, n_ref, n_pred]`` (int64) as :func:`evaluate_boundaries` counts
    them; counts of several utterances add up to theirs."""
    tol = tolerance + TOLERANCE_SLACK_S
    r = _sorted_times(reference, "reference")
    p = _sorted_times(predicted, "predicted")
    if mode == "strict":
        hits = hits_ref = _strict_hits(r, p, tol)
    else:
        hits, hits_ref = _near_count(p, r, tol), _near_count(r, p, tol)
    return np.array([hits, hits_ref, len(r), len(p)], np.int64)


def scores_of_counts(counts: Sequence[int] | np.ndarray, tolerance: float, mode: str, n_utterances: int
                     ) -> dict[str, Any]:
    """:func:`evaluate_boundaries`'s dict from summed ``[hits, hits_ref, n_ref, n_pred]``."""
    hits, hits_ref, n_ref, n_pred = (int(c) for c in counts)
    out: dict[str, Any] = {"mode": mode, "tolerance": tolerance, "n_utterances": int(n_utterances)}
    out.update(_metrics(hits, hits_ref, n_ref, n_pred, mode))
    return out


def evenly_spaced_boundaries(duration_s: float, rate_per_s: float) -> np.ndarray:
    """Baseline boundaries ``k / rate_per_s`` (k = 1, 2, ...) strictly inside ``(0, duration_s)``.

    Times closer than 1 ns to ``duration_s`` count as the end and are left out.
    """
    duration_s = _check_number(duration_s, "duration_s")
    rate_per_s = _check_number(rate_per_s, "rate_per_s", positive=True)
    n = int(math.floor(duration_s * rate_per_s)) + 1
    t = np.arange(1, n + 1, dtype=np.float64) / rate_per_s
    return t[t < duration_s - TOLERANCE_SLACK_S]
