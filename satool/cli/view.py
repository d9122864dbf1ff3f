"""`satool view`: browse a cache's attention maps in a web browser (library: satool.view)."""

from __future__ import annotations

from pathlib import Path

import typer

from satool.cli.common import parse_csv, say


def view(
    cache: Path | None = typer.Argument(None, help="Attention cache (default: the workspace's)."),
    port: int = typer.Option(0, min=0, max=65535, help="Port (0 = a free one)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on; anything but loopback shows the cache "
                             "to your network (a warning says so)."),
    export: Path | None = typer.Option(None, "--export", help="Write one self-contained HTML file instead of "
                                       "serving (needs --utts)."),
    utts: str | None = typer.Option(None, "--utts", help="Utterances for --export, comma-separated."),
    heads: str | None = typer.Option(None, "--heads", help="Heads for --export, e.g. L1.H3,L2.H7 (default all)."),
    metrics: Path | None = typer.Option(None, help="'satool metric' results (default: the workspace's)."),
    relate: Path | None = typer.Option(None, help="'satool relate' results (default: the workspace's)."),
    no_token: bool = typer.Option(False, "--no-token", help="Serve without the per-run token. Risky: any user or "
                                  "program on this machine (other people on a shared node; with --host, your "
                                  "network) can then read the corpus's audio, transcripts, speaker ids and maps. "
                                  "The Host and cross-origin checks stay on."),
    maps: str | None = typer.Option(None, "--maps", help="The map kind the cache must hold (default: whichever "
                                    "it does; the page names it). docs/maps.md"),
) -> None:
    """Browse every head of every utterance: the head grid on one colour scale, a head in detail over
    the log-Mel spectrogram with phones and words on both time axes, its row under the pointer, the
    audio with a playhead, offset profiles, every phone relation map and the metric table.

    Serves on 127.0.0.1 at a free port and prints the URL to open (Ctrl-C stops it); reads maps lazily.
    With --export OUT.html --utts ID,... it writes the same views for those utterances into one file
    that opens offline.

    The URL carries a random token made for this run: without it (or the cookie its first visit sets)
    the server answers 403, as it does to a request naming another Host (DNS rebinding) or coming from
    another web page. See docs/view.md, "Security".
    """
    from satool.errors import UsageError
    from satool.plugins import get_plugins
    from satool.view.data import ViewData
    from satool.workspace import Workspace

    workspace = Workspace()
    cache = workspace.resolve("cache", cache, hint="pass a cache made by 'satool extract'")
    data = ViewData(cache, metrics or workspace.path("metrics"), relate or workspace.path("relate"),
                    readers=get_plugins().corpora.objects())
    if maps is not None:
        from satool.stages.metric import cache_kind

        cache_kind(data.cache, maps)
    if export is not None:
        chosen = parse_csv(utts)
        if not chosen:
            raise UsageError("--export needs --utts ID,... (the utterances to put in the file)")
        from satool.heads import label, parse_list
        from satool.view.export import export_html

        path = export_html(data, export, chosen, [label(*h) for h in parse_list(heads)] or None)
        say(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB; opens offline)")
        return
    if host not in ("127.0.0.1", "localhost", "::1"):
        reach = "anyone who can reach this address" if no_token else "anyone who can reach this address and sees the URL"
        say(f"listening on {host}: {reach} can browse the cache", "warning:")
    if no_token:
        say("--no-token: any user or program on this machine can read the corpus's audio, transcripts, speaker ids "
            "and maps through this server", "warning:")
    from satool.view.server import make_server

    server = make_server(data, host, port, token=not no_token)
    say(f"satool view: {server.url} (Ctrl-C to stop)")
    try:
        server.serve_forever()
    finally:
        server.server_close()
