"""Every stage has the same shape (Settings / run / record), its defaults live in its Settings only,
the command line shows them, and Settings are built by keyword everywhere."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
import typing
from pathlib import Path

import pytest
import typer.main
from conftest import REPO

from satool.stages import STAGES, default, default_csv

# The inputs a stage cannot do without (the command line resolves them from the workspace).
REQUIRED = {
    "pretrain": {"corpus"}, "health": {"checkpoint", "corpus"}, "extract": {"checkpoint", "corpus"},
    "metric": {"source"}, "segment": set(), "relate": set(), "probe": {"data"}, "prune": {"data"},
    "report": set(), "compare": {"runs"}, "merge": {"out"},
}
NESTED_REQUIRED = {"Data": {"checkpoint", "corpus"}}


def stage(name: str):
    return importlib.import_module(f"satool.stages.{name}")


def nested(settings: type) -> dict[str, type]:
    """Fields of ``settings`` that are dataclasses themselves (``training``, ``probing``, ``data``)."""
    hints = typing.get_type_hints(settings)
    return {f.name: hints[f.name] for f in dataclasses.fields(settings) if dataclasses.is_dataclass(hints[f.name])}


def without_default(settings: type) -> set[str]:
    return {f.name for f in dataclasses.fields(settings)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}


@pytest.mark.parametrize("name", STAGES)
def test_every_stage_has_settings_run_and_record(name):
    module = stage(name)
    assert dataclasses.is_dataclass(module.Settings), f"{name}.Settings is not a dataclass"
    assert without_default(module.Settings) == REQUIRED[name], f"{name}: only the required inputs lack a default"
    for field_name, cls in nested(module.Settings).items():
        assert without_default(cls) == NESTED_REQUIRED.get(cls.__name__, set()), f"{name}.{field_name}"
    run, record = inspect.signature(module.run), inspect.signature(module.record)
    assert list(run.parameters)[:3] == ["settings", "progress", "log"], name
    assert all(p.default is not inspect.Parameter.empty for p in list(run.parameters.values())[1:]), name
    assert list(record.parameters) == ["workspace", "settings", "outputs"], name


def test_default_reads_fields_nested_fields_and_refuses_required_ones():
    from satool.stages import pretrain, probe
    from satool.training.settings import PretrainSettings

    assert default(probe.Settings, "layers") == [-1]
    assert default(probe.Settings, "data.train_split") == "train"  # a required nested field: from its class
    assert default(pretrain.Settings, "training.steps") == PretrainSettings().steps
    assert default_csv(probe.Settings, "head_mask") is None
    from satool.stages import prune

    assert default_csv(prune.Settings, "tasks") == "phone,speaker,speaker-utt"
    with pytest.raises(KeyError, match="required"):
        default(probe.Settings, "data")
    with pytest.raises(KeyError, match="no field"):
        default(probe.Settings, "nope")


# -- the command line shows the stages' defaults -----------------------------------------------------------

# Options of the command line alone (not settings), per command.
CLI_ONLY = {"as_json", "quick", "out@demo"}
# Options whose value goes into a field of another name (the one place a value is spread or wrapped).
SPREAD = {
    ("probe", "max_utts"): ("data.train_utts", "data.test_utts"),
    ("prune", "max_utts"): ("data.train_utts", "data.test_utts"),
}


def _settings_of(command: str) -> type:
    if command == "demo":
        from satool.stages.demo import DemoSettings

        return DemoSettings
    return stage(command).Settings


def _path_of(settings: type, name: str) -> str | None:
    """The settings field a command-line parameter maps to: its own name, in Settings or a nested one."""
    names = {f.name for f in dataclasses.fields(settings)}
    if name in names:
        return name
    found = [f"{outer}.{name}" for outer, cls in nested(settings).items()
             if name in {f.name for f in dataclasses.fields(cls)}]
    assert len(found) <= 1, f"{name} is ambiguous: {found}"
    return found[0] if found else None


def _plain(value):
    """A default as compared: None, '' and empty lists alike; lists as the command line writes them."""
    if value in (None, "", [], ()):
        return None
    if isinstance(value, (list, tuple)):
        from satool.heads import label

        return ",".join(label(*v) if isinstance(v, tuple) else str(v) for v in value)
    if isinstance(value, Path):
        return str(value)
    return value


def _commands() -> dict:
    from satool.cli import build_app
    from satool.plugins import Plugins

    return typer.main.get_command(build_app(Plugins(autoload=False))).commands


@pytest.mark.parametrize("command", [*STAGES, "demo"])
def test_every_option_default_is_the_settings_default(command):
    settings = _settings_of(command)
    params = _commands()[command].params
    compared = 0
    for param in params:
        if param.name == "help" or param.name in CLI_ONLY or f"{param.name}@{command}" in CLI_ONLY:
            continue
        if (command, param.name) in SPREAD:
            paths = SPREAD[command, param.name]
        elif command == "pretrain" and param.name == "hidden_dropout":  # a key of PretrainSettings.overrides
            assert param.default == default(settings, "training.overrides")["hidden_dropout"]
            compared += 1
            continue
        else:
            path = _path_of(settings, param.name)
            assert path is not None, f"satool {command} --{param.name}: no settings field of that name"
            paths = (path,)
        for path in paths:
            try:
                expected = default(settings, path)
            except KeyError:  # a required input: the command line takes it from the workspace
                assert param.default is None and param.param_type_name == "argument", (command, param.name)
                continue
            assert _plain(param.default) == _plain(expected), f"satool {command} --{param.name}: {param.default!r} " \
                                                              f"but {settings.__name__}.{path} = {expected!r}"
            compared += 1
    assert compared >= 1


def test_help_shows_the_stage_defaults(satool_cli):
    text = " ".join(satool_cli("probe", "--help").stdout.split())
    assert "[default: results/probe]" in text and "[default: 8000]" in text


# -- Settings are built by keyword everywhere -------------------------------------------------------------

SOURCES = ("satool", "tests", "benchmarks", "plugins", "docs")


def _python_sources():
    for root in SOURCES:
        for path in sorted((REPO / root).rglob("*.py")):
            if ".egg-info" not in str(path):
                yield path, path.read_text()
    for path in sorted((REPO / "docs").glob("*.md")):
        for block in re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S):
            yield path, block


def test_settings_are_built_by_keyword_everywhere():
    positional = []
    for path, text in _python_sources():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Call) and node.args:
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name.endswith("Settings") or name == "Data":
                    positional.append(f"{path.relative_to(REPO)}:{node.lineno} {name}(...)")
    assert positional == []
