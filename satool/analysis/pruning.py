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

import numpy as np

from satool.analysis.probing.passes import Configuration, ProbeData
from satool.analysis.probing.tasks import (
    ProbeScore,
    ProbeSettings,
    ProbeSplit,
    ProbeTask,
    evaluate_tasks,
)
from satool.errors import UsageError
from satool.results.prune import RANDOM, PruneRow, PruneSweep, SpanRow, SpanSweep

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
                on_level: Callable[[str, int], None] | None = None) -> PruneSweep:
    """A probe score for every order, level and task."""
    settings = settings or ProbeSettings()
    n_layers, n_heads = store.train.model.num_layers, store.train.model.num_heads
    total = n_layers * n_heads
    rows: list[PruneRow] = []
    scored: dict[str, list[ProbeScore]] = {}  # identical configurations are scored once
    for name, orders in sweep.orders.items():
        for order_seed, order in zip(sweep.seeds[name], orders):
            for level_index, level in enumerate(sweep.levels):
                config = Configuration.pruned(n_layers, n_heads, order[:level], state)
                if config.key not in scored:
                    train, test = store.get(config, permanent=level in (0, total))
                    scored[config.key] = evaluate_tasks(tasks, train, test, seed=seed, settings=settings,
                                                        device=device)
                rows += [PruneRow(name, order_seed, level_index, level, level / total, score)
                         for score in scored[config.key]]
                if on_level is not None:
                    on_level(name, level)
    return PruneSweep(rows)


def sweep_spans(store: RepresentationStore, spans: Sequence[int | None], tasks: Sequence[ProbeTask], *,
                seed: int = 0, settings: ProbeSettings | None = None, state: int = -1,
                device: str = "cpu") -> SpanSweep:
    """A probe score for each attention span r (None = no limit) and task."""
    settings = settings or ProbeSettings()
    rows = []
    for span in spans:
        train, test = store.get(Configuration(None, span, state))
        rows += [SpanRow(span, score) for score in evaluate_tasks(tasks, train, test, seed=seed, settings=settings,
                                                                  device=device)]
    return SpanSweep(rows)
