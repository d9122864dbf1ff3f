"""`satool relate`: phone relation maps (library: satool.relations)."""

from __future__ import annotations

from pathlib import Path

import typer

from satool.cli.common import progress_bar, say

DEFAULT_OUT = Path("results/relate")


def relate(
    cache: Path | None = typer.Argument(None, help="Attention cache with alignments (default: the workspace's)."),
    heads: str | None = typer.Option(None, "--heads", help="Heads to draw, comma-separated, e.g. L1.H3,L2.H7 "
                                     "(layer and head counted from 1)."),
    top: int = typer.Option(4, min=1, help="Otherwise draw the top N heads by --by."),
    by: str = typer.Option("verticality", help="Metric ranking the heads for --top (values from this pass for "
                           "verticality, else from 'satool metric' results)."),
    out: Path | None = typer.Option(None, "--out", "-o", help=f"Results directory (default {DEFAULT_OUT})."),
    allow_partial: bool = typer.Option(False, help="Use an unfinished cache's finished utterances."),
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

    from satool.cache import open_cache
    from satool.headscores import HeadScores, cache_stream
    from satool.relations import parse_heads, save_all, select_heads, top_heads
    from satool.relations import relate as run_relate
    from satool.workspace import Workspace

    workspace = Workspace()
    cache_path = workspace.resolve("cache", cache, hint="pass a cache made by 'satool extract --alignments ...'")
    out = out or DEFAULT_OUT
    opened = open_cache(cache_path)
    opened.require_complete(allow_partial, warn=lambda m: say(m, "warning:"))
    wanted = parse_heads(heads) if heads else None
    if wanted is not None:  # checked before the pass over the cache, not after it
        from satool.heads import check

        check(wanted, opened.layers, opened.heads)
    with progress_bar(len(opened.utterance_ids), "relating phones") as bar:
        relations = run_relate(cache_stream(opened, reuse_buffer=True), opened.layers, opened.heads, opened.phone_set,
                               progress=bar.advance)
    if wanted is not None:
        chosen = select_heads(relations, wanted)
    else:
        if by == "verticality":
            values = relations.verticality
        else:
            metrics_dir = workspace.resolve("metrics", None, hint=f"run 'satool metric --by {by}' first")
            scores = HeadScores.load(metrics_dir)
            if by not in scores.values:
                from satool.errors import UsageError

                raise UsageError(f"{metrics_dir}: no {by!r} values (run 'satool metric --by {by}')")
            values = np.array([scores.values[by][scores.layers.index(int(layer)), scores.heads.index(int(head))]
                               for layer, head in zip(relations.layers, relations.heads)])
        chosen = top_heads(values, top)
    paths = save_all(relations, chosen, out)
    workspace.record("relate", {"cache": cache_path, "relate": out})
    concentration = relations.concentration
    for h in chosen:
        c = concentration[h]
        best = int(np.nanargmax(np.where(np.isfinite(c), c, -np.inf)))
        say(f"{relations.labels[h]}: verticality {relations.verticality[h]:.3f}, strongest focus on "
                      f"{relations.phones[best]!r} (C = {c[best]:+.2f})")
    written = len(paths) - 1 + len(paths["maps"])
    say(f"{relations.utterances} aligned utterances; wrote {written} files into {out}")
