"""Probing tasks: how much a representation says about phones and speakers (docs/science.md §7).

A task receives the representations of a train and a test split (one
:class:`ProbeUtterance` per utterance: the chosen layer's hidden states at the
model's step rate, plus labels) and returns a :class:`ProbeScore` with the
chance level beside it. Tasks are plugins: register a :class:`ProbeTask`
through the ``register_tasks`` hook. The built-ins:

- ``phone``: frame-level phone classification, an MLP with one hidden layer;
- ``speaker``: frame-level speaker classification, the same MLP;
- ``speaker-utt``: mean pooling over time, then one linear layer;
- ``reconstruction``: L1 between the pre-training head's output and the
  un-masked target (no training; lower is better).

Frame-level tasks work at the 10 ms label rate: hidden states are up-sampled
by repeating each step R times (docs/science.md §4). Training is deterministic for
a seed (fixed sampling order, fixed initialisation, single-threaded reductions
are not required because CPU matmuls are deterministic for fixed shapes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from satool.results.probe import ProbeScore  # noqa: F401  (what a task returns; re-exported for tasks)


@dataclass
class ProbeUtterance:
    """One utterance's representation and labels.

    Attributes:
        id: utterance id.
        speaker: speaker id.
        hidden: float32 ``[step, dim]`` hidden states of the chosen layer.
        downsample: label frames per model step (R).
        frame_labels: int ``[frame]`` phone ids at the label rate, -1 = unknown;
            None when the utterance has no alignment.
        reconstruction_l1: mean L1 of the pre-training head's output against the
            un-masked target over this utterance's frames (None if not computed).
        n_target_values: number of target values behind ``reconstruction_l1``.
        mean_frame_l1: L1 of predicting the utterance's mean target frame (the
            reconstruction baseline), same values as ``reconstruction_l1``.
        summary: float32 ``[dim]`` vector the utterance-level tasks classify; None = the mean of
            ``hidden`` over steps (mean pooling). Input-feature rows set it, because their frames are
            normalised per utterance and so average to zero by construction.
    """

    id: str
    speaker: str
    hidden: np.ndarray
    downsample: int = 1
    frame_labels: np.ndarray | None = None
    reconstruction_l1: float | None = None
    n_target_values: int = 0
    mean_frame_l1: float | None = None
    summary: np.ndarray | None = None

    def pooled(self) -> np.ndarray:
        """The utterance-level vector: ``summary`` when set, else mean pooling of ``hidden``, ``[dim]``."""
        return self.summary if self.summary is not None else self.hidden.mean(axis=0)

    def frame_hidden(self) -> np.ndarray:
        """Hidden states up-sampled to the label rate: ``[step * R, dim]``."""
        return np.repeat(self.hidden, self.downsample, axis=0)


@dataclass
class ProbeSplit:
    """The utterances of one split plus the label inventories."""

    utterances: list[ProbeUtterance]
    phone_set: list[str] = field(default_factory=list)


@dataclass
class ProbeSettings:
    """Training budget of a probe: at most ``steps`` (paper: 50k), stopping early once the loss on
    ``validation_fraction`` of the training utterances has not improved for ``patience`` measurements
    taken every ``eval_every`` steps."""

    steps: int = 8000
    eval_every: int = 100
    patience: int = 8
    validation_fraction: float = 0.1
    batch_size: int = 512
    learning_rate: float = 2e-3
    hidden_units: int = 256
    max_train_frames: int = 200_000
    max_test_frames: int = 200_000
    weight_decay: float = 0.0


class ProbeTask:
    """Base class of probing tasks; subclasses implement :meth:`evaluate`.

    Attributes:
        name: identifier on the command line (``--task NAME``).
        description: one line for ``--help`` and reports.
        score_name: what the score is (``"accuracy"``, ``"L1"``, ...).
        higher_is_better: direction of the score.
        needs: what the representation pass must compute: ``"hidden"``
            (hidden states) and/or ``"reconstruction"`` (pre-training head L1).
    """

    name: str = ""
    description: str = ""
    score_name: str = "accuracy"
    higher_is_better: bool = True
    needs: tuple[str, ...] = ("hidden",)

    def evaluate(
        self, train: ProbeSplit, test: ProbeSplit, *, seed: int = 0, device: str = "cpu",
        settings: ProbeSettings | None = None,
    ) -> ProbeScore:
        raise NotImplementedError


# --------------------------------------------------------------------------
# Classifier training shared by the classification tasks.


def _make_classifier(kind: str, in_dim: int, n_classes: int, hidden_units: int):
    import torch

    if kind == "linear":
        return torch.nn.Linear(in_dim, n_classes)
    if kind == "mlp":
        return torch.nn.Sequential(
            torch.nn.Linear(in_dim, hidden_units), torch.nn.ReLU(), torch.nn.Linear(hidden_units, n_classes)
        )
    raise ValueError(f"unknown classifier {kind!r} (use 'linear' or 'mlp')")


def train_and_score_classifier(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    n_classes: int,
    *,
    kind: str,
    seed: int,
    settings: ProbeSettings,
    device: str = "cpu",
    report: dict[str, Any] | None = None,
    groups: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    """Train ``kind`` ('linear' or 'mlp') with Adam + cross-entropy; return (test accuracy, predictions).

    Early stopping on held-out training data: ``settings.validation_fraction`` of the training
    utterances (``groups``: the utterance index of each row; without it, of the rows) are kept out
    of the fit, their classification error and loss are measured every ``settings.eval_every`` steps,
    training stops once neither has improved for ``settings.patience`` measurements (:func:`converged`;
    or after ``settings.steps``), and the parameters with the lowest held-out error are the ones
    scored. Inputs are standardised with the fitted rows' mean/std. Deterministic for a seed.
    ``report`` (a dict) receives the convergence check (:func:`converged`) and ``steps_run``,
    ``best_step``, ``validation_error``, ``train_loss`` (mean training loss over the last
    ``eval_every`` steps).
    """
    import torch

    fit, held = validation_split(len(y_train), groups, settings.validation_fraction, seed)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mean = x_train[fit].mean(axis=0, keepdims=True)
    std = x_train[fit].std(axis=0, keepdims=True) + 1e-5

    def tensor(x: np.ndarray):
        return torch.from_numpy(((x - mean) / std).astype(np.float32)).to(device)

    xt, yt = tensor(x_train[fit]), torch.from_numpy(y_train[fit].astype(np.int64)).to(device)
    xv, yv = tensor(x_train[held]), torch.from_numpy(y_train[held].astype(np.int64)).to(device)
    model = _make_classifier(kind, xt.shape[1], n_classes, settings.hidden_units).to(device)
    optimiser = torch.optim.Adam(
        model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    n = xt.shape[0]
    batch = min(settings.batch_size, n)
    errors: list[float] = []
    losses: list[float] = []
    best, best_step, best_state = float("inf"), 0, None
    recent = torch.zeros(settings.eval_every)
    step = 0
    model.train()
    while step < settings.steps:
        index = torch.randint(0, n, (batch,), generator=generator).to(device)
        loss = torch.nn.functional.cross_entropy(model(xt[index]), yt[index])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        recent[step % settings.eval_every] = loss.detach()
        step += 1
        if len(yv) == 0 or step % settings.eval_every:
            continue
        model.eval()
        with torch.no_grad():
            logits = model(xv)
            errors.append(float((logits.argmax(-1) != yv).float().mean()))
            losses.append(float(torch.nn.functional.cross_entropy(logits, yv)))
        model.train()
        if errors[-1] < best * (1 - IMPROVEMENT):
            best, best_step = errors[-1], step
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if converged(errors, losses, settings.patience)["converged"]:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    if report is not None:
        report.update(converged(errors, losses, settings.patience))
        report.update(steps_run=step, best_step=best_step if best_state is not None else step,
                      validation_error=best if best_state is not None else float("nan"),
                      train_loss=float(recent[: min(step, settings.eval_every)].mean()))
    model.eval()
    with torch.no_grad():
        xs = tensor(x_test)
        predictions = torch.cat([model(chunk).argmax(-1) for chunk in xs.split(65536)]).cpu().numpy()
    accuracy = float((predictions == y_test).mean()) if len(y_test) else float("nan")
    return accuracy, predictions


IMPROVEMENT = 1e-3  # a held-out error counts as better when it is 0.1 % (relative) below the best so far


def validation_split(n: int, groups: np.ndarray | None, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows to fit, rows to validate on): ``fraction`` of the groups (utterances) when there are at
    least 5 of them, else of the rows when there are at least 20, else nothing held out."""
    rng = np.random.default_rng(seed + 7919)
    rows = np.arange(n)
    if groups is not None and len(np.unique(groups)) >= 5:
        names = np.unique(groups)
        held_groups = rng.choice(names, size=max(1, round(fraction * len(names))), replace=False)
        held = np.isin(groups, held_groups)
        return rows[~held], rows[held]
    if n >= 20:
        held = np.zeros(n, bool)
        held[rng.choice(n, size=max(1, round(fraction * n)), replace=False)] = True
        return rows[~held], rows[held]
    return rows, rows[:0]


