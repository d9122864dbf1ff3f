"""Result files read back are untrusted: each reader checks its file's container and content and gives
one InputError naming the file (exit 3 through the command line), never a traceback or a wrong number."""

from __future__ import annotations

import json

import numpy as np
import pytest

from satool.errors import InputError
from satool.results.files import MAX_RESULT_BYTES, read_json
from satool.results.health import HealthCheck
from satool.results.metrics import HeadScores
from satool.results.probe import ProbeResults, ProbeRow, ProbeScore
from satool.results.prune import PruneRow, PruneSweep, SpanSweep
from satool.results.relations import Relations
from satool.results.segment import SegmentResults, SourceResult
from satool.results.study import Comparison
from satool.results.training import TrainingCurves
from satool.results.verdicts import VerdictReport


def _metrics(tmp_path):
    values = {"globalness": np.array([[0.5, 0.7]])}
    scores = HeadScores([1], [1, 2], values, {"globalness": np.array([[3, 3]])}, 3,
                        offset_profile=np.ones((1, 2, 21)), step_s=0.03,
                        bootstrap={"globalness": np.ones((4, 1, 2))}, bootstrap_offset_profile=np.ones((4, 1, 2, 21)))
    scores.save(tmp_path)
    return json.loads((tmp_path / "metrics.json").read_text())


def _edit(tmp_path, name: str, change) -> None:
    path = tmp_path / name
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document).replace('"__BIG__"', "1e400"))  # a number JSON reads as infinity


@pytest.mark.parametrize("text, message", [
    ("{", "unreadable JSON"),
    ('{"a": NaN}', "bare NaN is not JSON"),
    ("[1, 2]", "must be a JSON object"),
    ("\xff\xfe", "unreadable JSON"),
])
def test_broken_json_containers(tmp_path, text, message):
    (tmp_path / "metrics.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(InputError, match=message) as caught:
        HeadScores.load(tmp_path)
    assert caught.value.path == tmp_path / "metrics.json"


def test_a_directory_fifo_or_huge_file_is_refused(tmp_path, monkeypatch):
    import os

    (tmp_path / "metrics.json").mkdir()
    with pytest.raises(InputError, match="not a regular file"):
        read_json(tmp_path / "metrics.json")
    os.mkfifo(tmp_path / "probe.json")
    with pytest.raises(InputError, match="not a regular file"):  # never blocks on the pipe
        read_json(tmp_path / "probe.json")
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(MAX_RESULT_BYTES + 1)  # sparse: nothing is allocated
    with pytest.raises(InputError, match="larger than"):
        read_json(big)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(layers=[1, 1]), "distinct numbers"),
    (lambda d: d.update(layers=["1"]), "distinct numbers"),
    (lambda d: d["metrics"]["globalness"].update(values=[[0.5]]), "1 x 2 table"),
    (lambda d: d["metrics"]["globalness"].update(values=[[0.5, "x"]]), "must be a number"),
    (lambda d: d["metrics"]["globalness"].update(values=[[0.5, "__BIG__"]]), "must be finite"),  # 1e400: inf
    (lambda d: d["metrics"]["globalness"].update(counts=[[3, -1]]), "whole numbers >= 0"),
    (lambda d: d["metrics"]["globalness"].update(prune_first="sideways"), "'highest' or 'lowest'"),
    (lambda d: d.update(utterances=-2), "must be >= 0"),
    (lambda d: d.update(utterances=True), "whole number"),
    (lambda d: d["offset_profile"].update(offsets=[0, 1]), "odd number"),
    (lambda d: d.update(step_s=50), "between 0 and 10"),
    (lambda d: d.update(failed={"x": 3}), "map metric names to reasons"),
])
def test_crafted_metric_results(tmp_path, change, message):
    _metrics(tmp_path)
    _edit(tmp_path, "metrics.json", change)
    with pytest.raises(InputError, match=message):
        HeadScores.load(tmp_path)


