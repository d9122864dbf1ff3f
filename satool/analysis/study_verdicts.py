"""Verdicts on the paper's findings that compare models trained with different mask spans Cnum
(M3, M6, M9), and on the single-model findings the study adds, each by a rule in :data:`RULES`.

Noise: bootstrap replicates over utterances for anything computed from attention maps (the metric
pass keeps 200; replicates of different models on the same corpus reuse each utterance's weights,
so differences between models are paired), paired bootstraps over test utterances for probe and
segmentation scores, the spread of random pruning orders for pruning. Findings numbered as in the
paper's list (docs/findings.md).
"""

from __future__ import annotations

import numpy as np

from satool.analysis import comparison as cmp
from satool.analysis.verdicts import PAPER_SHARE, PruneCurves, gate, judge_run
from satool.analysis.verdicts import RULES as RUN_RULES
from satool.results.metrics import LOCAL_RATIO
from satool.results.study import Study
from satool.results.verdicts import (
    DOES_NOT,
    INCONCLUSIVE,
    REPRODUCES,
    Health,
    Verdict,
    VerdictReport,
)

LEVEL = 95  # percent: every interval below
HALF_STEP = 0.5  # a change of the mean shift smaller than half a model step is no change

RULES = {
    "off_diagonal": (
        f"A model's local heads (favourite offset >= {LOCAL_RATIO:g}x the uniform weight, on clean input) are "
        "judged in 200 bootstrap replicates over utterances: the finding reproduces when every local head's "
        f"favourite offset is non-zero in at least {LEVEL} % of the replicates, does not reproduce when some "
        f"local head's favourite offset is 0 in at least {LEVEL} % of them, and is inconclusive otherwise or "
        "without local heads."
    ),
    "shift_grows": (
        "The mean |favourite offset| (ms) of each model's local heads, per bootstrap replicate (paired across "
        "models: the same utterance weights). Reproduces when the largest-Cnum model's mean exceeds the "
        f"smallest-Cnum model's with the {LEVEL} % interval of the difference above 0 and the means do not "
        "decrease from one Cnum to the next; does not reproduce when that interval lies below 0 or entirely "
        "within half a model step of 0 (no shift at the model's resolution); otherwise inconclusive."
    ),
    "more_global": (
        "Global heads counted per model (rank categories), in every bootstrap replicate. Reproduces when the "
        f"largest-Cnum model has more global heads than the smallest-Cnum one with the {LEVEL} % interval of the "
        "difference above 0; does not reproduce when it lies below 0; otherwise inconclusive."
    ),
    "most_diagonal": (
        "Diagonal heads counted per model in every bootstrap replicate. Reproduces when the smallest-Cnum model "
        f"has more than each other model, each {LEVEL} % interval of the difference above 0; does not reproduce "
        "when some other model has more, with the interval below 0; otherwise inconclusive."
    ),
    "even_layers": (
        "Chi-square statistic of the layer x category table against 2000 permutations of the categories over "
        "the heads: does not reproduce when the categories gather in some layers (p < 0.05); otherwise the "
        "finding stands (no clustering was found at p < 0.05)."
    ),
    "segment_span": (
        "Strict R-values (20 ms) of each model's chosen head on the same test utterances: the smallest-Cnum "
        "model minus the largest-Cnum model, with a 95 % paired bootstrap interval (1000 resamples of test "
        "utterances). Reproduces when the interval lies above 0, does not reproduce when it lies below 0, "
        "otherwise inconclusive."
    ),
    "global_vs_weight": (
        "At half of the heads, on every classification task: pruning by globalness loses d_G, by weight d_W. "
        "Reproduces when d_G is smaller than d_W by more than the random orders' spread on the phone task and "
        "not larger by more than the spread on any task; does not reproduce when d_G exceeds d_W by more than "
        "the spread on the phone task; otherwise inconclusive."
    ),
    "disagreement_neglect": (
        "The heads among the first 1/6 pruned by weight but not among the first 1/6 pruned by globalness, "
        "against every other head: mean strongest neglect (the most negative phone concentration C_h[n]), "
        "one-sided permutation test (2000 permutations). Reproduces when those heads neglect more with "
        "p < 0.05, does not reproduce when they neglect less with p < 0.05, otherwise inconclusive."
    ),
    "half_prunable": (
        "The first pruning level above half of the heads, by globalness, phone task: reproduces when the "
        "accuracy lost is at most the random orders' spread; does not reproduce when it exceeds the spread "
        "and pruning by globalness is no better than random; otherwise inconclusive."
    ),
    "global_importance_span": (
        "At half of the heads, phone task: each model's effect of pruning by globalness against random "
        "(drop minus the random mean). Reproduces when the smallest-Cnum model's effect exceeds the "
        "largest-Cnum model's by more than the larger of their random spreads; does not reproduce when it "
        "falls short of it by more than that; otherwise inconclusive."
    ),
    "span_keeps": (
        "Phone accuracy with every head limited to |q - k| <= r, for each r tested up to 8 steps, minus the "
        "accuracy without a limit, with a paired bootstrap interval over test utterances at the Bonferroni "
        "level for the number of spans. 'Keeps' reproduces when some r has its interval above -1 point; "
        "'improves' reproduces when some r has its interval above 0. Does not reproduce when every r's "
        "interval lies below -1 point (keeps) or below 0 (improves); otherwise inconclusive."
    ),
    "harm_phones": (
        "At 1/6, 1/3 and 1/2 of the heads, phone task: pruning by globalness or by verticality raises phone "
        "accuracy when its gain exceeds the random orders' spread. Reproduces when some such share gains beyond "
        "the spread; does not reproduce when neither order gains at any of them and one loses beyond the "
        "spread; otherwise inconclusive."
    ),
    "diagonal_dip": (
        "Phone task, pruning by diagonality: reproduces when the drop at 1/6 of the heads exceeds the random "
        "spread and the accuracy at 1/3 or 1/2 is higher than at 1/6 by more than the spread; does not "
        "reproduce when the drop at 1/6 is within the spread or the accuracy keeps falling beyond it; otherwise "
        "inconclusive."
    ),
    "neglect_diagonal": (
        "The 1/6 of the heads with the most extreme neglect (most negative phone concentration C_h[n]) among "
        "the less vertical half: the share of diagonal heads among them against the model's, one-sided "
        "permutation test (2000 permutations). Reproduces when larger with p < 0.05, does not reproduce when "
        "smaller with p < 0.05, otherwise inconclusive."
    ),
    "span_speed": (
        "Not measurable in satool: span pruning zeroes weights after the softmax of the full map, so it "
        "costs the same time; a model built for a limited span would compute fewer scores."
    ),
}


