"""satool view: the server answers only for what the cache holds, and the page works in a real browser."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

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
    from satool.analysis.relations import relate
    from satool.analysis.scoring import cache_stream, score_cache
    from satool.cache import open_cache
    from satool.stages import extract as extract_stage

    root = tmp_path_factory.mktemp("view")
    testing.make_librispeech(root / "LS", speakers=("19", "26"), per_speaker=2)
    extract_stage.run(extract_stage.Settings(checkpoint=testing.make_checkpoint(root / "m.ckpt"), corpus=root / "LS",
                                             out=root / "cache"))
    cache = open_cache(root / "cache")
    score_cache(cache, list(BUILTIN_METRICS)).save(root / "metric")
    relate(cache_stream(cache), cache.layers, cache.heads, cache.phone_set).save(root / "relate")
    return root


def request(base: str, path: str, headers: dict[str, str] | None = None):
    """(status, body, headers) of GET ``path`` at ``base``, exactly as given (no redirect followed; a Host
    header in ``headers`` replaces the real one)."""
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read(), response.headers
    finally:
        connection.close()


@dataclass
class Served:
    server: object
    url: str  # what 'satool view' prints: the address with ?token=...
    data: object

    @property
    def base(self) -> str:
        return self.server.base_url

    @property
    def cookie(self) -> str:
        return f"{self.server.cookie_name}={self.server.token}"

    def get(self, path: str, headers: dict[str, str] | None = None, cookie: bool = True):
        """GET ``path`` as the page's own requests make it: with the cookie its first visit set."""
        sent = {"Cookie": self.cookie} if cookie and self.server.token else {}
        return request(self.base, "/" + path.lstrip("/"), {**sent, **(headers or {})})


def _serve(run, token=True):
    from satool.view.data import ViewData
    from satool.view.server import serve_in_background

    data = ViewData(run / "cache", run / "metric", run / "relate")
    server, url = serve_in_background(data, token=token)
    return Served(server, url, data)


@pytest.fixture
def server(run):
    served = _serve(run)
    yield served
    served.server.shutdown()
    served.server.server_close()


@pytest.fixture
def open_server(run):
    served = _serve(run, token=False)
    yield served
    served.server.shutdown()
    served.server.server_close()


def test_api_serves_the_cache(server):
    data = server.data
    status, body, _ = server.get("api/utterances")
    rows = json.loads(body)
    assert status == 200 and [r["id"] for r in rows] == data.cache.utterance_ids
    info = json.loads(server.get("api/info")[1])
    assert info["layers"] == [1, 2] and info["audio"] and info["metrics"] and info["relations"]
    grid = json.loads(server.get(f"api/grid/{rows[0]['id']}")[1])
    assert grid["vmax"] > 0 and "shared" in grid["scale"]
    head = json.loads(server.get(f"api/head/{rows[0]['id']}/L2.H1")[1])
    full = data.cache.attention(rows[0]["id"], head="L2.H1")
    assert np.allclose(np.frombuffer(__import__("base64").b64decode(head["map"]), np.float32).reshape(full.shape), full)
    # weights per power of two: this utterance's from its map, the corpus's from the metric results
    from satool.analysis.histogram import BINS, weight_histogram

    expected = weight_histogram(full)
    np.testing.assert_allclose(head["histogram"], expected / expected.sum())
    corpus = info["histograms"]
    assert len(corpus["lower_edges"]) == BINS and set(corpus["shares"]) == {"L1.H1", "L1.H2", "L2.H1", "L2.H2"}
    assert sum(corpus["shares"]["L2.H1"]) == pytest.approx(1.0)
    status, wav, headers = server.get(f"api/audio/{rows[0]['id']}")
    assert status == 200 and headers["Content-Type"] == "audio/wav" and wav[:4] == b"RIFF"
    labels = json.loads(server.get(f"api/labels/{rows[0]['id']}")[1])
    assert [p["label"] for p in labels["phones"]][:3] == ["sil", "HH", "AH"]


@pytest.mark.parametrize("path", [
    "api/grid/no-such-utterance", "api/audio/..%2F..%2Fm.ckpt", "api/head/19-198-0000/L9.H9",
    "static/..%2F..%2Fcache.py", "static/app.py", "api/../../etc/passwd", "etc/passwd", "api/labels",
])
def test_everything_else_is_404(server, path):
    status, body, _ = server.get(path)
    assert status == 404, (path, body[:200])


