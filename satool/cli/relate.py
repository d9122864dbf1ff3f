"""`satool relate`: phone relation maps (library: satool.analysis.relations)."""

from __future__ import annotations

from pathlib import Path

import typer

from satool.cli.common import log, parse_csv, parse_numbers, progress_bar, say
from satool.cli.extract import parse_shard
from satool.maps import HELP as MAPS_HELP
from satool.stages import default, default_csv
from satool.stages import relate as stage
from satool.stages.submit import Cluster


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
    alignments: Path | None = typer.Option(default(stage.Settings, "alignments"),
                                           help="Alignments (checkpoint mode)."),
    split: str | None = typer.Option(default_csv(stage.Settings, "split"),
                                     help="Splits to use, comma-separated (checkpoint mode)."),
    max_utts: int | None = typer.Option(default(stage.Settings, "max_utts"), min=1,
                                        help="At most this many utterances (checkpoint mode)."),
    max_frames: int | None = typer.Option(default(stage.Settings, "max_frames"), min=1,
                                          help="Truncate utterances (checkpoint mode)."),
    layers: str | None = typer.Option(default_csv(stage.Settings, "layers"), help="Layers whose maps are "
                                      "computed, e.g. 1,2,12 (checkpoint mode; default all)."),
    shard: str | None = typer.Option(default(stage.Settings, "shard"), help="Process share i/N of the corpus "
                                     "into OUT/partial/ (checkpoint mode); then 'satool merge OUT'."),
    block_mb: float = typer.Option(default(stage.Settings, "block_mb"), min=0.001, help="Attention weights "
                                   "are computed in query blocks of at most this many MB (checkpoint mode)."),
    keep_maps: int = typer.Option(default(stage.Settings, "keep_maps"), min=0, help="Keep the whole maps of "
                                  "the first N utterances of each shard in OUT/maps (a cache; checkpoint mode)."),
    keep: str | None = typer.Option(default_csv(stage.Settings, "keep"), "--keep", help="Keep the whole "
                                    "maps of these utterances too, comma-separated ids (checkpoint mode)."),
    flush_every: float = typer.Option(default(stage.Settings, "flush_every"), min=0.0, help="Seconds between "
                                      "saves of a shard's partial sums (an interrupted shard resumes from the last)."),
    submit: str | None = typer.Option(default(stage.Settings, "submit"), help="Run --shards tasks as a job "
                                      "array through submitit: local or slurm, then merge (checkpoint mode)."),
    shards: int = typer.Option(default(stage.Settings, "shards"), min=1, help="Tasks of the --submit array."),
    jobs: Path = typer.Option(default(stage.Settings, "cluster.jobs"), help="submitit's folder for --submit "
                              "(logs and results of every task)."),
    partition: str | None = typer.Option(default(stage.Settings, "cluster.partition"),
                                         help="SLURM partition for --submit slurm."),
    timeout_min: int = typer.Option(default(stage.Settings, "cluster.timeout_min"), min=1,
                                    help="Minutes per --submit task."),
    cpus_per_task: int = typer.Option(default(stage.Settings, "cluster.cpus_per_task"), min=1,
                                      help="CPUs per --submit slurm task."),
    gpus_per_node: int = typer.Option(default(stage.Settings, "cluster.gpus_per_node"), min=0,
                                      help="GPUs per --submit slurm task."),
    mem_gb: float = typer.Option(default(stage.Settings, "cluster.mem_gb"), min=0.1,
                                 help="Memory (GB) per --submit slurm task."),
    device: str = typer.Option(default(stage.Settings, "device"), help="cpu, cuda, mps or auto (checkpoint mode)."),
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
                              checkpoint=checkpoint, corpus=corpus, alignments=alignments,
                              split=parse_csv(split) or None, max_utts=max_utts, max_frames=max_frames,
                              layers=parse_numbers(layers), shard=parse_shard(shard), block_mb=block_mb,
                              keep_maps=keep_maps, keep=parse_csv(keep) or None, flush_every=flush_every,
                              submit=submit, shards=shards, maps=maps,
                              cluster=Cluster(jobs=jobs, partition=partition, timeout_min=timeout_min,
                                              cpus_per_task=cpus_per_task, gpus_per_node=gpus_per_node,
                                              mem_gb=mem_gb),
                              device=device)
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
