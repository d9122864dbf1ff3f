"""`satool health`: has a pre-trained model learned? (library: satool.training.heldout)."""

from __future__ import annotations

from pathlib import Path

import typer

from satool.cli.common import log, print_json, progress_bar, say
from satool.stages import default
from satool.stages import health as stage


def health(
    checkpoint: Path | None = typer.Argument(None, help="A Mockingjay checkpoint with its pre-training head "
                                             "(default: the workspace's)."),
    corpus: Path | None = typer.Argument(None, help="Corpus (default: the workspace's)."),
    split: str = typer.Option(default(stage.Settings, "split"), help="Held-out split or family (never one the model "
                              "was trained on)."),
    max_utts: int | None = typer.Option(default(stage.Settings, "max_utts"), min=1,
                                        help="At most this many utterances."),
    seed: int = typer.Option(default(stage.Settings, "seed"), help="Seed of the fixed masks (same seed, same "
                             "numbers)."),
    out: Path = typer.Option(default(stage.Settings, "out"), "--out", "-o", help="Results directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the numbers as JSON."),
    device: str = typer.Option(default(stage.Settings, "device"), help="cpu, cuda, mps or auto."),
) -> None:
    """Check that a pre-trained model learned before reading its heads (the report's health section).

    On held-out utterances with one fixed draw of masks (masked steps zeroed):
    the model's masked L1 beside four baselines that need no model (zeros, the
    utterance's median frame, the nearest unmasked frame, linear interpolation),
    the same model with attention off (every head attends to its own step only),
    and every head's locality (the weight its favourite relative offset carries,
    in units of uniform attention). Writes health.json and health.csv; 'satool
    report' reads them.
    """
    from satool.workspace import Workspace

    workspace = Workspace()
    settings = stage.Settings(checkpoint=workspace.resolve("checkpoint", checkpoint, hint="pass CHECKPOINT"),
                              corpus=workspace.resolve("corpus", corpus, hint="pass CORPUS"), split=split,
                              max_utts=max_utts, seed=seed, out=out, device=device)
    with progress_bar(None, "held-out checks") as bar:
        outputs = stage.run(settings, bar, log)
    stage.record(workspace, settings, outputs)
    if as_json:
        from satool.results.files import read_json

        print_json(read_json(outputs.paths["json"]))
        return
    check = outputs.check
    best = check.best_baseline[0]
    say(f"held-out masked L1 {check.model_l1:.4f} ({check.utterances} utterances); attention off "
        f"{check.attention_off_l1:.4f}; baselines " + ", ".join(f"{k} {v:.4f}" for k, v in check.baselines.items()))
    verdict = "beats" if check.model_l1 < check.baselines[best] else "does not beat"
    say(f"the model {verdict} the best baseline ({best}); most local head "
        f"{float(check.locality.max()):.1f}x the uniform weight ({int((check.locality >= 5).sum())} heads >= 5x); "
        f"wrote {outputs.paths['json']}")
