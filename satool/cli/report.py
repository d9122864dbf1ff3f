"""`satool report`: rebuild the HTML report from saved results (stage: satool.stages.report)."""

from __future__ import annotations

from pathlib import Path

import typer

from satool.cli.common import say
from satool.stages import default
from satool.stages import report as stage


def report(
    directory: Path = typer.Argument(default(stage.Settings, "directory"), help="A directory where stages ran (has "
                                     "satool.toml), e.g. the demo's output."),
    out: Path | None = typer.Option(default(stage.Settings, "out"), "--out", "-o",
                                    help="Report file (default DIRECTORY/report.html)."),
) -> None:
    """Rebuild the self-contained HTML report (figures embedded) from the saved results."""
    from satool.workspace import FILE_NAME, Workspace

    settings = stage.Settings(directory=directory, out=out)
    path = stage.run(settings)
    if (directory / FILE_NAME).exists():
        stage.record(Workspace(directory / FILE_NAME), settings, path)
    say(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
