"""The study's verdict rules on constructed models: a shift that grows with Cnum, one that does not,
one within the noise; category counts; segmentation; pruning across models; span pruning; and the
comparison tables read back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from satool.analysis import study_verdicts as sv
from satool.results.metrics import HeadScores
from satool.results.probe import ProbeScore
from satool.results.prune import PruneRow, PruneSweep, SpanRow, SpanSweep
from satool.results.run import RunResults
from satool.results.segment import SegmentResults, SourceResult
from satool.results.study import Comparison, Study
from satool.results.verdicts import DOES_NOT, INCONCLUSIVE, REPRODUCES

OFFSETS = 21  # -10..10 steps
B = 200  # bootstrap replicates


def _profile(favourite: list[int], peak: float = 9.0) -> np.ndarray:
    """[layer=1, head, offset]: each head peaks at its favourite offset (steps)."""
    profile = np.ones((1, len(favourite), OFFSETS))
    for h, offset in enumerate(favourite):
        profile[0, h, offset + 10] = peak
    return profile


def _scores(favourite: list[int], *, noisy: bool = False, seed: int = 0, categories=None) -> HeadScores:
    """A model whose local heads sit at ``favourite`` offsets; ``noisy``: in each replicate a local head's
    peak moves to a random offset in -3..3 (so where it looks is not measured reliably)."""
    rng = np.random.default_rng(seed)
    n = len(favourite)
    boot = np.repeat(_profile(favourite)[None], B, axis=0)
    if noisy:
        for b in range(B):
            boot[b] = _profile(list(rng.integers(-3, 4, n)))
    values = categories or {"globalness": np.linspace(0, 1, n)[None], "verticality": np.zeros((1, n)),
                            "diagonality": np.zeros((1, n))}
    return HeadScores([1], list(range(1, n + 1)), values, {k: np.ones((1, n), int) for k in values}, 50,
                      offset_profile=_profile(favourite), step_s=0.03, bootstrap_offset_profile=boot)


def _run(name: str, scores=None, **results) -> RunResults:
    return RunResults(Path(name), name, metrics=scores, **results)


def test_off_diagonal_rule():
    assert sv.off_diagonal("M3", _scores([1, -2, 1])).verdict == REPRODUCES
    on = sv.off_diagonal("M3", _scores([1, 0, 1]))
    assert on.verdict == DOES_NOT and "L1.H2" in on.reason
    assert sv.off_diagonal("M3", _scores([1, 1], noisy=True)).verdict == INCONCLUSIVE
    flat = _scores([1])
    flat.offset_profile = np.ones_like(flat.offset_profile)  # no local head at all
    assert sv.off_diagonal("M3", flat).verdict == INCONCLUSIVE


def test_a_shift_that_grows_one_that_does_not_and_one_within_noise():
    growing = Study([_run("M3", _scores([1, -1])), _run("M6", _scores([2, -2])), _run("M9", _scores([3, -3]))],
                    [3, 6, 9])
    verdict = sv.shift_grows(growing)
    assert verdict.verdict == REPRODUCES, verdict.this_run
    assert "M3 (Cnum 3): 30.0 ms" in verdict.this_run and "M9 (Cnum 9): 90.0 ms" in verdict.this_run
    flat = Study([_run("M3", _scores([1, -1])), _run("M6", _scores([1, 1])), _run("M9", _scores([-1, 1]))], [3, 6, 9])
    assert sv.shift_grows(flat).verdict == DOES_NOT  # no change beyond half a step
    shrinking = Study([_run("M3", _scores([3])), _run("M9", _scores([1]))], [3, 9])
    assert sv.shift_grows(shrinking).verdict == DOES_NOT
    noisy = Study([_run("M3", _scores([1, 1], noisy=True, seed=1)), _run("M9", _scores([2, 1], noisy=True, seed=2))],
                  [3, 9])
    assert sv.shift_grows(noisy).verdict == INCONCLUSIVE
    assert sv.shift_grows(Study([_run("M3", _scores([1]))], [3])).verdict == INCONCLUSIVE  # one model


class _Categorised:
    """Metric results reduced to what the category rules read: the categories and those of every
    bootstrap replicate (``noise``: the share of heads relabelled at random in each replicate)."""

    def __init__(self, global_count: int, diagonal_count: int, n: int = 12, noise: float = 0.0, seed: int = 0):
        labels = ["global"] * global_count + ["diagonal"] * diagonal_count
        self.fixed = np.array([labels + ["vertical"] * (n - len(labels))], dtype=object)
        rng = np.random.default_rng(seed)
        self.replicates = []
        for _ in range(B):
            copy = self.fixed.copy()
            moved = rng.random(n) < noise
            copy[0, moved] = rng.choice(["global", "vertical", "diagonal"], int(moved.sum()))
            self.replicates.append(copy)

    def categories(self):
        return self.fixed

    def replicate_categories(self):
        return self.replicates


def test_category_counts_across_models():
    study = Study([_run("M3", _Categorised(2, 6)), _run("M6", _Categorised(4, 4)), _run("M9", _Categorised(6, 2))],
                  [3, 6, 9])
    assert sv.more_global(study).verdict == REPRODUCES
    assert sv.most_diagonal(study).verdict == REPRODUCES
    reverse = Study([_run("M3", _Categorised(6, 2)), _run("M9", _Categorised(2, 6))], [3, 9])
    assert sv.more_global(reverse).verdict == DOES_NOT and sv.most_diagonal(reverse).verdict == DOES_NOT
    noisy = Study([_run("M3", _Categorised(4, 4, noise=0.5, seed=1)), _run("M9", _Categorised(5, 4, noise=0.5,
                                                                                              seed=2))], [3, 9])
    assert sv.more_global(noisy).verdict == INCONCLUSIVE


def test_categories_of_replicates_follow_the_ranks():
    """Categories are recomputed from every replicate's G, V, D values (what the rules above read)."""
    values = {"globalness": np.array([[3.0, 0, 0]]), "verticality": np.array([[0, 3.0, 0]]),
              "diagonality": np.array([[0, 0, 3.0]])}
    scores = _scores([1, 1, 1], categories=values)
    scores.bootstrap = {k: np.stack([v, v[:, ::-1]]) for k, v in values.items()}  # replicate 2: heads reversed
    first, second = scores.replicate_categories()
    assert list(first[0]) == ["global", "vertical", "diagonal"]
    assert list(second[0]) == ["diagonal", "vertical", "global"]


