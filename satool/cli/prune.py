"""`satool prune`: which heads matter (library: satool.pruning)."""

from __future__ import annotations

from pathlib import Path

import typer

from satool.cli.common import parse_csv, progress_bar, results_console, say

DEFAULT_OUT = Path("results/prune")


def prune(
    checkpoint: Path | None = typer.Argument(None, help="Model (default: the workspace's)."),
    corpus: Path | None = typer.Argument(None, help="Corpus with train/test splits (default: the workspace's)."),
    by: str = typer.Option("globalness,verticality,diagonality,weight,random", "--by",
                           help="Pruning orders, comma-separated: any registered metric (its own order: G, V, D "
                           "highest first, W lowest first) or 'random'."),
    task: str = typer.Option("phone,speaker,speaker-utt", "--task", "-t", help="Probing tasks, comma-separated."),
    step: int | None = typer.Option(None, min=1, help="Heads pruned per level (default: all heads / 12)."),
    random_seeds: int = typer.Option(5, min=1, help="Random orders for --by random; their spread is the noise the "
                                     "report's verdicts compare every order with (at least 3)."),
    span: str | None = typer.Option(None, help="Span pruning instead: attention spans r, comma-separated "
                                    "(e.g. 0,1,2,4,8,16)."),
    metrics: Path | None = typer.Option(None, help="'satool metric' results (default: the workspace's)."),
    layer: int = typer.Option(-1, "--layer", help="Hidden state probed (0 = embedding, -1 = last)."),
    train_split: str = typer.Option("train", help="Split the probes are trained on."),
    test_split: str = typer.Option("test", help="Split they are evaluated on."),
    steps: int = typer.Option(1500, min=1, help="Training steps per probe."),
    seed: int = typer.Option(0, help="Probe seed (same seed, same curve)."),
    max_utts: int | None = typer.Option(None, min=1, help="At most this many utterances per split."),
    max_frames: int | None = typer.Option(None, min=1, help="Truncate utterances to this many 10 ms frames."),
    phone_set: str = typer.Option("auto", "--phone-set", help="Phone classes for the phone task: auto, arpabet, "
                                  "timit39, ipa, ipa-arpabet, data (see docs/corpora.md)."),
    splits: Path | None = typer.Option(None, "--splits", help="A split file ('satool corpus split') deciding the "
                                       "splits; unlisted utterances are left out."),
    alignments: Path | None = typer.Option(None, help="Alignment directory (phone labels)."),
    out: Path | None = typer.Option(None, "--out", "-o", help=f"Results directory (default {DEFAULT_OUT})."),
    device: str = typer.Option("auto", help="cpu, cuda, mps or auto."),
) -> None:
    """Prune heads cumulatively in a metric's order and measure what the probes lose (paper Fig. 5).

    Levels 0, k, 2k, ..., all heads; at each level the probes are trained and
    scored on the pruned model (one forward pass per distinct configuration,
    shared by all tasks and orders). In a directory where pretrain, extract and
    metric ran, exactly 'satool prune --by globalness --task speaker' works.
    Writes prune_results.csv/json, prune_curves.png and, with globalness and
    weight results, globalness_vs_weight.png/.csv (paper Fig. 6).
    """
    from satool.cli.probe import _state_index, probing_inputs, resolve_tasks
    from satool.headscores import HeadScores
    from satool.plugins import get_plugins
    from satool.probing import ProbeSettings
    from satool.pruning import (
        RANDOM,
        RepresentationStore,
        plan,
        save_sweep,
        sweep_heads,
        sweep_spans,
    )
    from satool.representations import ProbeData
    from satool.workspace import Workspace

    workspace = Workspace()
    names = parse_csv(by)
    for name in names:
        if name != RANDOM:
            get_plugins().metrics.get(name)  # unknown names fail here, with the known ones listed
    model, opened, train, test, checkpoint, corpus_path, alignments = probing_inputs(
        workspace, checkpoint, corpus, alignments, train_split, test_split, max_utts, device, splits=splits,
        phone_set=phone_set)
    tasks = resolve_tasks(task, model)
    state = _state_index(model, layer)
    settings = ProbeSettings(steps=steps)
    need_recon = any("reconstruction" in t.needs for t in tasks)
    out = out or DEFAULT_OUT
    device_name = str(getattr(model, "device", "cpu"))
    total = model.num_layers * model.num_heads
    scores = None
    metrics_dir = metrics or workspace.path("metrics")
    if any(n != RANDOM for n in names) or span is None:
        if metrics_dir is not None and (Path(metrics_dir) / "metrics.json").exists():
            scores = HeadScores.load(metrics_dir)
    with progress_bar(len(train) + len(test), "reading data") as bar:
        data = [ProbeData(model, opened, utts, reconstruction=need_recon, max_frames=max_frames,
                          progress=bar.advance) for utts in (train, test)]
    store = RepresentationStore(*data)
    with progress_bar(None, "pruning") as bar:
        if span is not None:
            spans = [None] + [int(s) for s in parse_csv(span)]
            bar.total(len(spans), 0)
            rows = sweep_spans(store, spans, tasks, seed=seed, settings=settings, state=state, device=device_name)
            first = None
        else:
            sweep = plan(names, scores, model.num_layers, model.num_heads, step=step,
                         random_seeds=range(random_seeds))
            bar.total(sum(len(o) for o in sweep.orders.values()) * len(sweep.levels), 0)
            rows = sweep_heads(store, sweep, tasks, seed=seed, settings=settings, state=state, device=device_name,
                               on_level=lambda name, level: bar.advance())
            first = sweep.levels[1] if len(sweep.levels) > 1 else 1
    paths = save_sweep(rows, out, total_heads=total, spans=span is not None, scores=scores, first=first)
    workspace.record("prune", {"checkpoint": checkpoint, "corpus": corpus_path, "alignments": alignments,
                               "prune": out}, by=by, task=task)
    for utt, reason in (data[0].skipped + data[1].skipped)[:5]:
        say(f"{utt}: {reason}", "skipped")
    _print(rows, span is not None)
    say(f"{store.passes} representation passes; wrote {', '.join(str(p) for p in paths.values())}")


def _print(rows, spans: bool) -> None:
    from rich.table import Table

    table = Table("by" if not spans else "span", "pruned" if not spans else "", "task", "score", "chance")
    for r in rows:
        if spans:
            table.add_row(str(r["span"]), "", r["task"], f"{r['score']:.4f}", f"{r['chance']:.4f}")
        elif r["order_seed"] in (None, 0):
            table.add_row(r["by"], str(r["pruned"]), r["task"], f"{r['score']:.4f}", f"{r['chance']:.4f}")
    results_console().print(table)
