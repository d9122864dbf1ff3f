"""Offset profiles, locality and D relative to uniform attention, against hand-worked examples
and a literal loop."""

import numpy as np
import pytest

from satool.analysis.locality import locality, offset_sums, profile, uniform_diagonality
from satool.analysis.metrics import diagonality


def test_previous_step_head_by_hand():
    # T = 4: query 0 attends to itself, every other query to the step before it
    attn = np.zeros((1, 1, 4, 4), np.float32)
    attn[0, 0, 0, 0] = 1
    for q in range(1, 4):
        attn[0, 0, q, q - 1] = 1
    sums, queries = offset_sums(attn, max_offset=2)
    # offsets -2..2; queries with a key at offset d: 2, 3, 4, 3, 2
    assert queries.tolist() == [2, 3, 4, 3, 2]
    shape = profile(sums, queries)[0, 0]
    # offset -1: weight 1 for 3 queries, times T = 4, over 3 queries -> 4x uniform; offset 0: 1 of 4 queries
    assert shape.tolist() == pytest.approx([0.0, 4.0, 1.0, 0.0, 0.0])
    ratio, offset = locality(profile(sums, queries))
    assert ratio[0, 0] == pytest.approx(4.0) and offset[0, 0] == -1


def test_uniform_attention_is_one_everywhere():
    for steps in (1, 3, 50):
        attn = np.full((2, 3, steps, steps), 1 / steps, np.float32)
        sums, queries = offset_sums(attn, max_offset=5)
        shape = profile(sums, queries)
        finite = shape[np.isfinite(shape)]
        assert np.allclose(finite, 1.0, atol=1e-5)
        assert np.isnan(shape[..., 5 + steps:]).all()  # offsets beyond the utterance: no query
        assert diagonality(attn)[0, 0] == pytest.approx(uniform_diagonality(steps), rel=1e-5, abs=1e-7)


def test_offset_sums_match_a_literal_loop_and_pool_over_utterances():
    rng = np.random.default_rng(0)
    total_sums, total_queries = 0.0, 0.0
    literal = np.zeros((2, 2, 7))
    counts = np.zeros(7)
    for steps in (2, 5, 9):
        attn = rng.random((2, 2, steps, steps)).astype(np.float32)
        attn /= attn.sum(-1, keepdims=True)
        sums, queries = offset_sums(attn, max_offset=3)
        total_sums, total_queries = total_sums + sums, total_queries + queries
        for i, d in enumerate(range(-3, 4)):
            for q in range(steps):
                if 0 <= q + d < steps:
                    literal[..., i] += steps * attn[..., q, q + d]
                    counts[i] += 1
    assert np.allclose(profile(total_sums, total_queries), literal / counts, rtol=1e-5)


def test_scores_record_profile_locality_and_relative_diagonality(tmp_path):
    from satool.analysis.metrics import BUILTIN_METRICS
    from satool.analysis.scoring import score_heads
    from satool.results.metrics import HeadScores

    steps = 30
    local = np.zeros((steps, steps), np.float32)
    for q in range(steps):
        local[q, max(q - 1, 0)] = 1  # previous step
    uniform = np.full((steps, steps), 1 / steps, np.float32)
    attn = np.stack([np.stack([local, uniform])])  # [layer 1, head 2, q, k]
    scores = score_heads(((attn, {}) for _ in range(3)), list(BUILTIN_METRICS), [1], [1, 2])
    ratio, offset = scores.locality()
    assert ratio[0, 0] == pytest.approx(steps * (steps - 1) / (steps - 1)) and offset[0, 0] == -1
    assert ratio[0, 1] == pytest.approx(1.0, rel=1e-5)
    relative = scores.diagonality_vs_uniform()
    assert relative[0, 1] == pytest.approx(1.0, rel=1e-5)
    assert relative[0, 0] == pytest.approx((steps - 1) / steps / steps / (-uniform_diagonality(steps)), rel=1e-5)
    scores.save(tmp_path)
    back = HeadScores.load(tmp_path)
    assert np.allclose(back.offset_profile, scores.offset_profile, equal_nan=True)
    assert back.uniform_diagonality == pytest.approx(scores.uniform_diagonality)
    rows = {r["label"]: r for r in back.records()}
    assert rows["L1.H1"]["favourite_offset"] == -1 and rows["L1.H1"]["locality"] == pytest.approx(steps)
    assert rows["L1.H2"]["diagonality_vs_uniform"] == pytest.approx(1.0, rel=1e-5)


