"""Phone relation maps: model-rate computation vs the direct up-sampled definition; CLI on both phone sets."""

from __future__ import annotations

import numpy as np
import pytest

from satool.analysis.relations import Relations, parse_heads, relate, relate_upsampled_reference


def utterance(rng, n_steps, rate, n_phones, layers=2, heads=2):
    a = rng.random((layers, heads, n_steps, n_steps)) ** 4
    a = (a / a.sum(-1, keepdims=True)).astype(np.float32)
    a[0, 1, 2] = 0.0  # a zero row (pruned weights) stays zero
    n_frames = n_steps * rate + rng.integers(0, rate)  # frames past R * steps are dropped
    labels = rng.integers(-1, n_phones, size=n_frames)  # -1 = unlabelled
    return a, {"frame_labels": labels, "frames_per_step": rate}


@pytest.mark.parametrize("rate", [1, 3])
def test_model_rate_computation_equals_upsampled_definition(rate):
    rng = np.random.default_rng(rate)
    n_phones = 5
    utts = [utterance(rng, n, rate, n_phones) for n in (4, 9, 13)]
    rel = relate(iter(utts), [1, 2], [1, 2], [f"p{i}" for i in range(n_phones)])
    for h, (layer, head) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        pairs = [relate_upsampled_reference(a[layer, head], meta["frame_labels"], rate, n_phones)
                 for a, meta in utts]
        np.testing.assert_allclose(rel.p_prime[h], np.mean([p for p, _ in pairs], axis=0), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(rel.p_uniform, np.mean([u for _, u in pairs], axis=0), rtol=1e-9)
    assert rel.labels == ["L1.H1", "L1.H2", "L2.H1", "L2.H2"] and rel.utterances == 3


def test_hand_worked_relation():
    # 2 steps, R = 1, phones a (step 0) and b (step 1); the head always attends to b.
    attn = np.array([[[[0.0, 1.0], [0.0, 1.0]]]], np.float32)
    rel = relate(iter([(attn, {"frame_labels": np.array([0, 1]), "frames_per_step": 1})]), [1], [1], ["a", "b"])
    np.testing.assert_allclose(rel.p_prime[0], [[0, 0.5], [0, 0.5]])  # joint distribution, sums to 1
    np.testing.assert_allclose(rel.p_uniform, [[0.25, 0.25], [0.25, 0.25]])
    np.testing.assert_allclose(rel.p_norm[0], [[-1, 1], [-1, 1]])
    np.testing.assert_allclose(rel.concentration[0], [-1, 1])  # focus on b, neglect of a


def test_phones_absent_from_the_corpus_are_nan():
    attn = np.full((1, 1, 2, 2), 0.5, np.float32)
    rel = relate(iter([(attn, {"frame_labels": np.array([0, 0]), "frames_per_step": 1})]), [1], [1], ["a", "b"])
    assert np.isnan(rel.p_norm[0, 0, 1]) and np.isnan(rel.concentration[0, 1])


def test_parse_heads():
    assert parse_heads("3.7, L1.H2") == [(3, 7), (1, 2)]
    from satool.errors import UsageError

    with pytest.raises(UsageError, match="cannot read head 'x'"):
        parse_heads("x")


@pytest.mark.parametrize("layout", ["librispeech", "timit"])
def test_relate_cli_on_both_phone_sets(tmp_path, satool_cli, layout):
    from satool import testing
    from satool.stages import extract as extract_stage

    if layout == "timit":
        testing.make_timit(tmp_path / "corpus")
    else:
        testing.make_librispeech(tmp_path / "corpus", speakers=("1", "2"), per_speaker=2)
    ckpt = testing.make_checkpoint(tmp_path / "m.ckpt", downsample=1)
    extract_stage.run(extract_stage.Settings(checkpoint=ckpt, corpus=tmp_path / "corpus", out=tmp_path / "cache"))
    result = satool_cli("relate", tmp_path / "cache", "--heads", "1.2,2.1", "--out", tmp_path / "rel",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = np.load(tmp_path / "rel" / "relations.npz")
    phones = data["phones"].tolist()
    assert len(phones) == (39 if layout == "timit" else 40) and "sil" in phones
    totals = data["p_prime"].sum(axis=(1, 2))  # < 1 only by unlabelled frames and the dropped tail
    assert ((totals > 0.9) & (totals <= 1 + 1e-6)).all()
    for name in ("relation_L1.H2.png", "relation_L2.H1.png", "verticality_vs_concentration.png",
                 "relations.csv", "concentration.csv"):
        assert (tmp_path / "rel" / name).stat().st_size > 0
    header = (tmp_path / "rel" / "relations.csv").read_text().splitlines()[0]
    assert header == "layer,head,query_phone,key_phone,p_prime,p_uniform,p_norm"
    bad = satool_cli("relate", tmp_path / "cache", "--heads", "9.9", "--out", tmp_path / "rel", cwd=tmp_path)
    assert bad.returncode == 2 and "L9.H9 is not available: layers 1..2, heads 1..2" in bad.stderr
    assert "relating phones" not in bad.stderr  # refused before the pass over the cache


def test_relations_sum_like_a_distribution():
    rng = np.random.default_rng(0)
    a = rng.random((1, 1, 10, 10)).astype(np.float32)
    a /= a.sum(-1, keepdims=True)
    labels = rng.integers(0, 4, size=21)  # every frame labelled; frame 21 is past R * steps = 20
    rel: Relations = relate(iter([(a, {"frame_labels": labels, "frames_per_step": 2})]), [1], [1], list("abcd"))
    assert rel.p_prime[0].sum() == pytest.approx(1.0, rel=1e-6)  # the erratum's single 1/T
    assert rel.p_uniform.sum() == pytest.approx(1.0, rel=1e-9)
