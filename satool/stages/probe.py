"""Stage `probe`: what a model's representations know about phones and speakers, beside chance and
the input features (log-Mel, MFCC) through the same probes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from satool.analysis.probing.tasks import ProbeSettings
from satool.stages import Log, NoProgress, Progress, quiet


@dataclass
class Data:
    """Where the probes' utterances come from (shared by `probe` and `prune`)."""

    checkpoint: Path
    corpus: Path
    alignments: Path | None = None
    splits: Path | None = None  # a split file (satool corpus split)
    phone_set: str = "auto"
    train_split: str = "train"
    test_split: str = "test"
    train_utts: int | None = None  # taken round-robin over speakers
    test_utts: int | None = None
    max_frames: int | None = None
    device: str = "auto"  # cpu, cuda, mps or auto


@dataclass
class Settings:
    data: Data
    tasks: list[str] | None = None  # default: phone, speaker, speaker-utt (+ reconstruction with a head)
    layers: list[int] = field(default_factory=lambda: [-1])  # hidden states: 0 = embedding, L = layer L, -1 = last
    head_mask: list[tuple[int, int]] = field(default_factory=list)  # heads pruned first (1-based)
    span: int | None = None
    probing: ProbeSettings = field(default_factory=ProbeSettings)  # training budget (at most steps; early stop)
    seed: int = 0
    inputs: bool = True  # log-Mel and MFCC rows
    out: Path = Path("results/probe")


@dataclass
class Outputs:
    results: Any  # satool.results.probe.ProbeResults
    paths: dict[str, Path]
    skipped: list[tuple[str, str]]
    warnings: list[str]


def open_data(data: Data):
    """(model, corpus, train utterances, test utterances), every option checked before any work."""
    from satool.data.corpus import open_corpus
    from satool.errors import UsageError
    from satool.models.loading import load_model
    from satool.plugins import get_plugins

    plugins = get_plugins()
    opened = open_corpus(data.corpus, data.alignments, readers=plugins.corpora.objects(), splits=data.splits,
                         phone_set=data.phone_set)
    for split, option in ((data.train_split, "--train-split"), (data.test_split, "--test-split")):
        try:
            opened.resolve_splits(split)
        except UsageError as exc:
            raise UsageError(f"{exc}; choose with {option}") from None
    model = load_model(data.checkpoint, device=data.device, loaders=plugins.models.objects())
    return (model, opened, opened.select(data.train_split, data.train_utts, balanced=True),
            opened.select(data.test_split, data.test_utts, balanced=True))


def resolve_tasks(names: list[str] | None, model) -> list:
    """The named tasks (default: the built-in ones this model supports); refuse what it cannot do."""
    from satool.errors import UsageError
    from satool.plugins import get_plugins

    names = names or ["phone", "speaker", "speaker-utt"] + (["reconstruction"] if model.has_prediction_head else [])
    tasks = [get_plugins().tasks.get(name) for name in names]
    for t in tasks:
        if "reconstruction" in t.needs and not model.has_prediction_head:
            raise UsageError(f"task {t.name!r} needs a pre-training head, which this model does not have")
    return tasks


ALL_LAYERS = -2  # in ``Settings.layers``: every hidden state of the model (--layer all)


def every_layer(model) -> list[int]:
    """Every hidden state's layer number, input side first (0 = embedding output when the model has it;
    -1 = a last state that is no layer's, e.g. pre-LN models' "final layer norm")."""
    def number(name: str) -> int:
        last = name.split()[-1]
        return 0 if name == "embedding" else int(last) if last.isdigit() else -1

    return [number(name) for name in model.hidden_state_names]


def state_index(model, layer: int) -> int:
    """Hidden-state number (0 = embedding when present, L = layer L, -1 = last) -> array index."""
    from satool.errors import UsageError

    names = model.hidden_state_names
    if layer == -1:
        return len(names) - 1
    wanted = "embedding" if layer == 0 else f"layer {layer}"
    if wanted not in names:
        raise UsageError(f"--layer {layer}: this model has hidden states {', '.join(names)}")
    return names.index(wanted)


def run(settings: Settings, progress: Progress | None = None, log: Log = quiet) -> Outputs:
    from satool.analysis.probing.passes import Configuration
    from satool.analysis.probing.study import convergence_warnings, left_out_warnings, probe_rows
    from satool.heads import check, label
    from satool.results.probe import ProbeResults

    progress = progress or NoProgress()
    model, corpus, train, test = open_data(settings.data)
    tasks = resolve_tasks(settings.tasks, model)
    check(settings.head_mask, range(1, model.num_layers + 1), range(1, model.num_heads + 1))
    layers = every_layer(model) if ALL_LAYERS in settings.layers else list(dict.fromkeys(settings.layers))
    states = [state_index(model, layer) for layer in layers]
    config = Configuration.pruned(model.num_layers, model.num_heads, settings.head_mask, states[0], settings.span)
    progress.total(len(train) + len(test), 0)
    rows, skipped = probe_rows(model, corpus, train, test, tasks, configuration=config, states=states, layers=layers,
                               settings=settings.probing, seed=settings.seed,
                               input_features=settings.inputs, max_frames=settings.data.max_frames,
                               progress=progress.advance)
    for r in rows:
        r.head_mask, r.span, r.seed = ",".join(label(*h) for h in settings.head_mask), settings.span, settings.seed
        r.train_split, r.test_split = settings.data.train_split, settings.data.test_split
    results = ProbeResults(rows)
    paths = results.save(settings.out)
    warnings = left_out_warnings(rows) + convergence_warnings(rows)
    for utt, reason in skipped:
        log(f"{utt}: {reason}", "skipped")
    for line in warnings:
        log(line, "warning:")
    return Outputs(results, paths, skipped, warnings)


def record(workspace, settings: Settings, outputs: Outputs) -> None:
    d = settings.data
    workspace.record("probe", {"checkpoint": d.checkpoint, "corpus": d.corpus, "alignments": d.alignments,
                               "probe": settings.out}, tasks=",".join(sorted(outputs.results.tasks)))
