"""Kernel-Gram segmentation and boundary evaluation (satool.analysis.segmentation, SPEC sections 4-5).

The vectorised code is checked against a slow reference written with plain
Python loops that follows the SPEC text literally (``reference_*`` below; the
benchmark imports them too), against hand-worked examples, and -- for the
strict hit counting -- against a brute-force maximum bipartite matching.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from satool.analysis import segmentation as seg
from satool.errors import UsageError

# --------------------------------------------------------------------------- slow reference (SPEC text)


def reference_upsample_attention(A, rate):
    """SPEC 4: duplicate every weight into a rate x rate block, re-normalise rows to sum 1."""
    n = len(A)
    out = [[0.0] * (n * rate) for _ in range(n * rate)]
    for q in range(n * rate):
        for k in range(n * rate):
            out[q][k] = float(A[q // rate][k // rate])
    for q in range(n * rate):
        total = sum(out[q])
        if total != 0:
            out[q] = [x / total for x in out[q]]
    return out


def reference_kernel(v, alpha):
    """Step 1: K[i, j] = exp(-||v_i - v_j||_2 / alpha)."""
    T = len(v)
    K = [[0.0] * T for _ in range(T)]
    for i in range(T):
        for j in range(T):
            K[i][j] = math.exp(-math.dist(v[i], v[j]) / alpha)
    return K


def reference_filtered(K, beta):
    """Steps 2-3: eps_i = beta * (1/T) * sum_j K[i, j]; Kf[i, j] = all K[i, k] > eps_i, k between i and j."""
    T = len(K)
    Kf = [[False] * T for _ in range(T)]
    for i in range(T):
        eps_i = beta * (sum(K[i]) / T)
        for j in range(T):
            ks = range(i, j + 1) if i <= j else range(j, i + 1)
            Kf[i][j] = all(K[i][k] > eps_i for k in ks)
    return Kf


def reference_score(Kf):
    """Step 4: S[t] = sum over all k (any sign) with both indices inside 0..T-1 of Kf[t-k][t+k]."""
    T = len(Kf)
    S = [0] * T
    for t in range(T):
        for k in range(-T, T + 1):
            if 0 <= t - k < T and 0 <= t + k < T:
                S[t] += int(Kf[t - k][t + k])
    return S


def reference_minima(S):
    """Step 5 as documented: runs of equal values lower than both neighbours; centre (a+b)//2."""
    T = len(S)
    out = []
    a = 0
    while a < T:
        b = a
        while b + 1 < T and S[b + 1] == S[a]:
            b += 1
        if a > 0 and b < T - 1 and S[a - 1] > S[a] and S[b + 1] > S[b]:
            out.append((a + b) // 2)
        a = b + 1
    return out


def reference_segment(v, alpha, beta, frame_shift_s=0.01):
    v = [list(map(float, row)) for row in np.asarray(v)]
    frames = reference_minima(reference_score(reference_filtered(reference_kernel(v, alpha), beta)))
    return [t * frame_shift_s for t in frames]


def brute_force_max_matching(ref, pred, tolerance):
    """Maximum one-to-one matching size via the assignment problem (scipy)."""
    if len(ref) == 0 or len(pred) == 0:
        return 0
    r = np.asarray(ref, dtype=float)
    p = np.asarray(pred, dtype=float)
    adj = np.abs(p[:, None] - r[None, :]) <= tolerance + seg.TOLERANCE_SLACK_S
    rows, cols = linear_sum_assignment(adj.astype(float), maximize=True)
    return int(adj[rows, cols].sum())


def nearest_pair_first(ref, pred, tolerance):
    """A naive greedy that the SPEC warns about: repeatedly match the globally closest free pair."""
    pairs = sorted((abs(p - r), i, j) for i, p in enumerate(pred) for j, r in enumerate(ref))
    used_p, used_r, hits = set(), set(), 0
    for d, i, j in pairs:
        if d <= tolerance + 1e-9 and i not in used_p and j not in used_r:
            used_p.add(i)
            used_r.add(j)
            hits += 1
    return hits


# --------------------------------------------------------------------------- inputs


def structured_frames(rng, T, dim=3, repeat=1, zero_rows=False, duplicate_far=False):
    """Piecewise-constant segments plus noise, optionally up-sampled / with zero rows / far duplicates."""
    n = max(1, -(-T // repeat))
    x = np.zeros((n, dim))
    t = 0
    while t < n:
        length = int(rng.integers(1, 6))
        x[t:t + length] = rng.normal(0, 2, dim)
        t += length
    x += rng.normal(0, 0.3, x.shape)
    x = np.repeat(x, repeat, axis=0)[:T]
    if zero_rows and T:
        x[rng.random(T) < 0.2] = 0.0
    if duplicate_far and T > 3:
        x[-1] = x[0]
        x[T // 2] = x[1]
    return x


def median_distance(x):
    if len(x) < 2:
        return 1.0
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    m = float(np.median(d[np.triu_indices(len(x), 1)]))
    return m if m > 0 else 1.0


# --------------------------------------------------------------------------- up-sampling


def test_upsample_attention_hand_example():
    A = np.array([[0.25, 0.75], [0.0, 0.0]], dtype=np.float32)
    up = seg.upsample_attention(A, 2)
    expected = np.array([
        [0.125, 0.125, 0.375, 0.375],
        [0.125, 0.125, 0.375, 0.375],
        [0.0, 0.0, 0.0, 0.0],  # a pruned (all-zero) row stays zero
        [0.0, 0.0, 0.0, 0.0],
    ])
    assert up.dtype == np.float32
    np.testing.assert_allclose(up, expected)


def test_upsample_attention_matches_reference_and_keeps_leading_axes():
    rng = np.random.default_rng(1)
    A = rng.random((2, 3, 5, 5))
    A /= A.sum(-1, keepdims=True)
    A[0, 1, 2] = 0.0
    up = seg.upsample_attention(A, 3)
    assert up.shape == (2, 3, 15, 15)
    for layer in range(2):
        for head in range(3):
            np.testing.assert_allclose(up[layer, head], reference_upsample_attention(A[layer, head], 3), atol=1e-15)
    sums = up.sum(-1)
    assert np.allclose(sums[sums > 0], 1.0)
    np.testing.assert_allclose(seg.upsample_attention(A, 1), A, rtol=1e-14)  # only re-normalised


def test_upsample_frames():
    x = np.arange(6).reshape(3, 2)
    np.testing.assert_array_equal(seg.upsample_frames(x, 2), [[0, 1], [0, 1], [2, 3], [2, 3], [4, 5], [4, 5]])


@pytest.mark.parametrize("rate", [0, -1, 1.5, True, "3"])
def test_upsample_rejects_bad_rate(rate):
    with pytest.raises(UsageError):
        seg.upsample_attention(np.eye(2), rate)
    with pytest.raises(UsageError):
        seg.upsample_frames(np.eye(2), rate)


# --------------------------------------------------------------------------- kernel, filter, score, minima


def test_kernel_gram_matches_reference_and_is_exact_on_duplicates():
    rng = np.random.default_rng(2)
    x = structured_frames(rng, 30, dim=4, repeat=3, zero_rows=True, duplicate_far=True)
    x[5] = -0.0  # negative zeros equal zeros
    x[6] = 0.0
    for alpha in (0.3, 1.0, 7.0):
        K = seg.kernel_gram(x, alpha)
        np.testing.assert_allclose(K, reference_kernel(x.tolist(), alpha), rtol=1e-10, atol=1e-14)
        assert np.array_equal(K, K.T)
        assert np.all(np.diag(K) == 1.0)
        same = (x[:, None, :] == x[None, :, :]).all(-1)
        assert np.all(K[same] == 1.0)


def test_kernel_gram_edge_shapes_and_errors():
    assert seg.kernel_gram(np.zeros((0, 3)), 1.0).shape == (0, 0)
    np.testing.assert_array_equal(seg.kernel_gram(np.zeros((3, 0)), 1.0), np.ones((3, 3)))
    np.testing.assert_array_equal(seg.kernel_gram(np.array([[1.0, 2.0]]), 1.0), [[1.0]])
    for alpha in (0, -1.0, math.nan, math.inf, "x"):
        with pytest.raises(UsageError):
            seg.kernel_gram(np.zeros((2, 2)), alpha)
    with pytest.raises(ValueError):
        seg.kernel_gram(np.zeros(4), 1.0)
    with pytest.raises(ValueError):
        seg.kernel_gram(np.array([[0.0], [math.nan]]), 1.0)


def test_hash_collision_falls_back_to_exact_grouping(monkeypatch):
    rng = np.random.default_rng(3)
    x = np.repeat(rng.normal(size=(4, 3)), 2, axis=0)
    x[7] = -x[6]  # differs only in sign bits
    K = seg.kernel_gram(x, 1.0)
    np.testing.assert_allclose(K, reference_kernel(x.tolist(), 1.0), rtol=1e-12)
    # Every row hashing alike forces the exact byte-sorting path.
    monkeypatch.setattr(seg.algorithm, "_row_hashes", lambda rows: np.zeros(len(rows), dtype=np.uint64))
    first, inverse = seg.algorithm._distinct_rows(x)
    np.testing.assert_array_equal(x[first[inverse]], x)
    assert len(first) == 5
    np.testing.assert_allclose(seg.kernel_gram(x, 1.0), K, rtol=1e-12)


def test_hand_worked_two_blocks():
    # Frames 0,0,0 | 10,10,10 with alpha = 1: K is two all-one 3x3 blocks with
    # e^-10 between them; row means ~0.5, beta = 1 -> eps ~0.5: Kf = the blocks.
    v = np.array([[0.0], [0.0], [0.0], [10.0], [10.0], [10.0]])
    K = seg.kernel_gram(v, 1.0)
    Kf = seg.filtered_matrix(K, 1.0)
    blocks = np.zeros((6, 6), bool)
    blocks[:3, :3] = blocks[3:, 3:] = True
    np.testing.assert_array_equal(Kf, blocks)
    # Full anti-diagonals: t=1 -> (0,2),(1,1),(2,0); t=2 -> only (2,2); t=3 -> only (3,3).
    S = seg.score_curve(Kf)
    np.testing.assert_array_equal(S, [1, 3, 1, 1, 3, 1])
    # The minimum is the plateau 2..3; its centre (2+3)//2 = 2.
    np.testing.assert_array_equal(seg.local_minima(S), [2])
    np.testing.assert_allclose(seg.segment(v, 1.0, 1.0), [0.02])
    np.testing.assert_allclose(seg.segment(v, 1.0, 1.0, frame_shift_s=0.02), [0.04])


def test_hand_worked_single_frame_and_strict_threshold():
    v = np.array([[3.0, 4.0]])
    K = seg.kernel_gram(v, 2.0)
    assert seg.filtered_matrix(K, 0.999).tolist() == [[True]]
    # K[0,0] = 1 and eps = beta * 1 = 1: "K > eps" is strict, so the row is empty.
    assert seg.filtered_matrix(K, 1.0).tolist() == [[False]]
    assert seg.score_curve(seg.filtered_matrix(K, 1.0)).tolist() == [0]
    assert seg.segment(v, 2.0, 0.5).size == 0


def test_hand_worked_constant_frames():
    v = np.ones((5, 2))
    # All K = 1, row mean 1: beta < 1 keeps everything (S is a tent, no interior minimum) ...
    K = seg.kernel_gram(v, 1.0)
    np.testing.assert_array_equal(seg.filtered_matrix(K, 0.5), np.ones((5, 5), bool))
    np.testing.assert_array_equal(seg.score_curve(np.ones((5, 5), bool)), [1, 3, 5, 3, 1])
    assert seg.segment(v, 1.0, 0.5).size == 0
    # ... beta >= 1 empties every row: S = 0 everywhere, a flat curve has no minimum.
    assert not seg.filtered_matrix(K, 1.0).any()
    assert seg.segment(v, 1.0, 1.0).size == 0


def test_filtered_rows_are_not_symmetric():
    # Row 0 has a high mean (close neighbours), row 2 a low one: Kf[2, 0] without Kf[0, 2].
    K = np.array([[1.0, 0.9, 0.8], [0.9, 1.0, 0.3], [0.8, 0.3, 1.0]])
    Kf = seg.filtered_matrix(K, 1.0)  # eps = [0.9, 0.733, 0.7]
    expected = [[True, False, False], [True, True, False], [False, False, True]]
    assert Kf.tolist() == expected
    assert Kf.tolist() == reference_filtered(K.tolist(), 1.0)


def test_score_curve_counts_both_triangles():
    # Only one cell below the diagonal: the k < 0 half of the anti-diagonal counts.
    M = np.zeros((5, 5), bool)
    M[3, 1] = True  # i + j = 4 -> S[2]
    np.testing.assert_array_equal(seg.score_curve(M), [0, 0, 1, 0, 0])
    M = np.zeros((4, 4), bool)
    M[1, 2] = True  # i + j = 3 is odd: between frames, never sampled
    np.testing.assert_array_equal(seg.score_curve(M), [0, 0, 0, 0])
    np.testing.assert_array_equal(seg.score_curve(np.zeros((0, 0), bool)), [])


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 9), st.integers(0, 2**32 - 1))
def test_score_curve_matches_reference_on_any_matrix(T, seed):
    M = np.random.default_rng(seed).random((T, T)) < 0.5
    assert seg.score_curve(M).tolist() == reference_score(M.tolist())


@pytest.mark.parametrize(("S", "expected"), [
    ([], []),
    ([1], []),
    ([2, 1], []),
    ([2, 1, 2], [1]),
    ([1, 2, 1], []),  # edges are never boundaries
    ([0, 0, 1, 0, 0], []),  # minima runs touching the edges do not count
    ([3, 1, 1, 3], [1]),  # even plateau: the earlier middle frame
    ([3, 1, 1, 1, 3], [2]),
    ([3, 1, 1, 1, 1, 3], [2]),
    ([5, 2, 2, 4, 1, 5], [1, 4]),
    ([5, 2, 3, 3, 2, 5], [1, 4]),  # flat maximum between two minima
    ([4, 2, 2, 3, 3], [1]),  # the run 2,2 has larger values on both sides (3,3 touches the edge)
    ([1, 1, 1, 1], []),
])
def test_local_minima_cases(S, expected):
    assert seg.local_minima(np.array(S, dtype=int)).tolist() == expected
    assert reference_minima(S) == expected


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 3), max_size=25))
def test_local_minima_matches_reference(S):
    assert seg.local_minima(np.array(S, dtype=np.int64)).tolist() == reference_minima(S)


