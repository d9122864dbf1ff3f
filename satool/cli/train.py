"""`satool pretrain`: masked acoustic model pre-training (library: satool.training.pretrain)."""

from __future__ import annotations

from pathlib import Path

import typer

from satool.cli.common import log, progress_bar, say
from satool.stages import default
from satool.stages import pretrain as stage


def pretrain(
    corpus: Path | None = typer.Argument(
        None, help="Corpus directory (default: the workspace's corpus, see satool.toml)."
    ),
    out: Path = typer.Option(default(stage.Settings, "out"), "--out", "-o",
                             help="Checkpoint to write (resumed if it exists)."),
    preset: str = typer.Option(default(stage.Settings, "training.preset"), help="Model size: tiny, demo, base (3x12 "
                               "heads, 768), large (12x12, 768)."),
    mask_span: int = typer.Option(default(stage.Settings, "training.mask_span"), min=1, help="Cnum: consecutive "
                                  "steps per masked span (paper: 3, 6, 9)."),
    downsample: int = typer.Option(default(stage.Settings, "training.downsample"), min=1, help="R: frames stacked "
                                   "per model step (paper-era models: 3)."),
    steps: int = typer.Option(default(stage.Settings, "training.steps"), min=1, help="Optimiser steps."),
    batch_size: int = typer.Option(default(stage.Settings, "training.batch_size"), min=1,
                                   help="Utterances per step (over all processes)."),
    length_buckets: int = typer.Option(default(stage.Settings, "training.length_buckets"), min=1, help="Draw each "
                                       "batch from one of N groups of similar length (less padding; 1 = any "
                                       "lengths)."),
    max_steps_per_utterance: int = typer.Option(default(stage.Settings, "training.max_steps_per_utterance"), min=8,
                                                help="Random crop length in model steps."),
    learning_rate: float = typer.Option(default(stage.Settings, "training.learning_rate"), "--lr", help="Peak "
                                        "learning rate (warm-up, then linear decay to 0; s3prl: 2e-4)."),
    warmup: float = typer.Option(default(stage.Settings, "training.warmup"), min=0.0, max=1.0,
                                 help="Fraction of the steps spent warming up the learning rate."),
    hidden_dropout: float = typer.Option(default(stage.Settings, "training.overrides")["hidden_dropout"],
                                         "--dropout", min=0.0, max=0.99,
                                         help="Dropout on hidden states (s3prl: 0.1)."),
    pre_layer_norm: bool = typer.Option(default(stage.Settings, "training.pre_layer_norm"), "--pre-ln/--post-ln",
                                        help="Pre-LN Transformer (the measured default) or post-LN (s3prl's)."),
    seed: int = typer.Option(default(stage.Settings, "training.seed"),
                             help="Same seed, same model (also across interruptions)."),
    save_every: int = typer.Option(default(stage.Settings, "training.save_every"), min=1,
                                   help="Write a resumable checkpoint every N steps."),
    split: str = typer.Option(default(stage.Settings, "training.split"), help="Splits to train on, "
                              "comma-separated: names, families (train = every train-* split of LibriSpeech) or "
                              "'all' (every split but test ones). A test split is read only when named."),
    heldout_split: str = typer.Option(default(stage.Settings, "training.heldout_split"), help="Split (or family: "
                                      "dev = dev-clean + dev-other) for the held-out checks; without it there are "
                                      "none (said in one line)."),
    heldout_utts: int = typer.Option(default(stage.Settings, "training.heldout_utts"), min=0, help="Held-out "
                                     "utterances checked (first N; 0 = no checks)."),
    eval_every: int = typer.Option(default(stage.Settings, "training.eval_every"), min=0, help="Steps between "
                                   "held-out checks (0 = ten over the run)."),
    alignments: Path | None = typer.Option(default(stage.Settings, "alignments"),
                                           help="Alignment directory (not needed for pre-training)."),
    device: str = typer.Option(default(stage.Settings, "device"), help="cpu, cuda, mps or auto."),
) -> None:
    """Pre-train a Mockingjay model by masked acoustic modelling (docs/science.md §1).

    Spans of Cnum steps are masked until ~15 % of steps are chosen (80 % zeroed,
    10 % replaced by random steps, 10 % kept); the model reconstructs the
    log-linear spectrogram, L1 on the chosen steps. The defaults are the recipe
    chosen by measurement (pre-LN, lr 1e-3, no hidden dropout; docs/pretraining.md).
    Ten times per run (--eval-every) it checks the model on held-out utterances:
    masked L1 beside four baselines that need no model (zeros, median frame,
    nearest unmasked frame, linear interpolation), attention off, and how local
    the heads are; it warns when the loss rises after warm-up or the model ends
    no better than copying the nearest frame. Interrupted? Run the same command
    again: it resumes from the last saved step and ends with the same model.
    Several processes: torchrun --nproc-per-node 2 -m satool pretrain ...

    Writes OUT, OUT.loss.csv/png and OUT.heldout.csv/png; records them in ./satool.toml.
    """
    from satool.training.pretrain import torchrun_world
    from satool.training.settings import PretrainSettings
    from satool.workspace import Workspace

    workspace = Workspace()
    corpus = workspace.resolve("corpus", corpus, hint="pass CORPUS, e.g. one made by 'satool corpus synth'")
    training = PretrainSettings(
        preset=preset, mask_span=mask_span, downsample=downsample, pre_layer_norm=pre_layer_norm, steps=steps,
        batch_size=batch_size, max_steps_per_utterance=max_steps_per_utterance, learning_rate=learning_rate,
        seed=seed, save_every=save_every, split=split, length_buckets=length_buckets, warmup=warmup,
        overrides={"hidden_dropout": hidden_dropout},
        heldout_split=heldout_split, heldout_utts=heldout_utts, eval_every=eval_every,
    )
    settings = stage.Settings(corpus=corpus, out=out, training=training, alignments=alignments, device=device)
    rank, _ = torchrun_world()
    with progress_bar(steps, "pre-training") as bar:
        result = stage.run(settings, bar if rank == 0 else None, log)
    if rank != 0:
        return
    stage.record(workspace, settings, result)
    say(f"wrote {out} after {result.steps} steps (final loss {result.final_loss:.3f}, "
        f"{result.frames_per_second:.0f} frames/s)")
    if result.health is not None:
        h = result.health
        base = ", ".join(f"{name} {value:.3f}" for name, value in h.baselines.items())
        say(f"held-out masked L1 {h.model_l1:.3f} ({h.utterances} utterances); attention off {h.attention_off_l1:.3f}; "
            f"baselines: {base}")
        say(f"most local head: {float(h.locality.max()):.1f}x the uniform weight at its favourite offset; "
            f"curves in {out}.heldout.png")
