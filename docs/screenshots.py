"""Make the screenshots in docs/view.md from a finished `satool demo` directory.

    python docs/screenshots.py DEMO_DIR docs/images

Opens `satool view` on the demo's cache and results in headless Chromium (Playwright with the
system browser, as the browser tests do), saves the head grid of the first utterance and the detail
of the most local head (highest `locality` in the metric results) with the pointer over the map.
"""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

from satool.view.data import ViewData
from satool.view.server import serve_in_background

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"]


def most_local_head(metric_dir: Path) -> str:
    with open(metric_dir / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("locality")]
    return max(rows, key=lambda r: float(r["locality"]))["label"]


def main(demo: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    results = demo / "results"
    head = most_local_head(results / "metric")
    server, url = serve_in_background(ViewData(demo / "attention-cache", results / "metric", results / "relate"))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.wait_for_selector("body[data-ready='yes']", state="attached", timeout=120_000)
            page.screenshot(path=str(out / "view-grid.png"))
            page.click(f".cell[data-head='{head}']")
            page.wait_for_selector(f"body[data-detail-head='{head}']", state="attached", timeout=60_000)
            box = page.locator("#detail").bounding_box()
            page.mouse.move(box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.4)
            page.wait_for_timeout(500)
            page.screenshot(path=str(out / "view-detail.png"), full_page=True)
            browser.close()
    finally:
        server.shutdown()
    print(f"wrote {out / 'view-grid.png'} and {out / 'view-detail.png'} (detail: {head})")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
