"""The command line: panels, no torch at --help, one-line errors, exit codes."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO

from satool import errors

STAGES = ["pretrain", "extract", "metric", "segment", "relate", "prune", "probe"]
OTHERS = ["demo", "report", "corpus", "plugins"]


def _panel(help_text: str, title: str) -> str:
    match = re.search(rf"╭─ {title} ─+╮\n(.*?)╰", help_text, re.S)
    assert match, f"panel {title!r} missing from --help:\n{help_text}"
    return match.group(1)


def test_help_lists_stages_in_panels(satool_cli):
    result = satool_cli("--help")
    assert result.returncode == 0, result.stderr
    stages = _panel(result.stdout, "Stages")
    for name in STAGES:
        assert re.search(rf"│ {name}\s", stages), name
    rest = _panel(result.stdout, "Workflow") + _panel(result.stdout, "Data and plugins")
    for name in OTHERS:
        assert re.search(rf"│ {name}\s", rest), name


def test_help_does_not_import_torch():
    code = (
        "import sys\n"
        "from satool.cli import run\n"
        "assert run(['--help']) == 0\n"
        "assert run(['plugins', '--json']) == 0\n"
        "heavy = [m for m in ('torch', 'torchaudio', 'h5py', 'matplotlib') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout


def test_unknown_option_is_one_red_line(satool_cli):
    result = satool_cli("extract", "--no-such-option")
    assert result.returncode == errors.EXIT_USAGE
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("satool: error: No such option: --no-such-option")
    assert "Traceback" not in result.stderr


def test_user_error_is_one_line_with_its_code(capsys):
    from satool import hookimpl
    from satool.cli import run
    from satool.errors import InputError
    from satool.plugins import Plugins

    class Plugin:
        @staticmethod
        @hookimpl
        def register_commands(register):
            def broken_input(path: str) -> None:
                raise InputError("not a corpus", path=path)

            register("check", broken_input)

    plugins = Plugins(autoload=False)
    plugins.add_plugin(Plugin, "test-plugin")
    code = run(["check", "/nowhere"], plugins=plugins)
    assert code == errors.EXIT_INPUT
    err = capsys.readouterr().err
    assert err.strip() == "satool: error: /nowhere: not a corpus"


def test_bug_keeps_traceback(capsys):
    import pytest

    from satool import hookimpl
    from satool.cli import run
    from satool.plugins import Plugins

    class Plugin:
        @staticmethod
        @hookimpl
        def register_commands(register):
            def bug() -> None:
                raise ZeroDivisionError("a real bug")

            register("bug", bug)

    plugins = Plugins(autoload=False)
    plugins.add_plugin(Plugin, "test-plugin")
    with pytest.raises(ZeroDivisionError):
        run(["bug"], plugins=plugins)


def test_version(satool_cli):
    from satool import __version__

    result = satool_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"satool {__version__}"


def test_exit_codes_documented():
    doc = (REPO / "docs" / "exit-codes.md").read_text()
    codes = {name: getattr(errors, name) for name in dir(errors) if name.startswith("EXIT_")}
    for name, value in codes.items():
        assert re.search(rf"\|\s*{value}\s*\|", doc), f"exit code {value} ({name}) not in docs/exit-codes.md"
    for cls in errors.ALL_ERRORS:
        assert cls.__name__ in doc, cls.__name__


def test_cli_reference_is_current():
    import os

    env = {**os.environ, "SATOOL_DISABLE_PLUGIN_AUTOLOAD": "1"}
    generated = subprocess.run([sys.executable, "-m", "satool.cli.reference"], capture_output=True, text=True, env=env,
                               cwd=REPO, check=True).stdout
    assert generated == (REPO / "docs" / "cli.md").read_text(), \
        "docs/cli.md is out of date: run SATOOL_DISABLE_PLUGIN_AUTOLOAD=1 python -m satool.cli.reference > docs/cli.md"


STYLE_TAGS = {"bold", "/bold", "/", "dim"}


def test_help_brackets_are_shown_not_taken_for_markup(satool_cli):
    """Rich reads "[word ...]" as a style tag and drops it; help text escapes literal brackets."""
    import typer.main
    from rich.markup import RE_TAGS

    from satool.cli import build_app

    eaten = []

    def walk(command, path):
        texts = [("help", command.help or "")] + [(p.name, getattr(p, "help", None) or "") for p in command.params]
        for where, text in texts:
            eaten.extend(f"{path} ({where}): {m.group(0)}" for m in RE_TAGS.finditer(text)
                         if not m.group(2) and m.group(3) not in STYLE_TAGS)
        for name, sub in (getattr(command, "commands", None) or {}).items():
            walk(sub, f"{path} {name}")

    walk(typer.main.get_command(build_app()), "satool")
    assert not eaten, "unescaped brackets in help (write \\\\[ in the docstring): " + "; ".join(eaten)
    assert "the maps [layer, head, query, key] at" in " ".join(satool_cli("extract", "--help").stdout.split())
    assert "pip install 'satool[synth]'" in satool_cli("corpus", "synth", "--help").stdout


def test_messages_with_brackets_are_printed_literally(tmp_path, satool_cli):
    """A path or reason containing "[...]" reaches the user unchanged (not read as rich markup)."""
    from satool import testing

    root = tmp_path / "audio [take 2]"
    testing.make_librispeech(root, speakers=("19",), per_speaker=3)
    bad = next(root.rglob("*.flac"))
    bad.write_bytes(b"not audio")
    result = satool_cli("corpus", "check", root)
    assert result.returncode == 3, result.stderr  # a bad utterance: corpus check fails
    assert "[take 2]" in result.stderr and "bad:" in result.stderr, result.stderr


def test_an_unknown_probe_precision_is_a_usage_error(satool_cli, tmp_path):
    """prune, probe and demo refuse --precision float16 with one line and the usage code, before any work."""
    for command in (("prune", "m.ckpt", "corpus"), ("probe", "m.ckpt", "corpus"), ("demo", "--out", str(tmp_path / "d"))):
        result = satool_cli(*command, "--precision", "float16")
        assert result.returncode == errors.EXIT_USAGE, (command, result.stderr)
        assert result.stderr.strip() == ("satool: error: --precision: probe precision must be one of float32, "
                                         "bfloat16, auto, not 'float16'")
    assert not (tmp_path / "d").exists()
