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

Before any route, every request is checked (a 403 with one line of text otherwise):

- its Host header names the address the server listens on (127.0.0.1, localhost or [::1] for the
  default loopback address), so a web page cannot reach the server through a DNS name it rebinds
  to 127.0.0.1;
- it is not cross-origin: an Origin header must be the server's own, and a browser request marked
  ``Sec-Fetch-Site: cross-site`` or ``same-site`` (another site, or another port of this host) must be
  a top-level navigation (which cannot read anything across origins and still needs the token);
- it carries the per-run token, as ``?token=...`` (the URL ``satool view`` prints) or as the cookie
  that URL sets (HttpOnly, SameSite=Strict, Path=/), which the page's own requests send. The first
  visit is redirected to ``/``, so the token leaves the address bar. Tokens are compared with
  :func:`hmac.compare_digest`. ``token=False`` (``--no-token``) turns this last check off only.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from satool.errors import SatoolError
from satool.view.data import NotFound, ViewData, to_json

STATIC = Path(__file__).parent / "static"
STATIC_FILES = {"app.js": "text/javascript", "app.css": "text/css"}
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
WILDCARD_ADDRESSES = ("", "0.0.0.0", "::")
NO_TOKEN = "satool view: open the URL that 'satool view' printed (it ends in ?token=...); this server needs its token"
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
                               "frame-ancestors 'none'; form-action 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _split_host(header: str) -> tuple[str, str] | None:
    """("name", "port") of a Host header (name lower-case, IPv6 in brackets, port "" if absent), or None
    when it is not a plain host[:port]."""
    header = header.strip().lower()
    if header.startswith("["):
        name, bracket, rest = header.partition("]")
        name += bracket
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port = rest[1:]
    else:
        name, _, port = header.partition(":")
    if not name or (port and not (port.isdigit() and len(port) <= 5)) or any(c in name for c in "/\\@?# "):
        return None
    return name.rstrip(".") or name, port


def _is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name[1:-1] if name.startswith("[") else name)
    except ValueError:
        return False
    return True