# --------------------------------------------------------------------------- whole pipeline vs reference


CASES = [
    # (T, repeat, zero_rows, duplicate_far)
    (1, 1, False, False), (2, 1, False, False), (3, 1, False, False), (4, 1, True, False),
    (7, 1, False, True), (10, 2, False, False), (15, 3, True, True), (24, 3, False, False),
    (31, 1, True, False), (40, 1, False, True),
]


@pytest.mark.parametrize(("T", "repeat", "zero_rows", "duplicate_far"), CASES)
def test_pipeline_matches_reference(T, repeat, zero_rows, duplicate_far):
    rng = np.random.default_rng(1000 + T)
    for _ in range(3):
        x = structured_frames(rng, T, dim=int(rng.integers(1, 5)), repeat=repeat,
                              zero_rows=zero_rows, duplicate_far=duplicate_far)
        alpha = float(median_distance(x) * 10 ** rng.uniform(-1, 1))
        rows = x.tolist()
        K_ref = reference_kernel(rows, alpha)
        K = np.array(K_ref)
        work = seg.SegmentationWork.from_kernel(K, alpha)
        for beta in [float(rng.uniform(0, 3)), float(rng.uniform(0.8, 1.2)), 0.0]:
            Kf_ref = reference_filtered(K_ref, beta)
            Kf = seg.filtered_matrix(K, beta)
            assert Kf.tolist() == Kf_ref
            assert np.array_equal(work.filtered(beta), Kf)
            S_ref = reference_score(Kf_ref)
            assert seg.score_curve(Kf).tolist() == S_ref
            assert work.score(beta).tolist() == S_ref
            assert work.boundary_frames(beta).tolist() == reference_minima(S_ref)
            # End to end from the frames (K computed by satool, not the reference).
            expected = reference_segment(x, alpha, beta)
            np.testing.assert_allclose(seg.segment(x, alpha, beta), expected)
            np.testing.assert_allclose(seg.SegmentationWork(x, alpha).boundaries(beta), expected)


