"""`satool demo`: the whole study on the built-in corpus (library: satool.stages.demo)."""

from __future__ import annotations

from pathlib import Path

import typer

from satool.cli.common import console, progress_bar, say
from satool.stages import default
from satool.stages.demo import DemoSettings


def demo(
    out: Path = typer.Option(Path("satool-demo"), "--out", "-o", help="Directory for everything the demo makes."),
    quick: bool = typer.Option(False, "--quick", help="Smaller corpus, a tiny model pre-trained for 60 steps "
                               "(about 3 minutes; what CI runs). Its findings are all inconclusive: the model "
                               "has not learned."),
    pretrain: bool = typer.Option(default(DemoSettings, "pretrain"), "--pretrain", help="Pre-train a model here "
                                  "with the reference recipe (as many steps as --steps) instead of analysing the "
                                  "shipped reference model."),
    pretrain_steps: int = typer.Option(default(DemoSettings, "pretrain_steps"), "--steps", min=1, help="Pre-training "
                                       "steps with --pretrain (the reference model had many more; see "
                                       "docs/pretraining.md)."),
) -> None:
    """Run the whole study on a generated corpus and write OUT/report.html.

    Synthesises a 40-speaker corpus with eSpeak NG and analyses the reference
    model that ships with satool (a 4-layer, 12-head Mockingjay pre-trained on
    the built-in corpus; Cnum = 3, R = 3): checks that it learned (held-out
    reconstruction against four baselines, attention off, head locality),
    extracts its attention, and runs metric, segment, relate, probe and prune.
    The report judges each of the paper's findings by a stated rule:
    reproduces, does not reproduce, or inconclusive. About 15 minutes on 2 CPU
    cores (--quick: 3). Running it again reuses finished stages. Afterwards,
    'cd OUT' and any stage runs by hand with its inputs taken from OUT/satool.toml.
    """
    from dataclasses import replace

    from satool.stages.demo import STAGES, run_demo

    settings = DemoSettings.quick() if quick else DemoSettings()
    if pretrain and not quick:
        settings = replace(settings, pretrain=True, pretrain_steps=pretrain_steps)

    def on_stage(index: int, name: str, skipped: bool) -> None:
        note = " (done before, reused)" if skipped else ""
        console.rule(f"[bold]{index}/{len(STAGES)} {name}[/]{note}", align="left")

    state = run_demo(out, settings, on_stage=on_stage, progress_factory=lambda name: progress_bar(None, name))
    for name, done in state.items():
        for line in done.get("warnings") or []:
            say(f"{name}: {line}", "warning:")
    total = sum(v.get("seconds", 0) for v in state.values())
    say(f"report: {out / 'report.html'} (stages took {total / 60:.1f} min in all)")
