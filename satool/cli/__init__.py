"""The ``satool`` command: a thin Typer layer over the library.

The app is satool's own commands (:func:`builtin_commands`) plus those plugins
register through the ``register_commands`` hook, which appear beside them.
Nothing here imports torch: ``satool --help`` and shell completion stay fast.

User errors (:class:`satool.errors.SatoolError`, click usage errors) print one
red line on stderr and exit with a documented code (docs/exit-codes.md);
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import sys

import typer
import typer.main

from satool.errors import EXIT_INTERRUPTED, EXIT_USAGE, SatoolError

PANEL_ORDER = ("Stages", "Workflow", "Data and plugins", "Plugin commands")

APP_HELP = """\
Understand the self-attention of self-supervised speech transformers.

A study runs as stages: [bold]pretrain[/] a model (or bring an s3prl checkpoint),
[bold]extract[/] its attention maps into a cache, then [bold]metric[/] (which heads are
global, vertical, diagonal), [bold]segment[/] (phone boundaries from attention),
[bold]relate[/] (phone relation maps), [bold]probe[/] and [bold]prune[/] (which heads matter).
[bold]satool demo[/] runs them all on a generated corpus and writes an HTML report.

Each stage records what it made in ./satool.toml, so later stages need fewer arguments.
"""


def builtin_commands() -> list[tuple[str, object, str]]:
    """satool's own commands: (name, function or typer.Typer, --help panel)."""
    from satool.cli import (
        compare,
        corpus,
        demo,
        extract,
        health,
        merge,
        metric,
        plugins,
        probe,
        prune,
        relate,
        report,
        segment,
        train,
        view,
    )

    return [
        ("pretrain", train.pretrain, "Stages"),
        ("health", health.health, "Stages"),
        ("extract", extract.extract, "Stages"),
        ("metric", metric.metric, "Stages"),
        ("segment", segment.segment, "Stages"),
        ("relate", relate.relate, "Stages"),
        ("merge", merge.merge, "Workflow"),
        ("probe", probe.probe, "Stages"),
        ("prune", prune.prune, "Stages"),
        ("demo", demo.demo, "Workflow"),
        ("report", report.report, "Workflow"),
        ("compare", compare.compare, "Workflow"),
        ("view", view.view, "Workflow"),
        ("corpus", corpus.app, "Data and plugins"),
        ("plugins", plugins.plugins, "Data and plugins"),
    ]


def build_app(plugins=None) -> typer.Typer:
    """Create the Typer app: satool's own commands and those registered in ``plugins`` (default: the
    loaded ones). A plugin command named like one of satool's is left out and its plugin reported."""
    from satool.plugins import get_plugins

    plugins = plugins or get_plugins()
    app = typer.Typer(
        name="satool",
        help=APP_HELP,
        rich_markup_mode="rich",
        no_args_is_help=True,
        add_completion=True,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    def _print_version(value: bool) -> None:
        if value:
            from satool import __version__

            typer.echo(f"satool {__version__}")
            raise typer.Exit()

    @app.callback()
    def _root(
        version: bool = typer.Option(
            False, "--version", is_eager=True, callback=_print_version, help="Print satool's version and exit."
        ),
    ) -> None:
        pass

    commands = builtin_commands()
    own = {name for name, _, _ in commands}
    for entry in plugins.commands:
        if entry.name in own:
            plugins.reject(entry.plugin, f"command {entry.name!r} is one of satool's own commands")
        else:
            commands.append((entry.name, entry.obj, entry.extra["panel"]))
    commands.sort(key=lambda c: PANEL_ORDER.index(c[2]) if c[2] in PANEL_ORDER else len(PANEL_ORDER))
    for name, command, panel in commands:
        if isinstance(command, typer.Typer):
            app.add_typer(command, name=name, rich_help_panel=panel)
        else:
            app.command(name=name, rich_help_panel=panel)(command)
    return app


def _say_error(message: str) -> None:
    """One red line on stderr."""
    from rich.console import Console
    from rich.text import Text

    line = " ".join(str(message).split())
    Console(stderr=True, soft_wrap=True, highlight=False).print(
        Text("satool: error: ", style="bold red") + Text(line, style="red")
    )


def run(argv: list[str] | None = None, plugins=None) -> int:
    """Run the command line and return the exit code (no sys.exit)."""
    from satool.cli.common import set_results_stream

    args = sys.argv[1:] if argv is None else list(argv)
    set_results_stream(sys.stdout)
    # With --json, stdout carries the JSON alone: anything else printed there while the command
    # runs (a plugin metric's print, say) goes to stderr. Plugins' imports and hooks never print to
    # stdout (satool.plugins); a plugin stage's own output otherwise stays on stdout.
    helping = any(a in ("--help", "-h", "--version") for a in args)
    guard = contextlib.redirect_stdout(sys.stderr) if "--json" in args and not helping else contextlib.nullcontext()
    try:
        with guard:
            app = build_app(plugins)
            command = typer.main.get_command(app)
            result = command.main(args=argv, prog_name="satool", standalone_mode=False)
    except SatoolError as exc:
        _say_error(str(exc))
        return exc.exit_code
    except typer.TyperException as exc:  # click's usage errors (typer vendors click)
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            return 0  # `satool corpus` alone: typer has printed the help
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        _say_error(exc.format_message() + hint)
        return getattr(exc, "exit_code", EXIT_USAGE) or EXIT_USAGE
    except (typer.Abort, KeyboardInterrupt):
        _say_error("interrupted; finished work is kept and a rerun resumes")
        return EXIT_INTERRUPTED
    if result == EXIT_INTERRUPTED:
        _say_error("interrupted; finished work is kept and a rerun resumes")
        return EXIT_INTERRUPTED
    return result if isinstance(result, int) else 0


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    sys.exit(run(argv))