@settings(max_examples=40, deadline=None)
@given(T=st.integers(1, 14), dim=st.integers(1, 3), seed=st.integers(0, 2**32 - 1),
       log_alpha=st.floats(-1, 1), beta=st.floats(0, 3))
def test_pipeline_matches_reference_hypothesis(T, dim, seed, log_alpha, beta):
    rng = np.random.default_rng(seed)
    # Few distinct values -> many repeated rows and exact ties.
    x = rng.integers(0, 3, size=(T, dim)).astype(float)
    alpha = float(median_distance(x) * 10**log_alpha)
    K = np.array(reference_kernel(x.tolist(), alpha))
    Kf_ref = reference_filtered(K.tolist(), beta)
    assert seg.filtered_matrix(K, beta).tolist() == Kf_ref
    work = seg.SegmentationWork.from_kernel(K)
    S_ref = reference_score(Kf_ref)
    assert work.score(beta).tolist() == S_ref
    assert work.boundary_frames(beta).tolist() == reference_minima(S_ref)


def test_segmentation_work_reuses_kernel_across_betas_and_large_T():
    rng = np.random.default_rng(5)
    x = structured_frames(rng, 1500, dim=13, repeat=3).astype(np.float32)
    alpha = median_distance(x[::10])
    work = seg.SegmentationWork(x, alpha)
    assert work.n_frames == 1500
    K = seg.kernel_gram(x, alpha)
    for beta in (0.5, 1.0, 1.3, 2.0):
        np.testing.assert_array_equal(work.filtered(beta), seg.filtered_matrix(K, beta))
        np.testing.assert_array_equal(work.score(beta), seg.score_curve(seg.filtered_matrix(K, beta)))
        np.testing.assert_array_equal(work.boundaries(beta), seg.segment(x, alpha, beta))


