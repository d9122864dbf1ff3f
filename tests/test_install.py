"""The install instructions hold: PyTorch's CPU-only builds satisfy satool's torch pins."""

from __future__ import annotations

import tomllib

from conftest import REPO
from packaging.requirements import Requirement


def test_cpu_builds_satisfy_the_torch_pins():
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {r.name: r for r in map(Requirement, dependencies) if r.name in ("torch", "torchaudio")}
    assert set(pins) == {"torch", "torchaudio"}
    for requirement in pins.values():
        version = str(requirement.specifier).removeprefix("==")
        assert requirement.specifier.contains(f"{version}+cpu")  # what docs/install.md tells CPU users
        assert not requirement.specifier.contains("2.12.0")
    text = (REPO / "docs" / "install.md").read_text()
    assert f"torch=={version}" in text and "download.pytorch.org/whl/cpu" in text
