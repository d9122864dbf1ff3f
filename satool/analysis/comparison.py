"""Several models side by side (`satool compare`, the demo's M3 / M6 / M9 study).

Every table compares the same measurement across models, with its noise beside it: bootstrap
replicates over utterances for head metrics and offsets (accumulated by the metric pass), paired
bootstraps over test utterances for probe scores and segmentation, the spread of random pruning
orders for pruning. The verdicts on the paper's comparative findings read these tables
(:mod:`satool.analysis.study_verdicts`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from satool.heads import label
from satool.results.metrics import LOCAL_RATIO, HeadScores, locality
from satool.results.study import Comparison, Study

RESAMPLES = 1000  # paired bootstrap resamples over test utterances


def compare(study: Study, curves: dict[str, Any] | None = None) -> Comparison:
    """Every table of a study (``curves``: run name -> its TrainingCurves, when known)."""
    models = [{"name": r.name, "mask_span": s, "directory": str(r.directory),
               "healthy": None} for r, s in zip(study.runs, study.spans)]
    tables = {"heads": [], "categories": [], "segmentation": [], "probes": [], "pruning": [], "spans": [],
              "masked_queries": [], "training": []}
    for run, span in zip(study.runs, study.spans):
        tag = {"model": run.name, "mask_span": span}
        if run.metrics is not None:
            tables["heads"] += [{**tag, **row} for row in head_rows(run.metrics)]
            tables["categories"] += [{**tag, **row} for row in category_rows(run.metrics)]
        if run.segment is not None:
            tables["segmentation"] += [{**tag, **row} for row in segmentation_rows(run.segment)]
        if run.probe is not None:
            tables["probes"] += [{**tag, **row} for row in probe_rows(run.probe)]
        if run.prune is not None:
            from satool.analysis.verdicts import PruneCurves

            tables["pruning"] += [{**tag, **row} for row in PruneCurves(run.prune).table((1 / 6, 1 / 3, 1 / 2, 2 / 3))]
        if run.spans is not None:
            tables["spans"] += [{**tag, **row} for row in span_rows(run.spans)]
        if run.health is not None and run.health.profiles and run.metrics is not None:
            tables["masked_queries"] += [{**tag, **row} for row in masked_query_rows(run.health, run.metrics)]
        if curves and curves.get(run.name) is not None:
            tables["training"] += [{**tag, **row} for row in training_rows(curves[run.name])]
    return Comparison(models, tables)


# ---------------------------------------------------------------------------
# heads


def replicate_locality(scores: HeadScores) -> tuple[np.ndarray, np.ndarray] | None:
    """(ratio, favourite offset), each ``[replicate, layer, head]``, from the bootstrap replicates."""
    if scores.bootstrap_offset_profile is None:
        return None
    return locality(scores.bootstrap_offset_profile)


def head_rows(scores: HeadScores) -> list[dict[str, Any]]:
    """Every head: category, locality (with its 95 % bootstrap interval), signed favourite offset in
    steps and ms, and the share of bootstrap replicates whose favourite offset is not 0."""
    local = scores.locality()
    if local is None:
        return []
    ratio, offset = local
    boot = replicate_locality(scores)
    categories = scores.categories()
    step_ms = None if scores.step_s is None else 1000 * scores.step_s
    rows = []
    for i, layer in enumerate(scores.layers):
        for j, head in enumerate(scores.heads):
            row = {"label": label(layer, head), "layer": layer, "head": head, "category": categories[i, j],
                   "locality": _float(ratio[i, j]), "local": bool(ratio[i, j] >= LOCAL_RATIO),
                   "favourite_offset_steps": int(offset[i, j]),
                   "favourite_offset_ms": None if step_ms is None else round(int(offset[i, j]) * step_ms, 3)}
            if boot is not None:
                low, high = np.nanpercentile(boot[0][:, i, j], [2.5, 97.5])
                row.update(locality_low=_float(low), locality_high=_float(high),
                           nonzero_offset_share=float(np.mean(boot[1][:, i, j] != 0)))
            rows.append(row)
    return rows


def mean_abs_shift_ms(scores: HeadScores) -> tuple[float, np.ndarray | None, int]:
    """(mean |favourite offset| in ms over the local heads, the same per bootstrap replicate (local
    heads chosen on the full corpus), number of local heads). NaN without local heads."""
    local = scores.locality()
    step_ms = 1000 * (scores.step_s or 0.0)
    if local is None or not step_ms:
        return float("nan"), None, 0
    focused = local[0] >= LOCAL_RATIO
    if not focused.any():
        return float("nan"), None, 0
    shift = float(np.mean(np.abs(local[1][focused]))) * step_ms
    boot = replicate_locality(scores)
    replicates = None if boot is None else np.abs(boot[1][:, focused]).mean(axis=1) * step_ms
    return shift, replicates, int(focused.sum())


def category_counts(categories: np.ndarray) -> dict[str, int]:
    return {name: int(np.sum(categories == name)) for name in ("global", "vertical", "diagonal")}


def category_rows(scores: HeadScores) -> list[dict[str, Any]]:
    """Category counts per layer, and over all layers with 95 % bootstrap intervals."""
    categories = scores.categories()
    rows = [{"layer": layer, **category_counts(categories[i])} for i, layer in enumerate(scores.layers)]
    total = {"layer": "all", **category_counts(categories)}
    replicates = scores.replicate_categories()
    if replicates is not None:
        counts = [category_counts(c) for c in replicates]
        for name in ("global", "vertical", "diagonal"):
            low, high = np.percentile([c[name] for c in counts], [2.5, 97.5])
            total[f"{name}_low"], total[f"{name}_high"] = float(low), float(high)
    return rows + [total]


def replicate_counts(scores: HeadScores, name: str) -> np.ndarray | None:
    """``[replicate]``: how many heads fall in category ``name`` in each bootstrap replicate."""
    replicates = scores.replicate_categories()
    return None if replicates is None else np.array([np.sum(c == name) for c in replicates], float)


def layer_dependence(categories: np.ndarray, *, permutations: int = 2000, seed: int = 0) -> tuple[float, float]:
    """(chi-square statistic of the layer x category table, permutation p-value): do categories
    gather in some layers? (categories shuffled over heads keep each layer's size and each category's)."""
    names = ["global", "vertical", "diagonal"]

    def statistic(table: np.ndarray) -> float:
        counts = np.array([[np.sum(row == n) for n in names] for row in table], float)
        expected = counts.sum(1, keepdims=True) * counts.sum(0, keepdims=True) / max(counts.sum(), 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return float(np.nansum(np.where(expected > 0, (counts - expected) ** 2 / expected, 0.0)))

    observed = statistic(categories)
    rng = np.random.default_rng(seed)
    flat = categories.ravel()
    null = [statistic(rng.permutation(flat).reshape(categories.shape)) for _ in range(permutations)]
    return observed, float((1 + np.sum(np.array(null) >= observed)) / (1 + permutations))


# ---------------------------------------------------------------------------
# segmentation, probes, pruning, spans


def segmentation_rows(results) -> list[dict[str, Any]]:
    """MFCC, log-Mel, the chosen head and hidden state: strict R-value (x100) and the difference to
    MFCC with its 95 % paired bootstrap interval over test utterances."""
    from satool.analysis.verdicts import bootstrap_difference

    mfcc = results.source("mfcc")
    rows = []
    for kind, name in (("mfcc", "mfcc"), ("log-Mel", "mel"), ("best head", results.best_head),
                       ("best hidden state", results.best_hidden)):
        source = results.source(name)
        if source is None:
            continue
        row = {"source": kind, "label": source.source, "r_value": 100 * source.strict["r_value"]}
        if mfcc is not None and source is not mfcc and source.per_utterance and mfcc.per_utterance:
            diff, low, high = bootstrap_difference(source.per_utterance, mfcc.per_utterance)
            row.update(vs_mfcc=100 * diff, vs_mfcc_low=100 * low, vs_mfcc_high=100 * high)
        rows.append(row)
    return rows


def probe_rows(results) -> list[dict[str, Any]]:
    return [{"representation": r.representation, "layer": r.layer if r.is_model else None, "task": r.task,
             "score": r.score.score, "chance": r.score.chance, "measure": r.score.score_name}
            for r in results.rows]


def paired_accuracy_difference(a: Sequence[tuple[int, int]], b: Sequence[tuple[int, int]], *,
                               resamples: int = RESAMPLES, seed: int = 0,
                               level: float = 0.95) -> tuple[float, float, float]:
    """accuracy(a) - accuracy(b) on the same test utterances (``(correct, scored)`` each), with its
    ``level`` paired bootstrap interval over utterances."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or not len(a):
        raise ValueError("per-utterance counts of both scores over the same utterances are needed")

    def accuracy(counts):
        return counts[..., 0].sum(-1) / np.maximum(counts[..., 1].sum(-1), 1)

    diff = float(accuracy(a) - accuracy(b))
    picks = np.random.default_rng(seed).integers(0, len(a), size=(resamples, len(a)))
    samples = accuracy(a[picks]) - accuracy(b[picks])
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(samples, [tail, 100 - tail])
    return diff, float(low), float(high)