def _interval(samples: np.ndarray) -> tuple[float, float]:
    low, high = np.nanpercentile(samples, [(100 - LEVEL) / 2, 100 - (100 - LEVEL) / 2])
    return float(low), float(high)


# ---------------------------------------------------------------------------
# finding 3: focused diagonal heads are off the main diagonal, and more so with larger Cnum


def off_diagonal(name: str, scores) -> Verdict:
    claim = ("no highly focused diagonal head sits on the main diagonal: the local heads attend to a left or "
             "right neighbour (sec. 4)")
    paper = "all focused diagonal heads shifted"
    local = scores.locality()
    boot = cmp.replicate_locality(scores)
    if local is None or boot is None:
        return Verdict(claim, paper, "no offset profiles with bootstrap replicates", INCONCLUSIVE,
                       "run 'satool metric' again (it keeps the replicates)", "off_diagonal", 3, name)
    focused = np.argwhere(local[0] >= LOCAL_RATIO)
    if not len(focused):
        return Verdict(claim, paper, f"no head reaches {LOCAL_RATIO:g}x uniform", INCONCLUSIVE,
                       "the model has no local heads", "off_diagonal", 3, name)
    step_ms = 1000 * (scores.step_s or 0.0)
    parts, on, off = [], [], []
    for i, j in focused:
        share = float(np.mean(boot[1][:, i, j] != 0))
        head = f"L{scores.layers[i]}.H{scores.heads[j]}"
        where = int(local[1][i, j])
        parts.append(f"{head} {local[0][i, j]:.1f}x at {where:+d} ({where * step_ms:+.0f} ms; non-zero in "
                     f"{100 * share:.0f} % of replicates)")
        (off if share >= LEVEL / 100 else on if share <= 1 - LEVEL / 100 else []).append(head)
    text = "; ".join(parts)
    if on:
        return Verdict(claim, paper, text, DOES_NOT, f"{', '.join(on)} sit(s) on the main diagonal", "off_diagonal",
                       3, name)
    if len(off) == len(focused):
        return Verdict(claim, paper, text, REPRODUCES, "every local head is shifted", "off_diagonal", 3, name)
    return Verdict(claim, paper, text, INCONCLUSIVE, "some local head's favourite offset varies over the replicates",
                   "off_diagonal", 3, name)