def test_segment_edge_cases_and_errors():
    assert seg.segment(np.zeros((0, 2)), 1.0, 1.0).size == 0
    empty = seg.SegmentationWork(np.zeros((0, 2)), 1.0)
    assert empty.n_frames == 0 and empty.boundaries(1.0).size == 0 and empty.score(1.0).size == 0
    assert seg.segment(np.zeros((2, 2)), 1.0, 0.5).size == 0
    for bad in (dict(beta=-0.1), dict(beta=math.nan), dict(frame_shift_s=0.0), dict(alpha=0.0)):
        kwargs = dict(v=np.zeros((3, 1)), alpha=1.0, beta=1.0) | bad
        with pytest.raises(UsageError):
            seg.segment(**kwargs)
    with pytest.raises(UsageError):
        seg.SegmentationWork(np.zeros((3, 1)), 1.0).boundaries(-1.0)


# --------------------------------------------------------------------------- evaluation


def ev(ref, pred, **kw):
    return seg.evaluate_boundaries(ref, pred, **kw)


def test_formulas_by_hand():
    # 10 references, 12 predictions, 8 strict hits (all within 5 ms).
    ref = [np.arange(1, 11) * 0.1]
    pred = [np.concatenate([np.arange(1, 9) * 0.1 + 0.005, [2.0, 2.1, 2.2, 2.3]])]
    m = ev(ref, pred)
    assert (m["hits"], m["hits_ref"], m["n_ref"], m["n_pred"]) == (8, 8, 10, 12)
    assert m["precision"] == pytest.approx(8 / 12)
    assert m["recall"] == pytest.approx(0.8)
    assert m["f1"] == pytest.approx(2 * (8 / 12) * 0.8 / (8 / 12 + 0.8))
    assert m["os"] == pytest.approx(0.2)
    r1 = math.sqrt(0.2**2 + 0.2**2)
    r2 = (-0.2 + 0.8 - 1) / math.sqrt(2)
    assert m["r_value"] == pytest.approx(1 - (abs(r1) + abs(r2)) / 2)
    assert m["r_value"] == pytest.approx(1 - math.sqrt(0.08))
    assert (m["mode"], m["tolerance"], m["n_utterances"]) == ("strict", 0.02, 1)