def converged(validation_errors: Sequence[float], validation_losses: Sequence[float], patience: int) -> dict[str, Any]:
    """Has training levelled off? Converged when neither the held-out error nor the held-out loss
    improved (by :data:`IMPROVEMENT`, relative) over the last ``patience`` measurements: the error
    alone stalls at chance for a probe that learns slowly, the loss alone rises for an over-confident
    probe whose accuracy still improves. Not judged (None) with fewer than ``patience + 1``
    measurements. ``loss_change``: relative change of the held-out error over the last ``patience``."""
    errors = np.asarray(validation_errors, float)
    if len(errors) < patience + 1:
        return {"converged": None, "loss_change": float("nan")}

    def last_improvement(values) -> int:
        best_value, best = float("inf"), 0
        for i, value in enumerate(values):
            if value < best_value * (1 - IMPROVEMENT):
                best_value, best = value, i
        return best

    stalled = all(last_improvement(v) < len(errors) - patience for v in (errors, validation_losses))
    before = errors[-patience - 1]
    change = float((errors[-1] - before) / before) if before > 0 else 0.0
    return {"converged": stalled, "loss_change": change}


def _subsample(n: int, limit: int, seed: int) -> np.ndarray:
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def majority_chance(y_train: np.ndarray, y_test: np.ndarray) -> float:
    """Accuracy of always answering the most frequent training class."""
    if len(y_test) == 0 or len(y_train) == 0:
        return float("nan")
    majority = np.bincount(y_train).argmax()
    return float((y_test == majority).mean())


