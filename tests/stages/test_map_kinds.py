"""Map kinds through the stages: extract --maps records the kind, every stage reading the cache works on
it and says so, the streaming pass gives the cache's numbers for each kind, rollout caches have one map
per layer and order no pruning, and metric results of two kinds set the same heads side by side."""

from __future__ import annotations

import json

import numpy as np
import pytest

from satool import testing
from satool.cache import open_cache
from satool.errors import InputError, UsageError
from satool.results.maps import MapsSideBySide
from satool.results.metrics import HeadScores
from satool.results.relations import Relations
from satool.stages import extract, metric, relate, segment


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("kinds")
    testing.make_librispeech(root / "LS", speakers=("1", "2"), per_speaker=2)
    ckpt = testing.make_checkpoint(root / "m.ckpt", preset="tiny")
    for kind in ("attention", "value-norm", "rollout"):
        extract.run(extract.Settings(checkpoint=ckpt, corpus=root / "LS", out=root / kind, maps=kind, hidden_states=[2]))
    return root, ckpt


def test_the_cache_records_its_kind_and_holds_distributions(setup):
    root, _ = setup
    for kind in ("attention", "value-norm", "rollout"):
        cache = open_cache(root / kind)
        assert cache.maps == kind and json.loads((root / kind / "manifest.json").read_text())["maps"] == kind
        maps = cache.attention(cache.utterance_ids[0])  # read back checked: rows sum to 1
        assert maps.shape[1] == (1 if kind == "rollout" else 2) and np.abs(maps.sum(-1) - 1).max() < 0.02
    raw, norm = (open_cache(root / k).attention(open_cache(root / k).utterance_ids[0]) for k in ("attention",
                                                                                                   "value-norm"))
    assert np.abs(raw - norm).max() > 1e-3
    assert open_cache(root / "rollout").heads == [1]
    cache = open_cache(root / "value-norm")
    norms = cache.value_norms(cache.utterance_ids[0])  # the raw norms are kept beside the normalised maps
    assert norms.shape == (2, 2, raw.shape[-1]) and norms.min() > 0
    expected = raw * norms[:, :, None, :]
    np.testing.assert_allclose(norm, expected / expected.sum(-1, keepdims=True), atol=2e-3)  # float16 storage
    assert open_cache(root / "attention").value_norms(cache.utterance_ids[0]) is None


def test_a_cache_resumes_only_under_its_own_kind(setup):
    root, ckpt = setup
    with pytest.raises(UsageError, match="different maps"):
        extract.run(extract.Settings(checkpoint=ckpt, corpus=root / "LS", out=root / "attention", maps="value-norm",
                                     hidden_states=[2]))
    with pytest.raises(UsageError, match="one map per layer"):
        extract.run(extract.Settings(checkpoint=ckpt, corpus=root / "LS", out=root / "x", maps="rollout", heads=[1]))
    with pytest.raises(UsageError, match="choose one of"):
        extract.run(extract.Settings(checkpoint=ckpt, corpus=root / "LS", out=root / "y", maps="norms"))


def test_a_manifest_naming_an_unknown_kind_is_refused(setup, tmp_path):
    import shutil

    root, _ = setup
    copy = tmp_path / "cache"
    shutil.copytree(root / "value-norm", copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["maps"] = "gradients"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="not a map kind"):
        open_cache(copy)


@pytest.mark.parametrize("kind", ["value-norm", "rollout"])
def test_metric_from_the_cache_and_from_the_checkpoint_agree(setup, tmp_path, monkeypatch, kind):
    from test_streaming import assert_same_scores

    root, ckpt = setup
    monkeypatch.chdir(tmp_path)
    cached = metric.run(metric.Settings(source=root / kind, out=tmp_path / "cache")).scores
    assert cached.source["maps"] == kind and HeadScores.load(tmp_path / "cache").source["maps"] == kind
    streamed = metric.run(metric.Settings(source=ckpt, corpus=root / "LS", out=tmp_path / "stream", maps=kind,
                                          keep_maps=1)).scores
    assert streamed.source["maps"] == kind and streamed.heads == cached.heads
    assert_same_scores(streamed, cached, rtol=1e-5)
    assert open_cache(tmp_path / "stream" / "maps").maps == kind
    with pytest.raises(UsageError, match=f"holds {kind} maps, not attention"):
        metric.run(metric.Settings(source=root / kind, out=tmp_path / "x", maps="attention"))


