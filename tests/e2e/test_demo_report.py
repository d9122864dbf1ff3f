"""The demo end to end (--quick, as in CI), the report, the browser check, and the CLI reference."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from conftest import REPO

pytest.importorskip("espeakng_loader", reason="the demo needs satool[synth]")


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    from conftest import run_satool

    out = tmp_path_factory.mktemp("demo") / "run"
    # Its time budget (3 minutes) is measured by benchmarks/bench_demo.py, not asserted here:
    # a timed test fails on a busy machine for reasons that have nothing to do with satool.
    result = run_satool("demo", "--quick", "--out", out, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_demo_quick_writes_everything(demo_dir):
    for rel in ("corpus/manifest.json", "model.ckpt", "model.ckpt.loss.png", "model.ckpt.heldout.png",
                "results/health/health.json", "attention-cache/manifest.json", "results/metric/metrics.csv",
                "results/metric/offset_profiles.png", "results/segment/segment_results.json",
                "results/relate/relations.npz", "results/probe/probe_results.csv", "results/prune/prune_results.csv",
                "results/verdicts.json", "report.html", "satool.toml", "demo-state.json"):
        assert (demo_dir / rel).exists(), rel
    report = (demo_dir / "report.html").read_text()
    for title in ("Model health", "This run beside the paper", "paper Fig. 1", "paper Fig. 2", "paper Fig. 3 and 4",
                  "paper Fig. 5 and 6", "What the representations know", "Rules"):
        assert title in report, title
    assert report.count("<img") >= 10 and "http://" not in report and "https://" not in report  # self-contained


def test_quick_demo_is_inconclusive_throughout(demo_dir):
    """A 60-step tiny model has not learned: the health gate fails and no finding is claimed either way."""
    import json

    doc = json.loads((demo_dir / "results" / "verdicts.json").read_text())
    assert doc["healthy"] is False
    learned = next(c for checks in doc["health"].values() for c in checks if c["name"] == "learned")
    assert learned["passed"] is False
    assert len(doc["verdicts"]) >= 6
    assert {v["verdict"] for v in doc["verdicts"]} == {"inconclusive"}
    assert all("health checks did not pass" in v["reason"] for v in doc["verdicts"])
    report = (demo_dir / "report.html").read_text()
    assert "reproduces</td>" not in report and "Not healthy" in report


def test_second_run_reuses_stages(demo_dir, satool_cli):
    outputs = ("model.ckpt", "attention-cache/manifest.json", "results/prune/prune_results.csv")
    stamps = {rel: (demo_dir / rel).stat().st_mtime_ns for rel in outputs}
    result = satool_cli("demo", "--quick", "--out", demo_dir)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stderr.split())
    for stage in ("corpus", "model", "health", "extract", "metric", "segment", "relate", "probe", "prune"):
        assert re.search(rf"\d+/10 {stage} \(done before, reused\)", text), stage
    assert {rel: (demo_dir / rel).stat().st_mtime_ns for rel in outputs} == stamps  # nothing recomputed


def test_report_rebuilds_from_saved_results(demo_dir, tmp_path, satool_cli):
    result = satool_cli("report", demo_dir, "--out", tmp_path / "again.html")
    assert result.returncode == 0, result.stderr
    again = (tmp_path / "again.html").read_text()
    assert again.count("<img") == (demo_dir / "report.html").read_text().count("<img")
    empty = satool_cli("report", tmp_path / "nothing")
    assert empty.returncode == 3 and "not a directory" in empty.stderr


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.mark.browser
def test_report_renders_in_headless_chromium(demo_dir, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium here: the nox test session installs Debian's 'chromium' where apt is usable")
    url = (demo_dir / "report.html").as_uri()
    common = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*common, "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000",
                          "--dump-dom", url], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    images = (demo_dir / "report.html").read_text().count("<img")
    assert f'data-figures="ok:{images}"' in dom.stdout, "some figures did not render"
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line and ("Uncaught" in line or
                                                                                 "ERROR" in line.upper())]
    assert console == [], console
    artifacts = REPO / ".test-artifacts"
    artifacts.mkdir(exist_ok=True)
    shot = artifacts / "report-screenshot.png"
    subprocess.run([*common, f"--screenshot={shot}", "--window-size=1280,4000", url], capture_output=True,
                   timeout=180, check=True)
    assert shot.stat().st_size > 50_000  # keep it: CI artifacts, or look at it locally
