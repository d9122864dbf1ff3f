"""Shared fixtures: run the CLI in a subprocess or in-process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_satool(*args: str, env: dict | None = None, cwd: str | Path | None = None,
               timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m satool ARGS`` in a fresh process and capture its output."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.setdefault("COLUMNS", "200")
    return subprocess.run(
        [sys.executable, "-m", "satool", *map(str, args)],
        capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout,
    )


@pytest.fixture
def satool_cli():
    return run_satool


def pytest_collection_modifyitems(items):
    """Tests that run the command line in a subprocess carry the ``cli`` mark (``pytest -m "not cli"``)."""
    for item in items:
        if "satool_cli" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cli)


@pytest.fixture(autouse=True)
def _fresh_plugins():
    """Each test sees a freshly loaded plugin manager."""
    from satool.plugins import reset_plugins

    reset_plugins()
    yield
    reset_plugins()


WORKSPACE_LEFTOVERS = ("satool.toml", ".satool.toml.lock", "results")


@pytest.fixture(autouse=True)
def _repository_stays_clean():
    """A test that runs a stage must give it a cwd of its own: stages write satool.toml and
    results/ into the working directory, and those must never land in the repository."""
    before = {name for name in WORKSPACE_LEFTOVERS if (REPO / name).exists()}
    yield
    created = [name for name in WORKSPACE_LEFTOVERS if (REPO / name).exists() and name not in before]
    assert not created, f"this test wrote {created} into the repository (run the stage with cwd=tmp_path)"