def shift_grows(study: Study) -> Verdict:
    claim = "a larger mask span Cnum comes with a larger shift of the focused diagonal heads (sec. 4)"
    paper = "M3 < M6 < M9"
    ranked = [(span, run) for span, run in study.by_span() if run.metrics is not None]
    if len(ranked) < 2:
        return Verdict(claim, paper, f"{len(ranked)} model(s) with a known Cnum", INCONCLUSIVE,
                       "needs at least two models with different mask spans", "shift_grows", 3)
    shifts = [(span, run.name, *cmp.mean_abs_shift_ms(run.metrics)) for span, run in ranked]
    text = "; ".join(f"{name} (Cnum {span}): {shift:.1f} ms over {n} local heads" if n else
                     f"{name} (Cnum {span}): no local head" for span, name, shift, _, n in shifts)
    usable = [s for s in shifts if s[4] and s[3] is not None]
    if len(usable) < 2 or usable[0][0] == usable[-1][0]:
        return Verdict(claim, paper, text, INCONCLUSIVE, "needs local heads in two models of different Cnum",
                       "shift_grows", 3)
    first, last = usable[0], usable[-1]
    low, high = _interval(last[3] - first[3])
    text += f"; {last[1]} - {first[1]}: {last[2] - first[2]:+.1f} ms ({LEVEL} % interval {low:+.1f} to {high:+.1f})"
    half_step = HALF_STEP * 1000 * (min(r.metrics.step_s or 0 for _, r in ranked))
    monotone = all(b[2] >= a[2] for a, b in zip(usable, usable[1:]))
    if low > 0 and monotone:
        return Verdict(claim, paper, text, REPRODUCES, "the shift grows with Cnum beyond the noise", "shift_grows", 3)
    if high < 0:
        return Verdict(claim, paper, text, DOES_NOT, "the shift shrinks as Cnum grows", "shift_grows", 3)
    if -half_step < low and high < half_step:
        return Verdict(claim, paper, text, DOES_NOT, f"no change beyond half a model step ({half_step:.0f} ms)",
                       "shift_grows", 3)
    return Verdict(claim, paper, text, INCONCLUSIVE, "the difference is within the noise or not monotone",
                   "shift_grows", 3)


# ---------------------------------------------------------------------------
# finding 4: category counts and layers


def _count_difference(study: Study, category: str) -> list[tuple[int, str, float, np.ndarray | None]]:
    out = []
    for span, run in study.by_span():
        if run.metrics is None:
            continue
        counts = cmp.category_counts(run.metrics.categories())
        out.append((span, run.name, float(counts[category]), cmp.replicate_counts(run.metrics, category)))
    return out


def more_global(study: Study) -> Verdict:
    claim = "the model with the larger mask span Cnum has more global heads (sec. 4)"
    paper = "more global heads as Cnum grows"
    counts = _count_difference(study, "global")
    if len(counts) < 2 or counts[0][0] == counts[-1][0]:
        return Verdict(claim, paper, f"{len(counts)} model(s) with a known Cnum", INCONCLUSIVE,
                       "needs at least two models with different mask spans", "more_global", 4)
    text = ", ".join(f"{name} (Cnum {span}) {int(n)}" for span, name, n, _ in counts)
    first, last = counts[0], counts[-1]
    if first[3] is None or last[3] is None:
        return Verdict(claim, paper, text, INCONCLUSIVE, "no bootstrap replicates", "more_global", 4)
    low, high = _interval(last[3] - first[3])
    text += f"; {last[1]} - {first[1]}: {last[2] - first[2]:+.0f} ({LEVEL} % interval {low:+.0f} to {high:+.0f})"
    verdict = REPRODUCES if low > 0 else DOES_NOT if high < 0 else INCONCLUSIVE
    reason = {REPRODUCES: "more global heads with the larger Cnum", DOES_NOT: "fewer global heads with the larger Cnum",
              INCONCLUSIVE: "the interval contains 0"}[verdict]
    return Verdict(claim, paper, text, verdict, reason, "more_global", 4)


def most_diagonal(study: Study) -> Verdict:
    claim = "M3 (the smallest mask span) has the most diagonal heads (sec. 4)"
    paper = "M3 most diagonal heads"
    counts = _count_difference(study, "diagonal")
    if len(counts) < 2 or counts[0][0] == counts[-1][0]:
        return Verdict(claim, paper, f"{len(counts)} model(s) with a known Cnum", INCONCLUSIVE,
                       "needs at least two models with different mask spans", "most_diagonal", 4)
    text = ", ".join(f"{name} (Cnum {span}) {int(n)}" for span, name, n, _ in counts)
    first = counts[0]
    if any(c[3] is None for c in counts):
        return Verdict(claim, paper, text, INCONCLUSIVE, "no bootstrap replicates", "most_diagonal", 4)
    intervals = [(other[1], *_interval(first[3] - other[3])) for other in counts[1:]]
    text += "; " + ", ".join(f"{first[1]} - {name}: {low:+.0f} to {high:+.0f}" for name, low, high in intervals)
    if all(low > 0 for _, low, _ in intervals):
        return Verdict(claim, paper, text, REPRODUCES, f"{first[1]} has more than every other model", "most_diagonal", 4)
    if any(high < 0 for _, _, high in intervals):
        return Verdict(claim, paper, text, DOES_NOT, "another model has more diagonal heads", "most_diagonal", 4)
    return Verdict(claim, paper, text, INCONCLUSIVE, "some interval contains 0", "most_diagonal", 4)