def span_rows(sweep) -> list[dict[str, Any]]:
    """Each span's score and its difference to no limit, with a 95 % paired bootstrap interval over
    test utterances (when the task counted per utterance)."""
    rows = []
    for task in sweep.tasks:
        full = next((r.score for r in sweep.rows if r.task == task and r.span is None), None)
        for r in sweep.rows:
            if r.task != task or r.span is None:
                continue
            row = {"task": task, "span": r.span, "score": r.score.score, "chance": r.score.chance,
                   "no_limit": None if full is None else full.score}
            if full is not None and r.score.per_utterance and full.per_utterance:
                diff, low, high = paired_accuracy_difference(r.score.per_utterance, full.per_utterance)
                row.update(vs_no_limit=diff, vs_no_limit_low=low, vs_no_limit_high=high)
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------
# where the local heads look under pre-training masks, and during training


def masked_query_rows(health, scores: HeadScores, top: int = 6) -> list[dict[str, Any]]:
    """The ``top`` heads most local on clean input (and every local one): favourite offset (steps, ms)
    and its weight (x uniform) on clean input, and under pre-training masks for masked and for
    unmasked queries, with the weight each puts on its own step (offset 0)."""
    step_ms = None if scores.step_s is None else 1000 * scores.step_s
    clean = health.profiles.get("clean")
    if clean is None:
        return []
    ratio, _ = locality(clean)
    order = np.argsort(-np.where(np.isfinite(ratio), ratio, -np.inf).ravel(), kind="stable")
    chosen = [int(f) for k, f in enumerate(order) if k < top or ratio.ravel()[f] >= LOCAL_RATIO]
    middle = (clean.shape[-1] - 1) // 2
    rows = []
    for flat in chosen:
        i, j = divmod(flat, clean.shape[1])
        row = {"label": label(i + 1, j + 1)}
        for kind in ("clean", "masked_queries", "unmasked_queries"):
            profile = health.profiles.get(kind)
            if profile is None:
                continue
            weight, offset = locality(profile[i, j])
            row[f"{kind}_offset_steps"] = int(offset)
            row[f"{kind}_offset_ms"] = None if step_ms is None else round(int(offset) * step_ms, 3)
            row[f"{kind}_weight"] = _float(weight)
            row[f"{kind}_weight_at_0"] = _float(profile[i, j, middle])
        rows.append(row)
    return rows


