"""`satool segment`: phoneme segmentation (library: satool.analysis.segmentation, satool.analysis.segmentation.study)."""

from __future__ import annotations

from pathlib import Path

import typer

from satool.cli import stream_options as so
from satool.cli.common import log, parse_csv, progress_bar, results_console, say
from satool.errors import UsageError
from satool.stages import default, default_csv
from satool.stages import segment as stage


def segment(
    cache: Path | None = typer.Argument(None, help="Attention cache with alignments (default: the workspace's), "
                                         "or a checkpoint followed by CORPUS to segment without writing a cache."),
    corpus: Path | None = typer.Argument(default(stage.Settings, "corpus"),
                                         help="Corpus with alignments, only when SOURCE is a checkpoint."),
    features: str = typer.Option(default_csv(stage.Settings, "features"), "--features", "-f", help="Comma-separated "
                                 "sources: attn:L3.H7 (layer 3, head 7, from 1), attn:best (the head ranked best on "
                                 "--tune-on, never on the test split), hidden:STATE (0 = embedding), hidden:all, "
                                 "mfcc, mel. E.g. mfcc,attn:L1.H3"),
    tune_on: str = typer.Option(default(stage.Settings, "tune_on"),
                                help="Split on which alpha and beta are tuned for the best R-value."),
    test_on: str = typer.Option(default(stage.Settings, "test_on"),
                                help="Split on which the tuned parameters are evaluated."),
    alpha: float | None = typer.Option(default(stage.Settings, "alpha"), min=0.0,
                                       help="Fix alpha (kernel width) instead of tuning it."),
    beta: float | None = typer.Option(default(stage.Settings, "beta"), min=0.0,
                                      help="Fix beta (threshold) instead of tuning it."),
    tune_utts: int | None = typer.Option(default(stage.Settings, "tune_utts"), min=1, help="Tune on at most this "
                                         "many aligned utterances of --tune-on (from a checkpoint: default "
                                         f"{stage.STREAM_TUNE_UTTS}, held in memory)."),
    test_utts: int | None = typer.Option(default(stage.Settings, "test_utts"), min=1,
                                         help="Test on at most this many aligned utterances of --test-on."),
    tolerance: float = typer.Option(default(stage.Settings, "tolerance"), min=0.0,
                                    help="Hit tolerance in seconds (paper: 20 ms)."),
    all_heads: bool = typer.Option(default(stage.Settings, "all_heads"), "--all-heads", help="Also tune and test "
                                   "every head; rank them by R-value (coarser grid: 5 alphas x 12 betas, 40 tuning "
                                   "utterances)."),
    workers: int = typer.Option(default(stage.Settings, "workers"), "--workers", min=0, help="Processes that rank "
                                "the heads (attn:best, --all-heads), each on one core; 0 = one per core. The "
                                "ranking is the same for any number."),
    example: str | None = typer.Option(default(stage.Settings, "example"),
                                       help="Utterance for the Fig. 2 example (default: first test one)."),
    out: Path = typer.Option(default(stage.Settings, "out"), "--out", "-o", help="Results directory."),
    allow_partial: bool = typer.Option(default(stage.Settings, "allow_partial"),
                                       help="Use an unfinished cache's finished utterances."),
    maps: str | None = typer.Option(default(stage.Settings, "maps"), "--maps", help="Map kind of the attn: "
                                    "sources: the cache's own (the default; another is an error: extract with "
                                    "--maps KIND). docs/maps.md"),
    alignments: so.Alignments = default(stage.Settings, "alignments"),
    max_frames: so.MaxFrames = default(stage.Settings, "max_frames"),
    device: so.Device = default(stage.Settings, "device"),
    shard: so.Shard = default(stage.Settings, "shard"),
    block_mb: so.BlockMb = default(stage.Settings, "block_mb"),
    flush_every: so.FlushEvery = default(stage.Settings, "flush_every"),
    submit: so.Submit = default(stage.Settings, "submit"),
    shards: so.Shards = default(stage.Settings, "shards"),
    jobs: so.Jobs = default(stage.Settings, "cluster.jobs"),
    partition: so.Partition = default(stage.Settings, "cluster.partition"),
    timeout_min: so.TimeoutMin = default(stage.Settings, "cluster.timeout_min"),
    cpus_per_task: so.CpusPerTask = default(stage.Settings, "cluster.cpus_per_task"),
    gpus_per_node: so.GpusPerNode = default(stage.Settings, "cluster.gpus_per_node"),
    mem_gb: so.MemGb = default(stage.Settings, "cluster.mem_gb"),
) -> None:
    """Find phone boundaries from attention rows or features (kernel-Gram method, docs/science.md §5).

    Each source is tuned on --tune-on (grid of alphas derived from the data x 24
    betas, best strict R-value), then evaluated once on --test-on. Prints strict
    (one-to-one matching) and lenient precision / recall / F1 / OS / R-value
    beside an evenly spaced baseline, and writes segment_results.csv/json,
    pr_curve.csv/png (sweep over beta), example_<source>.png (paper Fig. 2) and,
    with --all-heads, heads_by_r_value.csv.

    From a checkpoint (attn:L.H, hidden:S, mfcc and mel sources), alpha and beta are tuned on
    at most --tune-utts utterances held in memory, then the test split is streamed:
    each utterance's maps are segmented and dropped, only counts are kept
    (--shard i/N and 'satool merge OUT', or --submit local|slurm; docs/scale.md).
    The scores are those a cache of the same utterances gives.

    Examples: satool segment cache/ -f mfcc,attn:best
              satool segment model.ckpt LibriSpeech/ -f attn:L3.H7,mfcc --tune-on dev-clean --test-on test-clean
    """
    from satool.heads import label
    from satool.results.segment import BOUNDARY_CONVENTION
    from satool.stages.metric import is_cache
    from satool.workspace import Workspace

    workspace = Workspace()
    cache_path = workspace.resolve("cache", cache, hint="pass a cache made by 'satool extract --alignments ...'")
    checkpoint = None
    if Path(cache_path).exists() and not is_cache(cache_path):
        checkpoint, cache_path = cache_path, None
        corpus = workspace.resolve("corpus", corpus, hint="pass CORPUS after the checkpoint")
    elif corpus is not None:
        raise UsageError(f"{cache_path} is a cache: CORPUS is only for checkpoints")
    settings = stage.Settings(cache=cache_path, features=parse_csv(features), tune_on=tune_on, test_on=test_on,
                              tune_utts=tune_utts, test_utts=test_utts, alpha=alpha, beta=beta, tolerance=tolerance,
                              all_heads=all_heads, example=example, workers=workers, out=out,
                              allow_partial=allow_partial, maps=maps, checkpoint=checkpoint, corpus=corpus,
                              **so.stream_settings(locals()))
    with progress_bar(None, "segmenting") as bar:
        outputs = stage.run(settings, bar, log)
    stage.record(workspace, settings, outputs)
    if outputs.results is None:  # one shard of several
        say(f"wrote {outputs.paths['partial']}")
        return
    _print(outputs.results.results, tolerance, BOUNDARY_CONVENTION)
    if outputs.results.maps != "attention" and any(r.source.startswith("attn:") for r in outputs.results.results):
        say(f"attn: sources are {outputs.results.maps} maps (docs/maps.md)", "note:")
    if outputs.results.ranking:
        best = ", ".join(f"{label(r['layer'], r['head'])} {100 * r['strict_r_value']:.1f}"
                         for r in outputs.results.ranking[:5])
        say(f"best heads by strict R-value: {best} (all in {outputs.paths['heads']})")
    say(f"wrote {len(outputs.paths)} files into {settings.out}")


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
