"""The verdict rules on constructed results: a clear effect, a noisy non-effect, a contrary effect,
and a model that fails its health checks."""

from __future__ import annotations

import numpy as np
import pytest

from satool.analysis import verdicts as v
from satool.results.health import HealthCheck
from satool.results.probe import ProbeResults, ProbeRow, ProbeScore
from satool.results.prune import PruneRow, PruneSweep
from satool.results.segment import SourceResult

TASKS = ("phone", "speaker", "speaker-utt")


def _rows(drops: dict[str, float], *, random_drops=(0.02, 0.03, 0.04, 0.025, 0.035), total=48, base=0.6,
          half_drops: dict[str, float] | None = None):
    """Sweep rows at 0, 8 (1/6), 24 (1/2) and 48 heads. ``drops[order]``: accuracy lost at 8 heads on
    every task; ``half_drops`` the same at 24 heads (default: the 8-head drops)."""
    half_drops = half_drops or drops
    rows = []
    orders = [(name, None) for name in drops] + [("random", s) for s in range(len(random_drops))]
    for by, seed in orders:
        for pruned in (0, 8, 24, total):
            for task in TASKS:
                if pruned == 0:
                    score = base
                elif pruned == total:
                    score = base - 0.3
                elif by == "random":
                    score = base - random_drops[seed] * (1 if pruned == 8 else 1.5)
                else:
                    score = base - (drops if pruned == 8 else half_drops)[by]
                rows.append(PruneRow(by, seed, (0, 8, 24, total).index(pruned), pruned, pruned / total,
                                     ProbeScore(task, score, 0.1, "accuracy", True, 100, 100)))
    return PruneSweep(rows)


def _find(verdicts, word):
    return next(x for x in verdicts if word in x.claim)


def test_clear_effect_reproduces_and_other_rules_follow():
    rows = _rows({"diagonality": 0.20, "verticality": 0.08, "globalness": 0.0, "weight": 0.05},
                 half_drops={"diagonality": 0.25, "verticality": 0.1, "globalness": 0.005, "weight": 0.06})
    curves = v.PruneCurves(rows)
    assert curves.nearest_level(v.PAPER_SHARE) == 8 and curves.nearest_level(0.5) == 24
    c = curves.compare("diagonality", "phone", 8)
    assert c["random_mean"] == pytest.approx(0.03) and c["random_spread"] == pytest.approx(0.02)
    assert c["effect"] == pytest.approx(0.17) and c["versus_random"] == "more"
    heads = [(1, h) for h in range(1, 13)]
    local = {h: 8.0 for h in heads[:6]}
    out = v.pruning_verdicts(curves, local, heads)
    assert _find(out, "diagonal heads").verdict == v.REPRODUCES
    assert "6 of the 8 pruned heads are local" in _find(out, "diagonal heads").this_run
    assert _find(out, "vertical heads").verdict == v.REPRODUCES  # 0.08 > 0.03 + 0.02
    assert _find(out, "global heads").verdict == v.REPRODUCES  # 0.005 lost, random 0.045 +- 0.03
    assert _find(out, "utterance-level").verdict == v.REPRODUCES


def test_diagonal_heads_that_are_not_local_are_not_claimed():
    rows = _rows({"diagonality": 0.20, "verticality": 0.08, "globalness": 0.0, "weight": 0.05})
    heads = [(1, h) for h in range(1, 13)]
    out = v.pruning_verdicts(v.PruneCurves(rows), {h: 2.1 for h in heads}, heads)
    verdict = _find(out, "diagonal heads")
    assert verdict.verdict == v.INCONCLUSIVE and "not local" in verdict.reason


def test_noisy_non_effect_is_inconclusive():
    # every order loses about what random orders lose, and the random orders disagree by 10 points
    rows = _rows({"diagonality": 0.05, "verticality": 0.06, "globalness": 0.04, "weight": 0.05},
                 random_drops=(0.0, 0.1, 0.05, 0.02, 0.08))
    out = v.pruning_verdicts(v.PruneCurves(rows))
    assert {x.verdict for x in out} == {v.INCONCLUSIVE}


def test_contrary_effects_do_not_reproduce():
    # pruning the most diagonal heads *gains* accuracy (negative drop) while weight hurts most
    rows = _rows({"diagonality": -0.05, "verticality": -0.04, "globalness": 0.2, "weight": 0.25})
    out = v.pruning_verdicts(v.PruneCurves(rows))
    assert _find(out, "diagonal heads").verdict == v.DOES_NOT
    assert _find(out, "vertical heads").verdict == v.DOES_NOT
    assert _find(out, "global heads").verdict == v.DOES_NOT  # hurts more than random


def test_too_few_random_orders_are_inconclusive():
    rows = _rows({"diagonality": 0.3, "verticality": 0.2, "globalness": 0.0, "weight": 0.1}, random_drops=(0.02, 0.03))
    out = v.pruning_verdicts(v.PruneCurves(rows))
    assert {x.verdict for x in out} == {v.INCONCLUSIVE}
    assert all("at least 3 random" in x.reason for x in out)


