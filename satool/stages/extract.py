"""Stage `extract`: run a model over a corpus and cache its attention maps (satool.extract)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from satool.extract import ExtractSettings
from satool.stages import Log, NoProgress, Progress, quiet


@dataclass
class Settings:
    checkpoint: Path
    corpus: Path
    out: Path = Path("attention-cache")
    extraction: ExtractSettings = field(default_factory=ExtractSettings)
    alignments: Path | None = None
    compression: str = "blosc"
    shard: tuple[int, int] | None = None
    strict: bool = False
    flush_every: float = 30.0
    device: str = "cpu"


def run(settings: Settings, progress: Progress | None = None, log: Log = quiet,
        on_ready=None) -> Any:
    """The :class:`~satool.extract.ExtractSummary`; ``on_ready(plan)`` is called once every check passed."""
    from satool.extract import extract

    progress = progress or NoProgress()
    summary = extract(settings.checkpoint, settings.corpus, settings.out, settings.extraction,
                      alignments=settings.alignments, device=settings.device, compression=settings.compression,
                      shard=settings.shard, strict=settings.strict, shard_seconds=settings.flush_every,
                      progress=lambda done, total: progress.total(total, done), on_ready=on_ready)
    for utt, reason in summary.skipped:
        log(f"{utt}: {reason}", "skipped")
    return summary


def record(workspace, settings: Settings, outputs: Any) -> None:
    split = settings.extraction.split
    workspace.record("extract", {"checkpoint": settings.checkpoint, "corpus": settings.corpus,
                                 "alignments": settings.alignments, "cache": settings.out},
                     split=",".join(split) if isinstance(split, list) else split,
                     max_frames=settings.extraction.max_frames)
