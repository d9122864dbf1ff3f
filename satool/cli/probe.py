"""`satool probe`: what the representations know (library: satool.analysis.probing.tasks, satool.analysis.probing.passes)."""

from __future__ import annotations

from pathlib import Path

import typer

from satool.cli.common import log, parse_csv, print_json, progress_bar, results_console
from satool.stages import default, default_csv
from satool.stages import probe as stage
from satool.stages.probe import Data


def data_settings(workspace, *, checkpoint, corpus, alignments, max_utts, **options) -> Data:
    """The probes' :class:`~satool.stages.probe.Data`, with the workspace's defaults (``max_utts``: both
    splits; ``options``: the other fields of ``Data`` by name)."""
    checkpoint = workspace.resolve("checkpoint", checkpoint, hint="pass CHECKPOINT or run 'satool pretrain'")
    corpus_path = workspace.resolve("corpus", corpus, hint="pass CORPUS")
    if alignments is None and workspace.path("corpus") == corpus_path:
        alignments = workspace.path("alignments")
    return Data(checkpoint=checkpoint, corpus=corpus_path, alignments=alignments, train_utts=max_utts,
                test_utts=max_utts, **options)


def probe_settings(steps: int, precision: str):
    """The probes' training budget from the command line (a bad ``--precision`` is a usage error)."""
    from satool.analysis.probing.tasks import ProbeSettings
    from satool.errors import UsageError

    try:
        return ProbeSettings(steps=steps, precision=precision)
    except ValueError as error:
        raise UsageError(f"--precision: {error}") from None


def parse_layers(text: str) -> list[int]:
    """'all' -> every hidden state; '0,2,-1' -> [0, 2, -1]."""
    from satool.errors import UsageError
    from satool.stages.probe import ALL_LAYERS

    parts = parse_csv(text)
    if parts == ["all"]:
        return [ALL_LAYERS]
    try:
        layers = [int(p) for p in parts]
    except ValueError:
        raise UsageError(f"--layer {text!r}: give layer numbers (0 = embedding, -1 = last) or 'all'") from None
    if not layers or any(layer < -1 for layer in layers):
        raise UsageError(f"--layer {text!r}: give layer numbers (0 = embedding, -1 = last) or 'all'")
    return layers


