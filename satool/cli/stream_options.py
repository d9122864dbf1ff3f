"""The options of the commands that stream from a checkpoint (`satool metric`, `relate`, `segment`):
declared once here, with their help; each command gives the defaults of its own stage's Settings.

    alignments: Alignments = default(stage.Settings, "alignments")
    ...
    settings = stage.Settings(..., **stream_settings(locals()))
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

Alignments = Annotated[Path | None, typer.Option(help="Alignments (checkpoint mode).")]
Split = Annotated[str | None, typer.Option(help="Splits to use, comma-separated (checkpoint mode).")]
MaxUtts = Annotated[int | None, typer.Option(min=1, help="At most this many utterances (checkpoint mode).")]
MaxFrames = Annotated[int | None, typer.Option(min=1, help="Truncate utterances (checkpoint mode).")]
Device = Annotated[str, typer.Option(help="cpu, cuda, mps or auto (checkpoint mode).")]
Layers = Annotated[str | None, typer.Option(help="Layers whose maps are computed, e.g. 1,2,12 (checkpoint mode; "
                                            "default all).")]
Shard = Annotated[str | None, typer.Option(help="Process share i/N of the corpus into OUT/partial/ (checkpoint "
                                           "mode); then 'satool merge OUT'.")]
BlockMb = Annotated[float, typer.Option(min=0.001, help="Attention weights are computed in query blocks of at most "
                                        "this many MB (checkpoint mode).")]
KeepMaps = Annotated[int, typer.Option(min=0, help="Keep the whole maps of the first N utterances of each shard in "
                                       "OUT/maps (a cache; checkpoint mode).")]
Keep = Annotated[str | None, typer.Option("--keep", help="Keep the whole maps of these utterances too, "
                                          "comma-separated ids (checkpoint mode).")]
FlushEvery = Annotated[float, typer.Option(min=0.0, help="Seconds between saves of a shard's partial sums (an "
                                           "interrupted shard resumes from the last).")]
Submit = Annotated[str | None, typer.Option(help="Run --shards tasks as a job array through submitit: local or "
                                            "slurm, then merge (checkpoint mode).")]
Shards = Annotated[int, typer.Option(min=1, help="Tasks of the --submit array.")]
Jobs = Annotated[Path, typer.Option(help="submitit's folder for --submit (logs and results of every task).")]
Partition = Annotated[str | None, typer.Option(help="SLURM partition for --submit slurm.")]
TimeoutMin = Annotated[int, typer.Option(min=1, help="Minutes per --submit task.")]
CpusPerTask = Annotated[int, typer.Option(min=1, help="CPUs per --submit slurm task.")]
GpusPerNode = Annotated[int, typer.Option(min=0, help="GPUs per --submit slurm task.")]
MemGb = Annotated[float, typer.Option(min=0.1, help="Memory (GB) per --submit slurm task.")]


def stream_settings(values: Mapping[str, Any]) -> dict[str, Any]:
    """The stage Settings fields of the options above that a command declares, from its parameter values
    (its ``locals()``): lists parsed, the shard as (i, N), the cluster options as one Cluster."""
    from satool.cli.common import parse_csv, parse_numbers
    from satool.cli.extract import parse_shard
    from satool.stages.submit import Cluster

    parsers = {"split": lambda v: parse_csv(v) or None, "layers": parse_numbers, "shard": parse_shard,
               "keep": lambda v: parse_csv(v) or None}
    plain = ("alignments", "max_utts", "max_frames", "device", "block_mb", "keep_maps", "flush_every", "submit",
             "shards")
    settings = {name: parsers.get(name, lambda v: v)(values[name]) for name in (*parsers, *plain) if name in values}
    if "jobs" in values:
        settings["cluster"] = Cluster(jobs=values["jobs"], partition=values["partition"],
                                      timeout_min=values["timeout_min"], cpus_per_task=values["cpus_per_task"],
                                      gpus_per_node=values["gpus_per_node"], mem_gb=values["mem_gb"])
    return settings
