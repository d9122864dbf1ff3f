"""How local is a head? Its offset profile, compared with uniform attention.

For one utterance of T steps and a head's map ``A[query, key]``, the weight
at relative offset d is the mean over queries of ``A[q, q + d]`` (queries
whose key ``q + d`` exists). Uniform attention puts 1/T on every key, so
``T * weight`` is the weight *in units of uniform*: 1 = no preference. Over
a corpus, the sums and query counts are pooled (each query counts once),
which gives the head's *offset profile*; its largest value is the head's
*locality*, at its *favourite offset*.

The paper's diagonal heads put most of their weight on a few offsets near 0
(tens of times uniform). Diagonality D ranks heads but does not say whether
any head is local: a head can top the D ranking at 2x uniform. satool calls
a head local when its favourite offset carries at least :data:`LOCAL_RATIO`
times the uniform weight, and says "diagonal" in prose only of such heads.
"""

from __future__ import annotations

import numpy as np

LOCAL_RATIO = 5.0  # a head is "local" when its favourite offset carries >= 5x the uniform weight
MAX_OFFSET = 20  # offsets -20..20 steps are profiled


def offset_sums(attn: np.ndarray, max_offset: int = MAX_OFFSET) -> tuple[np.ndarray, np.ndarray]:
    """For ``attn[..., query, key]`` of one utterance: ``(sums[..., offset], queries[offset])``.

    ``sums[..., i]`` is ``T * sum_q attn[..., q, q + d]`` for ``d = i - max_offset`` (weights in
    units of uniform attention, summed over queries) and ``queries[i]`` the number of queries
    that have a key at offset d (0 where ``|d| >= T``).
    """
    steps = attn.shape[-1]
    offsets = range(-max_offset, max_offset + 1)
    sums = np.stack([np.diagonal(attn, offset=d, axis1=-2, axis2=-1).sum(axis=-1, dtype=np.float64)
                     if abs(d) < steps else np.zeros(attn.shape[:-2]) for d in offsets], axis=-1)
    queries = np.array([max(steps - abs(d), 0) for d in offsets], dtype=np.float64)
    return sums * steps, queries


def profile(sums: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Pooled sums and query counts -> the offset profile ``[..., offset]`` (NaN where no query)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(queries > 0, sums / np.maximum(queries, 1), np.nan)


def locality(offset_profile: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ratio[...], offset[...])``: each head's largest profile value and its offset in steps."""
    max_offset = (offset_profile.shape[-1] - 1) // 2
    filled = np.where(np.isfinite(offset_profile), offset_profile, -np.inf)
    best = filled.argmax(axis=-1)
    ratio = np.take_along_axis(filled, best[..., None], axis=-1)[..., 0]
    return np.where(np.isfinite(ratio), ratio, np.nan), best - max_offset


def uniform_diagonality(steps: int) -> float:
    """D of uniform attention over ``steps`` keys: -(1/T^3) sum_q sum_k |q - k| = -(T^2 - 1) / (3 T^2)."""
    return -(steps * steps - 1) / (3.0 * steps * steps)
