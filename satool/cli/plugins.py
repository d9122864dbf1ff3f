"""`satool plugins`: what is loaded and what each plugin registered."""

from __future__ import annotations

import typer

from satool.cli.common import print_json, results_console, say


def plugins(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """List loaded plugins, what each registered, and plugins that failed to load.

    satool's own metrics, tasks, corpus readers and model loaders are plugins
    too (names starting with 'satool.'); plugins may also add commands.
    Third-party plugins are found through the 'satool' entry-point group; see
    docs/plugins.md.
    """
    from satool.plugins import get_plugins

    described = get_plugins().describe()
    if as_json:
        print_json(described)
        return
    from rich.table import Table

    table = Table(title="satool plugins", show_lines=False)
    for column in ("plugin", "version", "hooks", "registered"):
        table.add_column(column)
    for p in described["plugins"]:
        registered = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in p["registered"].items())
        hooks = ", ".join(h.removeprefix("register_") for h in p["hooks"])
        table.add_row(p["name"], p["version"], hooks, registered)
    console = results_console()
    console.print(table)
    for f in described["failed"]:
        say(f"{f['name']}: {f['error']}", "failed:", style="red", out=console)