def even_layers(name: str, scores) -> Verdict:
    claim = "the global, vertical and diagonal categories spread about evenly over the layers (sec. 4)"
    categories = scores.categories()
    statistic, p = cmp.layer_dependence(categories)
    rows = ", ".join(f"L{layer}: " + "/".join(str(v) for v in cmp.category_counts(categories[i]).values())
                     for i, layer in enumerate(scores.layers))
    text = f"global/vertical/diagonal per layer {rows}; chi-square {statistic:.1f}, permutation p = {p:.3f}"
    if p < 0.05:
        return Verdict(claim, "even", text, DOES_NOT, "the categories gather in some layers", "even_layers", 4, name)
    return Verdict(claim, "even", text, REPRODUCES, "no clustering over layers at p < 0.05", "even_layers", 4, name)


# ---------------------------------------------------------------------------
# finding 5: segmentation gets worse as Cnum grows


def segment_span(study: Study) -> Verdict:
    from satool.analysis.verdicts import bootstrap_difference

    claim = "segmentation gets worse as the mask span Cnum grows: a long mask can cover a whole phone (sec. 5)"
    paper = "M3 79.99, M6 78.43, M9 78.19"
    models = [(span, run) for span, run in study.by_span()
              if run.segment is not None and run.segment.source(run.segment.best_head) is not None]
    if len(models) < 2 or models[0][0] == models[-1][0]:
        return Verdict(claim, paper, f"{len(models)} model(s) with a chosen head and known Cnum", INCONCLUSIVE,
                       "needs the segmentation of at least two models with different mask spans", "segment_span", 5)
    best = [(span, run.name, run.segment.source(run.segment.best_head), run.segment.test_ids) for span, run in models]
    text = ", ".join(f"{name} {source.source} {100 * source.strict['r_value']:.2f}" for _, name, source, _ in best)
    first, last = best[0], best[-1]
    if first[3] != last[3] or not first[2].per_utterance or not last[2].per_utterance:
        return Verdict(claim, paper, text, INCONCLUSIVE, "the models were not scored on the same test utterances",
                       "segment_span", 5)
    diff, low, high = bootstrap_difference(first[2].per_utterance, last[2].per_utterance)
    text += f"; {first[1]} - {last[1]}: {100 * diff:+.2f} (95 % interval {100 * low:+.2f} to {100 * high:+.2f})"
    verdict = REPRODUCES if low > 0 else DOES_NOT if high < 0 else INCONCLUSIVE
    reason = {REPRODUCES: "the smallest Cnum segments better", DOES_NOT: "the largest Cnum segments better",
              INCONCLUSIVE: "the interval contains 0"}[verdict]
    return Verdict(claim, paper, text, verdict, reason, "segment_span", 5)


# ---------------------------------------------------------------------------
# findings 7 and 8: what pruning single orders does, and which heads neglect phones


def harm_phones(name: str, curves: PruneCurves) -> Verdict | None:
    claim = ("global and vertical heads harm phonetic information: pruning them raises phone accuracy "
             "(sec. 7.1)")
    orders = [o for o in ("globalness", "verticality") if o in curves.orders]
    if not orders or "phone" not in curves.tasks:
        return None
    levels = list(dict.fromkeys(curves.nearest_level(share) for share in (PAPER_SHARE, 1 / 3, 1 / 2)))
    parts, gains, losses = [], [], []
    for order in orders:
        for level in levels:
            c = curves.compare(order, "phone", level)
            if c is None:
                return Verdict(claim, "accuracy rises", "too few random orders", INCONCLUSIVE,
                               "needs at least 3 random pruning orders", "harm_phones", 8, name)
            parts.append(f"{order} {level}: {100 * -c['drop']:+.1f} pts (spread {100 * c['random_spread']:.1f})")
            if -c["drop"] > c["random_spread"]:
                gains.append(f"{order} at {level}")
            if c["drop"] > c["random_spread"]:
                losses.append(f"{order} at {level}")
    text = "; ".join(parts)
    if gains:
        return Verdict(claim, "accuracy rises", text, REPRODUCES, f"gains beyond the spread: {', '.join(gains)}",
                       "harm_phones", 8, name)
    if losses and all(-curves.compare(o, "phone", lv)["drop"] <= 0 for o in orders for lv in levels):
        return Verdict(claim, "accuracy rises", text, DOES_NOT, "no gain anywhere, losses beyond the spread",
                       "harm_phones", 8, name)
    return Verdict(claim, "accuracy rises", text, INCONCLUSIVE, "no change beyond the spread", "harm_phones", 8, name)


