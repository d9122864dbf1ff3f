"""satool view: the server answers only for what the cache holds, and the page works in a real browser."""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request

import numpy as np
import pytest

from satool import testing

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny model's cache with metric and relate results, like a workspace after those stages."""
    from satool.analysis.metrics import BUILTIN_METRICS
    from satool.analysis.relations import relate, save_all
    from satool.analysis.scoring import cache_stream, score_cache
    from satool.cache import open_cache
    from satool.extract import extract

    root = tmp_path_factory.mktemp("view")
    testing.make_librispeech(root / "LS", speakers=("19", "26"), per_speaker=2)
    extract(testing.make_checkpoint(root / "m.ckpt"), root / "LS", root / "cache")
    cache = open_cache(root / "cache")
    score_cache(cache, list(BUILTIN_METRICS)).save(root / "metric")
    save_all(relate(cache_stream(cache), cache.layers, cache.heads, cache.phone_set), [0], root / "relate")
    return root


@pytest.fixture
def server(run):
    from satool.view.data import ViewData
    from satool.view.server import serve_in_background

    data = ViewData(run / "cache", run / "metric", run / "relate")
    server, url = serve_in_background(data)
    yield url, data
    server.shutdown()
    server.server_close()


def fetch(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read(), response.headers.get("Content-Type")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("Content-Type")


def test_api_serves_the_cache(server):
    url, data = server
    status, body, _ = fetch(url + "api/utterances")
    rows = json.loads(body)
    assert status == 200 and [r["id"] for r in rows] == data.cache.utterance_ids
    info = json.loads(fetch(url + "api/info")[1])
    assert info["layers"] == [1, 2] and info["audio"] and info["metrics"] and info["relations"]
    grid = json.loads(fetch(url + f"api/grid/{rows[0]['id']}")[1])
    assert grid["vmax"] > 0 and "shared" in grid["scale"]
    head = json.loads(fetch(url + f"api/head/{rows[0]['id']}/L2.H1")[1])
    full = data.cache.attention(rows[0]["id"], head="L2.H1")
    assert np.allclose(np.frombuffer(__import__("base64").b64decode(head["map"]), np.float32).reshape(full.shape), full)
    status, wav, kind = fetch(url + f"api/audio/{rows[0]['id']}")
    assert status == 200 and kind == "audio/wav" and wav[:4] == b"RIFF"
    labels = json.loads(fetch(url + f"api/labels/{rows[0]['id']}")[1])
    assert [p["label"] for p in labels["phones"]][:3] == ["sil", "HH", "AH"]


@pytest.mark.parametrize("path", [
    "api/grid/no-such-utterance", "api/audio/..%2F..%2Fm.ckpt", "api/head/19-198-0000/L9.H9",
    "static/..%2F..%2Fcache.py", "static/app.py", "api/../../etc/passwd", "etc/passwd", "api/labels",
])
def test_everything_else_is_404(server, path):
    url, _ = server
    status, body, _ = fetch(url + path)
    assert status == 404, (path, body[:200])


def test_symlinks_out_of_the_corpus_and_a_moved_corpus(run, tmp_path):
    from satool.view.data import NotFound, ViewData

    copy = tmp_path / "run"
    shutil.copytree(run, copy, symlinks=True)
    data = ViewData(run / "cache")
    first = data.cache.utterance_ids[0]
    audio = next((run / "LS").rglob(f"{first}.flac"))
    original = audio.read_bytes()
    outside = tmp_path / "outside.flac"
    outside.write_bytes(original)
    audio.unlink()
    os.symlink(outside, audio)
    try:
        with pytest.raises(NotFound, match="outside the corpus"):
            ViewData(run / "cache").audio_wav(first)
    finally:
        audio.unlink()
        audio.write_bytes(original)
    moved = tmp_path / "moved-corpus"
    shutil.move(str(run / "LS"), moved)
    try:
        data = ViewData(run / "cache")
        info = data.info()
        assert info["audio"] is False and "not available" in info["audio_note"]
        assert data.grid(first)["vmax"] > 0 and data.labels(first)["phones"]  # maps and labels still shown
        with pytest.raises(NotFound):
            data.audio_wav(first)
    finally:
        shutil.move(str(moved), run / "LS")


def test_export_is_self_contained(run, tmp_path):
    from satool.view.data import ViewData
    from satool.view.export import export_html

    data = ViewData(run / "cache", run / "metric", run / "relate")
    first = data.cache.utterance_ids[0]
    page = export_html(data, tmp_path / "one.html", [first], ["L1.H1", "L2.H2"]).read_text()
    assert "window.SATOOL_DATA" in page and "src=\"static/" not in page and "http://" not in page
    assert "default-src 'none'" in page and "data:audio/wav;base64," in page
    from satool.errors import UsageError

    with pytest.raises(UsageError, match="L7.H1 is not available"):
        export_html(data, tmp_path / "bad.html", [first], ["L7.H1"])


def _browser():
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright drives the browser tests")
    if CHROMIUM is None:
        pytest.skip("no Chromium here: the nox test session installs Debian's 'chromium' where apt is usable")
    return playwright


def _blank(png: bytes) -> bool:
    import io

    from PIL import Image

    image = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float)
    return image.std() < 5