def test_perfect_segmentation():
    m = ev([[0.1, 0.25]], [[0.1, 0.25]])
    assert (m["precision"], m["recall"], m["f1"], m["os"], m["r_value"]) == (1.0, 1.0, 1.0, 0.0, 1.0)


def test_one_prediction_between_two_references():
    strict = ev([[0.10, 0.13]], [[0.115]])
    assert (strict["hits"], strict["precision"], strict["recall"]) == (1, 1.0, 0.5)
    lenient = ev([[0.10, 0.13]], [[0.115]], mode="lenient")
    # The single prediction is near a reference (1 of 1) and both references are near it.
    assert (lenient["hits"], lenient["hits_ref"], lenient["precision"], lenient["recall"]) == (1, 2, 1.0, 1.0)
    # Lenient OS = R/P - 1 = 0 (as Kreuk et al.'s code): a perfect lenient R-value.
    assert (lenient["os"], lenient["r_value"]) == (0.0, 1.0)
    assert strict["r_value"] == pytest.approx(1 - (math.sqrt(0.5) + 0) / 2)


def test_two_predictions_near_one_reference():
    strict = ev([[0.1]], [[0.09, 0.11]])
    assert (strict["hits"], strict["precision"], strict["recall"]) == (1, 0.5, 1.0)
    lenient = ev([[0.1]], [[0.09, 0.11]], mode="lenient")
    assert (lenient["hits"], lenient["hits_ref"], lenient["precision"], lenient["recall"]) == (2, 1, 1.0, 1.0)
    assert strict["os"] == 1.0 and lenient["os"] == 0.0  # n_pred/n_ref - 1 vs R/P - 1
    assert lenient["r_value"] == 1.0 and strict["r_value"] == pytest.approx(1 - (1 + 1 / math.sqrt(2)) / 2)


def test_unsorted_input_and_duplicates():
    m = ev([[0.5, 0.1, 0.3]], [[0.31, 0.49, 0.12]])
    assert m["hits"] == 3
    dup = ev([[0.1]], [[0.1, 0.1]])  # a duplicated prediction is a second prediction
    assert (dup["hits"], dup["n_pred"]) == (1, 2)
    assert ev([[0.1]], [[0.1, 0.1]], mode="lenient")["hits"] == 2


