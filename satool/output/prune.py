"""Figures of pruning results: paper Fig. 5 (score against heads pruned, one curve per order, the
random orders as mean +- sd), the span curves (paper sec. 7.2) and paper Fig. 6 (every head's
position in the globalness and in the weight order), each with its data beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from satool.heads import label as head_label
from satool.output.figures import figure
from satool.results.files import write_csv
from satool.results.metrics import HeadScores
from satool.results.prune import RANDOM, PruneSweep, SpanSweep


def draw_sweep(sweep: PruneSweep, out: Path, *, total_heads: int, scores: HeadScores | None = None,
               first: int | None = None) -> dict[str, Path]:
    """prune_curves.png and, with metric results that have globalness and weight,
    globalness_vs_weight.png/.csv (Fig. 6; ``first``: heads marked as pruned first)."""
    paths = {"figure": pruning_figure(sweep, out / "prune_curves.png", total_heads)}
    if scores is not None and {"globalness", "weight"} <= set(scores.values):
        paths["fig6"], rows = globalness_vs_weight(scores, out / "globalness_vs_weight.png", first or 1)
        paths["fig6_csv"] = write_csv(out / "globalness_vs_weight.csv", rows)
    return paths


def pruning_figure(sweep: PruneSweep, path: Path, total_heads: int) -> Path:
    """Paper Fig. 5: one panel per task, score against heads pruned, one curve per order."""
    tasks = sweep.tasks
    with figure(path, size=(4.3 * len(tasks), 3.8), ncols=len(tasks)) as (fig, axes):
        axes = np.atleast_1d(axes)
        for ax, task in zip(axes, tasks):
            for name in sweep.orders:
                pruned = sorted({r.pruned for r in sweep.rows if r.task == task and r.by == name})
                values = [sweep.scores(name, task, p) for p in pruned]
                mean = np.array([np.mean(v) for v in values])
                style = {"ls": "--", "color": "gray"} if name == RANDOM else {}
                ax.plot(pruned, mean, marker="o", ms=3, label=name, **style)
                if name == RANDOM and max(len(v) for v in values) > 1:
                    sd = np.array([np.std(v) for v in values])
                    ax.fill_between(pruned, mean - sd, mean + sd, color="gray", alpha=0.2)
            first = sweep.first(task)
            if np.isfinite(first.chance):
                ax.axhline(first.chance, color="black", lw=0.8, ls=":", label="chance")
            ax.set_title(task)
            ax.set_xlabel(f"heads pruned (of {total_heads})")
            ax.set_ylabel(f"{first.score_name} ({'higher' if first.higher_is_better else 'lower'} is better)")
        axes[0].legend(fontsize=7)
        fig.suptitle("Pruning heads in each metric's order", fontsize=10)
    return path


def draw_spans(sweep: SpanSweep, out: Path) -> dict[str, Path]:
    """span_curves.png: score against attention span r (one panel per task)."""
    path = out / "span_curves.png"
    tasks = sweep.tasks
    with figure(path, size=(4.3 * len(tasks), 3.8), ncols=len(tasks)) as (fig, axes):
        axes = np.atleast_1d(axes)
        for ax, task in zip(axes, tasks):
            rows = [r for r in sweep.rows if r.task == task]
            finite = [r for r in rows if r.span is not None]
            ax.plot([r.span for r in finite], [r.score.score for r in finite], marker="o", ms=3, label="span r")
            full = sweep.score(task, None)
            if full is not None:
                ax.axhline(full, color="tab:green", lw=1, label="no limit")
            ax.axhline(rows[0].score.chance, color="black", lw=0.8, ls=":", label="chance")
            ax.set_xscale("symlog", linthresh=1)
            ax.set_title(task)
            ax.set_xlabel("attention span r (steps)")
            ax.set_ylabel(rows[0].score.score_name)
        axes[0].legend(fontsize=7)
    return {"figure": path}


def globalness_vs_weight(scores: HeadScores, path: Path, first: int) -> tuple[Path, list[dict[str, Any]]]:
    """Paper Fig. 6: every head's position in the globalness and in the weight pruning order; the
    first ``first`` heads of each order are marked. Returns the figure and its rows."""
    by_g = {h: i + 1 for i, h in enumerate(scores.pruning_order("globalness"))}
    by_w = {h: i + 1 for i, h in enumerate(scores.pruning_order("weight"))}
    heads = list(by_g)
    rows = [{"layer": h[0], "head": h[1], "label": head_label(*h), "position_by_globalness": by_g[h],
             "position_by_weight": by_w[h]} for h in heads]
    with figure(path, size=(5.2, 5)) as (fig, ax):
        x = np.array([by_g[h] for h in heads])
        y = np.array([by_w[h] for h in heads])
        ax.scatter(x, y, s=14, color="lightgray", label="all heads")
        g_first, w_first = x <= first, y <= first
        ax.scatter(x[g_first], y[g_first], s=30, color="tab:red", label=f"first {first} pruned by globalness")
        ax.scatter(x[w_first], y[w_first], s=30, facecolor="none", edgecolor="tab:blue", linewidth=1.5,
                   label=f"first {first} pruned by weight")
        ax.set_xlabel("position in the globalness order (1 = pruned first)")
        ax.set_ylabel("position in the weight order (1 = pruned first)")
        shared = int(np.sum(g_first & w_first))
        ax.set_title(f"Globalness vs weight order: {shared} of the first {first} heads in common", fontsize=10)
        ax.legend(fontsize=7)
    return path, rows