def training_rows(curves, top: int = 4) -> list[dict[str, Any]]:
    """The ``top`` heads most local at the last held-out check, at every check: locality and signed
    favourite offset (steps, ms)."""
    checks = sorted(curves.head_checks, key=lambda c: c["step"])
    if not checks:
        return []
    last = np.asarray(checks[-1]["locality"], float)
    order = np.argsort(-np.where(np.isfinite(last), last, -np.inf).ravel(), kind="stable")[:top]
    rows = []
    for check in checks:
        local = np.asarray(check["locality"], float)
        offset = np.asarray(check["favourite_offset"], int)
        for flat in order:
            i, j = divmod(int(flat), last.shape[1])
            rows.append({"step": int(check["step"]), "label": label(i + 1, j + 1), "locality": _float(local[i, j]),
                         "favourite_offset_steps": int(offset[i, j]),
                         "favourite_offset_ms": None if curves.step_ms is None else
                         round(int(offset[i, j]) * curves.step_ms, 3)})
    return rows


def _float(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def heads_that_matter(scores: HeadScores, share: float = 1 / 6, most: int = 4) -> list[tuple[int, int]]:
    """The heads whose phone relation maps a study shows: those among the first ``share`` pruned by
    weight but not by globalness (paper Fig. 6; at most ``most``), and the most local head."""
    chosen: list[tuple[int, int]] = []
    if {"globalness", "weight"} <= set(scores.values):
        k = max(1, round(share * len(scores.layers) * len(scores.heads)))
        by_global = set(scores.pruning_order("globalness")[:k])
        chosen = [h for h in scores.pruning_order("weight")[:k] if h not in by_global][:most]
    local = scores.locality()
    if local is not None:
        top = scores.top(local[0], 1)[0]
        if top not in chosen:
            chosen.append(top)
    return chosen


def layer_rows(results) -> list[dict[str, Any]]:
    """Per accuracy task: the best layer, and the best layer against the best input feature with a 95 %
    paired bootstrap interval over test utterances (does any layer beat the input features?)."""
    rows = []
    for summary in results.best_layers():
        task = summary["task"]
        best = next(r for r in results.rows if r.is_model and r.task == task and r.layer == summary["best_layer"])
        row = {"task": task, "best_layer": summary["best_layer"], "score": summary["score"],
               "best_input": summary["best_input"], "input_score": summary["input_score"],
               "scores_by_layer": ", ".join(f"{layer}: {100 * s:.1f}" for layer, s in summary["layers"].items())}
        top = next((r for r in results.input_rows() if r.task == task and r.representation == summary["best_input"]),
                   None)
        if top is not None and best.score.per_utterance and top.score.per_utterance \
                and len(best.score.per_utterance) == len(top.score.per_utterance):
            diff, low, high = paired_accuracy_difference(best.score.per_utterance, top.score.per_utterance)
            row.update(vs_input=diff, vs_input_low=low, vs_input_high=high,
                       beats_input="yes" if low > 0 else "no" if high < 0 else "within the noise")
        rows.append(row)
    return rows
