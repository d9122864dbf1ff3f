"""Generate docs/cli.md from the command definitions (a test keeps the file current).

    python -m satool.cli.reference > docs/cli.md
"""

from __future__ import annotations

import inspect

import typer.main
from rich.text import Text

from satool.cli import build_app


def _strip_markup(text: str) -> str:
    """The text ``--help`` shows: rich style tags removed, ``\\[`` escapes undone."""
    return Text.from_markup(text).plain


def _param_row(param) -> str:
    names = ", ".join(f"`{n}`" for n in (param.opts + param.secondary_opts)) if param.param_type_name == "option" \
        else f"`{param.name.upper()}`"
    help_text = " ".join(_strip_markup(getattr(param, "help", None) or "").split())
    default = param.default
    shown = "" if default in (None, False, "", ()) or callable(default) else f"`{default}`"
    if param.param_type_name == "argument":
        shown = "(required)" if param.required else "(optional)"
    return f"| {names} | {help_text.replace('|', '/')} | {shown} |"


def _command_section(path: str, command) -> list[str]:
    lines = [f"## `{path}`", ""]
    doc = inspect.cleandoc(_strip_markup(command.help or ""))
    if doc:
        lines += [doc, ""]
    params = [p for p in command.params if p.name not in ("help",) and not getattr(p, "hidden", False)]
    if params:
        lines += ["| argument / option | meaning | default |", "|---|---|---|"]
        lines += [_param_row(p) for p in params]
        lines.append("")
    return lines


def cli_reference() -> str:
    """The markdown reference of every (built-in and plugin) subcommand."""
    root = typer.main.get_command(build_app())
    lines = ["# Command-line reference", "",
             "Generated from the commands' own `--help` by `python -m satool.cli.reference`; "
             "a test fails when this file is out of date.", ""]
    lines += [inspect.cleandoc(_strip_markup(root.help or "")), ""]
    for name in sorted(root.commands):
        command = root.commands[name]
        subcommands = getattr(command, "commands", None)
        if subcommands:
            lines += [f"## `satool {name}`", "", inspect.cleandoc(_strip_markup(command.help or "")), ""]
            for sub in sorted(subcommands):
                lines += ["#" + line if line.startswith("## ") else line
                          for line in _command_section(f"satool {name} {sub}", subcommands[sub])]
        else:
            lines += _command_section(f"satool {name}", command)
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(cli_reference(), end="")
