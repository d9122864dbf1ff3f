"""`satool relate`: phone relation maps (library: satool.analysis.relations)."""

from __future__ import annotations

from pathlib import Path

import typer

from satool.cli import stream_options as so
from satool.cli.common import log, progress_bar, say
from satool.maps import HELP as MAPS_HELP
from satool.stages import default, default_csv
from satool.stages import relate as stage


def relate(
    cache: Path | None = typer.Argument(None, help="Attention cache with alignments (default: the workspace's), "
                                         "or a checkpoint followed by CORPUS to relate without writing a cache."),
    corpus: Path | None = typer.Argument(default(stage.Settings, "corpus"),
                                         help="Corpus with alignments, only when SOURCE is a checkpoint."),
    heads: str | None = typer.Option(default_csv(stage.Settings, "heads"), "--heads", help="Heads to draw, "
                                     "comma-separated, e.g. L1.H3,L2.H7 (layer and head counted from 1)."),
    top: int = typer.Option(default(stage.Settings, "top"), min=1, help="Otherwise draw the top N heads by --by."),
    by: str = typer.Option(default(stage.Settings, "by"), help="Metric ranking the heads for --top (values from "
                           "this pass for verticality, else from 'satool metric' results)."),
    out: Path = typer.Option(default(stage.Settings, "out"), "--out", "-o", help="Results directory."),
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
                                    "the kind it was extracted with (the default); from a checkpoint the default "
                                    "is attention."),
) -> None:
    """Which phones attend to which: P'_h, the uniform baseline P_U, P_h and the concentration C_h.

    P'_h\\[m, n] is the attention mass from frames of phone m to frames of phone n
    (a joint distribution), P_U the same for uniform attention, P_h = (P' - P_U)
    / P_U (> 0 preference, < 0 avoidance) and C_h\\[n] the mean of P_h over query
    phones (> 0: the head focuses on phone n). Computed for every head from the
    model-rate maps (docs/science.md §6). Writes relations.npz, relations.csv,
    concentration.csv, one heat map per drawn head and
    verticality_vs_concentration.png (paper Fig. 4).

    From a checkpoint the maps are reduced as they are made (--shard i/N and
    'satool merge OUT', or --submit local|slurm; docs/scale.md).
    """
    import numpy as np

    from satool.heads import parse_list
    from satool.stages.metric import is_cache
    from satool.workspace import Workspace

    workspace = Workspace()
    cache = workspace.resolve("cache", cache, hint="pass a cache made by 'satool extract --alignments ...'")
    checkpoint = None
    if Path(cache).exists() and not is_cache(cache):
        checkpoint, cache = cache, None
        corpus = workspace.resolve("corpus", corpus, hint="pass CORPUS after the checkpoint")
    settings = stage.Settings(cache=cache, heads=parse_list(heads) or None, top=top, by=by,
                              metrics=workspace.path("metrics"), out=out, allow_partial=allow_partial,
                              checkpoint=checkpoint, corpus=corpus, maps=maps, **so.stream_settings(locals()))
    with progress_bar(None, "relating phones") as bar:
        outputs = stage.run(settings, bar, log)
    stage.record(workspace, settings, outputs)
    relations = outputs.relations
    if relations is None:  # one shard of several
        say(f"wrote {outputs.paths['partial']}")
        return
    for h in outputs.chosen:
        c = relations.concentration[h]
        best = int(np.nanargmax(np.where(np.isfinite(c), c, -np.inf)))
        say(f"{relations.labels[h]}: verticality {relations.verticality[h]:.3f}, strongest focus on "
            f"{relations.phones[best]!r} (C = {c[best]:+.2f})")
    written = len(outputs.paths) - 1 + len(outputs.paths["maps"])
    say(f"{relations.utterances} aligned utterances; wrote {written} files into {settings.out}")
