"""Verdicts on the paper's findings, each by a stated rule, and the model-health gate before them.

A run may only say that it *reproduces* a finding of Yang, Liu & Lee (2020)
when the numbers support it beyond their noise; otherwise it says *does not
reproduce* (the numbers clearly go the other way) or *inconclusive* (the
effect is within the noise, or the test cannot be made), always with the
reason. Every rule is written out in :data:`RULES`, which the report prints.

Noise in pruning curves: the spread of several random pruning orders. For a
task and a number k of pruned heads, ``drop(order) = score(0 heads) -
score(k heads in that order)`` (sign flipped for lower-is-better scores), the
random orders give a mean drop and a *spread* (largest minus smallest drop);
an order's *effect* is its drop minus the random mean. An effect counts only
when it is larger than the spread: the order then lies outside every random
order. At least :data:`MIN_RANDOM_ORDERS` random orders are needed.

Before any finding is judged, the model must pass the health checks
(:func:`health`): a model that learned nothing has heads whose categories are
rank artefacts, and pruning it says nothing about the paper's models. When a
check fails, every verdict is *inconclusive* and names the failed check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from satool.results.health import HealthCheck
from satool.results.metrics import LOCAL_RATIO
from satool.results.probe import ProbeResults
from satool.results.prune import RANDOM, PruneSweep
from satool.results.segment import SegmentResults, SourceResult
from satool.results.verdicts import (
    DOES_NOT,
    INCONCLUSIVE,
    REPRODUCES,
    Health,
    HealthCheckRow,
    Verdict,
    VerdictReport,
)

MIN_RANDOM_ORDERS = 3
PAPER_SHARE = 1 / 6  # the paper prunes 24 of 144 heads
ATTENTION_OFF_MARGIN = 0.05  # attention off must raise the held-out L1 by >= 5 %
PROBE_MARGIN = 0.05  # a classification probe must beat chance by >= 5 points
LOCAL_SHARE = 0.5  # "the most diagonal heads" must be local (>= 5x uniform) for at least half of them

RULES = {
    "health": (
        "The model is healthy when (1) its held-out masked L1 is below all four baselines (zeros, "
        "median frame, nearest unmasked frame, linear interpolation), (2) turning attention off (every "
        f"head attends only to its own step) raises that L1 by at least {100 * ATTENTION_OFF_MARGIN:.0f} %, "
        "(3) pruning every head lowers phone accuracy by more than the spread of the random pruning "
        f"orders, and (4) every classification probe beats chance by at least {100 * PROBE_MARGIN:.0f} "
        "points. If any check fails or was not measured, every finding is inconclusive."
    ),
    "pruning": (
        "For a task and k pruned heads, an order's drop is the score lost against no pruning; the "
        f"random orders (at least {MIN_RANDOM_ORDERS}) give a mean drop and a spread (largest minus "
        "smallest). An order hurts more than random when its drop exceeds the random mean by more than "
        "the spread, less than random when it falls short of it by more than the spread; otherwise it is "
        "like random. Findings are judged at the paper's share of heads (1/6: 24 of 144) or at half of "
        "them, as stated per finding; other shares are shown beside."
    ),
    "diagonal": (
        "Reproduces when, on every task, pruning the most diagonal heads hurts more than random and more "
        "than any other metric's order, and at least half of the pruned heads are local (their favourite "
        "offset carries >= 5x the uniform weight). Does not reproduce when on some task it hurts less "
        "than random, or another metric's order hurts more by more than the spread."
    ),
    "vertical": (
        "Reproduces when pruning the most vertical heads hurts frame-level speaker accuracy more than "
        "random; does not reproduce when it hurts less than random."
    ),
    "global": (
        "Judged at half of the heads. Reproduces when pruning by globalness hurts the task less than "
        "random and loses no more than the spread; does not reproduce when it hurts more than random, "
        "or loses more than the spread without being better than random."
    ),
    "segment": (
        "The R-value difference (strict, 20 ms) against MFCC on the test split, with a 95 % interval from "
        "1000 paired bootstrap resamples of test utterances: reproduces when the interval lies above 0, "
        "does not reproduce when it lies below 0, otherwise inconclusive. The head and the hidden layer "
        "are chosen on the tuning split, never on the test split."
    ),
    "vertical_phones": (
        "Spearman correlation over heads between verticality and the strongest phone concentration, with "
        "a one-sided permutation test (2000 permutations): reproduces when rho > 0 with p < 0.05, does "
        "not reproduce when rho < 0 with p < 0.05 for a negative relation, otherwise inconclusive."
    ),
}


# ---------------------------------------------------------------------------
# pruning curves


class PruneCurves:
    """Drops of a pruning sweep against no pruning, and each order against the random orders."""

    def __init__(self, sweep: PruneSweep):
        self.sweep = sweep
        self.total = sweep.total
        self.levels = sweep.levels
        self.tasks = sweep.tasks
        self.orders = sweep.orders

    def scores(self, by: str, task: str, pruned: int) -> list[float]:
        return self.sweep.scores(by, task, pruned)

    def _sign(self, task: str) -> float:
        return 1.0 if self.sweep.first(task).higher_is_better else -1.0

    def baseline(self, task: str) -> float:
        values = [r.score.score for r in self.sweep.rows if r.task == task and r.pruned == 0]
        return float(np.mean(values))

    def drops(self, by: str, task: str, pruned: int) -> list[float]:
        """Score lost against no pruning, one value per order of ``by`` (positive = worse)."""
        base = self.baseline(task)
        return [self._sign(task) * (base - s) for s in self.scores(by, task, pruned)]

    def nearest_level(self, share: float) -> int:
        """The pruned-head count closest to ``share`` of all heads (never 0)."""
        nonzero = [level for level in self.levels if level > 0] or [0]
        return min(nonzero, key=lambda level: (abs(level - share * self.total), level))

    def compare(self, by: str, task: str, pruned: int) -> dict[str, Any] | None:
        """``by`` against the random orders at ``pruned`` heads (None without enough random orders)."""
        random = self.drops(RANDOM, task, pruned)
        mine = self.drops(by, task, pruned)
        if len(random) < MIN_RANDOM_ORDERS or not mine:
            return None
        mean, spread = float(np.mean(random)), float(np.max(random) - np.min(random))
        drop = float(np.mean(mine))
        effect = drop - mean
        label = ("more" if effect > spread else "less" if effect < -spread else "like")
        return {"by": by, "task": task, "pruned": pruned, "drop": drop, "random_mean": mean,
                "random_spread": spread, "effect": effect, "versus_random": label, "randoms": len(random)}

    def random_spread(self, task: str) -> float:
        """The largest spread of the random orders over every level (the noise of the whole sweep)."""
        spreads = [np.ptp(self.drops(RANDOM, task, level)) for level in self.levels
                   if len(self.drops(RANDOM, task, level)) >= 2]
        return float(max(spreads)) if spreads else float("nan")

    def table(self, shares: Sequence[float] = (PAPER_SHARE, 1 / 3, 1 / 2)) -> list[dict[str, Any]]:
        """Every metric order against random at each share of heads (rows for the report)."""
        rows = []
        for level in dict.fromkeys(self.nearest_level(share) for share in shares):  # once each, in order
            for task in self.tasks:
                for by in self.orders:
                    if by == RANDOM:
                        continue
                    c = self.compare(by, task, level)
                    if c is not None:
                        rows.append({"share": f"{level}/{self.total}", **c})
        return rows


def _points(x: float, task_scale: str) -> str:
    return f"{100 * x:+.1f} pts" if task_scale == "accuracy" else f"{x:+.3f}"


def _describe(c: dict[str, Any], scale: str) -> str:
    return (f"{c['task']}: {c['by']} {_points(-c['drop'], scale)} vs random "
            f"{_points(-c['random_mean'], scale)} (spread {_points(c['random_spread'], scale).lstrip('+')})")


def _scale(curves: PruneCurves, task: str) -> str:
    return curves.sweep.first(task).score_name


def pruning_verdicts(curves: PruneCurves, locality: dict[tuple[int, int], float] | None = None,
                     diagonal_order: Sequence[tuple[int, int]] | None = None) -> list[Verdict]:
    """The paper's four pruning findings on this run's curves (rules in :data:`RULES`).

    ``locality`` maps (layer, head) to its locality (favourite offset / uniform) and
    ``diagonal_order`` is the diagonality pruning order; together they say how many of the pruned
    "most diagonal" heads are local.
    """
    out: list[Verdict] = []
    if not curves.sweep.rows:
        return out
    randoms = len({r.order_seed for r in curves.sweep.rows if r.by == RANDOM})
    few = randoms < MIN_RANDOM_ORDERS
    k = curves.nearest_level(PAPER_SHARE)
    half = curves.nearest_level(0.5)
    classification = [t for t in curves.tasks if _scale(curves, t) == "accuracy"]
    metric_orders = [o for o in curves.orders if o != RANDOM]

    def too_few(claim: str, paper: str, rule: str) -> Verdict:
        return Verdict(claim, paper, f"{randoms} random order(s)", INCONCLUSIVE,
                       f"needs at least {MIN_RANDOM_ORDERS} random pruning orders to measure the noise", rule)

    # 1. diagonal heads matter most
    if "diagonality" in curves.orders:
        claim = (f"diagonal heads matter most: pruning the most diagonal heads ({k} of {curves.total} here; "
                 "paper: 24 of 144) drops all tasks sharply")
        if few:
            out.append(too_few(claim, "yes", "diagonal"))
        else:
            per_task, against, text = [], [], []
            for task in classification:
                c = curves.compare("diagonality", task, k)
                others = [curves.compare(o, task, k) for o in metric_orders if o != "diagonality"]
                worst_other = max((o for o in others if o), key=lambda o: o["drop"], default=None)
                text.append(_describe(c, "accuracy"))
                if c["versus_random"] == "less":
                    against.append(f"{task}: hurts less than random")
                elif worst_other and worst_other["drop"] - c["drop"] > c["random_spread"]:
                    against.append(f"{task}: pruning by {worst_other['by']} hurts more")
                per_task.append(c["versus_random"] == "more" and
                                (worst_other is None or c["drop"] >= worst_other["drop"]))
            local_note = ""
            local_ok = True
            if locality is not None and diagonal_order is not None:
                pruned = list(diagonal_order)[:k]
                n_local = sum(locality.get(h, 0.0) >= LOCAL_RATIO for h in pruned)
                local_ok = n_local >= LOCAL_SHARE * len(pruned)
                local_note = f"; {n_local} of the {len(pruned)} pruned heads are local (>= {LOCAL_RATIO:g}x uniform)"
            if against:
                verdict, reason = DOES_NOT, "; ".join(against)
            elif all(per_task) and local_ok:
                verdict, reason = REPRODUCES, "hurts more than random and more than every other order on every task"
            elif all(per_task):
                verdict, reason = INCONCLUSIVE, "the pruned heads are mostly not local, so they are not diagonal heads"
            else:
                verdict, reason = INCONCLUSIVE, "the effect is within the spread of random orders on some task"
            out.append(Verdict(claim, "yes", "; ".join(text) + local_note, verdict, reason, "diagonal"))

    # 2. vertical heads matter for frame-level speaker identity
    if "verticality" in curves.orders and "speaker" in curves.tasks:
        claim = "vertical heads matter for frame-level speaker identity"
        if few:
            out.append(too_few(claim, "yes", "vertical"))
        else:
            c = curves.compare("verticality", "speaker", k)
            verdict = {"more": REPRODUCES, "less": DOES_NOT, "like": INCONCLUSIVE}[c["versus_random"]]
            reason = {"more": "hurts speaker accuracy more than random",
                      "less": "hurts speaker accuracy less than random",
                      "like": "within the spread of random orders"}[c["versus_random"]]
            out.append(Verdict(claim, "yes", f"{k} of {curves.total} heads: " + _describe(c, "accuracy"),
                               verdict, reason, "vertical"))

    # 3 and 4. global heads matter least (phone), utterance-level speaker mostly kept
    for task, claim in (("phone", "global heads matter least: pruning more than half of the heads by globalness "
                                  "keeps phone accuracy (paper: about 70 % before pruning)"),
                        ("speaker-utt", "utterance-level speaker accuracy is mostly kept when pruning by "
                                        "globalness")):
        if "globalness" not in curves.orders or task not in curves.tasks:
            continue
        if few:
            out.append(too_few(claim, "yes", "global"))
            continue
        c = curves.compare("globalness", task, half)
        before = curves.baseline(task)
        text = f"{half} of {curves.total} heads, from {100 * before:.1f} %: " + _describe(c, "accuracy")
        if c["versus_random"] == "less" and c["drop"] <= c["random_spread"]:
            verdict, reason = REPRODUCES, "loses no more than the spread and less than random pruning"
        elif c["versus_random"] == "more":
            verdict, reason = DOES_NOT, "pruning by globalness hurts more than random"
        elif c["drop"] > c["random_spread"] and c["versus_random"] == "like":
            verdict, reason = DOES_NOT, "loses more than the spread and is no better than random"
        elif c["versus_random"] == "like":
            verdict, reason = INCONCLUSIVE, "no different from random pruning (within the spread)"
        else:
            verdict, reason = INCONCLUSIVE, "better than random but still loses more than the spread"
        out.append(Verdict(claim, "yes", text, verdict, reason, "global"))
    return out


# ---------------------------------------------------------------------------
# segmentation and relations


def bootstrap_difference(a: Sequence[dict[str, int]], b: Sequence[dict[str, int]], *, resamples: int = 1000,
                         seed: int = 0) -> tuple[float, float, float]:
    """R-value(a) - R-value(b) on the same test utterances, with a 95 % paired bootstrap interval.

    ``a`` and ``b`` hold per-utterance strict counts (``hits``, ``n_ref``, ``n_pred``) in the same
    utterance order. Returns (difference, low, high), all as fractions (x100 for R-value points).
    """
    from satool.analysis.segmentation import r_value_from_counts

    counts_a = np.array([[u["hits"], u["n_ref"], u["n_pred"]] for u in a], dtype=np.float64)
    counts_b = np.array([[u["hits"], u["n_ref"], u["n_pred"]] for u in b], dtype=np.float64)
    if counts_a.shape != counts_b.shape or not len(counts_a):
        raise ValueError("per-utterance counts of both sources over the same utterances are needed")

    def r(counts):
        return r_value_from_counts(*counts.sum(axis=-2).T)

    diff = float(r(counts_a) - r(counts_b))
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(counts_a), size=(resamples, len(counts_a)))
    samples = r(counts_a[picks]) - r(counts_b[picks])
    low, high = np.percentile(samples, [2.5, 97.5])
    return diff, float(low), float(high)


def segment_verdict(claim: str, paper: str, source: SourceResult, mfcc: SourceResult) -> Verdict:
    """A source against MFCC on the test split (rule ``segment``)."""
    diff, low, high = bootstrap_difference(source.per_utterance, mfcc.per_utterance)
    text = (f"{source.source}: {100 * source.strict['r_value']:.2f} vs MFCC {100 * mfcc.strict['r_value']:.2f} "
            f"(difference {100 * diff:+.2f}, 95 % interval {100 * low:+.2f} to {100 * high:+.2f})")
    if low > 0:
        return Verdict(claim, paper, text, REPRODUCES, "the interval lies above 0", "segment")
    if high < 0:
        return Verdict(claim, paper, text, DOES_NOT, "the interval lies below 0: MFCC is better", "segment")
    return Verdict(claim, paper, text, INCONCLUSIVE, "the interval contains 0", "segment")


PAPER_SEGMENT = {"mfcc": 76.68, "best_head": {"M3": 79.99, "M6": 78.43, "M9": 78.19}, "hidden11": 77.53}


def segment_findings(results: SegmentResults) -> list[Verdict]:
    """The chosen head and the chosen hidden state against MFCC (rule ``segment``)."""
    mfcc = results.source("mfcc")
    if mfcc is None or not mfcc.per_utterance:
        return []
    out = []
    for label, claim, paper in (
        (results.best_head, "the best block-diagonal head beats MFCC (M3 79.99, M6 78.43, M9 78.19 vs 76.68)",
         "79.99 / 78.43 / 78.19"),
        (results.best_hidden, "a hidden layer beats MFCC (M3 layer 11: 77.53 vs 76.68)",
         str(PAPER_SEGMENT["hidden11"])),
    ):
        source = results.source(label)
        if source is not None and source.per_utterance:
            out.append(segment_verdict(claim, paper, source, mfcc))
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def vertical_phones_verdict(verticality: np.ndarray, concentration: np.ndarray, *, permutations: int = 2000,
                            seed: int = 0) -> Verdict:
    """Fig. 4: do vertical heads focus on particular phones? (rule ``vertical_phones``)"""
    claim, paper = "vertical heads focus on particular phones (Fig. 4)", "positive relation"
    keep = np.isfinite(verticality) & np.isfinite(concentration)
    v, c = verticality[keep], concentration[keep]
    if len(v) < 4:
        return Verdict(claim, paper, f"{len(v)} heads", INCONCLUSIVE, "fewer than 4 heads with both values",
                       "vertical_phones")
    rho = spearman(v, c)
    rng = np.random.default_rng(seed)
    null = np.array([spearman(v, rng.permutation(c)) for _ in range(permutations)])
    p_positive = (1 + np.sum(null >= rho)) / (1 + permutations)
    p_negative = (1 + np.sum(null <= rho)) / (1 + permutations)
    text = f"Spearman rho = {rho:.2f} over {len(v)} heads (one-sided p = {min(p_positive, p_negative):.3f})"
    if rho > 0 and p_positive < 0.05:
        return Verdict(claim, paper, text, REPRODUCES, "positive and unlikely under permutation", "vertical_phones")
    if rho < 0 and p_negative < 0.05:
        return Verdict(claim, paper, text, DOES_NOT, "significantly negative", "vertical_phones")
    return Verdict(claim, paper, text, INCONCLUSIVE, "not distinguishable from no relation", "vertical_phones")


# ---------------------------------------------------------------------------
# the health gate


def health(heldout: HealthCheck | None, probes: ProbeResults | None, curves: PruneCurves | None) -> Health:
    """The four checks of :data:`RULES` ``["health"]`` from saved results (None: not measured)."""
    checks: list[HealthCheckRow] = []
    if heldout is not None:
        l1 = heldout.model_l1
        best, value = heldout.best_baseline
        checks.append(HealthCheckRow(
            "learned", l1 < value, f"held-out masked L1 {l1:.3f} vs best baseline {best} {value:.3f}"))
        off = heldout.attention_off_l1
        checks.append(HealthCheckRow(
            "uses attention", off >= (1 + ATTENTION_OFF_MARGIN) * l1,
            f"attention off {off:.3f} vs {l1:.3f} ({100 * (off / l1 - 1):+.1f} %)"))
    else:
        checks.append(HealthCheckRow("learned", None, "no held-out evaluation of the model"))
        checks.append(HealthCheckRow("uses attention", None, "no held-out evaluation of the model"))
    if curves is not None and "phone" in curves.tasks and curves.total:
        drop = float(np.mean(curves.drops(curves.orders[0], "phone", curves.total)))
        spread = curves.random_spread("phone")
        ok = bool(np.isfinite(spread)) and drop > spread
        checks.append(HealthCheckRow(
            "attention matters for phones", ok if np.isfinite(spread) else None,
            f"pruning all {curves.total} heads: phone {100 * -drop:+.1f} pts; random orders spread "
            f"{100 * spread:.1f} pts" if np.isfinite(spread) else "no random orders to measure the spread"))
    else:
        checks.append(HealthCheckRow("attention matters for phones", None, "no pruning sweep with a phone task"))
    if probes is not None and probes.rows:
        weak = [f"{r.task} {100 * r.score.score:.1f} % vs chance {100 * r.score.chance:.1f} %"
                for r in probes.model_rows() if r.score.higher_is_better
                and r.score.score - r.score.chance < PROBE_MARGIN]
        checks.append(HealthCheckRow("probes beat chance", not weak,
                                     "; ".join(weak) if weak else "every classification probe beats chance by "
                                     f">= {100 * PROBE_MARGIN:.0f} points"))
    else:
        checks.append(HealthCheckRow("probes beat chance", None, "no probing results"))
    return Health(checks)


def gate(verdicts: Sequence[Verdict], state: Health) -> list[Verdict]:
    """Every verdict becomes inconclusive (with the reason) unless the model is healthy."""
    if state.passed:
        return list(verdicts)
    why = "the model health checks did not pass (" + state.failure() + ")"
    return [replace(v, verdict=INCONCLUSIVE, reason=why) for v in verdicts]


def judge_run(run) -> VerdictReport:
    """Every finding that one run's results can speak to, gated by the run's health
    (``run``: a :class:`~satool.results.run.RunResults`)."""
    curves = PruneCurves(run.prune) if run.prune is not None else None
    state = health(run.health, run.probe, curves)
    findings: list[Verdict] = []
    if run.segment is not None:
        findings += segment_findings(run.segment)
    if run.relations is not None and run.relations.verticality is not None:
        findings.append(vertical_phones_verdict(run.relations.verticality, run.relations.strongest_concentration()))
    if curves is not None:
        local, order = None, None
        scores = run.metrics
        if scores is not None and scores.locality() is not None and "diagonality" in scores.values:
            ratio = scores.locality()[0]
            local = {(layer, head): float(ratio[i, j]) for i, layer in enumerate(scores.layers)
                     for j, head in enumerate(scores.heads)}
            order = scores.pruning_order("diagonality")
        findings += pruning_verdicts(curves, local, order)
    judged = gate(findings, state)
    used = sorted({v.rule for v in judged} | {"health"}, key=list(RULES).index)
    return VerdictReport({run.name: state}, judged, {k: RULES[k] for k in used},
                         {run.name: curves.table()} if curves is not None else {})