def test_even_layers_rule():
    from satool.analysis.comparison import layer_dependence

    clustered = np.array([["global"] * 6, ["diagonal"] * 6, ["vertical"] * 6], dtype=object)
    assert layer_dependence(clustered)[1] < 0.01
    mixed = np.array([["global", "diagonal", "vertical"] * 2] * 3, dtype=object)
    assert layer_dependence(mixed)[1] > 0.5


def _segment(hits: int, n_utts: int = 40) -> SegmentResults:
    per = [{"hits": hits, "n_ref": 10, "n_pred": 10}] * n_utts
    from satool.analysis.segmentation import r_value_from_counts

    r = float(r_value_from_counts(hits * n_utts, 10 * n_utts, 10 * n_utts))
    head = SourceResult("attn:L1.H1", 1.0, 1.0, "dev", 10, n_utts, {"r_value": r}, {}, per_utterance=per)
    return SegmentResults([head], 0.02, best_head="attn:L1.H1", test_ids=[f"u{i}" for i in range(n_utts)])


def test_segmentation_across_spans():
    assert sv.segment_span(Study([_run("M3", segment=_segment(9)), _run("M9", segment=_segment(6))], [3, 9])
                           ).verdict == REPRODUCES
    assert sv.segment_span(Study([_run("M3", segment=_segment(6)), _run("M9", segment=_segment(9))], [3, 9])
                           ).verdict == DOES_NOT
    other = _segment(6)
    other.test_ids = [f"v{i}" for i in range(40)]  # scored on other utterances: not comparable
    assert sv.segment_span(Study([_run("M3", segment=_segment(9)), _run("M9", segment=other)], [3, 9])
                           ).verdict == INCONCLUSIVE


def _sweep(global_drop: float, weight_drop: float = 0.05, randoms=(0.02, 0.03, 0.04), total: int = 48) -> PruneSweep:
    rows = []
    orders = [("globalness", None), ("weight", None)] + [("random", s) for s in range(len(randoms))]
    for by, seed in orders:
        for pruned in (0, 8, 24, 32, total):
            if pruned == 0:
                drop = 0.0
            elif by == "random":
                drop = randoms[seed]
            else:
                drop = global_drop if by == "globalness" else weight_drop
            rows.append(PruneRow(by, seed, 0, pruned, pruned / total,
                                 ProbeScore("phone", 0.7 - drop, 0.2, "accuracy", True, 100, 100)))
    return PruneSweep(rows)


