"""Stage `pretrain`: masked acoustic model pre-training with held-out checks (satool.training.pretrain)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from satool.stages import Log, NoProgress, Progress, quiet
from satool.training.settings import PretrainSettings


@dataclass
class Settings:
    corpus: Path
    out: Path = Path("model.ckpt")
    training: PretrainSettings = field(default_factory=PretrainSettings)  # the recipe (library API)
    alignments: Path | None = None
    device: str = "auto"  # cpu, cuda, mps or auto


def run(settings: Settings, progress: Progress | None = None, log: Log = quiet) -> Any:
    """The :class:`~satool.training.pretrain.PretrainResult`."""
    from satool.models.loading import resolve_device
    from satool.plugins import get_plugins
    from satool.training.pretrain import pretrain

    progress = progress or NoProgress()
    steps = settings.training.steps

    def report(step: int, loss: float) -> None:
        progress.total(steps, step)
        progress.info(f"loss {loss:.3f}")

    result = pretrain(settings.corpus, settings.out, settings.training, alignments=settings.alignments,
                      readers=get_plugins().corpora.objects(), device=resolve_device(settings.device),
                      progress=report, log=lambda text: log(text, ""))
    if result.curves is not None:  # rank 0 of torchrun
        from satool.output import training as figures

        result.curves.save(settings.out)
        figures.draw(result.curves, settings.out)
    return result


def record(workspace, settings: Settings, outputs: Any) -> None:
    t = settings.training
    workspace.record("pretrain", {"checkpoint": settings.out, "corpus": settings.corpus,
                                  "alignments": settings.alignments},
                     preset=t.preset, mask_span=t.mask_span, downsample=t.downsample, steps=t.steps)
