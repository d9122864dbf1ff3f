"""Phoneme segmentation with kernel-Gram matrices, and boundary evaluation (docs/science.md §4-5).

The segmentation method is the kernel-Gram-matrix segmentation of Bhati et al.
("Unsupervised segmentation of speech signals using kernel-Gram matrices",
NCVPRIPG 2017) as used by Yang, Liu & Lee (Interspeech 2020, sec. 5 and
supplementary sec. 2) on attention maps, MFCCs, log-Mel and hidden states:

1. ``K[i, j] = exp(-||v_i - v_j||_2 / alpha)``                    (:func:`kernel_gram`)
2. ``eps_i = beta * mean_j K[i, j]``
3. ``Kf[i, j] = 1`` iff ``K[i, k] > eps_i`` for every k between i and j
   inclusive                                                      (:func:`filtered_matrix`)
4. ``S[t] = sum_k Kf[t - k, t + k]`` over every integer k (negative, zero and
   positive) with both indices in ``0..T-1``, i.e. the sum of the whole
   anti-diagonal ``i + j = 2t`` of ``Kf``                         (:func:`score_curve`)
5. boundaries = local minima of S                                 (:func:`local_minima`)

Readings of the points the paper leaves open (see docs/segmentation.md):

- step 3 is strict (``>``); ``K[i, i] = 1`` belongs to the range, so a row
  whose threshold is ``>= 1`` is all zero (no run at all);
- step 4 sums the full anti-diagonal (both triangles; k = 0 counted once),
  because the definition (docs/science.md §5) says "over all k with both indices inside 0..T-1";
- step 5: a local minimum is a maximal run of equal values (length >= 1)
  whose left and right neighbours are both strictly larger; the boundary is
  the run's centre frame ``(first + last) // 2`` (the earlier of the two
  middle frames for even runs). Runs touching frame 0 or frame T-1 are never
  boundaries (the utterance's own start and end are not boundaries).

Everything is vectorised: one utterance costs a T x T Gram matrix (computed on
the distinct rows only, so the R-fold repeated rows of up-sampled inputs cost
nothing extra), a few T x T passes and O(T) work for the score curve, which is
built from the run extents of the rows without materialising ``Kf``.
:class:`SegmentationWork` keeps what depends only on (frames, alpha) so that
many beta values cost one comparison pass each.

Evaluation (:func:`evaluate_boundaries`) follows Räsänen et al. (2009) with
strict one-to-one hits (maximum matching) or the lenient counting of public
code (Kreuk et al. 2020); :func:`tune` and :func:`pr_curve` are the grid search
and the precision-recall sweep of the paper.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from satool.errors import UsageError

__all__ = [
    "ALPHA_MULTIPLIERS",
    "DEFAULT_BETAS",
    "DEFAULT_TOLERANCE_S",
    "TOLERANCE_SLACK_S",
    "SegmentationWork",
    "TuneResult",
    "default_alpha_grid",
    "evaluate_boundaries",
    "evenly_spaced_boundaries",
    "filtered_matrix",
    "kernel_gram",
    "local_minima",
    "pr_curve",
    "score_curve",
    "segment",
    "tune",
    "upsample_attention",
    "upsample_frames",
]

DEFAULT_TOLERANCE_S = 0.02
"""The paper's (and Räsänen et al.'s) hit tolerance: 20 ms."""

TOLERANCE_SLACK_S = 1e-9
"""Added to the tolerance so that float rounding never decides a hit: a
prediction hits a reference when ``|t_pred - t_ref| <= tolerance + 1e-9``
(0.05 - 0.03 is 0.020000000000000004 in binary floating point)."""

ALPHA_MULTIPLIERS = np.logspace(-1.0, 1.0, 9)
""":func:`default_alpha_grid`: alpha = these x the median within-utterance
distance between frames (0.1 ... 10, log-spaced)."""

DEFAULT_BETAS = np.array([
    0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.15, 1.2,
    1.3, 1.4, 1.5, 1.6, 1.8, 2.0, 2.25, 2.5, 2.75, 3.0,
])
"""Default beta grid: 24 values from 0.3 to 3.0, denser around 1.

