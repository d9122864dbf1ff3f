"""`satool report`: rebuild the HTML report from saved results (library: satool.output.report)."""

from __future__ import annotations

from pathlib import Path

import typer

from satool.cli.common import say


def report(
    directory: Path = typer.Argument(Path("."), help="A directory where stages ran (has satool.toml), e.g. the "
                                     "demo's output."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Report file (default DIRECTORY/report.html)."),
) -> None:
    """Rebuild the self-contained HTML report (figures embedded) from the saved results."""
    from satool.stages import report as stage

    path = stage.run(stage.Settings(directory, out))
    say(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