def probe(
    checkpoint: Path | None = typer.Argument(None, help="Model (default: the workspace's)."),
    corpus: Path | None = typer.Argument(None, help="Corpus with train and test splits (default: the workspace's)."),
    tasks: str | None = typer.Option(default(stage.Settings, "tasks"), "--task", "-t", help="Tasks, comma-separated "
                                     "(see 'satool plugins'; plugins' tasks too). Default: phone, speaker, "
                                     "speaker-utt, and reconstruction when the model has a pre-training head."),
    layers: str = typer.Option(default_csv(stage.Settings, "layers"), "--layer", help="Hidden states to probe, "
                               "comma-separated: 0 = embedding output, L = layer L, -1 = last, or 'all' (every "
                               "layer: which one knows most, and does any beat the input features?). All "
                               "layers come from one forward pass and their probes train together."),
    head_mask: str | None = typer.Option(default_csv(stage.Settings, "head_mask"), "--head-mask", help="Heads to prune first, comma-separated, "
                                         "e.g. L1.H3,L2.H7 (layer and head counted from 1)."),
    span: int | None = typer.Option(default(stage.Settings, "span"), min=0, help="Attention span r: zero weights "
                                    "with |q - k| > r."),
    train_split: str = typer.Option(default(stage.Settings, "data.train_split"),
                                    help="Split the probes are trained on."),
    test_split: str = typer.Option(default(stage.Settings, "data.test_split"), help="Split they are evaluated on "
                                   "(same speakers for speaker tasks)."),
    steps: int = typer.Option(default(stage.Settings, "probing.steps"), min=1, help="Most training steps per "
                              "probe; a probe stops earlier once its accuracy on 10 % of the training utterances, "
                              "held out, has not improved for 800 steps (paper: 50k steps)."),
    precision: str = typer.Option(default(stage.Settings, "probing.precision"), "--precision", help="Arithmetic "
                                  "of the probes' matrix products: float32, bfloat16 (about 2x faster on CPUs with "
                                  "native bfloat16, e.g. AVX512-BF16 or AMX, and on GPUs; slower elsewhere; scores "
                                  "differ from float32 by training noise) or auto (bfloat16 where native). "
                                  "docs/performance.md"),
    seed: int = typer.Option(default(stage.Settings, "seed"), help="Same seed, same scores."),
    max_utts: int | None = typer.Option(default(stage.Settings, "data.train_utts"), min=1, help="At most this many "
                                        "utterances per split (taken round-robin over speakers)."),
    max_frames: int | None = typer.Option(default(stage.Settings, "data.max_frames"), min=1,
                                          help="Truncate utterances to this many 10 ms frames."),
    phone_set: str = typer.Option(default(stage.Settings, "data.phone_set"), "--phone-set", help="Phone classes "
                                  "for the phone task: auto, arpabet, timit39, ipa, ipa-arpabet, data (see "
                                  "docs/corpora.md)."),
    splits: Path | None = typer.Option(default(stage.Settings, "data.splits"), "--splits", help="A split file "
                                       "('satool corpus split') deciding the splits; unlisted utterances are left "
                                       "out."),
    inputs: bool = typer.Option(default(stage.Settings, "inputs"), "--inputs/--no-inputs", help="Also probe the "
                                "log-Mel and MFCC input features (what pre-training added is the difference)."),
    alignments: Path | None = typer.Option(default(stage.Settings, "data.alignments"),
                                           help="Alignment directory (phone labels)."),
    out: Path = typer.Option(default(stage.Settings, "out"), "--out", "-o", help="Results directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    device: str = typer.Option(default(stage.Settings, "data.device"), help="cpu, cuda, mps or auto."),
) -> None:
    """Train probes on a model's representations and score them beside chance and the input features.

    phone: frame-level phone classification (MLP, one hidden layer); speaker: the
    same MLP on single frames; speaker-utt: mean pooling then one linear layer;
    reconstruction: L1 of the pre-training head against the un-masked target
    (lower is better; chance = predicting each utterance's mean frame). The
    log-Mel and MFCC input features go through the same probes (--no-inputs to
    skip), and every probe's convergence is checked. One forward pass per
    utterance serves every task. Deterministic for a seed.
    """
    from satool.heads import parse_list
    from satool.workspace import Workspace

    workspace = Workspace()
    data = data_settings(workspace, checkpoint=checkpoint, corpus=corpus, alignments=alignments, max_utts=max_utts,
                         splits=splits, phone_set=phone_set, train_split=train_split, test_split=test_split,
                         max_frames=max_frames, device=device)
    settings = stage.Settings(data=data, tasks=parse_csv(tasks) or None, layers=parse_layers(layers),
                              head_mask=parse_list(head_mask),
                              span=span, probing=probe_settings(steps, precision), seed=seed, inputs=inputs, out=out)
    with progress_bar(None, "representations and probes") as bar:
        outputs = stage.run(settings, bar, log)
    stage.record(workspace, settings, outputs)
    if as_json:
        print_json([r.as_dict() for r in outputs.results.rows])
        return
    from rich.table import Table

    table = Table("task", "representation", "score", "chance", "measure", "train", "test")
    for r in outputs.results.rows:
        s = r.score
        where = r.representation if not r.is_model or r.layer == -1 else f"model, layer {r.layer}"
        table.add_row(s.task, where, f"{s.score:.4f}", f"{s.chance:.4f}",
                      s.score_name + (" (lower is better)" if not s.higher_is_better else ""), str(s.n_train),
                      str(s.n_test))
    results_console().print(table)
