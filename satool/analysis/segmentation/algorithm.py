"""Kernel-Gram segmentation (docs/science.md §4-5): up-sampling, the Gram matrix, the filtered
matrix, the score curve and its minima, vectorised (see :mod:`satool.analysis.segmentation`)."""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import as_strided

from satool.analysis.segmentation.checks import (
    _as_frames,
    _as_square,
    _check_alpha,
    _check_beta,
    _check_frame_shift,
    _check_positive_int,
)

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


def distances(v: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Euclidean distances between the distinct frames of ``v [frame, dim]`` and the map frame ->
    distinct frame (None when all are distinct): what :func:`kernel_gram` needs for any alpha, so a
    grid of alphas computes it once (:meth:`SegmentationWork.from_distances`)."""
    return _distinct_distances(_as_frames(v))


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


def _leading_above(rows: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """``[row, beta]``: how many leading entries of each non-increasing row exceed ``eps[row, beta]``
    (= the row's count of entries above it): a binary search over the columns for every pair at once."""
    T = rows.shape[1]
    lo = np.zeros(eps.shape, dtype=np.int64)  # every entry before lo is above
    hi = np.full(eps.shape, T, dtype=np.int64)  # every entry from hi on is not
    row = np.arange(rows.shape[0])[:, None]
    while True:
        open_ = lo < hi
        if not open_.any():
            return lo
        mid = (lo + hi) // 2
        above = rows[row, np.minimum(mid, T - 1)] > eps
        lo = np.where(open_ & above, mid + 1, lo)
        hi = np.where(open_ & ~above, mid, hi)


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
    def from_distances(cls, found: tuple[np.ndarray, np.ndarray | None], alpha: float) -> SegmentationWork:
        """Build from :func:`distances` (computed once for every alpha of a grid); the same K as
        ``SegmentationWork(v, alpha)`` to the last bit."""
        d, inverse = found
        alpha = _check_alpha(alpha)
        k = d / -alpha
        return cls.from_kernel(_expand(np.exp(k, out=k), inverse), alpha)

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

    def extents_for(self, betas) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`extents` for every beta of ``betas`` at once: each row's running minima only fall going
        outwards, so how many exceed a threshold is found by a binary search, for every row and beta
        together. Identical results."""
        betas = np.array([_check_beta(b) for b in betas], dtype=np.float64)
        eps = self.row_mean[:, None] * betas[None, :]  # [row, beta]
        idx = np.arange(self.n_frames)
        right = idx[:, None] + _leading_above(self._right_min, eps) - 1
        left = idx[:, None] - _leading_above(self._left_min, eps) + 1
        return [(left[:, b], right[:, b]) for b in range(len(betas))]

    def boundary_frames_for(self, betas) -> list[np.ndarray]:
        """:meth:`boundary_frames` for every beta of ``betas`` (see :meth:`extents_for`)."""
        return [local_minima(_score_from_extents(left, right)) for left, right in self.extents_for(betas)]

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