def test_lower_is_better_scores_flip_the_drop():
    rows = PruneSweep([PruneRow(by, s, 0, p, p / 48, ProbeScore("reconstruction", score, 1.0, "L1", False, 0, 1))
                       for by, s, p, score in (("weight", None, 0, 0.6), ("weight", None, 8, 0.7),
                                               ("random", 0, 0, 0.6), ("random", 0, 8, 0.62), ("random", 1, 8, 0.61),
                                               ("random", 2, 8, 0.63), ("random", 0, 48, 0.9))])
    c = v.PruneCurves(rows).compare("weight", "reconstruction", 8)
    assert c["drop"] == pytest.approx(0.1) and c["versus_random"] == "more"


def _health(l1=0.60, off=0.75):
    baselines = {"zeros": 0.8, "median": 0.78, "nearest": 0.70, "interpolation": 0.64}
    return HealthCheck(0, l1, off, baselines, np.ones((2, 2)), np.zeros((2, 2), int), 120)


def _probes(phone=0.62):
    def row(task, representation, score, chance, higher=True):
        return ProbeRow(representation, ProbeScore(task, score, chance, "accuracy" if higher else "L1", higher, 1, 1))

    return ProbeResults([row("phone", "model", phone, 0.2), row("speaker", "model", 0.3, 0.05),
                         row("phone", "MFCC", 0.1, 0.2), row("reconstruction", "model", 0.5, 0.8, False)])


HEALTHY, PROBES = _health(), _probes()


def test_health_checks_and_the_gate():
    curves = v.PruneCurves(_rows({"diagonality": 0.2, "verticality": 0.08, "globalness": 0.0, "weight": 0.05}))
    healthy = v.health(HEALTHY, PROBES, curves)
    assert healthy.passed and healthy.failure() == ""
    assert [c.name for c in healthy.checks] == ["learned", "uses attention", "attention matters for phones",
                                                "probes beat chance"]
    # the model of the failed demo: worse than copying a neighbour, attention does nothing
    broken = _health(0.777, 0.786)
    sick = v.health(broken, PROBES, curves)
    assert not sick.passed and sick.failure() == "failed: learned, uses attention"
    found = v.pruning_verdicts(curves)
    gated = v.gate(found, sick)
    assert {x.verdict for x in gated} == {v.INCONCLUSIVE}
    assert all("health checks did not pass (failed: learned, uses attention)" in x.reason for x in gated)
    assert [x.verdict for x in v.gate(found, healthy)] == [x.verdict for x in found]
    # nothing measured: the gate stays closed
    unknown = v.health(None, None, None)
    assert not unknown.passed and "not measured" in unknown.failure()
    # a probe at chance fails check 4 (the input-feature rows are not part of it)
    weak = v.health(HEALTHY, _probes(phone=0.22), curves)
    assert weak.failure() == "failed: probes beat chance"


def test_segment_bootstrap_by_hand_and_verdicts():
    from satool.analysis.segmentation import evaluate_boundaries, r_value_from_counts

    # r_value_from_counts agrees with the evaluation code
    ref, pred = [np.array([0.1, 0.3, 0.5])], [np.array([0.11, 0.42])]
    m = evaluate_boundaries(ref, pred, 0.02, "strict")
    assert r_value_from_counts(m["hits"], m["n_ref"], m["n_pred"]) == pytest.approx(m["r_value"])
    good = [{"hits": 9, "n_ref": 10, "n_pred": 10}] * 40
    poor = [{"hits": 5, "n_ref": 10, "n_pred": 10}] * 40
    diff, low, high = v.bootstrap_difference(good, poor)
    assert diff > 0 and low == pytest.approx(diff) and high == pytest.approx(diff)  # no spread: identical utts
    def row(per, name="attn:L1.H1"):
        r = float(r_value_from_counts(*np.sum([[u["hits"], u["n_ref"], u["n_pred"]] for u in per], axis=0)))
        return SourceResult(name, 1.0, 1.0, "dev", 1, len(per), {"r_value": r}, {}, per_utterance=per)

    assert v.segment_verdict("c", "p", row(good), row(poor, "mfcc")).verdict == v.REPRODUCES
    assert v.segment_verdict("c", "p", row(poor), row(good, "mfcc")).verdict == v.DOES_NOT
    rng = np.random.default_rng(0)
    noisy_a = [{"hits": int(h), "n_ref": 10, "n_pred": 10} for h in rng.integers(3, 10, 40)]
    noisy_b = [{"hits": int(h), "n_ref": 10, "n_pred": 10} for h in rng.integers(3, 10, 40)]
    assert v.segment_verdict("c", "p", row(noisy_a), row(noisy_b)).verdict == v.INCONCLUSIVE


def test_vertical_phones_rule():
    rng = np.random.default_rng(1)
    vert = rng.normal(size=48)
    assert v.vertical_phones_verdict(vert, vert + rng.normal(0, 0.3, 48)).verdict == v.REPRODUCES
    assert v.vertical_phones_verdict(vert, -vert).verdict == v.DOES_NOT
    assert v.vertical_phones_verdict(vert, rng.normal(size=48)).verdict == v.INCONCLUSIVE
    assert v.vertical_phones_verdict(vert[:3], vert[:3]).verdict == v.INCONCLUSIVE


def test_pruning_table_lists_each_level_once():
    # 1/6 and 1/3 of 48 heads both round to the 8-head level of this sweep (16 is as far from 8 as from 24)
    table = v.PruneCurves(_rows({"diagonality": 0.2, "globalness": 0.0})).table()
    keys = [(r["share"], r["task"], r["by"]) for r in table]
    assert len(keys) == len(set(keys))
    assert [s for s in dict.fromkeys(r["share"] for r in table)] == ["8/48", "24/48"]
