"""``satool view --export``: the viewer and the data of chosen utterances as one self-contained file.

The page, its script and style, and every map, spectrogram, label, relation map and the audio (as a
data URL) are put into one HTML file that opens offline and can be mailed; it fetches nothing.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from satool.view.data import NotFound, ViewData
from satool.view.server import STATIC


def _key(*parts: str) -> str:
    return "/".join(quote(p, safe="") for p in parts)


def exported_data(data: ViewData, utterances: Sequence[str], heads: Sequence[str] | None = None) -> dict:
    """Everything the page asks the server for, for ``utterances`` and ``heads`` (default all)."""
    from satool.heads import label

    info = data.info()
    chosen = [data._utterance(u) for u in utterances]  # unknown ids fail here, naming the id
    labels = list(heads) if heads else [label(layer, head) for layer in info["layers"] for head in info["heads"]]
    for name in labels:
        data.cache.position(name)  # a head the cache does not store is a usage error
    rows = {r["id"]: r for r in data.utterances()}
    out: dict = {"info": info, "utterances": [rows[u] for u in chosen]}
    for utt in chosen:
        out[_key("grid", utt)] = data.grid(utt)
        out[_key("labels", utt)] = data.labels(utt)
        for name in labels:
            out[_key("head", utt, name)] = data.head(utt, name)
        if info["audio"]:
            try:
                out[_key("spectrogram", utt)] = data.spectrogram(utt)
                out[_key("audio", utt)] = "data:audio/wav;base64," + base64.b64encode(data.audio_wav(utt)).decode()
            except NotFound:
                pass
    if info["metrics"]:
        out["metrics"] = data.metric_rows()
    if info["relations"]:
        out["relations"] = data.relations()
    return out


def export_html(data: ViewData, out: Path, utterances: Sequence[str], heads: Sequence[str] | None = None) -> Path:
    """Write the self-contained page to ``out``."""
    from satool.view.data import to_json

    page = (STATIC / "index.html").read_text()
    css = (STATIC / "app.css").read_text()
    script = (STATIC / "app.js").read_text()
    payload = to_json(exported_data(data, utterances, heads)).decode()
    payload = payload.replace("</", "<\\/")  # keep the JSON from closing the script element
    page = page.replace('<link rel="stylesheet" href="static/app.css">', f"<style>\n{css}</style>")
    # an exported file has no server: its page may run inline script, and still fetches nothing
    page = page.replace("<head>", "<head>\n<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
                        "img-src data: blob:; media-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">", 1)
    page = page.replace('<script src="static/app.js"></script>',
                        f"<script>window.SATOOL_DATA = {payload};</script>\n<script>\n{script}</script>")
    page = page.replace("<title>satool view</title>",
                        f"<title>satool view: {html.escape(', '.join(utterances))}</title>")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(page)
    return Path(out)


