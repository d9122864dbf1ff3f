"""`satool demo`: the whole study on the built-in corpus (library: satool.stages.demo)."""

from __future__ import annotations

from pathlib import Path

import typer

from satool.cli.common import console, progress_bar, say
from satool.stages import default
from satool.stages.demo import DemoSettings


def demo(
    out: Path = typer.Option(Path("satool-demo"), "--out", "-o", help="Directory for everything the demo makes."),
    quick: bool = typer.Option(False, "--quick", help="Every stage on a tiny corpus with short probes (under a "
                               "minute; what CI runs). It judges nothing: its sizes cannot measure the noise."),
    pretrain: bool = typer.Option(default(DemoSettings, "pretrain"), "--pretrain", help="Pre-train one model per "
                                  "mask span (3, 6, 9) here with the reference recipe (as many steps as --steps) "
                                  "instead of studying the shipped reference models."),
    probe_precision: str = typer.Option(default(DemoSettings, "probe_precision"), "--precision", help="Arithmetic of "
                                  "the probes' matrix products: auto (bfloat16 where this machine multiplies it "
                                  "natively, about 2x faster; else float32), float32 or bfloat16. Each probe's row "
                                  "names the one that ran."),
    pretrain_steps: int = typer.Option(default(DemoSettings, "pretrain_steps"), "--steps", min=1, help="Pre-training "
                                       "steps with --pretrain (the reference model had many more; see "
                                       "docs/pretraining.md)."),
) -> None:
    """Run the paper's whole experiment on a generated corpus and write OUT/report.html.

    Synthesises a 40-speaker corpus with eSpeak NG and studies the reference
    models that ship with satool side by side, as the paper does: M3, M6 and
    M9 are 4-layer, 12-head Mockingjay models pre-trained alike except for the
    mask span Cnum (3, 6, 9). For each: health checks, attention, metrics with
    bootstrap intervals, segmentation, phone relations, probes of every layer,
    pruning and span pruning (OUT/M3/, ... with a report each; M3 gets the
    whole pruning study, M6 and M9 the globalness-against-random sweep the
    comparison needs). Then the study (OUT/study/, OUT/report.html) judges
    every finding of the paper by a stated rule: reproduces, does not
    reproduce, or inconclusive. About 13 minutes on 2 CPU cores with native
    bfloat16, about 20 without (--quick:
    under one). Running it again reuses
    finished stages; any stage can be rerun by hand inside OUT/M3 (its
    satool.toml holds the inputs).
    """
    from dataclasses import replace

    from satool.cli.probe import probe_settings
    from satool.stages.demo import run_demo, stage_count

    settings = DemoSettings.quick() if quick else DemoSettings()
    if pretrain and not quick:
        settings = replace(settings, pretrain=True, pretrain_steps=pretrain_steps)
    probe_settings(1, probe_precision)  # a bad --precision is refused before any work
    settings = replace(settings, probe_precision=probe_precision)

    total = stage_count(settings)

    def on_stage(index: int, name: str, skipped: bool) -> None:
        note = " (done before, reused)" if skipped else ""
        console.rule(f"[bold]{index}/{total} {name}[/]{note}", align="left")

    state = run_demo(out, settings, on_stage=on_stage, progress_factory=lambda name: progress_bar(None, name))
    for name, done in state.items():
        for line in done.get("warnings") or []:
            say(f"{name}: {line}", "warning:")
    total = sum(v.get("seconds", 0) for v in state.values())
    say(f"report: {out / 'report.html'} (stages took {total / 60:.1f} min in all)")
