"""`satool corpus` commands: inspect and generate corpora."""

from __future__ import annotations

import typer

from satool.errors import UsageError

app = typer.Typer(help="Inspect corpora and generate the built-in synthetic one.", no_args_is_help=True)


@app.command()
def info(path: str) -> None:
    """Show what satool detects in a corpus directory."""
    raise UsageError("'satool corpus info' is not implemented yet (issue 3)")
