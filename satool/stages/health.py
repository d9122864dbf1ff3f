"""Stage `health`: has a pre-trained model learned? Held-out masked L1 beside four baselines, attention
off, and every head's locality (satool.training.heldout)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from satool.stages import Log, NoProgress, Progress, quiet


@dataclass
class Settings:
    checkpoint: Path
    corpus: Path
    split: str = "dev"
    max_utts: int | None = None
    seed: int = 0
    out: Path = Path("results/health")
    device: str = "auto"  # cpu, cuda, mps or auto


@dataclass
class Outputs:
    check: Any  # satool.results.health.HealthCheck
    paths: dict[str, Path]


def run(settings: Settings, progress: Progress | None = None, log: Log = quiet) -> Outputs:
    from satool.models.loading import resolve_device
    from satool.plugins import get_plugins
    from satool.training.heldout import evaluate_checkpoint

    progress = progress or NoProgress()
    check = evaluate_checkpoint(settings.checkpoint, settings.corpus, settings.split, max_utts=settings.max_utts,
                                seed=settings.seed, readers=get_plugins().corpora.objects(),
                                device=resolve_device(settings.device), progress=progress.advance)
    check.split, check.checkpoint = settings.split, str(settings.checkpoint)
    return Outputs(check, check.save(settings.out))


def record(workspace, settings: Settings, outputs: Outputs) -> None:
    workspace.record("health", {"checkpoint": settings.checkpoint, "corpus": settings.corpus, "health": settings.out},
                     split=settings.split)