Why: ``K[i, i] = 1`` and ``eps_i = beta * mean_i(K)``, so rows whose mean
kernel value reaches ``1/beta`` are empty. With wide kernels (alpha of a few
median frame distances or more) every row mean is close to 1, only betas
within about +-0.1 of 1 give any boundaries, and 0.05 steps matter; with
narrow kernels (alpha ~ 0.1-0.5 x the median distance) betas from 0.3 to 3
all give between ~0.2 and ~1.3 boundaries per reference boundary on MFCC
and log-Mel features (docs/segmentation.md has the measured counts). The
number of boundaries is not monotonic in beta once rows start to empty."""


# --------------------------------------------------------------------------- checks


def _check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise UsageError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_number(value: Any, name: str, *, positive: bool = False) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(x) or x < 0 or (positive and x == 0):
        kind = "a positive" if positive else "a non-negative"
        raise UsageError(f"{name} must be {kind} finite number, got {value!r}")
    return x


def _check_alpha(alpha: Any) -> float:
    return _check_number(alpha, "alpha", positive=True)


def _check_beta(beta: Any) -> float:
    return _check_number(beta, "beta")


def _check_frame_shift(frame_shift_s: Any) -> float:
    return _check_number(frame_shift_s, "frame_shift_s", positive=True)


def _check_tolerance(tolerance: Any) -> float:
    return _check_number(tolerance, "tolerance")


def _as_frames(v: Any) -> np.ndarray:
    """float64 copy of ``v [frame, dim]`` with -0.0 turned into 0.0; rejects NaN/inf."""
    x = np.asarray(v)
    if x.ndim != 2:
        raise ValueError(f"expected frames [frame, dim], got an array of shape {x.shape}")
    x = x.astype(np.float64) + 0.0  # a fresh array; -0.0 + 0.0 == +0.0 bit for bit
    if not np.isfinite(x).all():
        raise ValueError("frames contain NaN or inf")
    return x


def _as_square(m: Any, name: str) -> np.ndarray:
    a = np.asarray(m)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {a.shape}")
    return a


# --------------------------------------------------------------------------- up-sampling


def upsample_attention(attn_map: np.ndarray, rate: int) -> np.ndarray:
    """Up-sample attention maps by ``rate`` (docs/science.md §4).

    ``[..., step, step] -> [..., step*rate, step*rate]``: every weight becomes
    a ``rate x rate`` block (Kronecker product with ``ones(rate, rate)``) and
    every row is divided by its sum, so rows sum to 1 again (a row that sums
    to 1 is divided by ``rate``); all-zero rows (pruned heads) stay zero.
    Leading axes (layer, head, ...) are carried along. Floating inputs keep
    their dtype, others become float64.
    """
    rate = _check_positive_int(rate, "rate")
    a = np.asarray(attn_map)
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"attention maps must be [..., step, step], got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
    up = np.repeat(np.repeat(a, rate, axis=-2), rate, axis=-1)
    sums = up.sum(axis=-1, keepdims=True)
    np.divide(up, sums, out=up, where=sums != 0)
    return up


def upsample_frames(x: np.ndarray, rate: int) -> np.ndarray:
    """``[step, ...] -> [step*rate, ...]``: repeat each step ``rate`` times (hidden states)."""
    rate = _check_positive_int(rate, "rate")
    a = np.asarray(x)
    if a.ndim < 1:
        raise ValueError("expected an array [step, ...], got a scalar")
    return np.repeat(a, rate, axis=0)


# --------------------------------------------------------------------------- kernel


_HASH_MULTIPLIERS: dict[int, np.ndarray] = {}


def _row_hashes(x: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row's bytes (x float64, C-contiguous); equal rows hash equal."""
    dim = x.shape[1]
    mult = _HASH_MULTIPLIERS.get(dim)
    if mult is None:
        rng = np.random.default_rng(0x5A7001)
        mult = _HASH_MULTIPLIERS[dim] = rng.integers(1, 2**63, size=dim, dtype=np.uint64) | np.uint64(1)
    with np.errstate(over="ignore"):
        mixed = x.view(np.uint64) * np.uint64(0x9E3779B97F4A7C15)  # per-element mixing
        mixed ^= mixed >> np.uint64(31)
        mixed *= mult
        return mixed.sum(axis=1, dtype=np.uint64)


