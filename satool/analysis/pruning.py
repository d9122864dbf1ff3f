"""Importance ranking by pruning (`satool prune`, docs/science.md §7).

Heads are pruned cumulatively in a metric's own order (``HeadMetric.prune_first``:
highest values first for G, V, D; lowest first for W), at levels 0, k, 2k, ...,
all heads; after each level the probing tasks are trained and scored on the
pruned model's representations. ``random`` orders (several seeds) give the
baseline. Span pruning zeroes every weight with |q - k| > r instead.

Work is shared: every distinct configuration (the unpruned model and the fully
pruned one are the same for every order) is represented once, pruned
configurations run side by side in one batch, and the probes of one task on
every configuration train together as one group
(:func:`~satool.analysis.probing.tasks.evaluate_grouped`). The scores are those
of representing and training one configuration at a time (the tests check it).
Memory is bounded: configurations are taken in chunks whose hidden states fit
``memory_bytes``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from satool.analysis.probing.passes import Configuration, ProbeData
from satool.analysis.probing.tasks import ProbeScore, ProbeSettings, ProbeTask, evaluate_grouped
from satool.errors import UsageError
from satool.results.prune import RANDOM, PruneRow, PruneSweep, SpanRow, SpanSweep

Head = tuple[int, int]  # (layer, head), 1-based


def levels(total: int, step: int | None = None, chosen: Sequence[int] | None = None) -> list[int]:
    """0, k, 2k, ..., total (k = total / 12 rounded, at least 1, by default); or the ``chosen`` numbers of
    heads, sorted, with 0 (the unpruned model every order starts from) added."""
    if chosen is not None:
        bad = [n for n in chosen if not 0 <= n <= total]
        if bad:
            raise UsageError(f"--levels {bad[0]}: a level is a number of heads from 0 to {total}")
        return sorted({0, *chosen})
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
         random_seeds: Sequence[int] = (0, 1, 2), chosen_levels: Sequence[int] | None = None) -> SweepPlan:
    """Pruning orders from metric results (``HeadScores``) and the level grid (every ``step`` heads, or
    ``chosen_levels``)."""
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
    return SweepPlan(orders, levels(n_layers * n_heads, step, chosen_levels), seeds)


def distinct(configurations: Sequence[Configuration]) -> list[Configuration]:
    """Each configuration once, in the order first met."""
    return list({c.key: c for c in configurations}.values())


def score_configurations(data: tuple[ProbeData, ProbeData], configurations: Sequence[Configuration],
                         tasks: Sequence[ProbeTask], *, seed: int, settings: ProbeSettings, device: str = "cpu",
                         memory_bytes: int = 4 << 30, progress: Callable[[int], None] | None = None
                         ) -> dict[str, list[ProbeScore]]:
    """Every task's score on every configuration (keyed by :attr:`Configuration.key`): chunks of
    configurations are represented together and their probes trained together. ``progress(1)`` per
    probe finished and per configuration represented."""
    train, test = data
    unique = distinct(configurations)
    per_configuration = max(1, train.hidden_bytes() + test.hidden_bytes())
    chunk = max(1, memory_bytes // per_configuration)
    scored: dict[str, list[ProbeScore]] = {}
    for start in range(0, len(unique), chunk):
        part = unique[start:start + chunk]
        pairs = list(zip(train.represent_many(part), test.represent_many(part)))
        if progress is not None:
            progress(len(part))
        for config, scores in zip(part, evaluate_grouped(tasks, pairs, seed=seed, settings=settings, device=device,
                                                         progress=progress)):
            scored[config.key] = scores
        del pairs
    return scored


def sweep_heads(data: tuple[ProbeData, ProbeData], sweep: SweepPlan, tasks: Sequence[ProbeTask], *, seed: int = 0,
                settings: ProbeSettings | None = None, state: int = -1, device: str = "cpu",
                memory_bytes: int = 4 << 30, progress: Callable[[int], None] | None = None) -> PruneSweep:
    """A probe score for every order, level and task (``data``: the train and test ProbeData)."""
    settings = settings or ProbeSettings()
    n_layers, n_heads = data[0].model.num_layers, data[0].model.num_heads
    total = n_layers * n_heads
    points = [(name, order_seed, level_index, level, Configuration.pruned(n_layers, n_heads, order[:level], state))
              for name, orders in sweep.orders.items() for order_seed, order in zip(sweep.seeds[name], orders)
              for level_index, level in enumerate(sweep.levels)]
    scored = score_configurations(data, [p[-1] for p in points], tasks, seed=seed, settings=settings, device=device,
                                  memory_bytes=memory_bytes, progress=progress)
    return PruneSweep([PruneRow(name, order_seed, level_index, level, level / total, score)
                       for name, order_seed, level_index, level, config in points for score in scored[config.key]])


def sweep_spans(data: tuple[ProbeData, ProbeData], spans: Sequence[int | None], tasks: Sequence[ProbeTask], *,
                seed: int = 0, settings: ProbeSettings | None = None, state: int = -1, device: str = "cpu",
                memory_bytes: int = 4 << 30, progress: Callable[[int], None] | None = None) -> SpanSweep:
    """A probe score for each attention span r (None = no limit) and task."""
    settings = settings or ProbeSettings()
    configs = [Configuration(None, span, state) for span in spans]
    scored = score_configurations(data, configs, tasks, seed=seed, settings=settings, device=device,
                                  memory_bytes=memory_bytes, progress=progress)
    return SpanSweep([SpanRow(span, score) for span, config in zip(spans, configs) for score in scored[config.key]])


def work_count(data: tuple[ProbeData, ProbeData], configurations: Sequence[Configuration],
               tasks: Sequence[ProbeTask]) -> int:
    """How many progress units :func:`score_configurations` reports (configurations + probes)."""
    return len(distinct(configurations)) * (1 + len(tasks))
