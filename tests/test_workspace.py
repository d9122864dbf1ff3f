"""satool.toml is written with a real TOML writer and read with its types checked."""

from __future__ import annotations

import tomllib

import pytest

from satool.errors import InputError
from satool.workspace import Workspace


def test_paths_with_newlines_quotes_and_brackets_round_trip(tmp_path):
    odd = tmp_path / 'corpus "take 2"\n[final]'
    workspace = Workspace(tmp_path / "satool.toml")
    workspace.record("corpus", {"corpus": odd}, note="a\\b\nc")
    text = (tmp_path / "satool.toml").read_text()
    assert tomllib.loads(text)["paths"]["corpus"] == 'corpus "take 2"\n[final]'  # one value, parseable
    again = Workspace(tmp_path / "satool.toml")
    assert again.path("corpus") == odd and again.setting("corpus", "note") == "a\\b\nc"
    again.record("extract", {"cache": tmp_path / "cache"})  # later stages keep working
    assert Workspace(tmp_path / "satool.toml").path("corpus") == odd


@pytest.mark.parametrize("content, message", [
    ('[paths]\ncache = 5\n', "paths.cache must be text"),
    ('paths = "here"\n', r"\[paths\] must be a table"),
    ('[stages]\nextract = 3\n', r"\[stages\] must hold one table per stage"),
    ('[paths\n', "unreadable workspace file"),
])
def test_values_of_the_wrong_type_are_refused_before_any_work(tmp_path, content, message):
    (tmp_path / "satool.toml").write_text(content)
    with pytest.raises(InputError, match=message):
        Workspace(tmp_path / "satool.toml")


def test_a_setting_of_another_type_falls_back_to_the_default(tmp_path):
    (tmp_path / "satool.toml").write_text('[stages.probe]\nsteps = "many"\n')
    assert Workspace(tmp_path / "satool.toml").setting("probe", "steps", 1500) == 1500


def test_cli_refuses_a_bad_workspace_with_exit_3(tmp_path, satool_cli):
    (tmp_path / "satool.toml").write_text('[paths]\ncache = ["a"]\n')
    result = satool_cli("metric", cwd=tmp_path)
    assert result.returncode == 3 and "paths.cache must be text" in result.stderr
    assert not (tmp_path / "results").exists()