def diagonal_dip(name: str, curves: PruneCurves) -> Verdict | None:
    claim = "pruning by diagonality drops phone accuracy for the first 1/6 of the heads, then it rises (sec. 7.1)"
    if "diagonality" not in curves.orders or "phone" not in curves.tasks:
        return None
    first = curves.nearest_level(PAPER_SHARE)
    later = [lv for lv in dict.fromkeys(curves.nearest_level(s) for s in (1 / 3, 1 / 2)) if lv > first]
    c = curves.compare("diagonality", "phone", first)
    if c is None or not later:
        return Verdict(claim, "dip then rise", "too few random orders or levels", INCONCLUSIVE,
                       "needs 3 random orders and levels beyond 1/6", "diagonal_dip", 8, name)
    spread = c["random_spread"]
    after = {lv: float(np.mean(curves.scores("diagonality", "phone", lv))) for lv in later}
    at_first = float(np.mean(curves.scores("diagonality", "phone", first)))
    text = (f"{first} heads: {100 * -c['drop']:+.1f} pts (spread {100 * spread:.1f}); then "
            + ", ".join(f"{lv}: {100 * (v - at_first):+.1f} pts from there" for lv, v in after.items()))
    rises = [lv for lv, v in after.items() if v - at_first > spread]
    if c["drop"] > spread and rises:
        return Verdict(claim, "dip then rise", text, REPRODUCES, "drops, then recovers beyond the spread",
                       "diagonal_dip", 8, name)
    if c["drop"] <= spread or all(at_first - v > spread for v in after.values()):
        return Verdict(claim, "dip then rise", text, DOES_NOT, "no drop beyond the spread at 1/6" if c["drop"] <=
                       spread else "keeps falling", "diagonal_dip", 8, name)
    return Verdict(claim, "dip then rise", text, INCONCLUSIVE, "the rise is within the spread", "diagonal_dip", 8, name)


def neglect_diagonal(name: str, scores, relations, *, permutations: int = 2000, seed: int = 0) -> Verdict | None:
    claim = "heads of low verticality with extreme neglect are diagonal heads (sec. 6, Fig. 4)"
    if relations is None or scores is None or "verticality" not in scores.values:
        return None
    index = {(int(a), int(b)): i for i, (a, b) in enumerate(zip(relations.layers, relations.heads))}
    heads = [(layer, head) for layer in scores.layers for head in scores.heads]
    if not all(h in index for h in heads):
        return None
    neglect = relations.strongest_neglect()[[index[h] for h in heads]]
    vertical = scores.values["verticality"].ravel()
    diagonal = scores.categories().ravel() == "diagonal"
    low = vertical <= np.nanmedian(vertical)
    k = max(1, round(PAPER_SHARE * len(heads)))
    candidates = np.flatnonzero(low & np.isfinite(neglect))
    if len(candidates) < k or not diagonal.any():
        return Verdict(claim, "diagonal", "too few heads", INCONCLUSIVE, "needs relation maps of every head",
                       "neglect_diagonal", 7, name)
    chosen = candidates[np.argsort(neglect[candidates], kind="stable")[:k]]
    share, base = float(diagonal[chosen].mean()), float(diagonal.mean())
    rng = np.random.default_rng(seed)
    null = np.array([diagonal[rng.choice(len(heads), k, replace=False)].mean() for _ in range(permutations)])
    p_more = (1 + np.sum(null >= share)) / (1 + permutations)
    p_less = (1 + np.sum(null <= share)) / (1 + permutations)
    labels = ", ".join(f"L{heads[i][0]}.H{heads[i][1]}" for i in chosen)
    text = f"{labels}: {100 * share:.0f} % diagonal against {100 * base:.0f} % of all heads (p = {min(p_more, p_less):.3f})"
    if share > base and p_more < 0.05:
        return Verdict(claim, "diagonal", text, REPRODUCES, "more often diagonal than the model's heads",
                       "neglect_diagonal", 7, name)
    if share < base and p_less < 0.05:
        return Verdict(claim, "diagonal", text, DOES_NOT, "less often diagonal", "neglect_diagonal", 7, name)
    return Verdict(claim, "diagonal", text, INCONCLUSIVE, "not distinguishable from the model's heads",
                   "neglect_diagonal", 7, name)