@pytest.mark.parametrize(("r", "p"), [(0.03, 0.05), (0.05, 0.03), (0.01, 0.03), (1.0, 1.02), (7.3, 7.28)])
def test_tolerance_edge_counts(r, p):
    assert abs(abs(p - r) - 0.02) < 1e-12  # exactly at the edge, up to float rounding
    assert ev([[r]], [[p]])["hits"] == 1
    assert ev([[r]], [[p]], mode="lenient")["hits"] == 1


@pytest.mark.parametrize("delta", [0.0201, 0.02 + 3e-9, 0.021])
def test_just_beyond_tolerance_misses(delta):
    assert ev([[1.0]], [[1.0 + delta]])["hits"] == 0
    assert ev([[1.0]], [[1.0 - delta]], mode="lenient")["hits"] == 0


def test_tolerance_zero_and_custom():
    assert ev([[0.1]], [[0.1]], tolerance=0)["hits"] == 1
    assert ev([[0.1]], [[0.11]], tolerance=0)["hits"] == 0
    assert ev([[0.1]], [[0.14]], tolerance=0.04)["hits"] == 1


def test_lenient_os_without_hits_falls_back_to_counts():
    m = ev([[0.1, 0.5]], [[0.3]], mode="lenient")
    assert (m["hits"], m["hits_ref"], m["precision"], m["os"]) == (0, 0, 0.0, -0.5)
    assert m["os"] == ev([[0.1, 0.5]], [[0.3]])["os"]


def test_no_predictions():
    m = ev([[0.1, 0.2]], [[]])
    assert (m["hits"], m["n_pred"], m["precision"], m["recall"], m["f1"], m["os"]) == (0, 0, 0.0, 0.0, 0.0, -1.0)
    # r1 = sqrt(1 + 1), r2 = (1 + 0 - 1)/sqrt(2) = 0
    assert m["r_value"] == pytest.approx(1 - math.sqrt(2) / 2)


def test_no_references():
    m = ev([[], np.array([])], [[0.1], [0.2, 0.3]])
    assert (m["n_ref"], m["n_pred"], m["precision"], m["recall"], m["f1"]) == (0, 3, 0.0, 0.0, 0.0)
    assert math.isnan(m["os"]) and math.isnan(m["r_value"])


def test_empty_utterance_lists():
    for mode in ("strict", "lenient"):
        m = ev([], [], mode=mode)
        assert (m["n_utterances"], m["hits"], m["n_ref"], m["n_pred"]) == (0, 0, 0, 0)
        assert (m["precision"], m["recall"], m["f1"]) == (0.0, 0.0, 0.0)
        assert math.isnan(m["os"]) and math.isnan(m["r_value"])


def test_counts_are_per_utterance_then_summed():
    # The prediction of utterance 2 is at the time of utterance 1's reference: no hit.
    m = ev([[0.5], []], [[], [0.5]])
    assert (m["hits"], m["n_ref"], m["n_pred"]) == (0, 1, 1)
    m = ev([[0.5], [0.2, 0.9]], [[0.51], [0.2]])
    assert (m["hits"], m["n_ref"], m["n_pred"]) == (2, 3, 2)
    assert m["precision"] == 1.0 and m["recall"] == pytest.approx(2 / 3)


def test_naive_greedy_undercounts_but_maximum_matching_does_not():
    ref = [0.100, 0.130]
    pred = [0.118, 0.148]  # p1-r2 = 12 ms (closest pair), p1-r1 = 18 ms, p2-r2 = 18 ms
    assert nearest_pair_first(ref, pred, 0.02) == 1
    assert brute_force_max_matching(ref, pred, 0.02) == 2
    assert ev([ref], [pred])["hits"] == 2
    assert ev([ref[::-1]], [pred[::-1]])["hits"] == 2


def test_evaluation_errors():
    with pytest.raises(UsageError, match="mode"):
        ev([[0.1]], [[0.1]], mode="fuzzy")
    with pytest.raises(UsageError, match="tolerance"):
        ev([[0.1]], [[0.1]], tolerance=-0.01)
    with pytest.raises(UsageError, match="tolerance"):
        ev([[0.1]], [[0.1]], tolerance=math.inf)
    with pytest.raises(UsageError, match="utterances"):
        ev([[0.1], [0.2]], [[0.1]])
    with pytest.raises(UsageError, match="one sequence of boundary times per utterance"):
        ev([0.1, 0.2], [0.1, 0.2])  # a flat list of times instead of one list per utterance
    with pytest.raises(UsageError, match="finite"):
        ev([[0.1, math.nan]], [[0.1]])
    with pytest.raises(UsageError):
        ev([["a"]], [[0.1]])


times_ms = st.lists(st.integers(0, 400), max_size=14)


