"""The local web server behind ``satool view``: a few fixed routes, nothing else.

Routes (GET only)::

    /                                   the page (satool/view/static/index.html)
    /static/app.js, /static/app.css     its script and style (shipped in the package)
    /api/info                           cache, heads, step length, phone set, what results exist
    /api/utterances                     the utterance picker's rows
    /api/grid/<utt>                     every head's map of <utt>, pooled, shared scale
    /api/head/<utt>/<L3.H7>             one head's full map (float32) and offset profile
    /api/labels/<utt>                   phone (and word) intervals
    /api/spectrogram/<utt>              log-Mel input
    /api/audio/<utt>                    WAV of the utterance
    /api/metrics                        the metric table (from 'satool metric' results)
    /api/relations                      every head's phone relation map (from 'satool relate')

Anything else, an utterance the cache does not hold, a head it does not store, or audio the
cache's corpus no longer has (moved, changed, a symlink out of it) is a 404. The page fetches
nothing from outside the machine.
"""

from __future__ import annotations

import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from satool.errors import SatoolError
from satool.view.data import NotFound, ViewData, to_json

STATIC = Path(__file__).parent / "static"
STATIC_FILES = {"app.js": "text/javascript", "app.css": "text/css"}


class Handler(BaseHTTPRequestHandler):
    data: ViewData  # set on the subclass made by :func:`make_server`
    server_version = "satool-view"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - quiet: the CLI prints the URL
        pass

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Security-Policy", "default-src 'self' data: blob:; style-src 'self' 'unsafe-inline'")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, value) -> None:
        self._send(HTTPStatus.OK, to_json(value), "application/json")

    def _missing(self, why: str) -> None:
        self._send(HTTPStatus.NOT_FOUND, to_json({"error": why}), "application/json")

    def do_GET(self) -> None:  # noqa: N802 - the http.server name
        parts = [unquote(p) for p in urlsplit(self.path).path.split("/") if p]
        try:
            self._route(parts)
        except NotFound as exc:
            self._missing(str(exc))
        except SatoolError as exc:  # a head that is not stored, a corrupt utterance: named, not a crash
            self._missing(str(exc))

    def _route(self, parts: list[str]) -> None:
        data = self.data
        if not parts:
            return self._send(HTTPStatus.OK, (STATIC / "index.html").read_bytes(), "text/html; charset=utf-8")
        if parts[0] == "static" and len(parts) == 2 and parts[1] in STATIC_FILES:
            return self._send(HTTPStatus.OK, (STATIC / parts[1]).read_bytes(), STATIC_FILES[parts[1]])
        if parts[0] != "api" or len(parts) < 2:
            raise NotFound("no such page")
        route, args = parts[1], parts[2:]
        if route == "info" and not args:
            return self._json(data.info())
        if route == "utterances" and not args:
            return self._json(data.utterances())
        if route == "metrics" and not args:
            rows = data.metric_rows()
            if rows is None:
                raise NotFound("no metric results (run 'satool metric')")
            return self._json(rows)
        if route == "relations" and not args:
            return self._json(data.relations())
        if route == "grid" and len(args) == 1:
            return self._json(data.grid(args[0]))
        if route == "head" and len(args) == 2:
            return self._json(data.head(args[0], args[1]))
        if route == "labels" and len(args) == 1:
            return self._json(data.labels(args[0]))
        if route == "spectrogram" and len(args) == 1:
            return self._json(data.spectrogram(args[0]))
        if route == "audio" and len(args) == 1:
            return self._send(HTTPStatus.OK, data.audio_wav(args[0]), "audio/wav")
        raise NotFound("no such page")


def make_server(data: ViewData, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A server bound to ``host``:``port`` (0 = a free port) answering for ``data``."""
    handler = type("BoundHandler", (Handler,), {"data": data})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def serve_in_background(data: ViewData, host: str = "127.0.0.1", port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    """(server, URL) with the server running in a daemon thread (tests, notebooks)."""
    server = make_server(data, host, port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://{server.server_address[0]}:{server.server_address[1]}/"
