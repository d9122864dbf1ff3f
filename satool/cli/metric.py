"""`satool metric`: score every head (library: satool.analysis.scoring, satool.analysis.metrics)."""

from __future__ import annotations

from pathlib import Path

import typer

from satool.cli import stream_options as so
from satool.cli.common import (
    log,
    parse_csv,
    print_json,
    progress_bar,
    results_console,
    say,
)
from satool.maps import HELP as MAPS_HELP
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
    alignments: so.Alignments = default(stage.Settings, "alignments"),
    split: so.Split = default_csv(stage.Settings, "split"),
    max_utts: so.MaxUtts = default(stage.Settings, "max_utts"),
    max_frames: so.MaxFrames = default(stage.Settings, "max_frames"),
    device: so.Device = default(stage.Settings, "device"),
    layers: so.Layers = default_csv(stage.Settings, "layers"),
    shard: so.Shard = default(stage.Settings, "shard"),
    block_mb: so.BlockMb = default(stage.Settings, "block_mb"),
    keep_maps: so.KeepMaps = default(stage.Settings, "keep_maps"),
    keep: so.Keep = default_csv(stage.Settings, "keep"),
    flush_every: so.FlushEvery = default(stage.Settings, "flush_every"),
    submit: so.Submit = default(stage.Settings, "submit"),
    shards: so.Shards = default(stage.Settings, "shards"),
    jobs: so.Jobs = default(stage.Settings, "cluster.jobs"),
    partition: so.Partition = default(stage.Settings, "cluster.partition"),
    timeout_min: so.TimeoutMin = default(stage.Settings, "cluster.timeout_min"),
    cpus_per_task: so.CpusPerTask = default(stage.Settings, "cluster.cpus_per_task"),
    gpus_per_node: so.GpusPerNode = default(stage.Settings, "cluster.gpus_per_node"),
    mem_gb: so.MemGb = default(stage.Settings, "cluster.mem_gb"),
    maps: str | None = typer.Option(default(stage.Settings, "maps"), "--maps", help=MAPS_HELP + " A cache holds "
                                    "the kind it was extracted with (the default; another is an error); from a "
                                    "checkpoint the default is attention."),
    beside: Path | None = typer.Option(default(stage.Settings, "beside"), "--beside", help="Metric results of the "
                                       "same heads on another map kind (e.g. an attention cache's): set both side "
                                       "by side in OUT/maps_side_by_side.csv, shown by 'satool report'."),
) -> None:
    """Globalness, verticality, diagonality and weight of every head, and its category.

    G = mean entropy of a head's attention rows; V = -entropy of its mean row;
    D = -mean |query - key| / T; W = its largest weight (docs/science.md §3; plugin
    metrics too). Each head's category is the metric (G, V or D) in whose
    ranking it places best. Writes metrics.csv, metrics.json,
    head_distribution.png and top_heads.png (+ .npz) into --out.

    From a checkpoint, every utterance's maps are reduced as they are made (nothing
    kept but per-head sums): memory does not grow with the corpus, long utterances
    are computed in query blocks (--block-mb), and the corpus can be split into
    shards (--shard i/N, then 'satool merge OUT'; or --submit local|slurm).

    Examples: satool metric attention-cache/ --json
              satool metric model.ckpt LibriSpeech/ --split dev-clean   (no cache on disk)
              satool metric model.ckpt LibriSpeech/ --shard 3/64 -o res; satool merge res
    """
    from satool.workspace import Workspace

    workspace = Workspace()
    source = workspace.resolve("cache", source, hint="pass a cache made by 'satool extract'")
    if not stage.is_cache(source):
        corpus = workspace.resolve("corpus", corpus, hint="pass CORPUS after the checkpoint")
    settings = stage.Settings(source=source, corpus=corpus, by=parse_csv(by) or None, out=out, top=top,
                              allow_partial=allow_partial, maps=maps, beside=beside, **so.stream_settings(locals()))
    with progress_bar(None, "scoring heads") as bar:
        outputs = stage.run(settings, bar, log)
    stage.record(workspace, settings, outputs)
    if outputs.scores is None:  # one shard of several
        say(f"wrote {outputs.paths['partial']}")
        return
    if as_json:
        print_json(outputs.scores.records())
    else:
        _print_summary(outputs.scores)
        if outputs.beside is not None:
            _print_beside(outputs.beside)
    say(f"wrote {', '.join(str(p) for p in outputs.paths.values())}")


def _print_summary(scores) -> None:
    from collections import Counter

    import numpy as np
    from rich.table import Table

    from satool.heads import label
    from satool.maps import PER_LAYER, kind_of
    from satool.results.metrics import LOCAL_RATIO, NEAR_TIE

    out = results_console()
    categories = Counter(scores.categories().ravel().tolist())
    kind = kind_of(scores.source)
    what = "layers' rollout maps (L3.H1 = through layer 3)" if kind in PER_LAYER else "heads"
    out.print(f"maps: {kind}" + ("" if kind == "attention" else " (docs/maps.md)"))
    out.print(f"{len(scores.layers) * len(scores.heads)} {what} over {scores.utterances} utterances: "
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


def _print_beside(beside) -> None:
    from rich.table import Table

    out = results_console()
    first, second = beside.kinds
    table = Table("metric", f"rank correlation {first} / {second} (Spearman)", title=f"The same heads: {first} "
                  f"maps beside {second} maps")
    for name in beside.metrics:
        rho = beside.rank_correlation[name]
        table.add_row(name, "n/a" if rho is None else f"{rho:.3f}")
    out.print(table)
    changed = [r["label"] for r in beside.rows if r["category changed"]]
    out.print(f"{len(changed)} of {len(beside.rows)} heads change category"
              + (f": {', '.join(changed[:8])}{' ...' if len(changed) > 8 else ''}" if changed else ""))
