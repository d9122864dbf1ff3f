"""The demo's pruning sweep, one configuration at a time (as satool did before probes were grouped)
against the grouped sweep, in the same run.

    python benchmarks/bench_prune.py [--random-seeds 5] [--step 8] [--train-utts 300] [--test-utts 120]

Setting: the shipped reference model, the demo's corpus (40 voices x 30 utterances, seed 0), the
demo's sweep (globalness, verticality, diagonality, weight and 5 random orders, 0, 8, ..., 48 heads,
phone / frame speaker / utterance speaker probes of at most 8,000 steps with early stopping).
Pruning orders come from metric results on 40 dev utterances.

- sequential: every distinct pruned model represented alone (one forward per batch of utterances),
  every probe trained alone with the trainer satool used before (kept in tests/reference_probe.py,
  on materialised up-sampled frames);
- grouped: ``satool.analysis.pruning.sweep_heads`` (pruned models side by side, probes of a task
  trained as one group), in float32;
- grouped in bfloat16: the same with the probes' products in bfloat16, where this machine multiplies
  bfloat16 natively (``fastest_precision``; skipped elsewhere, where it would be slower).

Prints the times, the ratios, and the largest score difference over every (order, level, task)
point against the sequential sweep (0 means bit-identical results); for bfloat16 also how many
points differ from float32 by more than the spread (standard deviation) of the random orders at
that level and task.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from _bench import print_table  # noqa: E402


def sequential(data, orders, tasks, settings):
    """Scores per (order, seed, level, task): one configuration and one probe at a time."""
    from reference_probe import reference_train_and_score

    from satool.analysis.probing.passes import Configuration

    model = data[0].model
    cache: dict[str, dict[str, float]] = {}
    out = {}
    represent_s = probe_s = 0.0
    for name, many in orders.orders.items():
        for seed, order in zip(orders.seeds[name], many):
            for level in orders.levels:
                config = Configuration.pruned(model.num_layers, model.num_heads, order[:level])
                if config.key not in cache:
                    began = time.perf_counter()
                    train, test = data[0].represent(config), data[1].represent(config)
                    represent_s += time.perf_counter() - began
                    began = time.perf_counter()
                    cache[config.key] = {}
                    for task in tasks:
                        problem = task.prepare(train, test, seed=0, settings=settings).problem
                        x_train = problem.x_train[problem.rows_train]  # materialised, as before
                        x_test = problem.x_test[problem.rows_test]
                        accuracy, _ = reference_train_and_score(
                            x_train, problem.y_train, x_test, problem.y_test, problem.n_classes, kind=problem.kind,
                            seed=0, settings=settings, groups=problem.groups)
                        cache[config.key][task.name] = accuracy
                        del x_train, x_test
                    probe_s += time.perf_counter() - began
                for task in tasks:
                    out[(name, seed, level, task.name)] = cache[config.key][task.name]
    return out, represent_s, probe_s, len(cache)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--random-seeds", type=int, default=5)
    parser.add_argument("--step", type=int, default=8)
    parser.add_argument("--train-utts", type=int, default=300)
    parser.add_argument("--test-utts", type=int, default=120)
    parser.add_argument("--steps", type=int, default=8000, help="most steps per probe (early stopping as in the demo)")
    args = parser.parse_args()

    from satool import reference
    from satool.analysis.metrics import BUILTIN_METRICS
    from satool.analysis.probing.classifiers import fastest_precision
    from satool.analysis.probing.passes import ProbeData
    from satool.analysis.probing.tasks import BUILTIN_TASKS, ProbeSettings
    from satool.analysis.pruning import plan, sweep_heads
    from satool.analysis.scoring import model_stream, score_heads
    from satool.data.corpus import open_corpus
    from satool.data.synth import synthesize_corpus
    from satool.models.loading import load_model

    work = Path(tempfile.mkdtemp(prefix="satool-bench-prune-"))
    try:
        synthesize_corpus(work / "corpus", speakers=40, utterances_per_speaker=30, seed=0)
        model = load_model(reference.checkpoint())
        corpus = open_corpus(work / "corpus")
        scores = score_heads(model_stream(model, corpus, corpus.select("dev", 40)), BUILTIN_METRICS,
                             list(range(1, model.num_layers + 1)), list(range(1, model.num_heads + 1)))
        orders = plan(["globalness", "verticality", "diagonality", "weight", "random"], scores, model.num_layers,
                      model.num_heads, step=args.step, random_seeds=range(args.random_seeds))
        tasks = [t for t in BUILTIN_TASKS if t.name in ("phone", "speaker", "speaker-utt")]
        settings = ProbeSettings(steps=args.steps)
        data = (ProbeData(model, corpus, corpus.select("train", args.train_utts, balanced=True)),
                ProbeData(model, corpus, corpus.select("test", args.test_utts, balanced=True)))

        began = time.perf_counter()
        grouped = sweep_heads(data, orders, tasks, settings=settings)
        grouped_s = time.perf_counter() - began
        fast = fastest_precision()
        if fast != "float32":
            began = time.perf_counter()
            low = sweep_heads(data, orders, tasks, settings=replace(settings, precision=fast))
            low_s = time.perf_counter() - began
        began = time.perf_counter()
        alone, represent_s, probe_s, configurations = sequential(data, orders, tasks, settings)
        sequential_s = time.perf_counter() - began

        def key(row):
            return row.by, row.order_seed, row.pruned, row.task

        differences = [abs(r.score.score - alone[key(r)]) for r in grouped.rows]
        points = len(grouped.rows) // len(tasks)
        rows = [["sequential: representations (s)", represent_s],
                ["sequential: probes (s)", probe_s],
                ["sequential: total (s)", sequential_s],
                ["grouped float32: total (s)", grouped_s],
                ["speed-up (sequential / grouped float32)", sequential_s / grouped_s],
                ["largest score difference over all points", max(differences)],
                ["points with any difference", sum(d > 0 for d in differences)]]
        if fast != "float32":
            spread = {}  # (level, task) -> standard deviation of the random orders' scores
            for r in grouped.rows:
                if r.by == "random":
                    spread.setdefault((r.pruned, r.task), []).append(r.score.score)
            spread = {k: float(np.std(v)) for k, v in spread.items() if np.std(v) > 0}  # levels where orders differ
            low_differences = [abs(r.score.score - alone[key(r)]) for r in low.rows]
            judged = [(abs(r.score.score - alone[key(r)]), spread[(r.pruned, r.task)]) for r in low.rows
                      if (r.pruned, r.task) in spread]
            rows += [[f"grouped {fast}: total (s)", low_s],
                     [f"speed-up (sequential / grouped {fast})", sequential_s / low_s],
                     [f"{fast}: largest score difference from float32", max(low_differences)],
                     [f"{fast}: mean score difference from float32", float(np.mean(low_differences))],
                     ["spread of the random orders (mean std over the levels where they differ)",
                      float(np.mean(list(spread.values())))],
                     [f"{fast}: points there differing from float32 by more than that level's spread",
                      f"{sum(d > s for d, s in judged)} of {len(judged)}"]]
        else:
            rows.append(["bfloat16", "skipped: this machine has no native bfloat16 (it would be slower)"])
        print_table(
            f"Pruning sweep of the demo: {points} (order, level) points, {configurations} distinct pruned models, "
            f"{len(tasks)} probes each ({len(data[0].items)} train / {len(data[1].items)} test utterances)",
            ["what", "value"], rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
