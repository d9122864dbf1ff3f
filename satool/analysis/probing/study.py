"""`satool probe` as a library call: the model's representations and the input features, through
the same probes, with what every number rests on.

Rows carry a ``representation`` column: ``model`` (the chosen hidden state, under the chosen head
mask or span), ``log-Mel`` and ``MFCC`` (no model at all; see
:func:`satool.analysis.probing.passes.input_feature_split`). A task that needs the pre-training head
(reconstruction) has no input-feature row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from satool.analysis.probing.passes import (
    INPUT_FEATURES,
    Configuration,
    ProbeData,
    input_feature_split,
)
from satool.analysis.probing.tasks import ProbeSettings, ProbeTask, evaluate_grouped, evaluate_tasks
from satool.results.probe import MODEL, ProbeRow, rows_from_scores


def probe_rows(model, corpus, train_utts, test_utts, tasks: Sequence[ProbeTask], *,
               configuration: Configuration | None = None, states: Sequence[int] | None = None,
               layers: Sequence[int] | None = None, settings: ProbeSettings | None = None,
               seed: int = 0, input_features: bool = True, max_frames: int | None = None,
               data: tuple[ProbeData, ProbeData] | None = None,
               progress: Callable[[int], None] | None = None) -> tuple[list[ProbeRow], list[tuple[str, str]]]:
    """(result rows, skipped (utterance, reason) pairs). ``states``: hidden-state indices to probe
    (default: the configuration's), all from one representation pass, their probes trained as one
    group; ``layers``: the layer number written in each state's rows (default -1). ``data``: train and
    test :class:`ProbeData` already read (they are read here otherwise). Tasks that need the
    pre-training head (reconstruction) are scored once, with the last hidden state."""
    settings = settings or ProbeSettings()
    configuration = configuration or Configuration()
    states = list(states) if states is not None else [configuration.state]
    layers = list(layers) if layers is not None else [-1] * len(states)
    need_recon = any("reconstruction" in t.needs for t in tasks)
    if data is None:
        data = tuple(ProbeData(model, corpus, utts, reconstruction=need_recon, max_frames=max_frames,
                               progress=progress) for utts in (train_utts, test_utts))
    device = str(getattr(model, "device", "cpu"))
    configurations = [replace(configuration, state=s) for s in states]
    pairs = list(zip(data[0].represent_many(configurations), data[1].represent_many(configurations)))
    plain = [t for t in tasks if "reconstruction" not in t.needs]
    head = [t for t in tasks if "reconstruction" in t.needs]
    rows: list[ProbeRow] = []
    for layer, scores in zip(layers, evaluate_grouped(plain, pairs, seed=seed, settings=settings, device=device)):
        rows += rows_from_scores(scores, MODEL, layer=layer)
    if head:
        last = max(range(len(states)), key=lambda i: (states[i] % len(model.hidden_state_names), i))
        rows += rows_from_scores(evaluate_tasks(head, *pairs[last], seed=seed, settings=settings, device=device),
                                 MODEL, layer=layers[last])
    if input_features:
        for kind in INPUT_FEATURES:
            feature_splits = [input_feature_split(corpus, utts, kind, max_frames=max_frames)
                              for utts in (train_utts, test_utts)]
            rows += rows_from_scores(evaluate_tasks(plain, *feature_splits, seed=seed, settings=settings,
                                                    device=device), kind)
    return rows, data[0].skipped + data[1].skipped


def left_out_warnings(rows: Sequence[ProbeRow]) -> list[str]:
    """One line per task and representation that scored fewer test utterances than it was given."""
    lines = []
    for r in rows:
        if r.score.left_out:
            why = ("their speaker is not in the training split" if "speaker" in r.task
                   else "they have no labels for this task")
            lines.append(f"task {r.task} ({_where(r)}): {r.score.left_out} test utterance(s) left out because {why}")
    return lines


def convergence_warnings(rows: Sequence[ProbeRow]) -> list[str]:
    """One line per probe whose held-out loss was still improving when its steps ran out (raise --steps)."""
    return [f"task {r.task} ({_where(r)}): the probe had not converged (its loss on held-out training "
            f"utterances was still improving after {r.score.steps_run} steps; raise --steps)"
            for r in rows if r.score.converged is False]


def _where(row: ProbeRow) -> str:
    return row.representation if not row.is_model or row.layer == -1 else f"model, layer {row.layer}"
