"""`satool segment`: phoneme segmentation (library: satool.segmentation, satool.segment_study)."""

from __future__ import annotations

from pathlib import Path

import typer

from satool.cli.common import progress_bar, results_console, say

DEFAULT_OUT = Path("results/segment")


def segment(
    cache: Path | None = typer.Argument(None, help="Attention cache with alignments (default: the workspace's)."),
    features: str = typer.Option("mfcc", "--features", "-f", help="Comma-separated sources: attn:L3.H7 "
                                 "(layer 3, head 7, from 1), hidden:STATE (0 = embedding), mfcc, mel. "
                                 "E.g. mfcc,attn:L1.H3"),
    tune_on: str = typer.Option("dev", help="Split on which alpha and beta are tuned for the best R-value."),
    test_on: str = typer.Option("test", help="Split on which the tuned parameters are evaluated."),
    alpha: float | None = typer.Option(None, min=0.0, help="Fix alpha (kernel width) instead of tuning it."),
    beta: float | None = typer.Option(None, min=0.0, help="Fix beta (threshold) instead of tuning it."),
    tolerance: float = typer.Option(0.02, min=0.0, help="Hit tolerance in seconds (paper: 20 ms)."),
    all_heads: bool = typer.Option(False, "--all-heads", help="Also tune and test every head; rank them by "
                                   "R-value (coarser grid: 5 alphas x 12 betas, 40 tuning utterances)."),
    example: str | None = typer.Option(None, help="Utterance for the Fig. 2 example (default: first test one)."),
    out: Path | None = typer.Option(None, "--out", "-o", help=f"Results directory (default {DEFAULT_OUT})."),
    allow_partial: bool = typer.Option(False, help="Use an unfinished cache's finished utterances."),
) -> None:
    """Find phone boundaries from attention rows or features (kernel-Gram method, docs/science.md §5).

    Each source is tuned on --tune-on (grid of alphas derived from the data x 24
    betas, best strict R-value), then evaluated once on --test-on. Prints strict
    (one-to-one matching) and lenient precision / recall / F1 / OS / R-value
    beside an evenly spaced baseline, and writes segment_results.csv/json,
    pr_curve.csv/png (sweep over beta), example_<source>.png (paper Fig. 2) and,
    with --all-heads, heads_by_r_value.csv.
    """
    from satool.cache import open_cache
    from satool.segment_study import (
        BOUNDARY_CONVENTION,
        FrameSource,
        aligned_ids,
        parse_sources,
        rank_heads,
        study,
        write_study,
    )
    from satool.workspace import Workspace

    workspace = Workspace()
    cache_path = workspace.resolve("cache", cache, hint="pass a cache made by 'satool extract --alignments ...'")
    out = out or DEFAULT_OUT
    sources = parse_sources(features)
    opened = open_cache(cache_path)
    opened.require_complete(allow_partial, warn=lambda m: say(m, "warning:"))
    frames = FrameSource(opened)
    frames.check(sources)  # before any work: heads, hidden states and the corpus exist
    test_ids = aligned_ids(opened, test_on, option="--test-on")
    fixed = alpha is not None and beta is not None
    tune_ids = [] if fixed else aligned_ids(opened, tune_on, option="--tune-on (or give --alpha and --beta)")
    with progress_bar(None, "segmenting") as bar:
        results = study(frames, sources, tune_ids, test_ids, tuned_on=None if fixed else tune_on, alpha=alpha,
                        beta=beta, tolerance=tolerance,
                        progress=lambda label, done, total: (bar.total(total, done), bar.info(label)))
    paths = write_study(frames, results, out, tolerance=tolerance, example_id=example or test_ids[0],
                        examples=sources, extra={"cache": str(cache_path), "tune_on": tune_on, "test_on": test_on})
    if all_heads:
        from satool.results import write_csv

        with progress_bar(len(opened.layers) * len(opened.heads), "ranking heads") as bar:
            rows = rank_heads(frames, tune_ids or test_ids, test_ids, tolerance=tolerance, progress=bar.advance)
        paths["heads"] = write_csv(out / "heads_by_r_value.csv", rows)
    workspace.record("segment", {"cache": cache_path, "segment": out}, features=features)
    _print(results, tolerance, BOUNDARY_CONVENTION)
    if all_heads:
        best = ", ".join(f"L{r['layer']}.H{r['head']} {100 * r['strict_r_value']:.1f}" for r in rows[:5])
        say(f"best heads by strict R-value: {best} (all in {paths['heads']})")
    say(f"wrote {len(paths)} files into {out}")


def _print(results, tolerance: float, convention: str) -> None:
    from rich.table import Table

    out = results_console()
    table = Table(title=f"Phone boundaries on the test split, tolerance {tolerance * 1000:.0f} ms")
    for column in ("source", "alpha", "beta", "mode", "P", "R", "F1", "OS", "R-value"):
        table.add_column(column, justify="right" if column not in ("source", "mode") else "left")
    for r in results:
        for mode, m in (("strict", r.strict), ("lenient", r.lenient)):
            table.add_row(
                r.source if mode == "strict" else "", "" if r.alpha != r.alpha else f"{r.alpha:.3g}",
                "" if r.beta != r.beta else f"{r.beta:.3g}", mode, *(f"{100 * m[k]:.1f}" for k in
                                                                     ("precision", "recall", "f1")),
                f"{100 * m['os']:+.1f}", f"{100 * m['r_value']:.2f}",
            )
    out.print(table)
    out.print(f"[dim]{convention}[/]")
