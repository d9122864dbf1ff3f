"""Grouped probe training (satool.analysis.probing.classifiers) against the probe training it
replaced (tests/reference_probe.py): bit for bit alone, bit for bit in a group."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from reference_probe import reference_train_and_score

from satool.analysis.probing.classifiers import ClassifierProblem, train_classifiers
from satool.analysis.probing.tasks import (
    BUILTIN_TASKS,
    ProbeSettings,
    ProbeSplit,
    ProbeUtterance,
    evaluate_grouped,
    train_and_score_classifier,
)

SETTINGS = ProbeSettings(steps=300, eval_every=20, patience=3, batch_size=64, hidden_units=32)


def _data(seed: int, n: int = 900, dim: int = 12, classes: int = 5):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = (rng.normal(size=(n, dim)) + 0.8 * np.eye(classes, dim)[y]).astype(np.float32)
    groups = np.repeat(np.arange(n // 30), 30)[:n]
    return x, y, groups


@pytest.mark.parametrize("kind", ["mlp", "linear"])
def test_one_probe_is_bit_for_bit_the_reference(kind):
    x, y, groups = _data(0)
    report_new, report_old = {}, {}
    new = train_and_score_classifier(x[:700], y[:700], x[700:], y[700:], 5, kind=kind, seed=3, settings=SETTINGS,
                                     report=report_new, groups=groups[:700])
    old = reference_train_and_score(x[:700], y[:700], x[700:], y[700:], 5, kind=kind, seed=3, settings=SETTINGS,
                                    report=report_old, groups=groups[:700])
    assert new[0] == old[0] and np.array_equal(new[1], old[1])
    assert report_new.pop("precision") == "float32"
    assert report_new == pytest.approx(report_old, nan_ok=True) and report_new.keys() == report_old.keys()
    assert report_new["steps_run"] == report_old["steps_run"]  # the stopping rule made the same decision


def test_a_group_trains_every_probe_as_if_alone():
    """Three probes with the same labels and rows but different inputs (three pruned models): each
    stops at its own step, and each result equals the reference trained alone."""
    _, y, groups = _data(0)
    inputs = [_data(seed)[0] for seed in (1, 2, 3)]
    inputs[2] = inputs[2] * 0 + np.random.default_rng(9).normal(size=inputs[2].shape).astype(np.float32)  # noise
    rows = np.arange(700)
    problems = [ClassifierProblem(x, rows, y[:700], x, np.arange(700, 900), y[700:], 5, "mlp", groups[:700])
                for x in inputs]
    finished = []
    results = train_classifiers(problems, seed=1, settings=SETTINGS, progress=finished.append)
    assert len(finished) == 3
    steps = set()
    for x, result in zip(inputs, results):
        report = {}
        accuracy, predictions = reference_train_and_score(x[:700], y[:700], x[700:], y[700:], 5, kind="mlp", seed=1,
                                                          settings=SETTINGS, report=report, groups=groups[:700])
        assert result.accuracy == accuracy and np.array_equal(result.predictions, predictions)
        assert result.report.pop("precision") == "float32"
        assert result.report == pytest.approx(report, nan_ok=True)
        steps.add(report["steps_run"])
    assert len(steps) > 1  # the probes stopped at different steps, so leaving the group was exercised


def test_bfloat16_products_learn_what_float32_learns():
    """Mixed precision (bfloat16 products, float32 weights and loss) is the same experiment up to
    training noise: on three separable problems each probe's accuracy is within 3 points of float32
    and well above chance (20 %), and the report says which arithmetic ran."""
    x, y, groups = _data(0)
    noise = np.random.default_rng(5).normal(size=x.shape).astype(np.float32)
    inputs = [x, 2 * x + 1, x + 0.3 * noise]
    problems = [ClassifierProblem(x, np.arange(700), y[:700], x, np.arange(700, 900), y[700:], 5, "mlp", groups[:700])
                for x in inputs]
    full = train_classifiers(problems, seed=1, settings=SETTINGS)
    low = train_classifiers(problems, seed=1, settings=replace(SETTINGS, precision="bfloat16"))
    for a, b in zip(full, low):
        assert b.report["precision"] == "bfloat16" and a.report["precision"] == "float32"
        assert abs(a.accuracy - b.accuracy) <= 0.03 and b.accuracy > 0.3
    assert any(a.report["train_loss"] != b.report["train_loss"] for a, b in zip(full, low))  # bfloat16 really ran


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="float32, bfloat16"):
        ProbeSettings(precision="float16")


def test_frame_rows_index_model_steps_without_copying_them():
    """A frame-level task reads frame f of an utterance from its step f // R; the scores equal those of
    the materialised up-sampled frames (the reference) and grouped evaluation changes nothing."""
    rng = np.random.default_rng(0)

    def split(n_utts, offset):
        utts = []
        for i in range(n_utts):
            steps = int(rng.integers(8, 15))
            labels = rng.integers(-1, 4, steps * 3)
            hidden = rng.normal(size=(steps, 6)).astype(np.float32)
            hidden[:, 0] += np.repeat(labels, 1)[::3]  # the label of each step's first frame is visible
            utts.append(ProbeUtterance(f"u{offset + i}", f"s{i % 4}", hidden, 3, labels))
        return ProbeSplit(utts, ["a", "b", "c", "d"])

    train, test = split(40, 0), split(12, 100)
    phone = next(t for t in BUILTIN_TASKS if t.name == "phone")
    x_frames, y, groups, _ = phone.gather(train, {})
    assert x_frames.shape == (len(y), 6)
    xt, yt, _, _ = phone.gather(test, {})
    report = {}
    accuracy, _ = reference_train_and_score(x_frames, y, xt, yt, int(max(y.max(), yt.max())) + 1, kind="mlp", seed=0,
                                            settings=SETTINGS, report=report, groups=groups)
    alone = phone.evaluate(train, test, settings=SETTINGS)
    assert alone.score == accuracy and alone.details["steps_run"] == report["steps_run"]
    other = ProbeSplit([ProbeUtterance(u.id, u.speaker, u.hidden * 2 + 1, 3, u.frame_labels) for u in train.utterances],
                       train.phone_set)
    grouped = evaluate_grouped([phone], [(train, test), (other, test)], seed=0, settings=SETTINGS)
    assert grouped[0][0].score == alone.score
    assert grouped[1][0].score == phone.evaluate(other, test, settings=SETTINGS).score
