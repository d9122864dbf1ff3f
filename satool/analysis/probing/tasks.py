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

from satool.analysis.probing.classifiers import (  # noqa: F401  (converged, validation_split: the stopping rule)
    ClassifierProblem,
    ClassifierResult,
    converged,
    train_classifiers,
    validation_split,
)
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


PRECISIONS = ("float32", "bfloat16", "auto")  # the arithmetic of a probe's matrix products (auto: the faster here)


@dataclass
class ProbeSettings:
    """Training budget of a probe: at most ``steps`` (paper: 50k), stopping early once the loss on
    ``validation_fraction`` of the training utterances has not improved for ``patience`` measurements
    taken every ``eval_every`` steps. ``precision``: the arithmetic of the probes' matrix products,
    ``"float32"``, ``"bfloat16"`` (weights, optimiser and loss stay float32; about twice as fast on
    CPUs with native bfloat16, slower on others) or ``"auto"`` (bfloat16 where the device multiplies it
    natively: :func:`~satool.analysis.probing.classifiers.fastest_precision`). Every probe's report
    names the arithmetic that ran."""

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
    precision: str = "float32"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"probe precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")


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
        """Train on ``train``, score on ``test``. The default trains the classifier :meth:`prepare`
        describes; a task without one overrides this."""
        settings = settings or ProbeSettings()
        prepared = self.prepare(train, test, seed=seed, settings=settings)
        if prepared is None:
            raise NotImplementedError(f"task {self.name!r} implements neither evaluate() nor prepare()")
        return prepared.finish(train_classifiers([prepared.problem], seed=seed, settings=settings,
                                                 device=device)[0])

    def prepare(self, train: ProbeSplit, test: ProbeSplit, *, seed: int = 0,
                settings: ProbeSettings | None = None) -> PreparedProbe | None:
        """The classifier this task trains on these splits, when it trains one (None: the task scores
        itself in :meth:`evaluate`). Tasks that return one can be trained many at a time (a pruning
        sweep trains every configuration's probe together; results are identical)."""
        return None


@dataclass
class PreparedProbe:
    """A task's classifier to train (``problem``) and how its result becomes the task's score."""

    problem: ClassifierProblem
    finish: Callable[[ClassifierResult], ProbeScore]


def evaluate_grouped(tasks: Sequence[ProbeTask], splits: Sequence[tuple[ProbeSplit, ProbeSplit]], *, seed: int,
                     settings: ProbeSettings, device: str = "cpu",
                     progress: Callable[[int], None] | None = None) -> list[list[ProbeScore]]:
    """Every task on every (train, test) pair of ``splits`` (one pair per representation, e.g. per
    pruned configuration or per layer): ``scores[pair][task]``. Probes of a task that share their
    labels and rows train together (:func:`~satool.analysis.probing.classifiers.train_classifiers`);
    the scores are those of training each alone. ``progress(1)`` per probe finished."""
    scores: list[list[ProbeScore | None]] = [[None] * len(tasks) for _ in splits]
    for t, task in enumerate(tasks):
        prepared = [task.prepare(train, test, seed=seed, settings=settings) for train, test in splits]
        alone = [i for i, p in enumerate(prepared) if p is None]
        together = [i for i, p in enumerate(prepared) if p is not None]
        results = train_classifiers([prepared[i].problem for i in together], seed=seed, settings=settings,
                                    device=device, progress=progress)
        for i, result in zip(together, results):
            scores[i][t] = prepared[i].finish(result)
            prepared[i] = None  # free the inputs as soon as they are scored
        for i in alone:
            scores[i][t] = task.evaluate(*splits[i], seed=seed, device=device, settings=settings)
            if progress is not None:
                progress(1)
    return scores  # type: ignore[return-value]


