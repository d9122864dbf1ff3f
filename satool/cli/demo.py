"""`satool demo`: the whole study on the built-in corpus (library: satool.demo)."""

from __future__ import annotations

from pathlib import Path

import typer

from satool.cli.common import console, progress_bar, say


def demo(
    out: Path = typer.Option(Path("satool-demo"), "--out", "-o", help="Directory for everything the demo makes."),
    quick: bool = typer.Option(False, "--quick", help="Smaller corpus and model, fewer steps (about 3 minutes; "
                               "what CI runs)."),
) -> None:
    """Run the whole study on a generated corpus and write OUT/report.html.

    Synthesises a 40-speaker corpus with eSpeak NG, pre-trains the demo model
    (4 layers x 12 heads, Cnum = 3, R = 3), extracts its attention, and runs
    metric, segment, relate, probe and prune; the report shows the paper's
    figures for this run beside the paper's numbers. About 15 minutes on 2 CPU
    cores (--quick: 3). Running it again reuses finished stages. Afterwards,
    'cd OUT' and any stage runs by hand with its inputs taken from OUT/satool.toml.
    """
    from satool.demo import STAGES, DemoSettings, run_demo

    settings = DemoSettings.quick() if quick else DemoSettings()

    def on_stage(index: int, name: str, skipped: bool) -> None:
        note = " (done before, reused)" if skipped else ""
        console.rule(f"[bold]{index}/{len(STAGES)} {name}[/]{note}", align="left")

    state = run_demo(out, settings, on_stage=on_stage, progress_factory=lambda name: progress_bar(None, name))
    total = sum(v.get("seconds", 0) for v in state.values())
    say(f"report: {out / 'report.html'} (stages took {total / 60:.1f} min in all)")
