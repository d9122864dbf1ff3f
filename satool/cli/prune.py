"""`satool prune`: which heads matter (library: satool.analysis.pruning)."""

from __future__ import annotations

from pathlib import Path

import typer

from satool.cli.common import log, parse_csv, progress_bar, results_console, say

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
    steps: int = typer.Option(8000, min=1, help="Most training steps per probe; a probe stops earlier once its accuracy on 10 % of the training utterances, held out, has not improved for 800 steps (paper: 50k steps)."),
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
    from satool.cli.probe import data_settings
    from satool.stages import prune as stage
    from satool.workspace import Workspace

    workspace = Workspace()
    data = data_settings(workspace, checkpoint, corpus, alignments, train_split, test_split, max_utts, max_frames,
                         device, splits, phone_set)
    settings = stage.Settings(data, parse_csv(by), parse_csv(task), step, random_seeds,
                              [int(s) for s in parse_csv(span)] if span is not None else None,
                              metrics or workspace.path("metrics"), layer, steps, seed, out or DEFAULT_OUT)
    with progress_bar(None, "pruning") as bar:
        outputs = stage.run(settings, bar, log)
    stage.record(workspace, settings, outputs)
    _print(outputs.sweep, span is not None)
    say(f"{outputs.passes} representation passes; wrote {', '.join(str(p) for p in outputs.paths.values())}")


def _print(sweep, spans: bool) -> None:
    from rich.table import Table

    table = Table("by" if not spans else "span", "pruned" if not spans else "", "task", "score", "chance")
    for r in sweep.rows:
        s = r.score
        if spans:
            table.add_row("none" if r.span is None else str(r.span), "", s.task, f"{s.score:.4f}", f"{s.chance:.4f}")
        elif r.order_seed in (None, 0):
            table.add_row(r.by, str(r.pruned), s.task, f"{s.score:.4f}", f"{s.chance:.4f}")
    results_console().print(table)
