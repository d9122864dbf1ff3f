"""Probing and pruning: determinism, shared work, head masks, the workspace, plugins, Fig. 5 and 6 outputs."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from satool import testing


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A directory where pretrain, extract and metric ran (tiny model, tone corpus, same speakers in both splits)."""
    root = tmp_path_factory.mktemp("ws")
    speakers = ("1", "2", "3")
    testing.make_librispeech(root / "LS", speakers=speakers, per_speaker=4, split="train", chapter_id="10")
    testing.make_librispeech(root / "LS", speakers=speakers, per_speaker=2, split="test", chapter_id="20", seed=3)
    from conftest import run_satool

    for args in (("pretrain", "LS", "--preset", "tiny", "--steps", "4", "--batch-size", "4", "--out", "m.ckpt"),
                 ("extract",), ("metric",)):
        result = run_satool(*args, cwd=root)
        assert result.returncode == 0, (args, result.stderr)
    return root


def _rows(path):
    return list(csv.DictReader(open(path)))


def test_probe_is_deterministic_and_level_zero_equals_it(workspace, satool_cli):
    a = satool_cli("probe", "--task", "phone,speaker,speaker-utt,reconstruction", "--steps", "60", "--json",
                   "--out", "pa", cwd=workspace)
    b = satool_cli("probe", "--task", "phone,speaker,speaker-utt,reconstruction", "--steps", "60", "--json",
                   "--out", "pb", cwd=workspace)
    assert a.returncode == 0, a.stderr
    first, second = json.loads(a.stdout), json.loads(b.stdout)
    assert [r["score"] for r in first] == [r["score"] for r in second]
    by_task = {r["task"]: r for r in first if r["representation"] == "model"}
    assert by_task["reconstruction"]["higher_is_better"] is False and by_task["reconstruction"]["score"] > 0
    assert by_task["phone"]["chance"] < by_task["phone"]["score"] <= 1
    prune = satool_cli("prune", "--by", "random", "--random-seeds", "1", "--task", "phone,speaker,speaker-utt",
                       "--steps", "60", "--step", "2", "--out", "pr", cwd=workspace)
    assert prune.returncode == 0, prune.stderr
    level0 = {r["task"]: float(r["score"]) for r in _rows(workspace / "pr" / "prune_results.csv") if r["level"] == "0"}
    for task in ("phone", "speaker", "speaker-utt"):
        assert level0[task] == pytest.approx(by_task[task]["score"], abs=1e-12)


def test_exactly_prune_by_globalness_task_speaker(workspace, satool_cli):
    result = satool_cli("prune", "--by", "globalness", "--task", "speaker", cwd=workspace)
    assert result.returncode == 0, result.stderr
    rows = _rows(workspace / "results" / "prune" / "prune_results.csv")
    assert [int(r["pruned"]) for r in rows] == [0, 1, 2, 3, 4]  # tiny model: 4 heads, k = max(1, 4/12)
    assert {r["by"] for r in rows} == {"globalness"} and {r["task"] for r in rows} == {"speaker"}
    metrics = json.loads((workspace / "results" / "metric" / "metrics.json").read_text())
    from satool.results.metrics import HeadScores

    order = HeadScores.load(workspace / "results" / "metric").pruning_order("globalness")
    assert metrics["metrics"]["globalness"]["prune_first"] == "highest" and len(order) == 4
    for name in ("prune_curves.png", "prune_results.json", "globalness_vs_weight.png", "globalness_vs_weight.csv"):
        assert (workspace / "results" / "prune" / name).stat().st_size > 0
    fig6 = _rows(workspace / "results" / "prune" / "globalness_vs_weight.csv")
    assert sorted(int(r["position_by_globalness"]) for r in fig6) == [1, 2, 3, 4]
    said = " ".join(result.stderr.split())
    assert "5 points, 5 pruned models x 1 probes" in said and "5 pruned models represented and probed" in said


def test_chosen_levels(workspace, satool_cli):
    result = satool_cli("prune", "--by", "globalness,random", "--random-seeds", "3", "--task", "phone",
                        "--levels", "4,2", cwd=workspace)
    assert result.returncode == 0, result.stderr
    rows = _rows(workspace / "results" / "prune" / "prune_results.csv")
    assert sorted({int(r["pruned"]) for r in rows}) == [0, 2, 4]  # 0 added, sorted
    assert len([r for r in rows if r["by"] == "random"]) == 3 * 3
    bad = satool_cli("prune", "--levels", "5", cwd=workspace)
    assert bad.returncode == 2 and "--levels 5: a level is a number of heads from 0 to 4" in bad.stderr


def test_plugin_metric_and_task_work_in_prune(workspace, satool_cli):
    result = satool_cli("prune", "--by", "silence-focus,weight", "--task", "boundary", "--steps", "40", "--step", "2",
                        "--out", "plug", cwd=workspace)
    assert result.returncode == 0, result.stderr
    rows = _rows(workspace / "plug" / "prune_results.csv")
    assert {r["by"] for r in rows} == {"silence-focus", "weight"} and {r["task"] for r in rows} == {"boundary"}
    assert all(r["score_name"] == "F1" for r in rows)
    unknown = satool_cli("prune", "--by", "nonsense", "--task", "speaker", cwd=workspace)
    assert unknown.returncode == 2 and "unknown metric 'nonsense'" in unknown.stderr
    unknown = satool_cli("prune", "--by", "globalness", "--task", "nonsense", cwd=workspace)
    assert unknown.returncode == 2 and "unknown task 'nonsense'" in unknown.stderr