@settings(max_examples=300, deadline=None)
@given(ref=times_ms, pred=times_ms, tol_ms=st.integers(0, 40))
def test_strict_hits_equal_maximum_matching(ref, pred, tol_ms):
    r = [t / 1000 for t in ref]
    p = [t / 1000 for t in pred]
    tol = tol_ms / 1000
    m = ev([r], [p], tolerance=tol)
    assert m["hits"] == brute_force_max_matching(r, p, tol)
    assert m["hits"] <= min(len(r), len(p))
    # Invariant under order; lenient counts are never lower.
    assert ev([r[::-1]], [p[::-1]], tolerance=tol)["hits"] == m["hits"]
    lenient = ev([r], [p], tolerance=tol, mode="lenient")
    assert lenient["hits"] >= m["hits"] and lenient["hits_ref"] >= m["hits"]
    assert lenient["hits"] == sum(any(abs(x - y) <= tol + 1e-9 for y in r) for x in p)
    assert lenient["hits_ref"] == sum(any(abs(x - y) <= tol + 1e-9 for y in p) for x in r)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(times_ms, times_ms), max_size=5))
def test_corpus_counts_are_sums(utts):
    refs = [[t / 1000 for t in r] for r, _ in utts]
    preds = [[t / 1000 for t in p] for _, p in utts]
    m = ev(refs, preds)
    assert m["hits"] == sum(brute_force_max_matching(r, p, 0.02) for r, p in zip(refs, preds, strict=True))
    assert m["n_ref"] == sum(map(len, refs)) and m["n_pred"] == sum(map(len, preds))


def test_evenly_spaced_boundaries():
    np.testing.assert_allclose(seg.evenly_spaced_boundaries(1.0, 10), np.arange(1, 10) / 10)
    np.testing.assert_allclose(seg.evenly_spaced_boundaries(0.95, 10), np.arange(1, 10) / 10)
    np.testing.assert_allclose(seg.evenly_spaced_boundaries(0.3, 10), [0.1, 0.2])
    np.testing.assert_allclose(seg.evenly_spaced_boundaries(0.7, 10), np.arange(1, 7) / 10)
    assert seg.evenly_spaced_boundaries(0.0, 10).size == 0
    assert seg.evenly_spaced_boundaries(0.05, 10).size == 0
    np.testing.assert_allclose(seg.evenly_spaced_boundaries(1.0, 2.5), [0.4, 0.8])
    for bad in ((1.0, 0), (1.0, -2), (-1.0, 10), (math.nan, 10)):
        with pytest.raises(UsageError):
            seg.evenly_spaced_boundaries(*bad)


# --------------------------------------------------------------------------- tuning


def toy_corpus(n=4, seed=7, noise=0.1):
    """Piecewise-constant 'phones' of 4-12 frames; references at the segment starts (not 0, not the end)."""
    rng = np.random.default_rng(seed)
    utts = []
    for _ in range(n):
        lengths = rng.integers(4, 13, size=int(rng.integers(4, 9)))
        x = np.concatenate([np.tile(rng.normal(0, 3, 5), (k, 1)) for k in lengths])
        x += rng.normal(0, noise, x.shape)
        ref = np.cumsum(lengths)[:-1] * 0.01
        utts.append((x.astype(np.float32), ref))
    return utts


def test_tune_finds_the_best_grid_point():
    utts = toy_corpus()
    alphas = seg.default_alpha_grid(utts)
    betas = [0.5, 0.9, 1.0, 1.1, 1.5, 2.0]
    calls = []
    res = seg.tune(utts, alphas, betas, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, len(alphas) * len(utts)) for i in range(1, len(alphas) * len(utts) + 1)]
    assert len(res.table) == len(alphas) * len(betas)
    assert [(r["alpha"], r["beta"]) for r in res.table] == [(a, b) for a in alphas for b in betas]
    best_rv = max(r["r_value"] for r in res.table)
    assert res.metrics["r_value"] == best_rv
    assert res.metrics["r_value"] > 0.8  # clean toy data segments well
    # Each table row is exactly the strict evaluation of segment() at that grid point.
    row = res.table[7]
    preds = [seg.segment(x, row["alpha"], row["beta"]) for x, _ in utts]
    expected = seg.evaluate_boundaries([r for _, r in utts], preds)
    assert {k: row[k] for k in expected} == expected


def test_tune_tie_breaks_higher_f1_then_smaller_alpha_then_smaller_beta():
    utts = toy_corpus(noise=0.0)
    alphas = [4.0, 2.0, 3.0]
    betas = [1.0, 0.9, 0.95]
    res = seg.tune(utts, alphas, betas)
    key = max((r["r_value"], r["f1"]) for r in res.table)
    tied = [r for r in res.table if (r["r_value"], r["f1"]) == key]
    assert len(tied) > 1  # the toy case really has ties
    best = min(tied, key=lambda r: (r["alpha"], r["beta"]))
    assert (res.alpha, res.beta) == (best["alpha"], best["beta"])