def test_relate_and_segment_say_which_kind_they_read(setup, tmp_path, monkeypatch):
    root, ckpt = setup
    monkeypatch.chdir(tmp_path)
    out = relate.run(relate.Settings(cache=root / "value-norm", out=tmp_path / "rel")).relations
    assert out.maps == "value-norm" and Relations.load(tmp_path / "rel").maps == "value-norm"
    streamed = relate.run(relate.Settings(checkpoint=ckpt, corpus=root / "LS", out=tmp_path / "rel-stream",
                                          maps="value-norm")).relations
    assert streamed.maps == "value-norm"
    np.testing.assert_allclose(streamed.p_prime, out.p_prime, rtol=1e-5, atol=1e-9)
    results = segment.run(segment.Settings(cache=root / "rollout", features=["attn:L1.H1"], tune_on="dev-clean",
                                           test_on="dev-clean", alpha=1.0, beta=1.0, out=tmp_path / "seg")).results
    assert results.maps == "rollout"
    from satool.results.segment import SegmentResults

    assert SegmentResults.load(tmp_path / "seg").maps == "rollout"


def test_pruning_orders_refuse_rollout_metrics(setup, tmp_path, monkeypatch):
    from satool.stages.prune import _check_orders

    root, _ = setup
    monkeypatch.chdir(tmp_path)
    rolled = metric.run(metric.Settings(source=root / "rollout", out=tmp_path / "r")).scores
    with pytest.raises(UsageError, match="cannot order heads for pruning"):
        _check_orders(rolled, tmp_path / "r", lambda *a: None)
    notes = []
    normed = metric.run(metric.Settings(source=root / "value-norm", out=tmp_path / "n")).scores
    _check_orders(normed, tmp_path / "n", lambda message, *a: notes.append(message))
    assert "value-norm" in notes[0]
    with pytest.raises(UsageError, match="metrics of value-norm maps, not attention"):
        _check_orders(normed, tmp_path / "n", lambda *a: None, "attention")


def test_raw_weights_and_norms_side_by_side_in_the_report(setup, tmp_path, monkeypatch):
    from satool.output.report import _maps_section
    from satool.results.run import RunResults

    root, _ = setup
    monkeypatch.chdir(tmp_path)
    metric.run(metric.Settings(source=root / "attention", out=tmp_path / "raw"))
    out = metric.run(metric.Settings(source=root / "value-norm", out=tmp_path / "results" / "metric",
                                     beside=tmp_path / "raw"))
    beside = out.beside
    assert beside.kinds == ["value-norm", "attention"] and len(beside.rows) == 4
    row = beside.rows[0]
    assert row["verticality (value-norm)"] == pytest.approx(float(out.scores.values["verticality"][0, 0]))
    loaded = MapsSideBySide.load(tmp_path / "results" / "metric")
    assert loaded.rows == json.loads(json.dumps(beside.rows)) and loaded.metrics == beside.metrics
    run = RunResults.load(tmp_path)
    assert run.maps_side_by_side is not None and "value-norm maps beside attention maps" in _maps_section(
        run.maps_side_by_side)
    with pytest.raises(UsageError, match="both metric results are of attention maps"):
        metric.run(metric.Settings(source=root / "attention", out=tmp_path / "raw2", beside=tmp_path / "raw"))
    metric.run(metric.Settings(source=root / "rollout", out=tmp_path / "roll"))
    with pytest.raises(UsageError, match="one per layer"):
        metric.run(metric.Settings(source=root / "value-norm", out=tmp_path / "n2", beside=tmp_path / "roll"))


def test_the_viewer_labels_the_kind(setup, tmp_path, monkeypatch):
    from satool.view.data import ViewData

    root, _ = setup
    monkeypatch.chdir(tmp_path)
    metric.run(metric.Settings(source=root / "attention", out=tmp_path / "raw"))
    data = ViewData(root / "value-norm", tmp_path / "raw")
    info = data.info()
    assert info["maps"] == "value-norm" and "Kobayashi" in info["maps_definition"]
    assert info["metrics_maps"] == "attention"  # the page notes that the metrics shown are of another kind
    utt = data.cache.utterance_ids[0]
    assert data.grid(utt)["size"] > 0 and data.head(utt, "L1.H2")["n_steps"] > 0
    rolled = ViewData(root / "rollout").info()
    assert rolled["maps"] == "rollout" and rolled["heads"] == [1]