def test_span_pruning(workspace, satool_cli):
    result = satool_cli("prune", "--span", "0,1,3", "--task", "phone", "--steps", "40", "--out", "span",
                        cwd=workspace)
    assert result.returncode == 0, result.stderr
    rows = _rows(workspace / "span" / "span_results.csv")
    assert [r["span"] for r in rows] == ["none", "0", "1", "3"]
    assert (workspace / "span" / "span_curves.png").stat().st_size > 0


def _model(workspace):
    from satool.models.loading import load_model

    return load_model(workspace / "m.ckpt")


def test_head_mask_really_zeroes_the_pruned_heads(workspace):
    model = _model(workspace)
    features = model.input_features(testing.tone_audio(testing.DEFAULT_PHONES))
    full = model.encode([features])[0].attentions
    mask = torch.ones(2, 2)
    mask[0, 1] = 0
    mask[1, 0] = 0
    pruned = model.encode([features], head_mask=mask)[0].attentions
    assert pruned[0, 1].abs().max() == 0 and pruned[1, 0].abs().max() == 0
    assert torch.equal(pruned[0, 0], full[0, 0])  # layer 1's other head is untouched
    assert not torch.equal(pruned[1, 1], full[1, 1])  # layer 2 sees layer 1's pruned output


def test_all_heads_pruned_removes_context(workspace):
    """With every head pruned no step sees another: a step's representation ignores the rest of the input.

    (Its own frames still reach it through the residual path, which is why
    frame-level phone accuracy does not fall to chance; see docs/pruning.md.)
    """
    model = _model(workspace)
    features = model.input_features(testing.tone_audio(testing.DEFAULT_PHONES))
    changed = features.clone()
    changed[10:] = torch.randn_like(changed[10:])
    mask = torch.zeros(2, 2)
    from satool.models.base import ProbeInput

    a = model.represent([ProbeInput(features)], head_mask=mask)[0].hidden
    b = model.represent([ProbeInput(changed)], head_mask=mask)[0].hidden
    np.testing.assert_allclose(a[:10], b[:10], atol=1e-6)
    c = model.represent([ProbeInput(changed)])[0].hidden
    d = model.represent([ProbeInput(features)])[0].hidden
    assert np.abs(d[:10] - c[:10]).max() > 1e-3  # with attention, the change reaches the first steps


def test_grouped_sweep_equals_one_configuration_at_a_time(workspace):
    """The sweep represents pruned models side by side and trains their probes as groups; every score
    equals representing each configuration alone and training each probe alone (bit for bit)."""
    from satool.analysis.probing.passes import Configuration, ProbeData
    from satool.analysis.probing.tasks import BUILTIN_TASKS, ProbeSettings
    from satool.analysis.pruning import plan, sweep_heads
    from satool.data.corpus import open_corpus
    from satool.models.loading import load_model

    model = load_model(workspace / "m.ckpt")
    corpus = open_corpus(workspace / "LS")
    data = (ProbeData(model, corpus, corpus.select("train")), ProbeData(model, corpus, corpus.select("test")))
    tasks = [t for t in BUILTIN_TASKS if t.name in ("phone", "speaker-utt")]
    settings = ProbeSettings(steps=120, eval_every=20, patience=2)
    orders = plan(["random"], None, model.num_layers, model.num_heads, step=1, random_seeds=range(3))
    counted = []
    sweep = sweep_heads(data, orders, tasks, settings=settings, progress=counted.append)
    assert len(sweep.rows) == 3 * 5 * 2
    keys = set()
    for row in sweep.rows:
        order = orders.orders["random"][row.order_seed]
        config = Configuration.pruned(model.num_layers, model.num_heads, order[:row.pruned])
        keys.add(config.key)
        train, test = data[0].represent(config), data[1].represent(config)  # alone, one forward each
        task = next(t for t in tasks if t.name == row.task)
        assert row.score.score == task.evaluate(train, test, settings=settings).score
    assert sum(counted) == len(keys) * (1 + len(tasks))  # each distinct pruned model represented and probed once


def test_probe_every_layer_in_one_run(workspace, satool_cli):
    """--layer all probes every hidden state (one representation pass, probes trained as one group):
    each layer's scores equal probing that layer alone, the rows name their layer, and the report
    can say which layer is best."""
    from satool.results.probe import ProbeResults

    every = satool_cli("probe", "--layer", "all", "--task", "phone,speaker-utt,reconstruction", "--steps", "60",
                       "--no-inputs", "--out", "layers", cwd=workspace)
    assert every.returncode == 0, every.stderr
    results = ProbeResults.load(workspace / "layers")
    assert results.layers == [0, 1, 2]  # tiny model: embedding output and two layers
    assert [r.task for r in results.rows if r.task == "reconstruction"] == ["reconstruction"]  # scored once
    one = satool_cli("probe", "--layer", "1", "--task", "phone,speaker-utt", "--steps", "60", "--no-inputs",
                     "--out", "layer1", cwd=workspace)
    assert one.returncode == 0, one.stderr
    alone = {r.task: r.score.score for r in ProbeResults.load(workspace / "layer1").rows}
    assert {r.task: r.score.score for r in results.rows if r.layer == 1 and r.task != "reconstruction"} == alone
    best = {b["task"]: b for b in results.best_layers()}
    assert set(best) == {"phone", "speaker-utt"} and best["phone"]["best_layer"] in (0, 1, 2)
    bad = satool_cli("probe", "--layer", "x", cwd=workspace)
    assert bad.returncode == 2 and "--layer 'x'" in bad.stderr