def _distinct_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(indices of one representative per distinct row, inverse map) or None if all distinct.

    Exact. Runs of consecutive equal rows (up-sampled inputs) are merged
    first; the remaining rows are grouped by a hash of their bits and the
    grouping is verified element by element (a hash collision falls back to
    sorting the raw bytes). ``x`` is float64 and C-contiguous, with no -0.0.
    """
    n, dim = x.shape
    new_run = np.ones(n, dtype=bool)
    new_run[1:] = (x[1:] != x[:-1]).any(axis=1)
    heads = np.flatnonzero(new_run)
    run_of_row = np.cumsum(new_run) - 1
    y = x[heads]
    _, first, inverse = np.unique(_row_hashes(y), return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    if len(first) < len(y) and not np.array_equal(y, y[first[inverse]]):
        # hash collision: exact grouping by bytes
        rows = y.view(np.dtype((np.void, y.itemsize * dim))).ravel()
        _, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
        inverse = inverse.ravel()
    if len(first) == n:
        return None
    return heads[first], inverse[run_of_row]


def _distinct_distances(x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Euclidean distances between the distinct rows of ``x``, and the map row -> distinct row.

    Gram identity on centred float64 data, made exactly symmetric, clipped at
    0, exact 0 diagonal (so identical frames are at distance exactly 0). The
    map is None when all rows are distinct.
    """
    n, dim = x.shape
    if n == 0 or dim == 0:
        return np.zeros((min(n, 1), min(n, 1))), (np.zeros(n, dtype=np.intp) if n else None)
    groups = _distinct_rows(x)
    u = x if groups is None else x[groups[0]]
    u = u - u.mean(axis=0)
    sq = np.einsum("ij,ij->i", u, u)
    d = u @ u.T
    d *= -2.0
    d += sq[:, None]
    d += sq[None, :]
    d += d.T.copy()
    d *= 0.5  # exactly symmetric
    np.maximum(d, 0.0, out=d)
    np.fill_diagonal(d, 0.0)
    np.sqrt(d, out=d)
    return d, (None if groups is None else groups[1])


def _expand(m: np.ndarray, inverse: np.ndarray | None) -> np.ndarray:
    return m if inverse is None else m.take(inverse, axis=0).take(inverse, axis=1)


def _pairwise_distances(x: np.ndarray) -> np.ndarray:
    """Euclidean distances ``[frame, frame]`` (float64) between the rows of ``x``."""
    return _expand(*_distinct_distances(x))


def kernel_gram(v: np.ndarray, alpha: float) -> np.ndarray:
    """Kernel-Gram matrix ``K[i, j] = exp(-||v_i - v_j||_2 / alpha)`` (docs/science.md §5 step 1).

    ``v`` is ``[frame, dim]`` (any real dtype); the result is float64
    ``[frame, frame]``, symmetric, with ``K[i, i] = 1`` and exactly 1 between
    identical frames. The exponential is taken on the distinct rows only.
    """
    alpha = _check_alpha(alpha)
    d, inverse = _distinct_distances(_as_frames(v))
    d /= -alpha
    return _expand(np.exp(d, out=d), inverse)


# --------------------------------------------------------------------------- filter, score, minima


def _thresholds(K: np.ndarray, beta: float) -> np.ndarray:
    """``eps_i = beta * (1/T) * sum_j K[i, j]`` (step 2)."""
    T = K.shape[0]
    if T == 0:
        return np.zeros(0)
    return beta * (K.sum(axis=1) / T)