# -- who may ask: the Host, the origin, the token ---------------------------------------------------

ROUTES = ["", "static/app.js", "api/info", "api/utterances", "api/metrics", "api/relations", "api/grid/{utt}",
          "api/head/{utt}/L1.H2", "api/labels/{utt}", "api/spectrogram/{utt}", "api/audio/{utt}"]


def _routes(served):
    first = served.data.cache.utterance_ids[0]
    return [route.format(utt=first) for route in ROUTES]


def _refused(response, words):
    status, body, headers = response
    assert status == 403 and headers["Content-Type"].startswith("text/plain"), (status, body[:200])
    text = body.decode()
    assert text.count("\n") == 1 and words in text, text
    assert "Set-Cookie" not in headers


def test_foreign_host_is_refused(server, open_server):
    port = server.server.server_address[1]
    for served in (server, open_server):  # the Host check stays on with --no-token
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.nip.io", f"attacker.localhost.evil:{port}",
                     "10.0.0.1", f"127.0.0.1@evil:{port}", ""):
            for route in ("", "api/utterances", "api/audio/" + served.data.cache.utterance_ids[0]):
                _refused(served.get(route, {"Host": host}), "answers only for the address it listens on")
        assert served.get("api/info", {"Host": f"localhost:{port}"})[0] == 200
        assert served.get("api/info", {"Host": f"[::1]:{port}"})[0] == 200
        assert served.get("api/info", {"Host": "localhost:8000"})[0] == 200  # through an ssh tunnel's port
    _refused(request(server.base, f"{server.base}api/info", {"Cookie": server.cookie}), "not a path")


def test_no_token_or_a_wrong_one_is_refused(server):
    for route in _routes(server):
        _refused(server.get(route, cookie=False), "open the URL that 'satool view' printed")
        _refused(server.get(route + "?token=wrong", cookie=False), "open the URL")
        _refused(server.get(route, {"Cookie": f"{server.server.cookie_name}=wrong"}, cookie=False), "open the URL")
        _refused(server.get(route, {"Cookie": f"satool-view-1={server.server.token}"}, cookie=False), "open the URL")
        _refused(server.get(route + "?token=" + server.server.token[:-1], cookie=False), "open the URL")


def test_the_token_url_sets_the_cookie_and_then_everything_is_served(server):
    token = server.server.token
    assert len(token) >= 40 and server.url == f"{server.base}?token={token}"
    status, _, headers = request(server.base, f"/?token={token}")
    assert status == 303 and headers["Location"] == "/"  # the token leaves the address bar
    cookie = headers["Set-Cookie"]
    assert cookie.startswith(f"{server.server.cookie_name}={token};")
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= {part.strip() for part in cookie.split(";")}
    sent = {"Cookie": cookie.split(";")[0]}
    status, page, headers = request(server.base, "/", sent)
    assert status == 200 and b"<html" in page.lower() and "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    for route in _routes(server):
        status, body, headers = request(server.base, "/" + route, sent)
        assert status == 200, (route, body[:200])
        assert headers["X-Content-Type-Options"] == "nosniff" and headers["Cross-Origin-Resource-Policy"] == "same-origin"
    status, body, headers = request(server.base, f"/api/info?token={token}")  # scripts: the token in the query
    assert status == 200 and json.loads(body)["layers"] == [1, 2] and "Set-Cookie" in headers
    status, _, headers = request(server.base, f"/?token={token}", {"Sec-Fetch-Site": "cross-site",
                                                                      "Sec-Fetch-Mode": "navigate",
                                                                      "Sec-Fetch-Dest": "document"})
    assert status == 200 and "Set-Cookie" in headers  # from a link elsewhere: served in place (see app.js)


