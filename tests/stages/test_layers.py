"""Imports point down the layers (docs/architecture.md), function-level imports included:
cli -> stages -> analysis, training, output -> cache, models, data -> utterance, timebase, errors."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE = REPO / "satool"
TOP = ("satool.cli", "satool.stages", "satool.api", "satool.__main__", "satool.testing")  # may import stages/cli
SHOWS = (*TOP, "satool.view")  # may import satool.output


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _submodule(name: str) -> bool:
    return (PACKAGE.parent / name.replace(".", "/")).with_suffix(".py").exists() or \
        (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists()


def imports(path: Path) -> set[str]:
    """Every satool module ``path`` imports, at any depth of the file (function bodies included)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names if _submodule(f"{base}.{a.name}"))
    return {name for name in found if name == "satool" or name.startswith("satool.")}


MODULES = {module_name(p): imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def within(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def offences(importer_filter, imported_prefixes) -> list[str]:
    return sorted(f"{module} imports {name}" for module, names in MODULES.items() if importer_filter(module)
                  for name in names if within(name, imported_prefixes))


def test_the_walker_sees_function_level_and_relative_imports(tmp_path):
    assert "satool.stages.probe" in MODULES["satool.cli.probe"]
    assert "satool.plugins" in MODULES["satool.stages.probe"]  # imported inside open_data
    assert len(MODULES) > 80


def test_nothing_below_the_stages_imports_stages_or_cli():
    assert offences(lambda m: not within(m, TOP), ("satool.stages", "satool.cli")) == []


def test_only_the_layers_that_show_results_import_output():
    assert offences(lambda m: not within(m, (*SHOWS, "satool.output")), ("satool.output",)) == []


def test_output_renders_only():
    assert offences(lambda m: within(m, ("satool.output",)), ("satool.analysis", "satool.training")) == []


@pytest.mark.parametrize("library", ["satool.models.loading", "satool.data.corpus"])
def test_loaders_and_readers_are_passed_in(library):
    """load_model and open_corpus take the registry's loaders and readers from their caller."""
    assert offences(lambda m: within(m, (library,)), ("satool.plugins",)) == []
