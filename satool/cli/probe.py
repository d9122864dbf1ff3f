"""`satool probe`: what the representations know (library: satool.probing, satool.representations)."""

from __future__ import annotations

from pathlib import Path

import typer

from satool.cli.common import parse_csv, print_json, progress_bar, results_console, say

DEFAULT_OUT = Path("results/probe")


def probing_inputs(workspace, checkpoint, corpus, alignments, train_split, test_split, max_utts, device,
                   balanced: bool = True, splits: Path | None = None, phone_set: str = "auto"):
    """(model, corpus, train utterances, test utterances) with workspace defaults and clear errors.

    With ``max_utts``, subsets are taken round-robin over speakers (``balanced``) so that every
    test speaker is in the training subset when it can be."""
    from satool.corpus import open_corpus
    from satool.errors import UsageError
    from satool.models.base import load_model, resolve_device

    checkpoint = workspace.resolve("checkpoint", checkpoint, hint="pass CHECKPOINT or run 'satool pretrain'")
    corpus_path = workspace.resolve("corpus", corpus, hint="pass CORPUS")
    if alignments is None and workspace.path("corpus") == corpus_path:
        alignments = workspace.path("alignments")
    opened = open_corpus(corpus_path, alignments, splits=splits, phone_set=phone_set)
    for split, option in ((train_split, "--train-split"), (test_split, "--test-split")):
        try:
            opened.resolve_splits(split)
        except UsageError as exc:
            raise UsageError(f"{exc}; choose with {option}") from None
    model = load_model(checkpoint, device=resolve_device(device))
    return (model, opened, opened.select(train_split, max_utts, balanced=balanced),
            opened.select(test_split, max_utts, balanced=balanced), checkpoint, corpus_path, alignments)


def resolve_tasks(text: str | None, model) -> list:
    """The named tasks (default: the built-in ones this model supports); refuse what it cannot do."""
    from satool.errors import UsageError
    from satool.plugins import get_plugins

    names = parse_csv(text) or ["phone", "speaker", "speaker-utt"] + (
        ["reconstruction"] if model.has_prediction_head else [])
    tasks = [get_plugins().tasks.get(name) for name in names]
    for t in tasks:
        if "reconstruction" in t.needs and not model.has_prediction_head:
            raise UsageError(f"task {t.name!r} needs a pre-training head, which this model does not have")
    return tasks


def parse_head_list(text: str | None, model=None):
    """Heads named 'L3.H7' (comma-separated), checked against the model when given."""
    from satool.heads import check, parse_list

    heads = parse_list(text)
    if model is not None:
        check(heads, range(1, model.num_layers + 1), range(1, model.num_heads + 1))
    return heads


def probe(
    checkpoint: Path | None = typer.Argument(None, help="Model (default: the workspace's)."),
    corpus: Path | None = typer.Argument(None, help="Corpus with train and test splits (default: the workspace's)."),
    task: str | None = typer.Option(None, "--task", "-t", help="Tasks, comma-separated (see 'satool plugins'; "
                                    "plugins' tasks too). Default: phone, speaker, speaker-utt, and "
                                    "reconstruction when the model has a pre-training head."),
    layer: int = typer.Option(-1, "--layer", help="Hidden state to probe: 0 = embedding output, L = layer L, "
                              "-1 = last."),
    head_mask: str | None = typer.Option(None, "--head-mask", help="Heads to prune first, comma-separated, "
                                         "e.g. L1.H3,L2.H7 (layer and head counted from 1)."),
    span: int | None = typer.Option(None, min=0, help="Attention span r: zero weights with |q - k| > r."),
    train_split: str = typer.Option("train", help="Split the probes are trained on."),
    test_split: str = typer.Option("test", help="Split they are evaluated on (same speakers for speaker tasks)."),
    steps: int = typer.Option(1500, min=1, help="Training steps per probe (paper: 50k)."),
    seed: int = typer.Option(0, help="Same seed, same scores."),
    max_utts: int | None = typer.Option(None, min=1, help="At most this many utterances per split "
                                        "(taken round-robin over speakers)."),
    max_frames: int | None = typer.Option(None, min=1, help="Truncate utterances to this many 10 ms frames."),
    phone_set: str = typer.Option("auto", "--phone-set", help="Phone classes for the phone task: auto, arpabet, "
                                  "timit39, ipa, ipa-arpabet, data (see docs/corpora.md)."),
    splits: Path | None = typer.Option(None, "--splits", help="A split file ('satool corpus split') deciding "
                                       "the splits; unlisted utterances are left out."),
    inputs: bool = typer.Option(True, "--inputs/--no-inputs", help="Also probe the log-Mel and MFCC input "
                                "features (what pre-training added is the difference)."),
    alignments: Path | None = typer.Option(None, help="Alignment directory (phone labels)."),
    out: Path | None = typer.Option(None, "--out", "-o", help=f"Results directory (default {DEFAULT_OUT})."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    device: str = typer.Option("auto", help="cpu, cuda, mps or auto."),
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
    from satool.probe_study import convergence_warnings, left_out_warnings, probe_rows
    from satool.probing import ProbeSettings
    from satool.representations import Configuration
    from satool.results import write_csv, write_json
    from satool.workspace import Workspace

    workspace = Workspace()
    model, opened, train, test, checkpoint, corpus_path, alignments = probing_inputs(
        workspace, checkpoint, corpus, alignments, train_split, test_split, max_utts, device, splits=splits,
        phone_set=phone_set)
    tasks = resolve_tasks(task, model)
    state = _state_index(model, layer)
    config = Configuration.pruned(model.num_layers, model.num_heads, parse_head_list(head_mask, model), state, span)
    with progress_bar(len(train) + len(test), "representations and probes") as bar:
        results, skipped = probe_rows(model, opened, train, test, tasks, configuration=config,
                                      settings=ProbeSettings(steps=steps), seed=seed, input_features=inputs,
                                      max_frames=max_frames, progress=bar.advance)
    for utt, reason in skipped:
        say(f"{utt}: {reason}", "skipped")
    for line in left_out_warnings(results) + convergence_warnings(results):
        say(line, "warning:")
    for r in results:
        r.update(layer=layer, head_mask=head_mask or "", span=span, seed=seed, train_split=train_split,
                 test_split=test_split)
    out = out or DEFAULT_OUT
    write_csv(out / "probe_results.csv", results)
    write_json(out / "probe_results.json", results)
    workspace.record("probe", {"checkpoint": checkpoint, "corpus": corpus_path, "alignments": alignments,
                               "probe": out}, tasks=",".join(t.name for t in tasks))
    if as_json:
        print_json(results)
        return
    from rich.table import Table

    table = Table("task", "representation", "score", "chance", "measure", "train", "test")
    for r in results:
        table.add_row(r["task"], r["representation"], f"{r['score']:.4f}", f"{r['chance']:.4f}", r["score_name"]
                      + (" (lower is better)" if not r["higher_is_better"] else ""), str(r["n_train"]),
                      str(r["n_test"]))
    results_console().print(table)


def _state_index(model, layer: int) -> int:
    """Hidden-state number (0 = embedding when present, L = layer L, -1 = last) -> array index."""
    from satool.errors import UsageError

    names = model.hidden_state_names
    if layer == -1:
        return len(names) - 1
    wanted = "embedding" if layer == 0 else f"layer {layer}"
    if wanted not in names:
        raise UsageError(f"--layer {layer}: this model has hidden states {', '.join(names)}")
    return names.index(wanted)