def test_cross_origin_requests_are_refused(server, open_server):
    port = server.server.server_address[1]
    for served in (server, open_server):
        for route in ("api/utterances", "api/audio/" + served.data.cache.utterance_ids[0], ""):
            for origin in ("http://evil.example", "null", f"http://localhost:{port + 1}", f"https://127.0.0.1:{port}"):
                _refused(served.get(route, {"Origin": origin}), "cross-origin")
            for site in ("cross-site", "same-site"):
                for mode, dest in (("cors", "empty"), ("no-cors", "audio"), ("no-cors", "image"), ("navigate", "iframe")):
                    _refused(served.get(route, {"Sec-Fetch-Site": site, "Sec-Fetch-Mode": mode,
                                                "Sec-Fetch-Dest": dest}), "cross-site")
            own = {"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"}
            assert served.get(route, {**own, "Origin": served.base.rstrip("/")})[0] == 200


def test_no_token_serves_without_it(open_server):
    assert open_server.url == open_server.base and open_server.server.token is None
    for route in _routes(open_server):
        status, body, headers = open_server.get(route)
        assert status == 200 and "Set-Cookie" not in headers, (route, body[:200])


def test_the_command_prints_the_token_url(run, tmp_path):
    """`satool view` prints http://127.0.0.1:P/?token=...; with --no-token the bare address and a warning."""
    for extra in ((), ("--no-token",)):
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "300"}
        child = subprocess.Popen([sys.executable, "-m", "satool", "view", str(run / "cache"), *extra],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path, env=env)
        printed = []
        try:
            began = time.monotonic()
            while not any("http://" in line for line in printed) and time.monotonic() - began < 120:
                line = child.stdout.readline()
                if not line and child.poll() is not None:
                    break
                printed.append(line)
            url = next(word for line in printed for word in line.split() if word.startswith("http://"))
            base = url.split("?")[0]
            assert base.startswith("http://127.0.0.1:") and base.endswith("/")
            if extra:
                assert url == base and any("--no-token: any user or program on this machine" in p for p in printed)
                assert request(base, "/api/info")[0] == 200
                _refused(request(base, "/api/info", {"Host": "evil.example"}), "answers only")
            else:
                assert len(url.split("?token=")[1]) >= 40
                _refused(request(base, "/api/info"), "open the URL")
                assert request(base, "/api/info?" + url.split("?")[1])[0] == 200
        finally:
            child.send_signal(signal.SIGINT)
            try:
                child.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.communicate()


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
    """Opened at the printed URL (with its token): the page loads, its own requests carry the cookie,
    and the token is gone from the address bar."""
    sync_api = _browser()
    url, data = server.url, server.data
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
        assert page.url == server.base  # redirected: the token left the address bar
        cookie, = page.context.cookies()
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["value"] == server.server.token
        grid_png = page.screenshot(path=str(artifacts / "view-grid.png"))
        page.click(".cell[data-head='L2.H1']")
        page.wait_for_selector("body[data-detail-head='L2.H1']", state="attached")
        assert int(page.get_attribute("body", "data-phone-count")) >= 8  # phone tier on both axes
        assert "L2.H1" in page.inner_text("#detail-title")
        assert page.get_attribute("body", "data-histogram-bins") == "26"  # weights per power of two, drawn
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
def test_the_token_in_a_real_browser(server):
    """Without the token the browser gets the one-line 403; followed from a link on another page (no
    redirect then: a SameSite=Strict cookie would not follow it) the page still draws its grid and drops
    the token from the address bar; another page cannot read the API with the user's cookie."""
    sync_api = _browser()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page()
        response = page.goto(server.base)
        assert response.status == 403 and "open the URL that 'satool view' printed" in page.inner_text("body")
        page.goto(server.base + "api/utterances")
        assert "open the URL" in page.inner_text("body")
        page.set_content(f'<a id="go" href="{server.url}">viewer</a>')  # a link on another page (about:blank)
        page.click("#go")
        page.wait_for_selector("body[data-ready='yes']", state="attached", timeout=60000)
        assert page.locator(".cell").count() == 4 and "token" not in page.url
        assert page.evaluate("() => fetch('api/info').then(r => r.status)") == 200  # the page's own requests
        other = browser.new_page()  # same browser, cookie set: a page elsewhere still reads nothing
        other.goto("data:text/html,<p>elsewhere</p>")
        seen = other.evaluate("""url => fetch(url, {credentials: 'include'}).then(r => r.status, e => 'blocked')""",
                              server.base + "api/utterances")
        assert seen in ("blocked", 403), seen
        browser.close()


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