def test_bootstrap_replicates_are_those_of_resampled_utterances(tmp_path):
    """The Poisson bootstrap accumulated in the metric pass: replicate b equals the weighted mean over
    utterances with weights drawn from each utterance's id, whatever the order of the corpus; the
    replicates survive save and load."""
    from satool.analysis.metrics import BUILTIN_METRICS
    from satool.analysis.scoring import bootstrap_weights, score_heads
    from satool.results.metrics import HeadScores

    rng = np.random.default_rng(0)
    utts = []
    for i in range(12):
        steps = int(rng.integers(6, 14))
        attn = rng.random((2, 3, steps, steps)).astype(np.float32)
        utts.append((attn / attn.sum(-1, keepdims=True), {"id": f"u{i}"}))
    metrics = [m for m in BUILTIN_METRICS if m.name in ("globalness", "diagonality")]
    scores = score_heads(iter(utts), metrics, [1, 2], [1, 2, 3], replicates=7)
    shuffled = score_heads(iter(utts[::-1]), metrics, [1, 2], [1, 2, 3], replicates=7)
    g = next(m for m in metrics if m.name == "globalness")
    w = np.stack([bootstrap_weights(meta["id"], 7) for _, meta in utts])  # [utt, replicate]
    values = np.stack([g.per_utterance(a, m) for a, m in utts])  # [utt, layer, head]
    expected = np.einsum("ub,ulh->blh", w, values) / w.sum(0)[:, None, None]
    np.testing.assert_allclose(scores.bootstrap["globalness"], expected, rtol=1e-10)
    np.testing.assert_allclose(shuffled.bootstrap["globalness"], expected, rtol=1e-10)
    assert scores.bootstrap_offset_profile.shape == (7, 2, 3, scores.offset_profile.shape[-1])
    assert scores.replicate_categories() is None  # categories need G, V and D
    scores.save(tmp_path)
    back = HeadScores.load(tmp_path)
    np.testing.assert_array_equal(back.bootstrap["diagonality"], scores.bootstrap["diagonality"])
    np.testing.assert_array_equal(back.bootstrap_offset_profile, scores.bootstrap_offset_profile)
    np.savez(tmp_path / "metrics_bootstrap.npz", offset_profile=np.zeros((2, 1, 1, 3)))  # wrong shape
    from satool.errors import InputError

    with pytest.raises(InputError, match="offset_profile must be"):
        HeadScores.load(tmp_path)


def test_offset_sums_of_chosen_queries():
    """Only the chosen queries count, in the sums and in the query counts; all queries = no choice."""
    rng = np.random.default_rng(2)
    attn = rng.random((2, 3, 9, 9))
    everyone = offset_sums(attn, 3)
    chosen = offset_sums(attn, 3, rows=np.ones(9, bool))
    np.testing.assert_allclose(chosen[0], everyone[0])
    np.testing.assert_array_equal(chosen[1], everyone[1])
    rows = np.zeros(9, bool)
    rows[[0, 4]] = True
    sums, queries = offset_sums(attn, 3, rows=rows)
    # by hand: offset +2 has keys for both queries (2 and 6), offset -2 only for query 4 (key 2)
    assert queries[3 + 2] == 2 and queries[3 - 2] == 1
    np.testing.assert_allclose(sums[..., 3 + 2], 9 * (attn[..., 0, 2] + attn[..., 4, 6]))
    np.testing.assert_allclose(sums[..., 3 - 2], 9 * attn[..., 4, 2])
