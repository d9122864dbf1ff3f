"""`satool prune`: which heads matter (library: satool.analysis.pruning)."""

from __future__ import annotations

from pathlib import Path

import typer

from satool.cli.common import log, parse_csv, parse_numbers, progress_bar, results_console, say
from satool.cli.probe import data_settings, probe_settings
from satool.stages import default, default_csv
from satool.stages import prune as stage


def prune(
    checkpoint: Path | None = typer.Argument(None, help="Model (default: the workspace's)."),
    corpus: Path | None = typer.Argument(None, help="Corpus with train/test splits (default: the workspace's)."),
    by: str = typer.Option(default_csv(stage.Settings, "by"), "--by",
                           help="Pruning orders, comma-separated: any registered metric (its own order: G, V, D "
                           "highest first, W lowest first) or 'random'."),
    tasks: str = typer.Option(default_csv(stage.Settings, "tasks"), "--task", "-t",
                              help="Probing tasks, comma-separated."),
    step: int | None = typer.Option(default(stage.Settings, "step"), min=1, help="Heads pruned per level (default: "
                                    "all heads / 12)."),
    levels: str | None = typer.Option(default_csv(stage.Settings, "levels"), "--levels", help="Or exactly these "
                                      "numbers of pruned heads, comma-separated (e.g. 8,24,32,48; 0 is always "
                                      "added)."),
    random_seeds: int = typer.Option(default(stage.Settings, "random_seeds"), min=1, help="Random orders for --by "
                                     "random; their spread is the noise the report's verdicts compare every order "
                                     "with (at least 3)."),
    spans: str | None = typer.Option(default_csv(stage.Settings, "spans"), "--span", help="Span pruning instead: "
                                     "attention spans r, comma-separated (e.g. 0,1,2,4,8,16)."),
    metrics: Path | None = typer.Option(default(stage.Settings, "metrics"), help="'satool metric' results "
                                        "(default: the workspace's)."),
    layer: int = typer.Option(default(stage.Settings, "layer"), "--layer", help="Hidden state probed (0 = "
                              "embedding, -1 = last)."),
    train_split: str = typer.Option(default(stage.Settings, "data.train_split"),
                                    help="Split the probes are trained on."),
    test_split: str = typer.Option(default(stage.Settings, "data.test_split"), help="Split they are evaluated on."),
    steps: int = typer.Option(default(stage.Settings, "probing.steps"), min=1, help="Most training steps per "
                              "probe; a probe stops earlier once its accuracy on 10 % of the training utterances, "
                              "held out, has not improved for 800 steps (paper: 50k steps)."),
    precision: str = typer.Option(default(stage.Settings, "probing.precision"), "--precision", help="Arithmetic "
                                  "of the probes' matrix products: float32, bfloat16 (about 2x faster on CPUs with "
                                  "native bfloat16, e.g. AVX512-BF16 or AMX, and on GPUs; slower elsewhere; scores "
                                  "differ from float32 by training noise) or auto (bfloat16 where native). "
                                  "docs/performance.md"),
    seed: int = typer.Option(default(stage.Settings, "seed"), help="Probe seed (same seed, same curve)."),
    max_utts: int | None = typer.Option(default(stage.Settings, "data.train_utts"), min=1,
                                        help="At most this many utterances per split."),
    max_frames: int | None = typer.Option(default(stage.Settings, "data.max_frames"), min=1,
                                          help="Truncate utterances to this many 10 ms frames."),
    phone_set: str = typer.Option(default(stage.Settings, "data.phone_set"), "--phone-set", help="Phone classes "
                                  "for the phone task: auto, arpabet, timit39, ipa, ipa-arpabet, data (see "
                                  "docs/corpora.md)."),
    splits: Path | None = typer.Option(default(stage.Settings, "data.splits"), "--splits", help="A split file "
                                       "('satool corpus split') deciding the splits; unlisted utterances are left "
                                       "out."),
    alignments: Path | None = typer.Option(default(stage.Settings, "data.alignments"),
                                           help="Alignment directory (phone labels)."),
    out: Path = typer.Option(default(stage.Settings, "out"), "--out", "-o", help="Results directory."),
    device: str = typer.Option(default(stage.Settings, "data.device"), help="cpu, cuda, mps or auto."),
    maps: str | None = typer.Option(default(stage.Settings, "maps"), "--maps", help="The map kind the --metrics "
                                    "results must describe (default: whichever they do; rollout results order no "
                                    "heads and are refused). Pruning always zeroes the heads' weights. "
                                    "docs/maps.md"),
) -> None:
    """Prune heads cumulatively in a metric's order and measure what the probes lose (paper Fig. 5).

    Levels 0, k, 2k, ..., all heads; at each level the probes are trained and
    scored on the pruned model (one forward pass per distinct configuration,
    shared by all tasks and orders). In a directory where pretrain, extract and
    metric ran, exactly 'satool prune --by globalness --task speaker' works.
    Writes prune_results.csv/json, prune_curves.png and, with globalness and
    weight results, globalness_vs_weight.png/.csv (paper Fig. 6).
    """
    from satool.workspace import Workspace

    workspace = Workspace()
    data = data_settings(workspace, checkpoint=checkpoint, corpus=corpus, alignments=alignments, max_utts=max_utts,
                         splits=splits, phone_set=phone_set, train_split=train_split, test_split=test_split,
                         max_frames=max_frames, device=device)
    settings = stage.Settings(data=data, by=parse_csv(by), tasks=parse_csv(tasks), step=step, levels=parse_numbers(levels),
                              random_seeds=random_seeds, spans=parse_numbers(spans), layer=layer,
                              metrics=metrics or workspace.path("metrics"), probing=probe_settings(steps, precision),
                              seed=seed, out=out, maps=maps)
    with progress_bar(None, "pruning") as bar:
        outputs = stage.run(settings, bar, log)
    stage.record(workspace, settings, outputs)
    _print(outputs.sweep, spans is not None)
    say(f"{outputs.configurations} pruned models represented and probed; wrote {', '.join(str(p) for p in outputs.paths.values())}")


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
