"""Importance ranking by pruning (`satool prune`, docs/science.md §7).

Heads are pruned cumulatively in a metric's own order (``HeadMetric.prune_first``:
highest values first for G, V, D; lowest first for W), at levels 0, k, 2k, ...,
all heads; after each level the probing tasks are trained and scored on the
pruned model's representations. ``random`` orders (several seeds) give the
baseline. Span pruning zeroes every weight with |q - k| > r instead.

Work is shared: one representation pass per distinct configuration (the
unpruned model and the fully pruned one are the same for every order) feeds
every task.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from satool.analysis.probing.passes import Configuration, ProbeData
from satool.analysis.probing.tasks import ProbeSettings, ProbeSplit, ProbeTask, evaluate_tasks
from satool.errors import UsageError

RANDOM = "random"
Head = tuple[int, int]  # (layer, head), 1-based


def levels(total: int, step: int | None = None) -> list[int]:
    """0, k, 2k, ..., total (k = total / 12 rounded, at least 1, by default)."""
    step = max(1, round(total / 12)) if step is None else step
    if step < 1:
        raise UsageError("--step must be >= 1")
    out = list(range(0, total, step))
    return out + [total]


def random_orders(n_layers: int, n_heads: int, seeds: Sequence[int]) -> list[list[Head]]:
    heads = [(layer, head) for layer in range(1, n_layers + 1) for head in range(1, n_heads + 1)]
    return [[heads[i] for i in np.random.default_rng(seed).permutation(len(heads))] for seed in seeds]


@dataclass
class SweepPlan:
    """Which heads to prune, in which order, for each ``--by`` name (random: one order per seed)."""

    orders: dict[str, list[list[Head]]]
    levels: list[int]
    seeds: dict[str, list[int | None]] = field(default_factory=dict)


def plan(by: Sequence[str], scores, n_layers: int, n_heads: int, *, step: int | None = None,
         random_seeds: Sequence[int] = (0, 1, 2)) -> SweepPlan:
    """Pruning orders from metric results (``HeadScores``) and the level grid."""
    orders: dict[str, list[list[Head]]] = {}
    seeds: dict[str, list[int | None]] = {}
    for name in by:
        if name == RANDOM:
            orders[name] = random_orders(n_layers, n_heads, random_seeds)
            seeds[name] = list(random_seeds)
            continue
        if scores is None or name not in scores.values:
            raise UsageError(f"no {name!r} values: run 'satool metric --by {name}' first (or pass --metrics DIR)")
        if len(scores.layers) != n_layers or len(scores.heads) != n_heads:
            raise UsageError(
                f"the metric results cover {len(scores.layers)} x {len(scores.heads)} heads but the model has "
                f"{n_layers} x {n_heads}: extract and score all heads of this model"
            )
        orders[name] = [scores.pruning_order(name)]
        seeds[name] = [None]
    return SweepPlan(orders, levels(n_layers * n_heads, step), seeds)


class RepresentationStore:
    """Representation passes over a train and a test :class:`ProbeData`, one per distinct configuration.

    The unpruned and the fully pruned configurations (the same for every order)
    are kept; others are recomputed if asked again after ``keep`` newer ones.
    """

    def __init__(self, train: ProbeData, test: ProbeData, *, keep: int = 2):
        self.train, self.test = train, test
        self._kept: dict[str, tuple[ProbeSplit, ProbeSplit]] = {}
        self._recent: dict[str, tuple[ProbeSplit, ProbeSplit]] = {}
        self.keep = keep
        self.passes = 0

    def get(self, configuration: Configuration, *, permanent: bool = False) -> tuple[ProbeSplit, ProbeSplit]:
        key = configuration.key
        for store in (self._kept, self._recent):
            if key in store:
                return store[key]
        pair = (self.train.represent(configuration), self.test.represent(configuration))
        self.passes += 1
        target = self._kept if permanent else self._recent
        if not permanent and len(self._recent) >= self.keep:
            self._recent.pop(next(iter(self._recent)))
        target[key] = pair
        return pair


def sweep_heads(store: RepresentationStore, sweep: SweepPlan, tasks: Sequence[ProbeTask], *, seed: int = 0,
                settings: ProbeSettings | None = None, state: int = -1, device: str = "cpu",
                on_level: Callable[[str, int], None] | None = None) -> list[dict[str, Any]]:
    """Rows (by, order_seed, level, pruned, task, score, chance, ...) for every order and level."""
    settings = settings or ProbeSettings()
    n_layers, n_heads = store.train.model.num_layers, store.train.model.num_heads
    total = n_layers * n_heads
    rows: list[dict[str, Any]] = []
    scored: dict[str, list[dict[str, Any]]] = {}  # identical configurations are scored once
    for name, orders in sweep.orders.items():
        for order_seed, order in zip(sweep.seeds[name], orders):
            for level_index, level in enumerate(sweep.levels):
                config = Configuration.pruned(n_layers, n_heads, order[:level], state)
                if config.key not in scored:
                    train, test = store.get(config, permanent=level in (0, total))
                    scored[config.key] = evaluate_tasks(tasks, train, test, seed=seed, settings=settings,
                                                        device=device)
                for result in scored[config.key]:
                    rows.append({"by": name, "order_seed": order_seed, "level": level_index, "pruned": level,
                                 "pruned_fraction": level / total, **result})
                if on_level is not None:
                    on_level(name, level)
    return rows


def sweep_spans(store: RepresentationStore, spans: Sequence[int | None], tasks: Sequence[ProbeTask], *,
                seed: int = 0, settings: ProbeSettings | None = None, state: int = -1,
                device: str = "cpu") -> list[dict[str, Any]]:
    """Rows (span, task, score, ...) for each attention span r (None = no limit)."""
    settings = settings or ProbeSettings()
    rows = []
    for span in spans:
        train, test = store.get(Configuration(None, span, state))
        for result in evaluate_tasks(tasks, train, test, seed=seed, settings=settings, device=device):
            rows.append({"span": "none" if span is None else span, **result})
    return rows


def pruning_figure(rows: Sequence[dict[str, Any]], path: Path, total_heads: int) -> Path:
    """Paper Fig. 5: one panel per task, score against heads pruned, one curve per order (random: mean +- sd)."""
    from satool.output.figures import figure

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    names = list(dict.fromkeys(r["by"] for r in rows))
    with figure(path, size=(4.3 * len(tasks), 3.8), ncols=len(tasks)) as (fig, axes):
        axes = np.atleast_1d(axes)
        for ax, task in zip(axes, tasks):
            chance = None
            for name in names:
                sel = [r for r in rows if r["task"] == task and r["by"] == name]
                pruned = sorted({r["pruned"] for r in sel})
                values = [[r["score"] for r in sel if r["pruned"] == p] for p in pruned]
                mean = np.array([np.mean(v) for v in values])
                style = {"ls": "--", "color": "gray"} if name == RANDOM else {}
                ax.plot(pruned, mean, marker="o", ms=3, label=name, **style)
                if name == RANDOM and max(len(v) for v in values) > 1:
                    sd = np.array([np.std(v) for v in values])
                    ax.fill_between(pruned, mean - sd, mean + sd, color="gray", alpha=0.2)
                chance = sel[0]["chance"] if sel else chance
            if chance is not None and np.isfinite(chance):
                ax.axhline(chance, color="black", lw=0.8, ls=":", label="chance")
            first = next(r for r in rows if r["task"] == task)
            ax.set_title(task)
            ax.set_xlabel(f"heads pruned (of {total_heads})")
            ax.set_ylabel(f"{first['score_name']} ({'higher' if first['higher_is_better'] else 'lower'} is better)")
        axes[0].legend(fontsize=7)
        fig.suptitle("Pruning heads in each metric's order", fontsize=10)
    return path


def span_figure(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Score against attention span r (one panel per task)."""
    from satool.output.figures import figure

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    with figure(path, size=(4.3 * len(tasks), 3.8), ncols=len(tasks)) as (fig, axes):
        axes = np.atleast_1d(axes)
        for ax, task in zip(axes, tasks):
            sel = [r for r in rows if r["task"] == task]
            finite = [r for r in sel if r["span"] != "none"]
            ax.plot([r["span"] for r in finite], [r["score"] for r in finite], marker="o", ms=3, label="span r")
            full = [r for r in sel if r["span"] == "none"]
            if full:
                ax.axhline(full[0]["score"], color="tab:green", lw=1, label="no limit")
            ax.axhline(sel[0]["chance"], color="black", lw=0.8, ls=":", label="chance")
            ax.set_xscale("symlog", linthresh=1)
            ax.set_title(task)
            ax.set_xlabel("attention span r (steps)")
            ax.set_ylabel(sel[0]["score_name"])
        axes[0].legend(fontsize=7)
    return path


