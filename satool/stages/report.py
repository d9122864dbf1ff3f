"""Stage `report`: one self-contained HTML report from the saved results, every finding judged by a
stated rule (satool.output.report, satool.analysis.verdicts)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from satool.stages import Log, Progress, quiet


@dataclass
class Settings:
    directory: Path = Path(".")
    out: Path | None = None


def run(settings: Settings, progress: Progress | None = None, log: Log = quiet) -> Path:
    from satool.output.report import build_report

    return build_report(settings.directory, settings.out)


def record(workspace, settings: Settings, outputs: Path) -> None:
    workspace.record("report", {"report": outputs})
