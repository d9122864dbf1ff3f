"""Running a streaming stage's shards as a job array through submitit (SLURM, or local processes).

``satool metric CKPT CORPUS --submit slurm --shards 64`` submits 64 tasks of one SLURM job array
(submitit's ``AutoExecutor``); each task runs the stage's own ``run`` with ``shard=(i, 64)``, writing
its partial sums atomically into ``OUT/partial/`` (a task that is killed and resubmitted resumes),
and this process waits for them and merges (``satool merge``). ``--submit local`` runs the same
array as local processes (submitit's ``LocalExecutor``: what the tests use); ``debug`` runs the
tasks one after another in this process. submitit writes each task's logs and pickled result into
``--jobs DIR``. torchrun stays what pre-training uses; this is for the embarrassingly parallel
passes over a corpus. docs/scale.md has a SLURM example and the cost model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from satool.stages import Log, Progress

EXECUTORS = ("local", "slurm", "debug")


@dataclass
class Cluster:
    """Where and how the tasks of ``--submit`` run (submitit's parameters)."""

    jobs: Path = Path("satool-jobs")  # submitit's folder: logs and results of every task
    partition: str | None = None  # SLURM partition
    timeout_min: int = 240  # per task
    cpus_per_task: int = 4
    gpus_per_node: int = 0
    mem_gb: float = 16.0
    parallel: int = 64  # at most this many tasks of the array at once (SLURM's %N)


def run_shard(stage_name: str, settings: Any) -> dict[str, Any]:
    """What one task of the array runs: the stage's ``run`` for one shard (resumes if it was
    interrupted). Returns a short summary (the sums themselves are in the partial file)."""
    import importlib

    from satool.plugins import get_plugins

    get_plugins()  # plugins (metrics, loaders, readers) load in the task's process too
    stage = importlib.import_module(f"satool.stages.{stage_name}")
    outputs = stage.run(settings)
    outcome = outputs.stream
    return {"shard": list(outcome.shard), "file": str(outcome.file), "reduced": outcome.reduced,
            "resumed": outcome.resumed, "seconds": outcome.seconds, "audio_seconds": outcome.audio_seconds}


def run_array(stage_name: str, settings: Any, progress: Progress, log: Log):
    """Submit ``settings.shards`` tasks of ``stage_name`` with ``settings.cluster``, wait, and return
    the merged :class:`~satool.results.partial.PartialSums` (the stage finishes it)."""
    from satool.errors import EnvironmentProblem, InputError, UsageError
    from satool.stages.merge import merge_directory

    cluster: Cluster = settings.cluster
    if settings.submit not in EXECUTORS:
        raise UsageError(f"--submit {settings.submit}: expected one of {', '.join(EXECUTORS)}")
    if settings.shard is not None:
        raise UsageError("--shard and --submit do not go together: --submit runs every shard (--shards N)")
    count = int(settings.shards)
    if not 1 <= count <= 100_000:
        raise UsageError(f"--shards {count}: need 1..100000")
    try:
        import submitit
    except ImportError:
        raise EnvironmentProblem("--submit needs submitit: pip install submitit") from None
    folder = Path(cluster.jobs) / "%j"
    executor = submitit.AutoExecutor(folder=folder, cluster=settings.submit)
    parameters: dict[str, Any] = {"name": f"satool-{stage_name}", "timeout_min": int(cluster.timeout_min),
                                  "cpus_per_task": int(cluster.cpus_per_task), "mem_gb": float(cluster.mem_gb),
                                  "gpus_per_node": int(cluster.gpus_per_node)}
    if settings.submit == "slurm":
        parameters["slurm_array_parallelism"] = int(cluster.parallel)
        if cluster.partition:
            parameters["slurm_partition"] = cluster.partition
    if settings.submit == "local":  # the local executor takes none of the cluster's sizes
        parameters = {"name": parameters["name"], "timeout_min": parameters["timeout_min"]}
    executor.update_parameters(**parameters)
    tasks = [dataclasses.replace(settings, shard=(i, count), submit=None) for i in range(count)]
    jobs = executor.map_array(run_shard, [stage_name] * count, tasks)
    log(f"submitted {count} tasks ({settings.submit}): job {jobs[0].job_id.split('_')[0]}, logs in {cluster.jobs}",
        "note:")
    progress.total(count, 0)
    failures = []
    for i, job in enumerate(jobs):
        try:
            job.result()
        except Exception as exc:  # a task's error comes back as submitit's FailedJobError with its traceback
            last = [line for line in str(exc).strip().splitlines() if line.strip()]
            failures.append(f"shard {i}: {last[-1] if last else type(exc).__name__}")
        progress.advance(1)
    if failures:
        raise InputError(f"{len(failures)} of {count} tasks failed ({'; '.join(failures[:3])}); rerun the same "
                         f"command to resume them (logs in {cluster.jobs})")
    return merge_directory(settings.out, stage_name)
