"""satool view: the head grid of a 12 x 12-head model at T = 250 steps, against a one-second budget.

    python benchmarks/bench_view.py

Writes a cache of one utterance (144 softmax maps of 250 x 250, random but peaked), then times
(1) the server's answer for the grid (read, pool, quantise, JSON) and (2) with Chromium and
Playwright installed, the page's fetch-and-draw of the grid in a real browser (the page records it
in ``data-grid-ms``). Best of 5; the last column is the time as a share of the 1 s budget.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _bench import best_time, print_table  # noqa: E402


def make_cache(path: Path, layers: int = 12, heads: int = 12, steps: int = 250) -> None:
    from satool.cache import CacheWriter

    rng = np.random.default_rng(0)
    scores = rng.normal(0, 3, (layers, heads, steps, steps)).astype(np.float32)
    maps = np.exp(scores - scores.max(-1, keepdims=True))
    maps /= maps.sum(-1, keepdims=True)
    manifest = {"model": {"type": "bench", "sha256": "0" * 64}, "layers": list(range(1, layers + 1)),
                "heads": list(range(1, heads + 1)), "hidden_states": [], "settings": {}, "planned": ["u"],
                "frames_per_step": 3, "corpus": {"phone_set": ["sil"]}}
    with CacheWriter(path, manifest) as writer:
        writer.add("u", attention=maps, meta={"n_steps": steps, "n_frames": 3 * steps, "duration_s": 0.03 * steps})


def main() -> None:
    from satool.view.data import ViewData, to_json

    work = Path(tempfile.mkdtemp(prefix="satool-bench-view-"))
    try:
        make_cache(work / "cache")
        data = ViewData(work / "cache")
        seconds = best_time(lambda: to_json(data.grid("u")), repeats=5)
        rows = [["server: grid of 144 maps (read, pool to 64 x 64, quantise, JSON)", seconds, seconds / 1.0]]
        chromium = shutil.which("chromium")
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            sync_playwright = None
        if chromium and sync_playwright:
            from satool.view.server import serve_in_background

            server, url = serve_in_background(data)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu",
                                                                            "--disable-background-networking"])
                times = []
                for _ in range(5):
                    page = browser.new_page()
                    began = time.perf_counter()
                    page.goto(url)
                    page.wait_for_selector("body[data-grid-ms]", state="attached", timeout=60000)
                    times.append(float(page.get_attribute("body", "data-grid-ms")) / 1000)
                    total = time.perf_counter() - began
                    page.close()
                browser.close()
            server.shutdown()
            rows.append(["browser: fetch and draw the grid (data-grid-ms)", min(times), min(times) / 1.0])
            rows.append(["browser: page load to grid drawn, last run", total, total / 1.0])
        else:
            rows.append(["browser: skipped (needs chromium and playwright)", float("nan"), float("nan")])
        print_table("satool view, 12 x 12 heads at T = 250 steps", ["what", "seconds", "share of 1 s"], rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
