"""Head metrics against a slow, literal reference; accumulation, ranks, categories, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from satool.analysis.metrics import BUILTIN_METRICS, diagonality, globalness, verticality, weight
from satool.analysis.scoring import score_heads
from satool.results.metrics import HeadScores


def entropy(p):
    return -sum(x * math.log(x) for x in p if x > 0)


def reference(attn):
    """Loops over heads and rows, exactly as SPEC section 3 writes the formulas."""
    layers, heads, t, _ = attn.shape
    out = {k: np.zeros((layers, heads)) for k in ("G", "V", "D", "W")}
    for layer in range(layers):
        for head in range(heads):
            a = attn[layer, head].astype(np.float64)
            out["G"][layer, head] = sum(entropy(a[q]) for q in range(t)) / t
            mean_row = [sum(a[q][k] for q in range(t)) / t for k in range(t)]
            out["V"][layer, head] = -entropy(mean_row)
            out["D"][layer, head] = -sum(abs(q - k) * a[q, k] for q in range(t) for k in range(t)) / t**2
            out["W"][layer, head] = max(a[q, k] for q in range(t) for k in range(t))
    return out


def random_maps(rng, t, layers=2, heads=3, sharp=1.0):
    logits = rng.normal(size=(layers, heads, t, t)) * sharp
    a = np.exp(logits)
    return (a / a.sum(-1, keepdims=True)).astype(np.float32)


def check(attn, atol=1e-5):
    ref = reference(attn)
    np.testing.assert_allclose(globalness(attn), ref["G"], atol=atol)
    np.testing.assert_allclose(verticality(attn), ref["V"], atol=atol)
    np.testing.assert_allclose(diagonality(attn), ref["D"], atol=atol)
    np.testing.assert_allclose(weight(attn), ref["W"], atol=atol)


@pytest.mark.parametrize("t", [1, 2, 5, 17, 40])
def test_against_reference(t):
    rng = np.random.default_rng(t)
    check(random_maps(rng, t, sharp=3.0))


def test_t_equals_one():
    attn = np.ones((1, 2, 1, 1), np.float32)
    assert globalness(attn).tolist() == [[0.0, 0.0]] and verticality(attn).tolist() == [[0.0, 0.0]]
    assert diagonality(attn).tolist() == [[0.0, 0.0]] and weight(attn).tolist() == [[1.0, 1.0]]


def test_zero_rows_of_pruned_heads():
    rng = np.random.default_rng(1)
    attn = random_maps(rng, 9)
    attn[0, 1] = 0  # a pruned head
    attn[1, 2, 3:5] = 0  # a few zero rows
    check(attn)
    assert globalness(attn)[0, 1] == 0 and verticality(attn)[0, 1] == 0
    assert diagonality(attn)[0, 1] == 0 and weight(attn)[0, 1] == 0


def test_float16_maps():
    rng = np.random.default_rng(2)
    attn = random_maps(rng, 23, sharp=4.0)
    half = attn.astype(np.float16).astype(np.float32)  # what the cache stores
    check(half, atol=1e-5)
    np.testing.assert_allclose(globalness(half), globalness(attn), atol=2e-3)


def test_hand_worked_values():
    identity = np.eye(4, dtype=np.float32)[None, None]
    uniform = np.full((1, 1, 4, 4), 0.25, np.float32)
    column = np.zeros((1, 1, 4, 4), np.float32)
    column[..., 0] = 1.0
    assert globalness(identity)[0, 0] == 0 and globalness(uniform)[0, 0] == pytest.approx(math.log(4))
    assert verticality(column)[0, 0] == 0 and verticality(identity)[0, 0] == pytest.approx(-math.log(4))
    assert diagonality(identity)[0, 0] == 0
    # uniform: sum |q - k| over a 4x4 grid = 20, divided by T^2 * T (rows sum to 1 -> weights 1/4)
    assert diagonality(uniform)[0, 0] == pytest.approx(-20 / 4 / 16)


def test_long_maps_against_float64():
    """The kernels sum T^2 float32 terms per head in BLAS; at T = 700 they stay within 1e-5 of float64."""
    rng = np.random.default_rng(4)
    attn = random_maps(rng, 700, layers=1, heads=2, sharp=4.0).astype(np.float16).astype(np.float32)
    attn[0, 1, :, 0] = 0  # zero weights, as float16 stores small ones
    a = attn.astype(np.float64)
    steps = a.shape[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        xlogx = np.where(a > 0, a * np.log(a), 0.0)
        mean_row = a.mean(axis=-2)
        mean_xlogx = np.where(mean_row > 0, mean_row * np.log(mean_row), 0.0)
    distance = np.abs(np.arange(steps)[:, None] - np.arange(steps)[None, :])
    np.testing.assert_allclose(globalness(attn), -xlogx.sum(axis=(-2, -1)) / steps, rtol=1e-5)
    np.testing.assert_allclose(verticality(attn), mean_xlogx.sum(axis=-1), rtol=1e-5)
    np.testing.assert_allclose(diagonality(attn), -(a * distance).sum(axis=(-2, -1)) / steps**2, rtol=1e-5)


def test_scoring_runs_blas_on_one_thread_and_restores_it():
    """Metric kernels must not start BLAS threads that compete with the cache reader."""
    from threadpoolctl import threadpool_info

    from satool.analysis.metrics import HeadMetric

    def blas_threads():
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    before = blas_threads()
    seen = []
    spy = HeadMetric("spy", lambda a, m: seen.append(blas_threads()) or np.zeros((1, 1)), prune_first="lowest")
    score_heads(((np.full((1, 1, 2, 2), 0.5, np.float32), {}) for _ in range(2)), [spy], [1], [1])
    assert seen and all(threads and set(threads) == {1} for threads in seen)
    assert blas_threads() == before


def test_mean_over_utterances_of_different_lengths():
    rng = np.random.default_rng(3)
    utts = [random_maps(rng, t) for t in (3, 50, 11)]
    scores = score_heads(((a, {}) for a in utts), BUILTIN_METRICS, [1, 2], [1, 2, 3])
    for metric, fn in zip(("globalness", "verticality", "diagonality", "weight"),
                          (globalness, verticality, diagonality, weight)):
        expected = np.mean([fn(a) for a in utts], axis=0)
        np.testing.assert_allclose(scores.values[metric], expected, rtol=1e-10)
    assert scores.utterances == 3 and (scores.counts["globalness"] == 3).all()


def test_nan_values_are_left_out_and_reducers():
    from satool.analysis.metrics import HeadMetric

    values = iter([np.array([[1.0, np.nan]]), np.array([[3.0, 5.0]])])
    metric = HeadMetric("odd", lambda a, m: next(values), prune_first="lowest")
    scores = score_heads(((np.zeros((1, 2, 2, 2), np.float32), {}) for _ in range(2)), [metric], [1], [1, 2])
    assert scores.values["odd"].tolist() == [[2.0, 5.0]] and scores.counts["odd"].tolist() == [[2, 1]]
    peak = HeadMetric("peak", lambda a, m: np.array([[a[0, 0, 0, 0], -a[0, 0, 0, 0]]]), prune_first="highest",
                      reduce="max")
    maxed = score_heads(((np.full((1, 2, 2, 2), v, np.float32), {}) for v in (1.0, 4.0, 2.0)), [peak], [1], [1, 2])
    assert maxed.values["peak"].tolist() == [[4.0, -1.0]]


def _scores(values: dict[str, list[list[float]]]) -> HeadScores:
    arrays = {k: np.array(v, dtype=float) for k, v in values.items()}
    return HeadScores([1, 2], [1, 2], arrays, {k: np.ones_like(v, dtype=int) for k, v in arrays.items()}, 1,
                      {"globalness": "highest", "verticality": "highest", "diagonality": "highest",
                       "weight": "lowest"})


def test_ranks_categories_and_pruning_order(tmp_path):
    scores = _scores({
        "globalness": [[4.0, 1.0], [3.0, 2.0]],    # ranks 1 4 / 2 3
        "verticality": [[-4.0, -1.0], [-3.0, -2.0]],  # ranks 4 1 / 3 2
        "diagonality": [[-0.3, -0.2], [-0.01, -0.4]],  # ranks 3 2 / 1 4
        "weight": [[0.1, 0.9], [0.5, 0.2]],
    })
    assert scores.rank("globalness").tolist() == [[1, 4], [2, 3]]
    assert scores.categories().tolist() == [["global", "vertical"], ["diagonal", "vertical"]]
    assert scores.pruning_order("globalness") == [(1, 1), (2, 1), (2, 2), (1, 2)]
    assert scores.pruning_order("weight") == [(1, 1), (2, 2), (2, 1), (1, 2)]  # lowest first
    scores.save(tmp_path)
    loaded = HeadScores.load(tmp_path)
    assert loaded.pruning_order("weight") == scores.pruning_order("weight")
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("layer,head,label,globalness,verticality,diagonality,weight,rank_globalness")
    assert lines[0].endswith("category") and len(lines) == 5


def test_metric_cli_on_a_cache_with_plugin_metric(tmp_path, satool_cli):
    from satool import testing
    from satool.stages import extract as extract_stage

    testing.make_librispeech(tmp_path / "LS", speakers=("1", "2"), per_speaker=3)
    ckpt = testing.make_checkpoint(tmp_path / "m.ckpt")
    extract_stage.run(extract_stage.Settings(checkpoint=ckpt, corpus=tmp_path / "LS", out=tmp_path / "cache"))
    result = satool_cli("metric", tmp_path / "cache", "--json", "--out", tmp_path / "res", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert len(rows) == 4  # tiny preset: 2 layers x 2 heads
    for key in ("layer", "head", "globalness", "verticality", "diagonality", "weight", "rank_globalness",
                "rank_verticality", "rank_diagonality", "category", "silence-focus"):
        assert key in rows[0]
    from satool.cache import open_cache

    cache = open_cache(tmp_path / "cache")
    expected = np.mean([globalness(cache.attention(u)) for u in cache.utterance_ids], axis=0)
    got = np.array([[r["globalness"] for r in rows if r["layer"] == layer] for layer in (1, 2)])
    np.testing.assert_allclose(got, expected, rtol=1e-9)
    for name in ("metrics.csv", "metrics.json", "head_distribution.png", "top_heads.png", "top_heads.npz"):
        assert (tmp_path / "res" / name).stat().st_size > 0
    unknown = satool_cli("metric", tmp_path / "cache", "--by", "nope", cwd=tmp_path)
    assert unknown.returncode == 2 and "unknown metric 'nope' (known: " in unknown.stderr
    # the same numbers without a cache, straight from the model
    direct = satool_cli("metric", ckpt, tmp_path / "LS", "--json", "--by", "globalness", "--out",
                        tmp_path / "res2", cwd=tmp_path)
    assert direct.returncode == 0, direct.stderr
    got_direct = np.array([r["globalness"] for r in json.loads(direct.stdout)]).reshape(2, 2)
    np.testing.assert_allclose(got_direct, expected, atol=2e-3)  # the cache holds float16


def test_partial_cache_is_refused(tmp_path, satool_cli):
    from satool.cache import CacheWriter

    manifest = {"model": {}, "layers": [1], "heads": [1], "hidden_states": [], "settings": {},
                "planned": ["a", "b"], "frames_per_step": 1}
    with CacheWriter(tmp_path / "c", manifest) as writer:
        writer.add("a", attention=np.ones((1, 1, 2, 2), np.float32) / 2, meta={"n_steps": 2})
    result = satool_cli("metric", tmp_path / "c", "--out", tmp_path / "r", cwd=tmp_path)
    assert result.returncode == 3
    assert "1 of 2 planned utterances are missing" in result.stderr and "--allow-partial" in result.stderr
    ok = satool_cli("metric", tmp_path / "c", "--allow-partial", "--out", tmp_path / "r", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "using the 1 finished ones" in ok.stderr


def test_nan_values_are_never_ranked_and_counts_are_reported():
    scores = _scores({
        "globalness": [[4.0, np.nan], [3.0, 2.0]],
        "verticality": [[-4.0, -1.0], [-3.0, -2.0]],
        "diagonality": [[-0.3, -0.2], [-0.01, -0.4]],
        "weight": [[np.nan, np.nan], [np.nan, np.nan]],
    })
    rows = {r["label"]: r for r in scores.records()}
    assert rows["L1.H2"]["rank_globalness"] is None and rows["L1.H2"]["category"] == ""
    assert rows["L1.H1"]["rank_globalness"] == 1 and rows["L1.H1"]["category"] == "global"
    assert all(r["rank_weight"] is None and r["weight"] is None for r in rows.values())
    assert rows["L2.H1"]["utterances_globalness"] == 1


def test_extract_refuses_a_model_that_produces_nan(tmp_path):
    import torch

    from satool import testing
    from satool.errors import InputError
    from satool.models.mockingjay.checkpoint import load_checkpoint, save_checkpoint
    from satool.stages import extract as extract_stage

    corpus = tmp_path / "LS"
    testing.make_librispeech(corpus, speakers=("19",), per_speaker=2)
    ckpt = testing.make_checkpoint(tmp_path / "m.ckpt", downsample=1)
    loaded = load_checkpoint(ckpt)
    with torch.no_grad():  # finite weights whose scores overflow: softmax of inf - inf is NaN
        loaded.encoder.encoder.layer[0].attention.self.query.weight.fill_(1e30)
        loaded.encoder.encoder.layer[0].attention.self.key.weight.fill_(1e30)
    save_checkpoint(ckpt, loaded.encoder, audio=loaded.audio)
    with pytest.raises(InputError, match="produced NaN or infinite attention weights"):
        extract_stage.run(extract_stage.Settings(checkpoint=ckpt, corpus=corpus, out=tmp_path / "cache"))


def test_metric_results_accumulate_for_the_same_cache(tmp_path, satool_cli):
    """metric --by X adds X's columns to the results of the same cache instead of dropping the others
    (the loop: metric --by mymetric, then prune --by globalness asked for globalness again)."""
    from cachefiles import write

    write(tmp_path / "cache", ["a", "b"], np.random.default_rng(0))
    first = satool_cli("metric", tmp_path / "cache", "--by", "globalness,verticality", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    second = satool_cli("metric", tmp_path / "cache", "--by", "weight", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "kept globalness, verticality" in " ".join(second.stderr.split())
    scores = HeadScores.load(tmp_path / "results" / "metric")
    assert set(scores.values) == {"globalness", "verticality", "weight"}
    # another cache's results are replaced, not mixed in
    write(tmp_path / "other", ["a"], np.random.default_rng(1))
    third = satool_cli("metric", tmp_path / "other", "--by", "weight", cwd=tmp_path)
    assert third.returncode == 0 and "kept" not in third.stderr
    assert set(HeadScores.load(tmp_path / "results" / "metric").values) == {"weight"}


def test_near_ties_are_flagged():
    scores = _scores({
        "globalness": [[4.60517, 4.60518], [4.60519, 3.0]],  # three heads within 1e-5 of each other
        "verticality": [[-4.0, -1.0], [-3.0, -2.0]],
        "diagonality": [[-0.3, -0.2], [-0.01, -0.4]],
        "weight": [[0.1, 0.9], [0.5, 0.2]],
    })
    assert scores.near_ties("globalness").tolist() == [[True, True], [True, False]]
    assert not scores.near_ties("verticality").any()
    rows = {r["label"]: r for r in scores.records()}
    assert rows["L1.H1"]["near_tie_globalness"] and not rows["L2.H2"]["near_tie_globalness"]
