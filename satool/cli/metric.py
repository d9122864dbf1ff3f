"""`satool metric`: score every head (library: satool.analysis.scoring, satool.analysis.metrics)."""

from __future__ import annotations

from pathlib import Path

import typer

from satool.cli.common import log, parse_csv, print_json, progress_bar, results_console, say
from satool.stages import default, default_csv
from satool.stages import metric as stage


def metric(
    source: Path | None = typer.Argument(None, help="An attention cache (default: the workspace's), or a "
                                         "checkpoint followed by CORPUS to score without writing a cache."),
    corpus: Path | None = typer.Argument(default(stage.Settings, "corpus"),
                                         help="Corpus, only when SOURCE is a checkpoint."),
    by: str | None = typer.Option(default_csv(stage.Settings, "by"), "--by", help="Metrics, comma-separated "
                                  "(default: every registered one; see 'satool plugins')."),
    out: Path = typer.Option(default(stage.Settings, "out"), "--out", "-o", help="Results directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the per-head table as JSON on stdout."),
    top: int = typer.Option(default(stage.Settings, "top"), min=1,
                            help="Heads per metric in the attention-map figure."),
    allow_partial: bool = typer.Option(default(stage.Settings, "allow_partial"),
                                       help="Use an unfinished cache's finished utterances."),
    alignments: Path | None = typer.Option(default(stage.Settings, "alignments"),
                                           help="Alignments (checkpoint mode)."),
    split: str | None = typer.Option(default_csv(stage.Settings, "split"),
                                     help="Splits to use, comma-separated (checkpoint mode)."),
    max_utts: int | None = typer.Option(default(stage.Settings, "max_utts"), min=1,
                                        help="At most this many utterances (checkpoint mode)."),
    max_frames: int | None = typer.Option(default(stage.Settings, "max_frames"), min=1,
                                          help="Truncate utterances (checkpoint mode)."),
    device: str = typer.Option(default(stage.Settings, "device"), help="cpu, cuda, mps or auto (checkpoint mode)."),
) -> None:
    """Globalness, verticality, diagonality and weight of every head, and its category.

    G = mean entropy of a head's attention rows; V = -entropy of its mean row;
    D = -mean |query - key| / T; W = its largest weight (docs/science.md §3; plugin
    metrics too). Each head's category is the metric (G, V or D) in whose
    ranking it places best. Writes metrics.csv, metrics.json,
    head_distribution.png and top_heads.png (+ .npz) into --out.

    Examples: satool metric attention-cache/ --json
              satool metric model.ckpt LibriSpeech/ --split dev-clean   (no cache on disk)
    """
    from satool.workspace import Workspace

    workspace = Workspace()
    source = workspace.resolve("cache", source, hint="pass a cache made by 'satool extract'")
    if not stage.is_cache(source):
        corpus = workspace.resolve("corpus", corpus, hint="pass CORPUS after the checkpoint")
    settings = stage.Settings(source=source, corpus=corpus, by=parse_csv(by) or None, out=out, top=top,
                              allow_partial=allow_partial, alignments=alignments, split=parse_csv(split) or None,
                              max_utts=max_utts, max_frames=max_frames, device=device)
    with progress_bar(None, "scoring heads") as bar:
        outputs = stage.run(settings, bar, log)
    stage.record(workspace, settings, outputs)
    if as_json:
        print_json(outputs.scores.records())
    else:
        _print_summary(outputs.scores)
    say(f"wrote {', '.join(str(p) for p in outputs.paths.values())}")


def _print_summary(scores) -> None:
    from collections import Counter

    import numpy as np
    from rich.table import Table

    from satool.heads import label
    from satool.results.metrics import LOCAL_RATIO, NEAR_TIE

    out = results_console()
    categories = Counter(scores.categories().ravel().tolist())
    out.print(f"{len(scores.layers) * len(scores.heads)} heads over {scores.utterances} utterances: "
              + ", ".join(f"{n} {c}" for c, n in sorted(categories.items()) if c))
    local = scores.locality()
    if local is not None:
        ratio, offset = local
        best = np.unravel_index(np.nanargmax(np.where(np.isfinite(ratio), ratio, -np.inf)), ratio.shape)
        n_local = int(np.sum(ratio >= LOCAL_RATIO))
        out.print(f"local heads (favourite offset >= {LOCAL_RATIO:g}x the uniform weight): {n_local} of {ratio.size}; "
                  f"most local {label(scores.layers[best[0]], scores.heads[best[1]])}: {ratio[best]:.1f}x at offset "
                  f"{int(offset[best]):+d} steps")
        if categories.get("diagonal") and n_local == 0:
            out.print("note: categories compare ranks; no head is local, so the heads ranked 'diagonal' do not "
                      "attend near themselves")
    table = Table("metric", "prune first", "top heads (highest value first)")
    for name in scores.values:
        if np.all(np.isnan(scores.values[name])):
            top = "n/a: no utterance gave a value (no ranking)"
        else:
            top = ", ".join(label(*h) for h in scores.top(name, 5))
        table.add_row(name, scores.prune_first.get(name, "highest"), top)
    out.print(table)
    for name in scores.values:
        tied = int(scores.near_ties(name).sum())
        if tied:
            say(f"{name}: {tied} of {scores.values[name].size} heads lie within {NEAR_TIE:g} x the largest value of "
                "another head: their order (and ranks, categories) is arbitrary", "note:")