def test_pruning_rules_across_models():
    from satool.analysis.verdicts import PruneCurves

    assert sv.globalness_vs_weight("M3", PruneCurves(_sweep(0.0, 0.2))).verdict == REPRODUCES
    assert sv.globalness_vs_weight("M3", PruneCurves(_sweep(0.2, 0.0))).verdict == DOES_NOT
    assert sv.half_prunable("M3", PruneCurves(_sweep(0.01))).verdict == REPRODUCES  # within the 0.02 spread
    assert sv.half_prunable("M3", PruneCurves(_sweep(0.1))).verdict == DOES_NOT
    falls = Study([_run("M3", prune=_sweep(0.15)), _run("M9", prune=_sweep(0.0))], [3, 9])
    assert sv.global_importance_span(falls).verdict == REPRODUCES
    grows = Study([_run("M3", prune=_sweep(0.0)), _run("M9", prune=_sweep(0.15))], [3, 9])
    assert sv.global_importance_span(grows).verdict == DOES_NOT
    same = Study([_run("M3", prune=_sweep(0.05)), _run("M9", prune=_sweep(0.055))], [3, 9])
    assert sv.global_importance_span(same).verdict == INCONCLUSIVE


def _spans(gain: float) -> SpanSweep:
    def score(accuracy: float) -> ProbeScore:
        right = int(round(accuracy * 100))
        return ProbeScore("phone", accuracy, 0.2, "accuracy", True, 1000, 4000, per_utterance=[(right, 100)] * 40)

    return SpanSweep([SpanRow(None, score(0.70)), SpanRow(2, score(0.70 + gain)), SpanRow(8, score(0.70 + gain))])


def test_span_rules():
    keeps, improves, speed = sv.span_findings("M3", _spans(0.05))
    assert keeps.verdict == REPRODUCES and improves.verdict == REPRODUCES
    assert speed.verdict == INCONCLUSIVE and "after the softmax" in speed.reason
    keeps, improves, _ = sv.span_findings("M3", _spans(-0.2))
    assert keeps.verdict == DOES_NOT and improves.verdict == DOES_NOT


def test_comparison_tables_read_back(tmp_path):
    from satool.errors import InputError

    comparison = Comparison([{"name": "M3", "mask_span": 3, "directory": "x", "healthy": True}],
                            {"heads": [{"model": "M3", "label": "L1.H1", "locality": 9.0, "favourite_offset_ms": 30.0}],
                             "spans": []})
    paths = comparison.save(tmp_path)
    assert paths["heads"].read_text().splitlines()[0] == "model,label,locality,favourite_offset_ms"
    back = Comparison.load(tmp_path)
    assert back.models == comparison.models and back.table("heads") == comparison.table("heads")
    (tmp_path / "comparison.json").write_text('{"models": [], "tables": {"heads": [{"x": [1]}]}}')
    with pytest.raises(InputError, match="must be a plain value"):
        Comparison.load(tmp_path)
    (tmp_path / "comparison.json").write_text('{"models": [], "tables": {"nope": []}}')
    with pytest.raises(InputError, match="tables.nope"):
        Comparison.load(tmp_path)


def _levels_sweep(order: str, drops: dict[int, float], randoms=(0.02, 0.03, 0.04), total: int = 48) -> PruneSweep:
    """``drops[level]`` for ``order`` at 8, 16, 24 (and 48) heads; random orders lose 0.02-0.04."""
    rows = []
    for by, seed in [(order, None)] + [("random", s) for s in range(len(randoms))]:
        for pruned in (0, 8, 16, 24, total):
            drop = 0.0 if pruned == 0 else (randoms[seed] if by == "random" else drops.get(pruned, 0.3))
            rows.append(PruneRow(by, seed, 0, pruned, pruned / total,
                                 ProbeScore("phone", 0.7 - drop, 0.2, "accuracy", True, 100, 100)))
    return PruneSweep(rows)


