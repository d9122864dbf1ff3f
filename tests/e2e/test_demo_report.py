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
    from satool import reference

    models = reference.available()
    for rel in ("corpus/manifest.json", "report.html", "demo-state.json", "study/comparison.json",
                "study/verdicts.json", "study/verdicts.csv", "study/heads.csv", "study/offsets.png",
                "study/categories.csv", "study/probes.csv", "study/pruning.csv", "study/spans.csv"):
        assert (demo_dir / rel).exists(), rel
    for model in models:  # every shipped model in a workspace of its own, with its own report
        for rel in ("model.ckpt", "satool.toml", "demo-state.json", "report.html", "results/health/health.json",
                    "attention-cache/manifest.json", "results/metric/metrics.csv", "results/metric/metrics_bootstrap.npz",
                    "results/segment/segment_results.json", "results/relate/relations.npz",
                    "results/probe/probe_results.csv", "results/prune/prune_results.csv",
                    "results/spans/span_results.csv"):
            assert (demo_dir / model / rel).exists(), (model, rel)
    from satool.analysis.probing.classifiers import fastest_precision
    from satool.results.prune import PruneSweep

    rows = PruneSweep.load(demo_dir / models[0] / "results/prune").rows  # the demo's probes: --precision auto
    assert {r.score.details["precision"] for r in rows} == {fastest_precision()}
    report = (demo_dir / "report.html").read_text()
    for title in ("Models", "Every finding of the paper, judged", "favourite offset", "Rules"):
        assert title in report, title
    assert report.count("<img") >= 6 and "http://" not in report and "https://" not in report  # self-contained
    own = (demo_dir / models[0] / "report.html").read_text()
    for title in ("Model health", "This run beside the paper", "paper Fig. 1", "paper Fig. 2", "paper Fig. 3 and 4",
                  "paper Fig. 5 and 6", "What the representations know"):
        assert title in own, title


def test_quick_demo_judges_nothing(demo_dir):
    """The --quick sizes cannot measure the noise: every verdict is inconclusive, saying so."""
    import json

    from satool.results.study import Comparison
    from satool.results.verdicts import VerdictReport

    doc = VerdictReport.load(demo_dir / "study")
    assert len(doc.verdicts) >= 13
    assert {v.verdict for v in doc.verdicts} == {"inconclusive"}
    assert all("judges nothing" in v.reason for v in doc.verdicts)
    findings = {v.finding for v in doc.verdicts}
    assert {3, 4, 5, 7, 8, 9, 10, 11} <= findings
    comparison = Comparison.load(demo_dir / "study")
    heads = comparison.table("heads")
    assert heads and all(r["locality_low"] <= r["locality"] + 1e-9 for r in heads if r["locality_low"] is not None)
    probes = {(r["model"], r["layer"]) for r in comparison.table("probes") if r["representation"] == "model"}
    assert len({layer for _, layer in probes}) >= 3  # every hidden layer probed
    state = json.loads((demo_dir / "demo-state.json").read_text())["done"]
    assert set(state) == {"corpus", "study"}


def test_second_run_reuses_stages(demo_dir, satool_cli):
    from satool import reference

    model = reference.available()[0]
    outputs = (f"{model}/model.ckpt", f"{model}/attention-cache/manifest.json", f"{model}/results/prune/prune_results.csv")
    stamps = {rel: (demo_dir / rel).stat().st_mtime_ns for rel in outputs}
    result = satool_cli("demo", "--quick", "--out", demo_dir)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stderr.split())
    assert re.search(r"\d+/\d+ corpus \(done before, reused\)", text)
    for stage in ("model", "health", "extract", "metric", "segment", "relate", "probe", "prune", "spans"):
        assert re.search(rf"\d+/\d+ {model}/{stage} \(done before, reused\)", text), stage
    assert {rel: (demo_dir / rel).stat().st_mtime_ns for rel in outputs} == stamps  # nothing recomputed


def test_reports_rebuild_from_saved_results(demo_dir, tmp_path, satool_cli):
    from satool import reference

    model = demo_dir / reference.available()[0]
    result = satool_cli("report", model, "--out", tmp_path / "again.html")
    assert result.returncode == 0, result.stderr
    again = (tmp_path / "again.html").read_text()
    assert again.count("<img") == (model / "report.html").read_text().count("<img")
    empty = satool_cli("report", tmp_path / "nothing")
    assert empty.returncode == 3 and "not a directory" in empty.stderr
    study = satool_cli("compare", *[demo_dir / m for m in reference.available()], "--out", tmp_path / "study")
    assert study.returncode == 0, study.stderr
    assert (tmp_path / "study" / "report.html").exists() and "verdicts" in study.stdout


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
