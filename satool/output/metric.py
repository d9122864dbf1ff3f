"""Figures of metric results (``satool metric``): the head distribution (paper Fig. 1), attention maps
of the top heads per metric on one example utterance, and the offset profiles of the most local and
the most diagonal heads, each with its data beside it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from satool.heads import label as head_label
from satool.output import figures
from satool.results.files import finite_or_none, write_csv
from satool.results.metrics import HeadScores


def draw(scores: HeadScores, out_dir: str | Path, example: np.ndarray | None, *, k: int = 4,
         step_s: float | None = None) -> dict[str, Path]:
    """head_distribution.png, offset_profiles.png/.csv, weight_histograms.png/.csv and, with ``example`` (the maps
    ``attn[layer, head, query, key]`` of ``scores.example``), top_heads.png + top_heads.npz (the maps
    drawn). ``step_s``: seconds per model step (axes in seconds)."""
    from satool.maps import ATTENTION, kind_of

    out = Path(out_dir)
    kind = kind_of(scores.source)
    of_kind = "" if kind == ATTENTION else f" ({kind} maps)"  # figures of other map kinds say which
    paths = {"distribution": figures.head_distribution(scores, out / "head_distribution.png")}
    local = scores.locality()
    if local is not None:
        ranked = scores.top(local[0], k)
        if "diagonality" in scores.values:
            ranked += [h for h in scores.top("diagonality", k) if h not in ranked]
        index = [scores.index(*h) for h in ranked]
        rows = np.array([scores.offset_profile[i, j] for i, j in index])
        labels = [f"{head_label(*h)} ({local[0][i, j]:.1f}x at {int(local[1][i, j]):+d})"
                  for h, (i, j) in zip(ranked, index)]
        paths["offset_profiles"] = figures.offset_profiles(
            rows, labels, out / "offset_profiles.png", step_s=step_s,
            title=f"Offset profiles of the {k} most local and the {k} most diagonal heads{of_kind}")
        max_offset = (scores.offset_profile.shape[-1] - 1) // 2
        paths["offset_profiles_csv"] = write_csv(out / "offset_profiles.csv", [
            {"label": head_label(*h), "offset_steps": d - max_offset,
             "offset_s": None if step_s is None else round((d - max_offset) * step_s, 6),
             "weight_vs_uniform": finite_or_none(scores.offset_profile[i, j, d])}
            for h, (i, j) in zip(ranked, index) for d in range(scores.offset_profile.shape[-1])])
    if scores.weight_histogram is not None:
        paths.update(_weight_histograms(scores, out, of_kind))
    if example is not None:
        rows_by_metric: dict[str, list] = {}
        arrays: dict[str, np.ndarray] = {}
        for name in scores.values:
            items = []
            for layer, head in scores.top(name, k):
                i, j = scores.index(layer, head)
                items.append((head_label(layer, head), example[i, j]))
                arrays[f"{name}/{head_label(layer, head)}"] = example[i, j]
            rows_by_metric[f"top {name}"] = items
        paths["top_heads"] = figures.attention_grid(
            rows_by_metric, out / "top_heads.png", f"Top {k} heads per metric, utterance {scores.example}{of_kind}",
            step_s=step_s)
        np.savez_compressed(out / "top_heads.npz", utterance=np.array(scores.example), **arrays)
        paths["top_heads_npz"] = out / "top_heads.npz"
    return paths


def _weight_histograms(scores: HeadScores, out: Path, of_kind: str) -> dict[str, Path]:
    """weight_histograms.png and .csv: every head's share of weights per power of two over the corpus."""
    from satool.results.metrics import HISTOGRAM_LOWER_EDGES as LOWER_EDGES
    from satool.results.metrics import histogram_shares as fractions

    labels = [head_label(layer, head) for layer in scores.layers for head in scores.heads]
    counts = scores.weight_histogram.reshape(len(labels), -1)
    shares = fractions(counts)
    png = figures.weight_histograms(shares, labels, out / "weight_histograms.png",
                                    title=f"Attention weights per power of two, {scores.utterances} utterances{of_kind}")
    csv = write_csv(out / "weight_histograms.csv", [
        {"label": name, "bin": b, "lower_edge": float(LOWER_EDGES[b]), "count": int(counts[h, b]),
         "share": finite_or_none(shares[h, b])}
        for h, name in enumerate(labels) for b in range(len(LOWER_EDGES))])
    return {"weight_histograms": png, "weight_histograms_csv": csv}
