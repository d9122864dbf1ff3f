"""`satool relate`: phone relation maps (library: satool.analysis.relations)."""

from __future__ import annotations

from pathlib import Path

import typer

from satool.cli.common import log, progress_bar, say
from satool.stages import default, default_csv
from satool.stages import relate as stage


def relate(
    cache: Path | None = typer.Argument(None, help="Attention cache with alignments (default: the workspace's)."),
    heads: str | None = typer.Option(default_csv(stage.Settings, "heads"), "--heads", help="Heads to draw, "
                                     "comma-separated, e.g. L1.H3,L2.H7 (layer and head counted from 1)."),
    top: int = typer.Option(default(stage.Settings, "top"), min=1, help="Otherwise draw the top N heads by --by."),
    by: str = typer.Option(default(stage.Settings, "by"), help="Metric ranking the heads for --top (values from "
                           "this pass for verticality, else from 'satool metric' results)."),
    out: Path = typer.Option(default(stage.Settings, "out"), "--out", "-o", help="Results directory."),
    allow_partial: bool = typer.Option(default(stage.Settings, "allow_partial"),
                                       help="Use an unfinished cache's finished utterances."),
) -> None:
    """Which phones attend to which: P'_h, the uniform baseline P_U, P_h and the concentration C_h.

    P'_h\\[m, n] is the attention mass from frames of phone m to frames of phone n
    (a joint distribution), P_U the same for uniform attention, P_h = (P' - P_U)
    / P_U (> 0 preference, < 0 avoidance) and C_h\\[n] the mean of P_h over query
    phones (> 0: the head focuses on phone n). Computed for every head from the
    model-rate maps (docs/science.md §6). Writes relations.npz, relations.csv,
    concentration.csv, one heat map per drawn head and
    verticality_vs_concentration.png (paper Fig. 4).
    """
    import numpy as np

    from satool.heads import parse_list
    from satool.workspace import Workspace

    workspace = Workspace()
    cache_path = workspace.resolve("cache", cache, hint="pass a cache made by 'satool extract --alignments ...'")
    settings = stage.Settings(cache=cache_path, heads=parse_list(heads) or None, top=top, by=by,
                              metrics=workspace.path("metrics"), out=out, allow_partial=allow_partial)
    with progress_bar(None, "relating phones") as bar:
        outputs = stage.run(settings, bar, log)
    stage.record(workspace, settings, outputs)
    relations = outputs.relations
    for h in outputs.chosen:
        c = relations.concentration[h]
        best = int(np.nanargmax(np.where(np.isfinite(c), c, -np.inf)))
        say(f"{relations.labels[h]}: verticality {relations.verticality[h]:.3f}, strongest focus on "
            f"{relations.phones[best]!r} (C = {c[best]:+.2f})")
    written = len(outputs.paths) - 1 + len(outputs.paths["maps"])
    say(f"{relations.utterances} aligned utterances; wrote {written} files into {settings.out}")