def test_bootstrap_replicates_beside_other_results_are_refused(tmp_path):
    _metrics(tmp_path)
    np.savez(tmp_path / "metrics_bootstrap.npz", offset_profile=np.ones((4, 1, 2, 21)),
             **{"metric/verticality": np.ones((4, 1, 2))})
    with pytest.raises(InputError, match="not a metric of these results"):
        HeadScores.load(tmp_path)
    np.savez(tmp_path / "metrics_bootstrap.npz", offset_profile=np.full((4, 1, 2, 21), np.inf))
    with pytest.raises(InputError, match="infinite"):
        HeadScores.load(tmp_path)
    (tmp_path / "metrics_bootstrap.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(InputError, match="not a satool bootstrap file"):
        HeadScores.load(tmp_path)
    # a pickled object inside the npz is never loaded
    np.savez(tmp_path / "metrics_bootstrap.npz", offset_profile=np.array([{"a": 1}], dtype=object))
    with pytest.raises(InputError):
        HeadScores.load(tmp_path)


def _probe_rows(tmp_path):
    score = ProbeScore("phone", 0.7, 0.2, "accuracy", True, 10, 5, {"converged": True}, [(3, 4), (1, 1)])
    ProbeResults([ProbeRow("model", score, layer=2)]).save(tmp_path)


@pytest.mark.parametrize("change, message", [
    (lambda rows: rows[0].update(score="high"), "must be a number"),
    (lambda rows: rows[0].update(converged="yes"), "true, false or null"),
    (lambda rows: rows[0].update(layer=-5), "must be >= -1"),
    (lambda rows: rows[0].update(span=-1), "span must be a whole number"),
    (lambda rows: rows[0].update(per_utterance=[[5, 4]]), "per_utterance"),
    (lambda rows: rows[0].update(extra={"nested": 1}), "plain value"),
    (lambda rows: rows[0].update(higher_is_better="True"), "true or false"),
])
def test_crafted_probe_results(tmp_path, change, message):
    _probe_rows(tmp_path)
    path = tmp_path / "probe_results.json"
    rows = json.loads(path.read_text())
    change(rows)
    path.write_text(json.dumps(rows))
    with pytest.raises(InputError, match=message):
        ProbeResults.load(tmp_path)


def test_probe_results_read_back(tmp_path):
    _probe_rows(tmp_path)
    back = ProbeResults.load(tmp_path)
    assert back.rows[0].score.per_utterance == [(3, 4), (1, 1)] and back.rows[0].layer == 2
    assert "per_utterance" not in (tmp_path / "probe_results.csv").read_text()  # JSON only


def test_crafted_sweeps(tmp_path):
    score = ProbeScore("phone", 0.7, 0.2, "accuracy", True, 10, 5)
    PruneSweep([PruneRow("random", 0, 0, 0, 0.0, score), PruneRow("random", 0, 1, 4, 0.5, score)]).save(tmp_path)
    path = tmp_path / "prune_results.json"
    rows = json.loads(path.read_text())
    path.write_text(json.dumps([dict(r, pruned_fraction=2.0) for r in rows]))
    with pytest.raises(InputError, match="0..1"):
        PruneSweep.load(tmp_path)
    path.write_text(json.dumps([dict(r, pruned=4) for r in rows]))
    with pytest.raises(InputError, match="no row without pruning"):
        PruneSweep.load(tmp_path)
    path.write_text("{}")
    with pytest.raises(InputError, match="list of result rows"):
        PruneSweep.load(tmp_path)
    (tmp_path / "span_results.json").write_text(json.dumps([{"span": "wide", **score.as_dict()}]))
    with pytest.raises(InputError, match='whole number >= 0 or "none"'):
        SpanSweep.load(tmp_path)


def test_crafted_segmentation_results(tmp_path):
    source = SourceResult("mfcc", 1.0, 1.0, "dev", 2, 2, {k: 1 for k in ("precision", "recall", "f1", "os", "r_value",
                                                                         "hits", "n_ref", "n_pred")},
                          {k: 1 for k in ("precision", "recall", "f1", "os", "r_value", "hits", "n_ref", "n_pred")},
                          per_utterance=[{"hits": 1, "n_ref": 1, "n_pred": 1}] * 2)
    SegmentResults([source], 0.02, best_head="mfcc", test_ids=["a", "b"]).save(tmp_path)
    _edit(tmp_path, "segment_results.json", lambda d: d.update(best_head="attn:L9.H9"))
    with pytest.raises(InputError, match="has no results for it"):
        SegmentResults.load(tmp_path)
    _edit(tmp_path, "segment_results.json", lambda d: d.update(best_head=None, test_utterances=["a"]))
    with pytest.raises(InputError, match="disagree in length"):
        SegmentResults.load(tmp_path)
    _edit(tmp_path, "segment_results.json", lambda d: d.update(test_utterances=["a", "b"], tolerance_s=5))
    with pytest.raises(InputError, match="tolerance_s"):
        SegmentResults.load(tmp_path)
    _edit(tmp_path, "segment_results.json", lambda d: (d.update(tolerance_s=0.02),
                                                       d["results"][0].update(strict_hits=1.5)))
    with pytest.raises(InputError, match="whole number"):
        SegmentResults.load(tmp_path)


def test_crafted_relations(tmp_path):
    def save(**change):
        arrays = {"labels": np.array(["L1.H1"]), "layers": np.array([1]), "heads": np.array([1]),
                  "phones": np.array(["a", "b"]), "p_prime": np.full((1, 2, 2), 0.25),
                  "p_uniform": np.full((2, 2), 0.25), "utterances": np.array(3), "verticality": np.array([0.1]),
                  **change}
        np.savez(tmp_path / "relations.npz", **arrays)

    save()
    assert Relations.load(tmp_path).utterances == 3
    for change, message in (({"p_prime": np.full((1, 3, 3), 0.1)}, "p_prime must be"),
                            ({"p_uniform": np.full((2, 2), 7.0)}, "probabilities"),
                            ({"utterances": np.array(0)}, "count >= 1"),
                            ({"labels": np.array([1])}, "lists of names"),
                            ({"verticality": np.array([np.nan])}, "finite")):
        save(**change)
        with pytest.raises(InputError, match=message):
            Relations.load(tmp_path)
    np.savez(tmp_path / "relations.npz", labels=np.array([object()], dtype=object))
    with pytest.raises(InputError, match="not a satool relations file"):
        Relations.load(tmp_path)


def test_crafted_health_and_verdicts(tmp_path):
    check = HealthCheck(5, 0.5, 0.6, {"zeros": 0.8, "median": 0.8, "nearest": 0.7, "interpolation": 0.6},
                        np.ones((1, 2)), np.zeros((1, 2), int), 10,
                        profiles={"clean": np.ones((1, 2, 21))})
    check.save(tmp_path)
    assert HealthCheck.load(tmp_path).profiles["clean"].shape == (1, 2, 21)
    _edit(tmp_path, "health.json", lambda d: d.update(favourite_offset=[[0.5, 1]]))
    with pytest.raises(InputError, match="whole numbers"):
        HealthCheck.load(tmp_path)
    _edit(tmp_path, "health.json", lambda d: (d.update(favourite_offset=[[0, 1]]),
                                              d.update(offset_profiles={"sideways": [[[1]]]})))
    with pytest.raises(InputError, match="not one of"):
        HealthCheck.load(tmp_path)
    _edit(tmp_path, "health.json", lambda d: d.update(offset_profiles={"clean": [[[1, 1]]]}))
    with pytest.raises(InputError, match="odd number of offsets"):
        HealthCheck.load(tmp_path)
    (tmp_path / "verdicts.json").write_text(json.dumps({"health": {}, "rules": {}, "verdicts": [
        {"claim": "c", "paper": "p", "this run": "t", "verdict": "maybe", "reason": "r", "rule": "x"}]}))
    with pytest.raises(InputError, match="verdict must be one of"):
        VerdictReport.load(tmp_path)


def test_training_curves_from_a_crafted_checkpoint_block():
    good = {"head_checks": [{"step": 2, "locality": [[1.0, 2.0]], "favourite_offset": [[0, 1]]}]}
    assert TrainingCurves.of_checkpoint(good).head_checks[0]["step"] == 2
    for block, message in (({"head_checks": "many"}, "must be a list"),
                           ({"head_checks": [{"step": "2"}]}, "whole-number step"),
                           ({"head_checks": [{"step": 2, "locality": [["a"]], "favourite_offset": [[0]]}]}, "tables"),
                           ({"head_checks": [{"step": 2, "locality": [[1.0]], "favourite_offset": [[0.5]]}]}, "whole"),
                           ({"head_checks": [good["head_checks"][0], {"step": 3, "locality": [[1.0]],
                                                                      "favourite_offset": [[0]]}]}, "equal-shaped")):
        with pytest.raises(InputError, match=message):
            TrainingCurves.of_checkpoint(block)


def test_comparison_and_the_report_command_on_crafted_results(tmp_path, satool_cli):
    (tmp_path / "comparison.json").write_text(json.dumps({"models": [1], "tables": {}}))
    with pytest.raises(InputError, match="must be a JSON object"):
        Comparison.load(tmp_path)
    run = tmp_path / "run"
    (run / "results" / "metric").mkdir(parents=True)
    (run / "results" / "metric" / "metrics.json").write_text('{"layers": [1], "heads": "x"}')
    result = satool_cli("report", run)
    assert result.returncode == 3
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "metrics.json" in lines[0] and "Traceback" not in result.stderr
    study = satool_cli("compare", run, run, "--out", tmp_path / "study")
    assert study.returncode in (2, 3) and "Traceback" not in study.stderr