def test_harm_phones_and_diagonal_dip_rules():
    from satool.analysis.verdicts import PruneCurves

    assert sv.harm_phones("M3", PruneCurves(_levels_sweep("globalness", {8: -0.08, 16: 0.0, 24: 0.0}))
                          ).verdict == REPRODUCES  # accuracy rises by 8 points, the spread is 2
    assert sv.harm_phones("M3", PruneCurves(_levels_sweep("verticality", {8: 0.1, 16: 0.1, 24: 0.1}))
                          ).verdict == DOES_NOT
    assert sv.harm_phones("M3", PruneCurves(_levels_sweep("globalness", {8: 0.01, 16: -0.01, 24: 0.0}))
                          ).verdict == INCONCLUSIVE
    dip = PruneCurves(_levels_sweep("diagonality", {8: 0.15, 16: 0.05, 24: 0.05}))
    assert sv.diagonal_dip("M3", dip).verdict == REPRODUCES
    falling = PruneCurves(_levels_sweep("diagonality", {8: 0.15, 16: 0.2, 24: 0.3}))
    assert sv.diagonal_dip("M3", falling).verdict == DOES_NOT
    assert sv.diagonal_dip("M3", PruneCurves(_levels_sweep("diagonality", {8: 0.01}))).verdict == DOES_NOT


def test_neglect_diagonal_rule():
    from satool.results.relations import Relations

    n = 48
    diagonal = np.arange(n) % 2 == 0  # every other head is diagonal; verticality grows with the head number

    class Scores:  # what the rule reads: head numbers, verticality and categories
        layers, heads = [1], list(range(1, n + 1))
        values = {"verticality": np.linspace(0, 1, n)[None]}

        def categories(self):
            return np.where(diagonal, "diagonal", "vertical")[None].astype(object)

    low_diagonal = [h for h in range(n // 2) if diagonal[h]][:8]
    low_other = [h for h in range(n // 2) if not diagonal[h]][:8]
    for neglected, expected in ((low_diagonal, REPRODUCES), (low_other, DOES_NOT),
                                (low_diagonal[:4] + low_other[:4], INCONCLUSIVE)):
        p_prime = np.full((n, 2, 2), 0.25)
        p_prime[neglected, :, 1] = 0.01  # these heads avoid phone 1
        relations = Relations([f"L1.H{h + 1}" for h in range(n)], np.ones(n, int), np.arange(1, n + 1), ["a", "b"],
                              p_prime, np.full((2, 2), 0.25), 10)
        verdict = sv.neglect_diagonal("M3", Scores(), relations)
        assert verdict.verdict == expected, verdict.this_run


def test_disagreement_neglect_rule_uses_the_first_sixth_of_the_heads():
    from satool.results.relations import Relations

    n = 48  # the first 1/6: 8 heads; weight prunes lowest first, globalness highest first
    weight = np.arange(n, dtype=float)[None]  # heads 1..8 first by weight
    globalness = np.zeros((1, n))
    globalness[0, 4:12] = 1.0  # globalness prunes heads 5..12 first: heads 1..4 are pruned by weight only
    scores = HeadScores([1], list(range(1, n + 1)), {"weight": weight, "globalness": globalness},
                        {k: np.ones((1, n), int) for k in ("weight", "globalness")}, 50,
                        prune_first={"weight": "lowest", "globalness": "highest"})
    assert scores.pruning_order("weight")[:8] == [(1, h) for h in range(1, 9)]
    for neglected, expected in (([0, 1, 2, 3], REPRODUCES), ([20, 21, 22, 23, 24, 25, 26, 27], DOES_NOT),
                                ([0, *range(20, 31)], INCONCLUSIVE)):  # a quarter of each group
        p_prime = np.full((n, 2, 2), 0.25)
        p_prime[neglected, :, 1] = 0.01  # these heads avoid phone 1
        if expected == DOES_NOT:
            p_prime[:, :, 1] = 0.01  # every head neglects phone 1 but the four that differ
            p_prime[[0, 1, 2, 3], :, 1] = 0.25
        relations = Relations([f"L1.H{h + 1}" for h in range(n)], np.ones(n, int), np.arange(1, n + 1), ["a", "b"],
                              p_prime, np.full((2, 2), 0.25), 10)
        verdict = sv.disagreement_neglect("M3", scores, relations)
        assert verdict.verdict == expected, verdict.this_run
        assert verdict.this_run.startswith("4 of the first 8 by weight")