class ViewServer(ThreadingHTTPServer):
    """The HTTP server with what every request is checked against: the Host names it answers to and
    its token (None with ``--no-token``)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], token: bool = True):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)
        self.token: str | None = secrets.token_urlsafe(32) if token else None
        self.cookie_name = f"satool-view-{self.server_address[1]}"
        host = address[0].strip("[]").lower()
        self.host_names = set(LOOPBACK_NAMES)
        self.any_ip = host in WILDCARD_ADDRESSES  # listening everywhere: any address of this machine
        if host not in ("127.0.0.1", "localhost", "::1"):
            self.host_names.add(_bracketed(host))
            for name in (socket.gethostname(), socket.getfqdn()):
                self.host_names.update({name.lower(), name.lower().split(".")[0]})
        self.host_names.discard("")

    @property
    def base_url(self) -> str:
        host = self.server_address[0]
        host = socket.gethostname().lower() if host in WILDCARD_ADDRESSES else _bracketed(host)
        return f"http://{host}:{self.server_address[1]}/"

    @property
    def url(self) -> str:
        """What to open: the address with ``?token=...`` (just the address with ``--no-token``)."""
        return self.base_url + (f"?token={self.token}" if self.token else "")

    def host_allowed(self, header: str | None) -> bool:
        parts = _split_host(header) if header else None
        if parts is None:
            return False
        name = parts[0]
        return name in self.host_names or (self.any_ip and _is_ip_literal(name))

    def token_matches(self, candidate: str | None) -> bool:
        if self.token is None or not candidate:
            return False
        return hmac.compare_digest(candidate.encode("utf-8", "replace"), self.token.encode())


class Handler(BaseHTTPRequestHandler):
    data: ViewData  # set on the subclass made by :func:`make_server`
    server_version = "satool-view"

    server: ViewServer
    _also_send: dict[str, str] = {}  # noqa: RUF012 - replaced, never changed: the cookie a valid ?token= sets

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - quiet: the CLI prints the URL
        pass

    def _send(self, status: int, body: bytes, kind: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in {**SECURITY_HEADERS, **self._also_send, **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, value) -> None:
        self._send(HTTPStatus.OK, to_json(value), "application/json")

    def _missing(self, why: str) -> None:
        self._send(HTTPStatus.NOT_FOUND, to_json({"error": why}), "application/json")

    def _refuse(self, why: str) -> None:
        self._send(HTTPStatus.FORBIDDEN, (why + "\n").encode(), "text/plain; charset=utf-8")

    def _cookie_token(self) -> str | None:
        for header in self.headers.get_all("Cookie") or []:
            for pair in header.split(";"):
                name, _, value = pair.strip().partition("=")
                if name == self.server.cookie_name and self.server.token_matches(value.strip('"')):
                    return value
        return None

    def _refusal(self) -> str | None:
        """Why this request is refused (None: it may go on), before any route is looked at."""
        hosts = self.headers.get_all("Host") or []
        if len(hosts) != 1 or not self.server.host_allowed(hosts[0]):
            return ("satool view: refused: this server answers only for the address it listens on "
                    "(http://127.0.0.1, localhost or [::1]), not for the Host this request names")
        origin = self.headers.get("Origin")
        if origin is not None and origin.strip().lower().rstrip("/") != "http://" + hosts[0].strip().lower():
            return "satool view: refused: a cross-origin request (another web page asked for this)"
        site = (self.headers.get("Sec-Fetch-Site") or "").strip().lower()
        if site in ("cross-site", "same-site") and not (
                self.headers.get("Sec-Fetch-Mode", "").lower() == "navigate"
                and self.headers.get("Sec-Fetch-Dest", "document").lower() == "document"):
            return "satool view: refused: a cross-site request (another web page asked for this)"
        return None

    def do_GET(self) -> None:  # noqa: N802 - the http.server name
        if not self.path.startswith("/") or self.path.startswith("//"):
            return self._refuse("satool view: refused: not a path on this server")
        url = urlsplit(self.path)
        refusal = self._refusal()
        if refusal is not None:
            return self._refuse(refusal)
        server = self.server
        if server.token is not None:
            given = parse_qs(url.query).get("token", [None])[-1]
            if server.token_matches(given):
                cookie = f"{server.cookie_name}={server.token}; HttpOnly; SameSite=Strict; Path=/"
                site = (self.headers.get("Sec-Fetch-Site") or "none").strip().lower()
                if url.path == "/" and site in ("none", "same-origin"):
                    # the token leaves the address bar (and the history); a navigation that came from
                    # another site is served in place instead, since a SameSite=Strict cookie would not
                    # follow the redirect (the page then drops the token from the address itself)
                    return self._send(HTTPStatus.SEE_OTHER, b"", "text/plain", {"Location": "/", "Set-Cookie": cookie})
                self._also_send = {"Set-Cookie": cookie}
            elif self._cookie_token() is None:
                return self._refuse(NO_TOKEN)
        parts = [unquote(p) for p in url.path.split("/") if p]
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


def make_server(data: ViewData, host: str = "127.0.0.1", port: int = 0, *, token: bool = True) -> ViewServer:
    """A server bound to ``host``:``port`` (0 = a free port) answering for ``data``; it needs a fresh
    random token (``server.url`` carries it) unless ``token=False``."""
    handler = type("BoundHandler", (Handler,), {"data": data})
    return ViewServer((host, port), handler, token=token)


def serve_in_background(data: ViewData, host: str = "127.0.0.1", port: int = 0, *,
                        token: bool = True) -> tuple[ViewServer, str]:
    """(server, URL to open, with its token) with the server running in a daemon thread (tests,
    notebooks); ``server.base_url`` is the address alone and ``server.token`` the token."""
    server = make_server(data, host, port, token=token)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.url
