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

import functools

import numpy as np

from satool.results.metrics import LOCAL_RATIO, locality  # noqa: F401  (the summary lives with the results)

MAX_OFFSET = 10  # offsets -10..10 steps are profiled (+-300 ms at R = 3, +-200 ms for 20 ms models)


@functools.lru_cache(maxsize=64)
def _band(steps: int, max_offset: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Flat indices ``q * T + q + d`` of the band, grouped by offset d, the start of each non-empty
    group, which offsets those groups are, and the number of queries per offset (read-only)."""
    indices, starts, present, queries = [], [], [], []
    position = 0
    for i, d in enumerate(range(-max_offset, max_offset + 1)):
        q = np.arange(max(0, -d), min(steps, steps - d))
        queries.append(len(q))
        if len(q):
            indices.append(q * (steps + 1) + d)
            starts.append(position)
            present.append(i)
            position += len(q)
    arrays = (np.concatenate(indices), np.array(starts), np.array(present), np.array(queries, dtype=np.float64))
    for a in arrays:
        a.flags.writeable = False
    return arrays


def offset_sums(attn: np.ndarray, max_offset: int = MAX_OFFSET, *,
                rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For ``attn[..., query, key]`` of one utterance: ``(sums[..., offset], queries[offset])``.

    ``sums[..., i]`` is ``T * sum_q attn[..., q, q + d]`` for ``d = i - max_offset`` (weights in
    units of uniform attention, summed over queries) and ``queries[i]`` the number of queries
    that have a key at offset d (0 where ``|d| >= T``). One gather of the band, then one sum per
    offset (about a quarter of the cost of the head metrics together; docs/performance.md).
    ``rows`` (bool ``[query]``): only those queries count (in the sums and in ``queries``).
    """
    steps = attn.shape[-1]
    if rows is not None:
        rows = np.asarray(rows, bool)
        attn = attn * rows[:, None]
        offsets = np.arange(-max_offset, max_offset + 1)
        q = np.flatnonzero(rows)
        valid = (q[None, :] + offsets[:, None] >= 0) & (q[None, :] + offsets[:, None] < steps)
        sums, _ = offset_sums(attn, max_offset)
        return sums, valid.sum(axis=1).astype(np.float64)
    indices, starts, present, queries = _band(steps, max_offset)
    maps = attn.reshape(-1, steps * steps)
    sums = np.zeros((maps.shape[0], 2 * max_offset + 1))
    sums[:, present] = np.add.reduceat(np.take(maps, indices, axis=1), starts, axis=1, dtype=np.float64)
    return sums.reshape(*attn.shape[:-2], 2 * max_offset + 1) * steps, queries


def profile(sums: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Pooled sums and query counts -> the offset profile ``[..., offset]`` (NaN where no query)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(queries > 0, sums / np.maximum(queries, 1), np.nan)


def uniform_diagonality(steps: int) -> float:
    """D of uniform attention over ``steps`` keys: -(1/T^3) sum_q sum_k |q - k| = -(T^2 - 1) / (3 T^2)."""
    return -(steps * steps - 1) / (3.0 * steps * steps)