@pytest.mark.browser
def test_the_page_in_a_real_browser(server, run):
    sync_api = _browser()
    url, data = server
    artifacts = _artifacts()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1300, "height": 950})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(url)
        page.wait_for_selector("body[data-ready='yes']", state="attached", timeout=60000)
        assert page.locator(".cell").count() == 2 * 2  # L x H maps
        grid_png = page.screenshot(path=str(artifacts / "view-grid.png"))
        page.click(".cell[data-head='L2.H1']")
        page.wait_for_selector("body[data-detail-head='L2.H1']", state="attached")
        assert int(page.get_attribute("body", "data-phone-count")) >= 8  # phone tier on both axes
        assert "L2.H1" in page.inner_text("#detail-title")
        box = page.locator("#detail").bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.3)
        first = page.get_attribute("body", "data-hover-query")
        page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.6)
        second = page.get_attribute("body", "data-hover-query")
        assert first is not None and second is not None and int(second) > int(first)  # the distribution follows
        page.wait_for_function("() => document.getElementById('audio').duration > 0", timeout=30000)
        duration = page.locator("#audio").evaluate("a => a.duration")
        expected = data.cache.meta(data.cache.utterance_ids[0])["duration_s"]
        assert abs(duration - expected) < 0.02
        detail_png = page.screenshot(path=str(artifacts / "view-detail.png"), full_page=True)
        page.click("nav button[data-tab='relations']")
        relations_png = page.screenshot(path=str(artifacts / "view-relations.png"))
        browser.close()
    assert errors == []
    assert not any(_blank(png) for png in (grid_png, detail_png, relations_png))


@pytest.mark.browser
def test_the_exported_file_renders_offline(run, tmp_path):
    sync_api = _browser()
    from satool.view.data import ViewData
    from satool.view.export import export_html

    data = ViewData(run / "cache", run / "metric", run / "relate")
    path = export_html(data, tmp_path / "export.html", data.cache.utterance_ids[:1])
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page()
        requests = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(path.as_uri())
        page.wait_for_selector("body[data-ready='yes']", state="attached", timeout=60000)
        assert page.locator(".cell").count() == 4
        page.click(".cell[data-head='L1.H2']")
        page.wait_for_selector("body[data-detail-head='L1.H2']", state="attached")
        png = page.screenshot()
        browser.close()
    assert all(r.startswith(("file:", "data:")) for r in requests), requests  # no network request at all
    assert not _blank(png)


def _artifacts():
    from conftest import REPO

    path = REPO / ".test-artifacts"
    path.mkdir(exist_ok=True)
    return path
