"""docs/api.md runs: every Python block of the page, in order, on a small stand-in for the demo's output."""

from __future__ import annotations

import re

import pytest
from conftest import REPO

from satool import testing

pytest.importorskip("pandas", reason="the page shows DataFrames")


def _blocks() -> list[str]:
    text = (REPO / "docs" / "api.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.fixture
def demo_like(tmp_path, monkeypatch):
    """satool-demo/ with a corpus (dev/1001/101/1001-101-0021 among them) and, in M3/, a model and a cache."""
    from satool.stages import extract as extract_stage

    root = tmp_path / "satool-demo"
    testing.make_librispeech(root / "corpus", speakers=("1001",), per_speaker=22, split="dev", chapter_id="101")
    (root / "M3").mkdir()
    testing.make_checkpoint(root / "M3" / "model.ckpt", num_heads=4)
    extract_stage.run(extract_stage.Settings(checkpoint=root / "M3" / "model.ckpt", corpus=root / "corpus",
                                             out=root / "M3" / "attention-cache"))
    monkeypatch.chdir(tmp_path)
    return root


def test_every_block_of_the_api_page_runs(demo_like, capsys):
    blocks = _blocks()
    assert len(blocks) >= 5
    namespace: dict = {}
    for number, block in enumerate(blocks, 1):
        try:
            exec(compile(block, f"docs/api.md block {number}", "exec"), namespace)
        except Exception as exc:  # pragma: no cover - the message says which block broke
            raise AssertionError(f"docs/api.md block {number} failed: {type(exc).__name__}: {exc}\n{block}") from exc
    run = namespace["run"]
    assert run.attentions.shape[:2] == (2, 4) and run.step_phones[0] == "sil"
    assert namespace["frame"].index[0] == "L1.H1"
    assert capsys.readouterr().out  # the page's prints printed something


def test_import_satool_stays_light():
    import subprocess
    import sys

    code = "import satool, sys; satool.load_model; satool.open_cache; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr


def test_every_name_satool_exports_resolves():
    import satool

    for name in satool.__all__:
        assert getattr(satool, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        satool.nope  # noqa: B018