def _extents(K: np.ndarray, eps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row i, the run ``left_i..right_i`` of step 3 (``right_i = i - 1``, ``left_i = i + 1`` if empty)."""
    T = K.shape[0]
    if T == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    blocked = ~(K > eps[:, None])
    after = np.triu(blocked)  # blocked entries at k >= i
    right = np.where(after.any(axis=1), after.argmax(axis=1), T) - 1
    before = np.tril(blocked)[:, ::-1]  # blocked entries at k <= i, last column first
    last_before = T - 1 - before.argmax(axis=1)
    left = np.where(before.any(axis=1), last_before, -1) + 1
    return left, right


def _matrix_from_extents(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    cols = np.arange(len(left))
    return (cols[None, :] >= left[:, None]) & (cols[None, :] <= right[:, None])


def filtered_matrix(K: np.ndarray, beta: float) -> np.ndarray:
    """Filtered matrix ``Kf`` (docs/science.md §5 steps 2-3), bool ``[frame, frame]``.

    ``eps_i = beta * mean_j K[i, j]``; ``Kf[i, j]`` is True iff
    ``K[i, k] > eps_i`` (strictly) for every k between i and j inclusive, in
    either direction. Each row is therefore one contiguous run around its
    diagonal, or empty when ``K[i, i] <= eps_i``. Not symmetric in general.
    """
    K = _as_square(K, "K")
    beta = _check_beta(beta)
    left, right = _extents(K, _thresholds(K, beta))
    return _matrix_from_extents(left, right)


def score_curve(Kf: np.ndarray) -> np.ndarray:
    """Score curve ``S[t] = sum_k Kf[t - k, t + k]`` (docs/science.md §5 step 4).

    k runs over every integer, negative, zero and positive, with both indices
    inside ``0..T-1``: S[t] is the sum of the whole anti-diagonal ``i + j = 2t``
    (both triangles, the diagonal cell ``(t, t)`` once). Integer result for
    bool/integer input. Works for any square matrix, not only run-shaped ones.
    """
    M = _as_square(Kf, "Kf")
    T = M.shape[0]
    if T == 0:
        return np.zeros(0, dtype=np.int64)
    if M.dtype == bool or np.issubdtype(M.dtype, np.integer):
        M = M.astype(np.int64, copy=False)
    # Shift row i right by i: column c of the result holds M[i, c - i], i.e. the
    # anti-diagonal i + j = c; its sum over rows is the anti-diagonal sum.
    rows = T
    pad = np.zeros((rows, 2 * T), dtype=M.dtype)
    pad[:, :T] = M
    flat = pad.ravel()[: rows * (2 * T - 1)]
    sums = flat.reshape(rows, 2 * T - 1).sum(axis=0)
    return sums[0::2]


def _score_from_extents(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """``score_curve(Kf)`` in O(T) from the row runs, without building ``Kf``.

    Row i adds 1 to ``S[i + k]`` for ``k = 0 .. (right_i - i) // 2`` (cells
    ``(i, i + 2k)``, upper triangle and diagonal) and to ``S[i - k]`` for
    ``k = 1 .. (i - left_i) // 2`` (cells ``(i, i - 2k)``, lower triangle):
    two contiguous ranges per row, summed with a difference array.
    """
    T = len(left)
    idx = np.arange(T)
    up = right - idx
    has_up = up >= 0
    lo = idx - left
    has_lo = lo >= 2
    starts = np.concatenate([idx[has_up], idx[has_lo] - lo[has_lo] // 2])
    stops = np.concatenate([idx[has_up] + up[has_up] // 2, idx[has_lo] - 1]) + 1
    diff = np.bincount(starts, minlength=T + 1) - np.bincount(stops, minlength=T + 1)
    return np.cumsum(diff[:T])


def local_minima(S: np.ndarray) -> np.ndarray:
    """Frame indices of the local minima of a curve (docs/science.md §5 step 5).

    A minimum is a maximal run of equal values ``S[a] == ... == S[b]``
    (``a <= b``) with ``S[a - 1] > S[a]`` and ``S[b + 1] > S[b]``; it yields one
    boundary at ``(a + b) // 2`` (the centre; the earlier middle frame of an
    even-length run). A run that touches frame 0 or frame T-1 is never a
    minimum, so curves shorter than 3 frames have none. Returns sorted int64.
    """
    S = np.asarray(S)
    if S.ndim != 1:
        raise ValueError(f"expected a 1-D curve, got shape {S.shape}")
    T = len(S)
    if T < 3:
        return np.zeros(0, dtype=np.int64)
    change = np.flatnonzero(S[1:] != S[:-1]) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change - 1, [T - 1]])
    vals = S[starts]
    inner = (vals[:-2] > vals[1:-1]) & (vals[2:] > vals[1:-1])
    return ((starts[1:-1] + ends[1:-1]) // 2)[inner].astype(np.int64)


def segment(v: np.ndarray, alpha: float, beta: float, frame_shift_s: float = 0.01) -> np.ndarray:
    """Boundary times (seconds, float64, sorted) of one utterance's frames ``v [frame, dim]``.

    Frame t maps to ``t * frame_shift_s``. For many beta values on the same
    frames and alpha, use :class:`SegmentationWork` (K is computed once).
    """
    beta = _check_beta(beta)
    frame_shift_s = _check_frame_shift(frame_shift_s)
    K = kernel_gram(v, alpha)
    left, right = _extents(K, _thresholds(K, beta))
    return local_minima(_score_from_extents(left, right)) * frame_shift_s


def _running_min_outward(K: np.ndarray) -> np.ndarray:
    """``out[i, d] = min(K[i, i], ..., K[i, i + d])`` for ``i + d < T``, else ``-inf``.

    Row i is read from its diagonal onwards through a sheared strided view of
    a right-padded copy (row stride one element longer than the row), in
    blocks of rows to bound the temporary memory (~32 MB).
    """
    T = K.shape[0]
    out = np.full((T, T), -np.inf)
    block = max(64, 2_000_000 // max(1, T))
    for r0 in range(0, T, block):
        r1 = min(T, r0 + block)
        b, w = r1 - r0, T - r0
        buf = np.full((b, 2 * w), -np.inf)
        buf[:, :w] = K[r0:r1, r0:]  # row l of the block has its diagonal at column l
        step = buf.strides[1]
        sheared = as_strided(buf, shape=(b, w), strides=((2 * w + 1) * step, step), writeable=False)
        np.minimum.accumulate(sheared, axis=1, out=out[r0:r1, :w])
    return out


class SegmentationWork:
    """Everything about one utterance's frames and one alpha that beta does not change.

    Holds the row means of K and, per row, the running minimum of K going
    right and going left from the diagonal (two float64 ``[frame, frame]``
    arrays: 144 MB at 3000 frames). Row i's run for a given beta then has
    length "number of running minima > eps_i" on each side: one comparison
    pass per beta and side.

    Example::

        work = SegmentationWork(frames, alpha=1.0)
        for beta in DEFAULT_BETAS:
            times = work.boundaries(beta)
    """

    def __init__(self, v: np.ndarray, alpha: float):
        self._setup(kernel_gram(v, alpha), float(alpha))

    @classmethod
    def from_kernel(cls, K: np.ndarray, alpha: float = math.nan) -> SegmentationWork:
        """Build from a ready kernel-Gram matrix ``K [frame, frame]`` (``alpha`` is only recorded)."""
        work = cls.__new__(cls)
        work._setup(np.asarray(_as_square(K, "K"), dtype=np.float64), float(alpha))
        return work

    def _setup(self, K: np.ndarray, alpha: float) -> None:
        self.alpha = alpha
        self.n_frames = K.shape[0]
        self.row_mean = K.sum(axis=1) / self.n_frames if self.n_frames else np.zeros(0)
        self._right_min = _running_min_outward(K)
        self._left_min = _running_min_outward(K[::-1, ::-1])[::-1]

    def thresholds(self, beta: float) -> np.ndarray:
        """``eps_i = beta * mean_j K[i, j]`` (step 2)."""
        return _check_beta(beta) * self.row_mean

    def extents(self, beta: float) -> tuple[np.ndarray, np.ndarray]:
        """(left, right): row i of ``Kf`` is True exactly on ``left_i..right_i`` (empty: left > right)."""
        eps = self.thresholds(beta)[:, None]
        idx = np.arange(self.n_frames)
        right = idx + (self._right_min > eps).sum(axis=1) - 1
        left = idx - (self._left_min > eps).sum(axis=1) + 1
        return left, right

    def filtered(self, beta: float) -> np.ndarray:
        """The bool filtered matrix ``Kf`` (same as ``filtered_matrix(K, beta)``)."""
        return _matrix_from_extents(*self.extents(beta))

    def score(self, beta: float) -> np.ndarray:
        """The score curve ``S`` (same as ``score_curve(filtered_matrix(K, beta))``)."""
        return _score_from_extents(*self.extents(beta))

    def boundary_frames(self, beta: float) -> np.ndarray:
        """Frame indices of the boundaries (local minima of S)."""
        return local_minima(self.score(beta))

    def boundaries(self, beta: float, frame_shift_s: float = 0.01) -> np.ndarray:
        """Boundary times in seconds (same as ``segment(v, alpha, beta, frame_shift_s)``)."""
        return self.boundary_frames(beta) * _check_frame_shift(frame_shift_s)


# --------------------------------------------------------------------------- evaluation


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
    tol = tolerance + TOLERANCE_SLACK_S
    hits = hits_ref = n_ref = n_pred = 0
    for r, p in zip(refs, preds, strict=True):
        r = _sorted_times(r, "reference")
        p = _sorted_times(p, "predicted")
        n_ref += len(r)
        n_pred += len(p)
        if mode == "strict":
            h = _strict_hits(r, p, tol)
            hits += h
            hits_ref += h
        else:
            hits += _near_count(p, r, tol)
            hits_ref += _near_count(r, p, tol)
    out: dict[str, Any] = {"mode": mode, "tolerance": tolerance, "n_utterances": len(refs)}
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


# --------------------------------------------------------------------------- tuning


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
    alpha: float,
    betas: list[float],
    tol: float,
    frame_shift_s: float,
    lenient: bool,
    progress: Callable[[], None] | None = None,
) -> dict[str, np.ndarray]:
    """Counts per beta, summed over utterances, for one alpha."""
    nb = len(betas)
    counts = {k: np.zeros(nb, dtype=np.int64) for k in ("hits", "n_pred", "l_hits", "l_hits_ref")}
    n_ref = 0
    for features, ref in prepared:
        work = SegmentationWork(features, alpha)
        n_ref += len(ref)
        for b, beta in enumerate(betas):
            pred = work.boundary_frames(beta) * frame_shift_s
            counts["n_pred"][b] += len(pred)
            counts["hits"][b] += _strict_hits(ref, pred, tol)
            if lenient:
                counts["l_hits"][b] += _near_count(pred, ref, tol)
                counts["l_hits_ref"][b] += _near_count(ref, pred, tol)
        del work
        if progress is not None:
            progress()
    counts["n_ref"] = np.full(nb, n_ref, dtype=np.int64)
    return counts


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

    K is computed once per (utterance, alpha) and reused for every beta.
    """
    prepared = _prepare(utterances)
    alpha_list = _grid(alphas, "alpha", _check_alpha)
    beta_list = _grid(betas, "beta", _check_beta)
    tolerance = _check_tolerance(tolerance)
    frame_shift_s = _check_frame_shift(frame_shift_s)
    step = _progress_counter(progress, len(alpha_list) * len(prepared))
    tol = tolerance + TOLERANCE_SLACK_S
    table: list[dict[str, Any]] = []
    for alpha in alpha_list:
        c = _sweep(prepared, alpha, beta_list, tol, frame_shift_s, lenient=False, progress=step)
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
    c = _sweep(prepared, alpha, beta_list, tolerance + TOLERANCE_SLACK_S, frame_shift_s, lenient=True)
    out = []
    for b, beta in enumerate(beta_list):
        n_ref, n_pred = int(c["n_ref"][b]), int(c["n_pred"][b])
        common = {"tolerance": tolerance, "n_utterances": len(prepared)}
        strict = {"mode": "strict", **common,
                  **_metrics(int(c["hits"][b]), int(c["hits"][b]), n_ref, n_pred, "strict")}
        lenient = {"mode": "lenient", **common,
                   **_metrics(int(c["l_hits"][b]), int(c["l_hits_ref"][b]), n_ref, n_pred, "lenient")}
        out.append({"beta": beta, "strict": strict, "lenient": lenient})
    return out


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