def globalness_vs_weight(scores, path: Path, first: int) -> tuple[Path, list[dict[str, Any]]]:
    """Paper Fig. 6: every head's position in the globalness and in the weight pruning order.

    The first ``first`` heads of each order are marked. Returns the figure and
    its rows (label, position by globalness, position by weight).
    """
    from satool.output.figures import figure

    by_g = {h: i + 1 for i, h in enumerate(scores.pruning_order("globalness"))}
    by_w = {h: i + 1 for i, h in enumerate(scores.pruning_order("weight"))}
    heads = list(by_g)
    rows = [{"layer": h[0], "head": h[1], "label": f"L{h[0]}.H{h[1]}", "position_by_globalness": by_g[h],
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


def save_sweep(rows: Sequence[dict[str, Any]], out: Path, *, total_heads: int, spans: bool = False, scores=None,
               first: int | None = None) -> dict[str, Path]:
    """Write a sweep's rows (CSV + JSON) and figures: Fig. 5 (or the span curves) and, with metric
    results that have globalness and weight, Fig. 6 (+ its CSV)."""
    from satool.output.tables import write_csv, write_json

    stem = "span" if spans else "prune"
    paths = {"csv": write_csv(out / f"{stem}_results.csv", rows), "json": write_json(out / f"{stem}_results.json", rows)}
    if spans:
        paths["figure"] = span_figure(rows, out / "span_curves.png")
        return paths
    paths["figure"] = pruning_figure(rows, out / "prune_curves.png", total_heads)
    if scores is not None and {"globalness", "weight"} <= set(scores.values):
        paths["fig6"], fig6_rows = globalness_vs_weight(scores, out / "globalness_vs_weight.png", first or 1)
        paths["fig6_csv"] = write_csv(out / "globalness_vs_weight.csv", fig6_rows)
    return paths