# ---------------------------------------------------------------------------
# finding 9: globalness against weight, and the heads the two orders disagree on


def globalness_vs_weight(name: str, curves: PruneCurves) -> Verdict | None:
    claim = "pruning by globalness hurts less than pruning by the maximum attention weight (sec. 7.1, Fig. 6)"
    if not {"globalness", "weight", "random"} <= set(curves.orders):
        return None
    half = curves.nearest_level(0.5)
    parts, worse, better_phone, worse_phone = [], [], False, False
    for task in curves.tasks:
        if curves.sweep.first(task).score_name != "accuracy":
            continue
        g, w = curves.compare("globalness", task, half), curves.compare("weight", task, half)
        if g is None or w is None:
            return Verdict(claim, "globalness better", "too few random orders", INCONCLUSIVE,
                           "needs at least 3 random pruning orders", "global_vs_weight", 9, name)
        gap, spread = g["drop"] - w["drop"], g["random_spread"]
        parts.append(f"{task}: globalness {100 * -g['drop']:+.1f} vs weight {100 * -w['drop']:+.1f} pts "
                     f"(spread {100 * spread:.1f})")
        if gap > spread:
            worse.append(task)
        if task == "phone":
            better_phone, worse_phone = gap < -spread, gap > spread
    text = f"{half} of {curves.total} heads: " + "; ".join(parts)
    if worse_phone:
        return Verdict(claim, "globalness better", text, DOES_NOT, "globalness hurts phone accuracy more",
                       "global_vs_weight", 9, name)
    if better_phone and not worse:
        return Verdict(claim, "globalness better", text, REPRODUCES, "globalness hurts less beyond the noise",
                       "global_vs_weight", 9, name)
    return Verdict(claim, "globalness better", text, INCONCLUSIVE, "the difference is within the random spread"
                   if not worse else f"globalness hurts more on {', '.join(worse)}", "global_vs_weight", 9, name)


def disagreement_neglect(name: str, scores, relations, *, permutations: int = 2000,
                         seed: int = 0) -> Verdict | None:
    claim = "the heads that pruning by weight removes early but pruning by globalness keeps show neglect (Fig. 6)"
    if relations is None or scores is None or not {"globalness", "weight"} <= set(scores.values):
        return None
    # the first 1/6 of the heads of every model, whatever levels its pruning sweep measured
    k = max(1, round(PAPER_SHARE * len(scores.layers) * len(scores.heads)))
    by_weight, by_global = scores.pruning_order("weight")[:k], set(scores.pruning_order("globalness")[:k])
    chosen = [h for h in by_weight if h not in by_global]
    neglect = relations.strongest_neglect()
    index = {(int(a), int(b)): i for i, (a, b) in enumerate(zip(relations.layers, relations.heads))}
    values = np.array([neglect[index[h]] if h in index else np.nan for h in
                       [(layer, head) for layer in scores.layers for head in scores.heads]])
    flags = np.array([(layer, head) in set(chosen) for layer in scores.layers for head in scores.heads])
    keep = np.isfinite(values)
    if flags[keep].sum() == 0 or (~flags[keep]).sum() == 0:
        return Verdict(claim, "neglect", f"{len(chosen)} heads differ between the first {k} of each order",
                       INCONCLUSIVE, "no heads to compare (the two orders agree, or relations are missing)",
                       "disagreement_neglect", 9, name)
    v, f = values[keep], flags[keep]
    observed = v[f].mean() - v[~f].mean()
    rng = np.random.default_rng(seed)
    null = np.array([(lambda p: v[p].mean() - v[~p].mean())(rng.permutation(f)) for _ in range(permutations)])
    p_more = (1 + np.sum(null <= observed)) / (1 + permutations)  # more neglect = more negative
    p_less = (1 + np.sum(null >= observed)) / (1 + permutations)
    text = (f"{len(chosen)} of the first {k} by weight are not among the first {k} by globalness "
            f"({', '.join(f'L{a}.H{b}' for a, b in chosen)}); their strongest neglect {v[f].mean():+.2f} vs "
            f"{v[~f].mean():+.2f} for the other heads (p = {min(p_more, p_less):.3f})")
    if observed < 0 and p_more < 0.05:
        return Verdict(claim, "neglect", text, REPRODUCES, "they neglect phones more", "disagreement_neglect", 9, name)
    if observed > 0 and p_less < 0.05:
        return Verdict(claim, "neglect", text, DOES_NOT, "they neglect phones less", "disagreement_neglect", 9, name)
    return Verdict(claim, "neglect", text, INCONCLUSIVE, "not distinguishable from the other heads",
                   "disagreement_neglect", 9, name)