def test_tune_ranks_nan_last_and_validates():
    utts = [(np.zeros((5, 2)), [])]  # no references: every R-value is NaN
    res = seg.tune(utts, [1.0, 2.0], [0.5, 1.0])
    assert math.isnan(res.metrics["r_value"]) and (res.alpha, res.beta) == (1.0, 0.5)
    with pytest.raises(UsageError):
        seg.tune([], [1.0], [1.0])
    with pytest.raises(UsageError):
        seg.tune(utts, [], [1.0])
    with pytest.raises(UsageError):
        seg.tune(utts, [1.0], [-1.0])
    with pytest.raises(UsageError):
        seg.tune(utts, [0.0], [1.0])
    with pytest.raises(UsageError):
        seg.tune([np.zeros((5, 2))], [1.0], [1.0])  # not (features, reference) pairs


def test_pr_curve_matches_evaluate_boundaries():
    utts = toy_corpus(seed=3, noise=0.5)
    alpha = float(seg.default_alpha_grid(utts)[4])
    betas = [0.6, 1.0, 1.4]
    curve = seg.pr_curve(utts, alpha, betas)
    assert [c["beta"] for c in curve] == betas
    refs = [r for _, r in utts]
    for c in curve:
        preds = [seg.segment(x, alpha, c["beta"]) for x, _ in utts]
        assert c["strict"] == seg.evaluate_boundaries(refs, preds, mode="strict")
        assert c["lenient"] == seg.evaluate_boundaries(refs, preds, mode="lenient")


def test_default_alpha_grid():
    grid = seg.default_alpha_grid([(np.array([[0.0], [3.0]]), [])])
    np.testing.assert_allclose(grid, 3.0 * np.logspace(-1, 1, 9))
    utts = toy_corpus()
    g1 = seg.default_alpha_grid(utts)
    g10 = seg.default_alpha_grid([(10 * x, r) for x, r in utts])
    np.testing.assert_allclose(g10, 10 * g1, rtol=1e-6)
    np.testing.assert_allclose(seg.default_alpha_grid([x for x, _ in utts]), g1)  # bare arrays too
    assert len(g1) == 9 and np.all(np.diff(np.log(g1)) > 0)
    np.testing.assert_allclose(seg.default_alpha_grid([np.ones((4, 2))]), np.logspace(-1, 1, 9))
    np.testing.assert_allclose(seg.default_alpha_grid([np.ones((4, 2))], multipliers=[2.0]), [2.0])
    with pytest.raises(UsageError):
        seg.default_alpha_grid([])
    with pytest.raises(UsageError):
        seg.default_alpha_grid(utts, multipliers=[0.0])


def test_default_betas():
    b = seg.DEFAULT_BETAS
    assert b[0] == 0.3 and b[-1] == 3.0 and np.all(np.diff(b) > 0) and 1.0 in b


def test_grids_accept_scalars_generators_and_arrays():
    utts = toy_corpus(n=2)
    a = seg.tune(utts, 2.0, (b for b in [0.9, 1.1])).table
    b = seg.tune(utts, np.array([2.0]), np.array([[0.9], [1.1]])).table
    assert [(r["alpha"], r["beta"]) for r in a] == [(r["alpha"], r["beta"]) for r in b] == [(2.0, 0.9), (2.0, 1.1)]
    with pytest.raises(UsageError):
        seg.tune(utts, "abc", [1.0])


@pytest.mark.parametrize("steps", [1, 2, 7, 120, 401])
def test_every_beta_at_once_and_distances_once_match_the_one_at_a_time_path(steps):
    """Tuning computes frame distances once for every alpha and reads every beta in one pass (binary
    searches over the running minima): the boundaries equal the one-alpha, one-beta path exactly."""
    from satool.analysis.segmentation.algorithm import SegmentationWork, distances

    rng = np.random.default_rng(steps)
    v = np.repeat(rng.normal(size=(steps // 3 + 1, 8)), 3, axis=0)[:steps]  # repeated rows, as up-sampled
    betas = list(np.linspace(0.3, 2.5, 13))
    found = distances(v)
    for alpha in (0.2, 1.0, 30.0):
        alone = SegmentationWork(v, alpha)
        shared = SegmentationWork.from_distances(found, alpha)
        for beta, frames in zip(betas, shared.boundary_frames_for(betas)):
            np.testing.assert_array_equal(frames, alone.boundary_frames(beta))
