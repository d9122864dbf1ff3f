"""Two map kinds of the same heads compared (docs/maps.md): every metric's values and ranks, the
categories, and each metric's rank correlation between the kinds."""

from __future__ import annotations

import numpy as np

from satool.errors import UsageError
from satool.maps import PER_LAYER, kind_of
from satool.results.maps import MapsSideBySide
from satool.results.metrics import HeadScores


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's rho of two value arrays over the cells finite in both (average ranks for ties)."""
    from scipy.stats import rankdata

    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3:
        return None
    ra, rb = rankdata(a[keep]), rankdata(b[keep])
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def side_by_side(first: HeadScores, second: HeadScores) -> MapsSideBySide:
    """``first``'s and ``second``'s metrics of the same heads (the same layers and heads, two different
    per-head map kinds). A UsageError in one line otherwise."""
    kinds = [kind_of(first.source), kind_of(second.source)]
    if kinds[0] == kinds[1]:
        raise UsageError(f"both metric results are of {kinds[0]} maps: --beside takes results of another map kind "
                         "(to compare models, use 'satool compare')")
    if any(k in PER_LAYER for k in kinds):
        raise UsageError("rollout maps are one per layer, not per head: they have no heads to set beside others")
    if first.layers != second.layers or first.heads != second.heads:
        raise UsageError(f"the two metric results cover different heads (layers {first.layers} / {second.layers}, "
                         f"heads {first.heads} / {second.heads}): extract both kinds with the same --layers/--heads")
    for key in ("sha256", "checkpoint"):
        a, b = first.source.get(key), second.source.get(key)
        if a and b and a != b:
            raise UsageError(f"the two metric results come from different models ({key} {a} / {b})")
    metrics = [m for m in first.values if m in second.values]
    scores = (first, second)
    ranks = [{m: s.rank(m) for m in metrics} for s in scores]
    categories = [s.categories() for s in scores]
    rows = []
    for i, layer in enumerate(first.layers):
        for j, head in enumerate(first.heads):
            row = {"label": f"L{layer}.H{head}", "layer": layer, "head": head}
            for m in metrics:
                for s, kind, rank in zip(scores, kinds, ranks):
                    value = float(s.values[m][i, j])
                    row[f"{m} ({kind})"] = None if not np.isfinite(value) else value
                    row[f"{m} rank ({kind})"] = None if not np.isfinite(value) else int(rank[m][i, j])
            for kind, category in zip(kinds, categories):
                row[f"category ({kind})"] = str(category[i, j])
            row["category changed"] = bool(categories[0][i, j] != categories[1][i, j])
            rows.append(row)
    rho = {m: spearman(first.values[m].ravel(), second.values[m].ravel()) for m in metrics}
    return MapsSideBySide(kinds, metrics, rows, rho, [dict(first.source), dict(second.source)])