# ---------------------------------------------------------------------------
# finding 10: more than half of the heads can go; global heads matter less as Cnum grows


def half_prunable(name: str, curves: PruneCurves) -> Verdict | None:
    claim = "more than 50 % of the heads can be pruned by globalness without losing phone accuracy (sec. 7.1)"
    if "globalness" not in curves.orders or "phone" not in curves.tasks:
        return None
    above = [level for level in curves.levels if level > curves.total / 2]
    if not above:
        return None
    level = min(above)
    c = curves.compare("globalness", "phone", level)
    if c is None:
        return Verdict(claim, "yes", "too few random orders", INCONCLUSIVE, "needs at least 3 random pruning orders",
                       "half_prunable", 10, name)
    text = (f"{level} of {curves.total} heads: phone {100 * -c['drop']:+.1f} pts vs random "
            f"{100 * -c['random_mean']:+.1f} (spread {100 * c['random_spread']:.1f})")
    if c["drop"] <= c["random_spread"]:
        return Verdict(claim, "yes", text, REPRODUCES, "loses no more than the random spread", "half_prunable", 10,
                       name)
    if c["versus_random"] != "less":
        return Verdict(claim, "yes", text, DOES_NOT, "loses more than the spread, no better than random",
                       "half_prunable", 10, name)
    return Verdict(claim, "yes", text, INCONCLUSIVE, "better than random but loses more than the spread",
                   "half_prunable", 10, name)


def global_importance_span(study: Study) -> Verdict:
    claim = "global heads matter less as the mask span Cnum grows (sec. 7.1, Fig. 5 d-f)"
    paper = "smaller effect for larger Cnum"
    effects = []
    for span, run in study.by_span():
        if run.prune is None:
            continue
        curves = PruneCurves(run.prune)
        if "globalness" not in curves.orders or "phone" not in curves.tasks:
            continue
        c = curves.compare("globalness", "phone", curves.nearest_level(0.5))
        if c is not None:
            effects.append((span, run.name, c["effect"], c["random_spread"]))
    if len(effects) < 2 or effects[0][0] == effects[-1][0]:
        return Verdict(claim, paper, f"{len(effects)} model(s) with a pruning sweep and known Cnum", INCONCLUSIVE,
                       "needs sweeps of at least two models with different mask spans", "global_importance_span", 10)
    text = ", ".join(f"{name} (Cnum {span}) {100 * effect:+.1f} pts vs random (spread {100 * spread:.1f})"
                     for span, name, effect, spread in effects)
    first, last = effects[0], effects[-1]
    noise = max(first[3], last[3])
    gap = first[2] - last[2]
    if gap > noise:
        return Verdict(claim, paper, text, REPRODUCES, "the effect falls beyond the random spread",
                       "global_importance_span", 10)
    if gap < -noise:
        return Verdict(claim, paper, text, DOES_NOT, "the effect grows with Cnum", "global_importance_span", 10)
    return Verdict(claim, paper, text, INCONCLUSIVE, "the difference is within the random spread",
                   "global_importance_span", 10)


# ---------------------------------------------------------------------------
# finding 11: span pruning