# --------------------------------------------------------------------------
# Classifier training shared by the classification tasks (satool.analysis.probing.classifiers).


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
    ``eval_every`` steps). Many probes at once: :func:`~satool.analysis.probing.classifiers.train_classifiers`.
    """
    problem = ClassifierProblem.of_rows(x_train, y_train, x_test, y_test, n_classes, kind, groups)
    result = train_classifiers([problem], seed=seed, settings=settings, device=device)[0]
    if report is not None:
        report.update(result.report)
    return result.accuracy, result.predictions


def _subsample(n: int, limit: int, seed: int) -> np.ndarray:
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def per_utterance_counts(correct: np.ndarray, utterance: np.ndarray, n_utterances: int) -> list[tuple[int, int]]:
    """(correct, scored) of every test utterance, in the split's order (what a paired bootstrap over
    test utterances resamples)."""
    right = np.bincount(utterance, weights=correct.astype(np.float64), minlength=n_utterances)
    scored = np.bincount(utterance, minlength=n_utterances)
    return [(int(a), int(b)) for a, b in zip(np.rint(right), scored)]


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

    def gather(self, split: ProbeSplit, classes: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """(frames ``[frame, dim]``: the up-sampled hidden states of every labelled frame, their labels,
        the utterance index of each frame, the number of utterances left out for want of labels)."""
        items, rows, y, groups, skipped = self.gather_items(split, classes)
        return items[rows], y, groups, skipped

    def gather_items(self, split: ProbeSplit, classes: dict[str, int]
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
        """(items ``[item, dim]``: every utterance's hidden states, one row per model step; the item of
        each labelled frame; the frames' labels; the utterance index of each frame; the number of
        utterances left out for want of labels). Frame ``f`` of an utterance reads its step ``f // R``
        (the up-sampling of docs/science.md §4, without materialising the repeated rows)."""
        items, rows, ys, groups = [], [], [], []
        skipped = offset = 0
        for i, utt in enumerate(split.utterances):
            y = self.labels(utt, classes)
            if y is None:
                skipped += 1
                continue
            n = min(len(utt.hidden) * utt.downsample, len(y))
            keep = np.flatnonzero(y[:n] >= 0)
            items.append(utt.hidden)
            rows.append(offset + keep // utt.downsample)
            ys.append(y[:n][keep])
            groups.append(np.full(len(keep), i))
            offset += len(utt.hidden)
        if not items:
            empty = np.zeros(0, np.int64)
            return np.zeros((0, 0), np.float32), empty, empty, empty, skipped
        return (np.concatenate(items), np.concatenate(rows).astype(np.int64), np.concatenate(ys).astype(np.int64),
                np.concatenate(groups), skipped)

    def prepare(self, train, test, *, seed=0, settings=None):
        settings = settings or ProbeSettings()
        classes: dict[str, int] = {}
        if self.class_names is not None:
            classes = {c: i for i, c in enumerate(self.class_names(train, test))}
        x_train, rows_train, y_train, groups, _ = self.gather_items(train, classes)
        x_test, rows_test, y_test, test_groups, skipped = self.gather_items(test, classes)
        if len(y_train) == 0 or len(y_test) == 0:
            from satool.errors import InputError

            raise InputError(f"task {self.name!r}: no labelled frames in the train or test split")
        n_classes = max(int(y_train.max()), int(y_test.max())) + 1
        tr = _subsample(len(y_train), settings.max_train_frames, seed)
        te = _subsample(len(y_test), settings.max_test_frames, seed + 1)
        problem = ClassifierProblem(x_train, rows_train[tr], y_train[tr], x_test, rows_test[te], y_test[te],
                                    n_classes, self.classifier, groups[tr])
        chance = majority_chance(y_train[tr], y_test[te])

        def finish(result: ClassifierResult) -> ProbeScore:
            return ProbeScore(self.name, result.accuracy, chance, self.score_name, True, len(tr), len(te),
                              {"classes": n_classes, "test_utterances_left_out": skipped, **result.report},
                              per_utterance_counts(result.predictions == y_test[te], test_groups[te],
                                                   len(test.utterances)))

        return PreparedProbe(problem, finish)


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

    def prepare(self, train, test, *, seed=0, settings=None):
        train_labels = [self.label(u) for u in train.utterances]
        classes = {c: i for i, c in enumerate(sorted({c for c in train_labels if c is not None}))}

        def gather(split: ProbeSplit, labels: Sequence[str | None]):
            pairs = [(u.pooled(), classes[c], i) for i, (u, c) in enumerate(zip(split.utterances, labels))
                     if c is not None and c in classes]
            if not pairs:
                return np.zeros((0, 0), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64)
            return np.stack([p[0] for p in pairs]), np.array([p[1] for p in pairs]), np.array([p[2] for p in pairs])

        x_train, y_train, _ = gather(train, train_labels)
        x_test, y_test, test_index = gather(test, [self.label(u) for u in test.utterances])
        if len(y_train) == 0 or len(y_test) == 0:
            from satool.errors import InputError

            raise InputError(f"task {self.name!r}: no utterances with a label seen in training")
        problem = ClassifierProblem.of_rows(x_train, y_train, x_test, y_test, len(classes), self.classifier)
        chance = majority_chance(y_train, y_test)
        left_out = len(test.utterances) - len(y_test)

        def finish(result: ClassifierResult) -> ProbeScore:
            return ProbeScore(self.name, result.accuracy, chance, self.score_name, True, len(y_train), len(y_test),
                              {"classes": len(classes), "test_utterances_left_out": left_out, **result.report},
                              per_utterance_counts(result.predictions == y_test, test_index, len(test.utterances)))

        return PreparedProbe(problem, finish)


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