FrameLabeler = Callable[[ProbeUtterance, dict[str, int]], "np.ndarray | None"]


class FrameClassificationTask(ProbeTask):
    """Classify every label frame from the up-sampled hidden state.

    ``labels(utt, classes)`` returns int ``[frame]`` class ids (-1 = ignore) or
    None to skip the utterance; ``classes`` maps class names to ids and may be
    extended by the labeler (only while reading the training split).
    """

    def __init__(
        self, name: str, description: str, labels: FrameLabeler, *, classifier: str = "mlp",
        class_names: Callable[[ProbeSplit, ProbeSplit], list[str]] | None = None,
    ):
        self.name = name
        self.description = description
        self.labels = labels
        self.classifier = classifier
        self.class_names = class_names

    def _gather(self, split: ProbeSplit, classes: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
        """(frames ``[frame, dim]``, labels ``[frame]``) of the utterances that have labels."""
        x, y, _, _ = self.gather(split, classes)
        return x, y

    def gather(self, split: ProbeSplit, classes: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """(frames, labels, utterance index of each frame, number of utterances left out for want of labels)."""
        xs, ys, groups = [], [], []
        skipped = 0
        for i, utt in enumerate(split.utterances):
            y = self.labels(utt, classes)
            if y is None:
                skipped += 1
                continue
            x = utt.frame_hidden()
            n = min(len(x), len(y))
            keep = y[:n] >= 0
            xs.append(x[:n][keep])
            ys.append(y[:n][keep])
            groups.append(np.full(int(keep.sum()), i))
        if not xs:
            return np.zeros((0, 0), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64), skipped
        return np.concatenate(xs), np.concatenate(ys).astype(np.int64), np.concatenate(groups), skipped

    def evaluate(self, train, test, *, seed=0, device="cpu", settings=None):
        settings = settings or ProbeSettings()
        classes: dict[str, int] = {}
        if self.class_names is not None:
            classes = {c: i for i, c in enumerate(self.class_names(train, test))}
        x_train, y_train, groups, _ = self.gather(train, classes)
        x_test, y_test, _, skipped = self.gather(test, classes)
        if len(y_train) == 0 or len(y_test) == 0:
            from satool.errors import InputError

            raise InputError(f"task {self.name!r}: no labelled frames in the train or test split")
        n_classes = max(int(y_train.max()), int(y_test.max())) + 1
        tr = _subsample(len(y_train), settings.max_train_frames, seed)
        te = _subsample(len(y_test), settings.max_test_frames, seed + 1)
        report: dict[str, Any] = {}
        accuracy, _ = train_and_score_classifier(
            x_train[tr], y_train[tr], x_test[te], y_test[te], n_classes,
            kind=self.classifier, seed=seed, settings=settings, device=device, report=report, groups=groups[tr],
        )
        return ProbeScore(
            self.name, accuracy, majority_chance(y_train[tr], y_test[te]), self.score_name,
            True, len(tr), len(te), {"classes": n_classes, "test_utterances_left_out": skipped, **report},
        )


class UtteranceClassificationTask(ProbeTask):
    """Mean-pool the hidden states over time (:meth:`ProbeUtterance.pooled`), then a linear classifier."""

    def __init__(
        self, name: str, description: str, label: Callable[[ProbeUtterance], str | None], *,
        classifier: str = "linear",
    ):
        self.name = name
        self.description = description
        self.label = label
        self.classifier = classifier

    def evaluate(self, train, test, *, seed=0, device="cpu", settings=None):
        settings = settings or ProbeSettings()
        train_labels = [self.label(u) for u in train.utterances]
        classes = {c: i for i, c in enumerate(sorted({c for c in train_labels if c is not None}))}

        def gather(split: ProbeSplit, labels: Sequence[str | None]):
            pairs = [(u.pooled(), classes[c]) for u, c in zip(split.utterances, labels)
                     if c is not None and c in classes]
            if not pairs:
                return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
            return np.stack([p[0] for p in pairs]), np.array([p[1] for p in pairs])

        x_train, y_train = gather(train, train_labels)
        x_test, y_test = gather(test, [self.label(u) for u in test.utterances])
        if len(y_train) == 0 or len(y_test) == 0:
            from satool.errors import InputError

            raise InputError(f"task {self.name!r}: no utterances with a label seen in training")
        report: dict[str, Any] = {}
        accuracy, _ = train_and_score_classifier(
            x_train, y_train, x_test, y_test, len(classes),
            kind=self.classifier, seed=seed, settings=settings, device=device, report=report,
        )
        return ProbeScore(
            self.name, accuracy, majority_chance(y_train, y_test), self.score_name, True,
            len(y_train), len(y_test),
            {"classes": len(classes), "test_utterances_left_out": len(test.utterances) - len(y_test), **report},
        )


class ReconstructionTask(ProbeTask):
    """L1 of the pre-training head's output against the un-masked target (lower is better).

    Chance level: the L1 of predicting each utterance's mean target frame
    (reported by the representation pass as ``details['mean_frame_l1']``).
    """

    name = "reconstruction"
    description = "L1 between the pre-training head's output and the un-masked target (lower is better)"
    score_name = "L1"
    higher_is_better = False
    needs = ("reconstruction",)

    def evaluate(self, train, test, *, seed=0, device="cpu", settings=None):
        rows = [u for u in test.utterances if u.reconstruction_l1 is not None]
        if not rows:
            from satool.errors import InputError

            raise InputError("task 'reconstruction': the model has no pre-training head (SpecHead)")
        weights = np.array([u.n_target_values for u in rows], dtype=np.float64)
        l1 = float(np.average([u.reconstruction_l1 for u in rows], weights=weights))
        baseline = [u.mean_frame_l1 for u in rows]
        chance = float(np.average(baseline, weights=weights)) if None not in baseline else float("nan")
        return ProbeScore(self.name, l1, chance, self.score_name, False, 0, len(rows))


def evaluate_tasks(tasks: Sequence[ProbeTask], train: ProbeSplit, test: ProbeSplit, *, seed: int,
                   settings: ProbeSettings, device: str = "cpu") -> list[ProbeScore]:
    """Every task trained on ``train`` and scored on ``test``: one score per task."""
    return [t.evaluate(train, test, seed=seed, device=device, settings=settings) for t in tasks]


def phone_labels(utt: ProbeUtterance, classes: dict[str, int]) -> np.ndarray | None:
    """Frame phone ids as stored in the cache (already ids into the corpus phone set)."""
    return utt.frame_labels


def speaker_frame_labels(utt: ProbeUtterance, classes: dict[str, int]) -> np.ndarray | None:
    """Every frame of the utterance labelled with its speaker's id; None (left out, as the
    utterance-level task does) for a speaker the training split does not have."""
    if utt.speaker not in classes:
        return None
    n_frames = len(utt.hidden) * utt.downsample
    return np.full(n_frames, classes[utt.speaker], dtype=np.int64)


def _speaker_classes(train: ProbeSplit, test: ProbeSplit) -> list[str]:
    return sorted({u.speaker for u in train.utterances})


BUILTIN_TASKS: tuple[ProbeTask, ...] = (
    FrameClassificationTask(
        "phone", "frame-level phone classification, MLP with one hidden layer", phone_labels,
        classifier="mlp",
    ),
    FrameClassificationTask(
        "speaker", "frame-level speaker classification, MLP with one hidden layer",
        speaker_frame_labels, classifier="mlp", class_names=_speaker_classes,
    ),
    UtteranceClassificationTask(
        "speaker-utt", "utterance-level speaker classification: mean pooling, then a linear layer",
        lambda u: u.speaker, classifier="linear",
    ),
    ReconstructionTask(),
)