def span_findings(name: str, sweep, *, max_span: int = 8) -> list[Verdict]:
    keeps_claim = ("limiting every head to |q - k| <= r keeps phone accuracy at small r: long-range attention "
                   "is not needed for phones (sec. 7.2)")
    improves_claim = "constraining the attention span refines the representations: higher phone accuracy (sec. 8)"
    speed_claim = "constraining the attention span speeds up inference (sec. 8)"
    out = [Verdict(speed_claim, "faster", "not measured", INCONCLUSIVE, RULES["span_speed"], "span_speed", 11, name)]
    if sweep is None or "phone" not in sweep.tasks:
        return out
    full = next((r.score for r in sweep.rows if r.task == "phone" and r.span is None), None)
    rows = [r for r in sweep.rows if r.task == "phone" and r.span is not None and r.span <= max_span]
    if full is None or not rows or not full.per_utterance or not all(r.score.per_utterance for r in rows):
        return [Verdict(keeps_claim, "yes", "no span sweep with per-utterance counts", INCONCLUSIVE,
                        "run 'satool prune --span ...' with the phone task", "span_keeps", 11, name),
                Verdict(improves_claim, "yes", "no span sweep", INCONCLUSIVE, "see above", "span_keeps", 11, name), *out]
    level = 1 - 0.05 / len(rows)
    intervals = [(r.span, *cmp.paired_accuracy_difference(r.score.per_utterance, full.per_utterance, level=level))
                 for r in rows]
    text = (f"no limit {100 * full.score:.1f} %; " + "; ".join(
        f"r = {span}: {100 * d:+.1f} pts ({100 * level:.1f} % interval {100 * low:+.1f} to {100 * high:+.1f})"
        for span, d, low, high in intervals))
    keeps = [s for s, _, low, _ in intervals if low > -0.01]
    improves = [s for s, _, low, _ in intervals if low > 0]
    verdicts = []
    if keeps:
        verdicts.append(Verdict(keeps_claim, "yes", text, REPRODUCES, f"r = {min(keeps)} loses less than 1 point",
                                "span_keeps", 11, name))
    elif all(high < -0.01 for _, _, _, high in intervals):
        verdicts.append(Verdict(keeps_claim, "yes", text, DOES_NOT, "every small r loses more than 1 point",
                                "span_keeps", 11, name))
    else:
        verdicts.append(Verdict(keeps_claim, "yes", text, INCONCLUSIVE, "within the noise", "span_keeps", 11, name))
    if improves:
        verdicts.append(Verdict(improves_claim, "yes", text, REPRODUCES, f"r = {min(improves)} gains beyond the noise",
                                "span_keeps", 11, name))
    elif all(high < 0 for _, _, _, high in intervals):
        verdicts.append(Verdict(improves_claim, "yes", text, DOES_NOT, "every small r loses accuracy", "span_keeps",
                                11, name))
    else:
        verdicts.append(Verdict(improves_claim, "yes", text, INCONCLUSIVE, "no gain beyond the noise", "span_keeps",
                                11, name))
    return verdicts + out


# ---------------------------------------------------------------------------
# the whole study


def judge_study(study: Study, *, judge: bool = True, why_not: str = "") -> VerdictReport:
    """Every finding on every model (the single-model ones) and across models (the comparative ones),
    each gated by the health of the models it rests on. ``judge=False``: every verdict inconclusive
    with ``why_not`` (the demo's --quick sizes cannot measure the noise)."""
    health: dict[str, Health] = {}
    verdicts: list[Verdict] = []
    pruning: dict[str, list] = {}
    for run in study.runs:
        single = judge_run(run)
        health.update(single.health)
        pruning.update(single.pruning)
        state = single.health[run.name]
        found = [_tagged(v, run.name) for v in single.verdicts]
        curves = PruneCurves(run.prune) if run.prune is not None else None
        extra: list[Verdict | None] = []
        if run.metrics is not None:
            extra += [off_diagonal(run.name, run.metrics), even_layers(run.name, run.metrics)]
        if curves is not None:
            extra += [globalness_vs_weight(run.name, curves), half_prunable(run.name, curves),
                      harm_phones(run.name, curves), diagonal_dip(run.name, curves)]
        extra += [neglect_diagonal(run.name, run.metrics, run.relations),
                  disagreement_neglect(run.name, run.metrics, run.relations)]
        if run.spans is not None:
            extra += span_findings(run.name, run.spans)
        found += gate([v for v in extra if v is not None], state)
        verdicts += found
    together = [shift_grows(study), more_global(study), most_diagonal(study), segment_span(study),
                global_importance_span(study)]
    combined = Health([c for name in study.names for c in _renamed(health[name], name)])
    verdicts += gate(together, combined)
    if not judge:
        verdicts = [Verdict(v.claim, v.paper, v.this_run, INCONCLUSIVE, why_not, v.rule, v.finding, v.model)
                    for v in verdicts]
    verdicts.sort(key=lambda v: (v.finding or 99, v.model == "", v.model))
    used = {v.rule for v in verdicts} | {"health"}
    rules = {**{k: t for k, t in RUN_RULES.items() if k in used}, **{k: t for k, t in RULES.items() if k in used}}
    return VerdictReport(health, verdicts, rules, pruning)


FINDING_OF_RULE = {"segment": 5, "vertical_phones": 7, "diagonal": 8, "vertical": 8, "global": 8}


def _tagged(v: Verdict, name: str) -> Verdict:
    finding = v.finding if v.finding is not None else FINDING_OF_RULE.get(v.rule)
    if v.rule == "global" and "utterance-level" in v.claim:
        finding = 10  # the utterance-level speaker drop is much smaller than the frame-level one
    return Verdict(v.claim, v.paper, v.this_run, v.verdict, v.reason, v.rule, finding, name)


def _renamed(health: Health, name: str):
    from satool.results.verdicts import HealthCheckRow

    return [HealthCheckRow(f"{name}: {c.name}", c.passed, c.detail) for c in health.checks]
