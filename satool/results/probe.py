"""Probe results: what a representation says about phones and speakers, beside chance.

A probing task returns a :class:`ProbeScore` (its score, the chance level, what the number rests on
and how its training went). ``satool probe`` saves one :class:`ProbeRow` per task and representation
(the model's hidden state, or an input feature: log-Mel, MFCC) as ``probe_results.csv`` and
``probe_results.json``; :meth:`ProbeResults.load` reads the JSON back with every field checked.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from satool.results.files import Document, RowTable

MODEL = "model"  # the representation column of rows that probe the model (others name an input feature)


@dataclass
class ProbeScore:
    """What a task reports: its score beside chance level.

    ``details`` holds what the score rests on, in the order it is written: ``classes``,
    ``test_utterances_left_out``, the convergence check (``converged``, ``loss_change``),
    ``steps_run``, ``best_step``, ``validation_error``, ``train_loss``, and anything a plugin task adds.
    """

    task: str
    score: float
    chance: float
    score_name: str
    higher_is_better: bool
    n_train: int
    n_test: int
    details: dict[str, Any] = field(default_factory=dict)
    # [test utterance] -> (correct, scored): what paired bootstraps over test utterances resample (saved
    # in the JSON rows only); None for tasks that do not count per utterance
    per_utterance: list[tuple[int, int]] | None = None

    @property
    def converged(self) -> bool | None:
        """Did the probe's training level off? None: not judged (too few measurements, or no training)."""
        value = self.details.get("converged")
        return value if isinstance(value, bool) else None

    @property
    def steps_run(self) -> int | None:
        return self.details.get("steps_run")

    @property
    def left_out(self) -> int:
        """Test utterances the task could not score (no label, or a speaker unseen in training)."""
        return int(self.details.get("test_utterances_left_out") or 0)

    @property
    def is_accuracy(self) -> bool:
        return self.score_name == "accuracy"

    def as_dict(self) -> dict[str, Any]:
        return {"task": self.task, "score": self.score, "chance": self.chance, "score_name": self.score_name,
                "higher_is_better": self.higher_is_better, "n_train": self.n_train, "n_test": self.n_test,
                **self.details}

    @classmethod
    def from_document(cls, doc: Document, skip: Iterable[str] = ()) -> ProbeScore:
        """A score read from a result row; keys in ``skip`` belong to the row, not to the score."""
        base = ("task", "score", "chance", "score_name", "higher_is_better", "n_train", "n_test", "per_utterance")
        details = {k: v for k, v in doc.value.items() if k not in base and k not in set(skip)}
        for key, value in details.items():
            if not isinstance(value, (str, int, float, bool, type(None))):
                doc.fail(f"field {doc.where}.{key} must be a plain value, found {type(value).__name__}")
        if "converged" in details and details["converged"] is not None and not isinstance(details["converged"], bool):
            doc.fail(f"field {doc.where}.converged must be true, false or null")
        per_utterance = None
        if doc.has("per_utterance"):
            per_utterance = []
            for pair in doc.items("per_utterance"):
                if (not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool)
                                                                             and v >= 0 for v in pair) or pair[0] > pair[1]):
                    doc.fail(f"field {doc.where}.per_utterance must list [correct, scored] pairs of counts")
                per_utterance.append((pair[0], pair[1]))
        return cls(doc.text("task"), doc.number("score"), doc.number("chance"), doc.text("score_name"),
                   doc.flag("higher_is_better"), doc.integer("n_train", minimum=0),
                   doc.integer("n_test", minimum=0), details, per_utterance)


@dataclass
class ProbeRow:
    """One probe on one representation, with the settings it ran under.

    ``representation``: ``model`` or an input feature (``log-Mel``, ``MFCC``); ``layer``: the hidden
    state probed (0 = embedding output, L = layer L, -1 = the last); ``head_mask``: pruned heads
    ('L1.H3,L2.H5', '' = none); ``span``: attention span limit in steps (None = none).
    """

    representation: str
    score: ProbeScore
    layer: int = -1
    head_mask: str = ""
    span: int | None = None
    seed: int = 0
    train_split: str = "train"
    test_split: str = "test"

    CONTEXT: ClassVar[tuple[str, ...]] = ("layer", "head_mask", "span", "seed", "train_split", "test_split")

    @property
    def task(self) -> str:
        return self.score.task

    @property
    def is_model(self) -> bool:
        return self.representation == MODEL

    def as_dict(self) -> dict[str, Any]:
        return {"representation": self.representation, **self.score.as_dict(), "layer": self.layer,
                "head_mask": self.head_mask, "span": self.span, "seed": self.seed,
                "train_split": self.train_split, "test_split": self.test_split}

    @classmethod
    def from_document(cls, doc: Document) -> ProbeRow:
        span = doc.raw("span", None)
        if span is not None and (isinstance(span, bool) or not isinstance(span, int) or span < 0):
            doc.fail(f"field {doc.where}.span must be a whole number >= 0 or null")
        return cls(doc.text("representation", MODEL), ProbeScore.from_document(doc, ("representation",
                                                                                      *cls.CONTEXT)),
                   doc.integer("layer", -1, minimum=-1), doc.text("head_mask", "") or "", span,
                   doc.integer("seed", 0), doc.text("train_split", "train"), doc.text("test_split", "test"))


@dataclass
class ProbeResults(RowTable):
    """Every probe of a ``satool probe`` run (one row per task, representation and layer)."""

    rows: list[ProbeRow]

    CSV: ClassVar[str] = "probe_results.csv"
    JSON: ClassVar[str] = "probe_results.json"
    ROW: ClassVar[type] = ProbeRow

    # -- questions the report and the verdicts ask ----------------------------------------------

    @property
    def layers(self) -> list[int]:
        """Hidden states probed on the model, in the order probed."""
        return list(dict.fromkeys(r.layer for r in self.rows if r.is_model))

    def model_rows(self, layer: int | None = None) -> list[ProbeRow]:
        """Rows of the model (of one ``layer`` when given; else of the layer probed last, the default one)."""
        model = [r for r in self.rows if r.is_model]
        if layer is None and model:
            layer = self.default_layer
        return [r for r in model if r.layer == layer]

    @property
    def default_layer(self) -> int:
        """The layer the single-layer questions are asked of: -1 (the last) when probed, else the
        highest layer probed."""
        layers = self.layers
        return -1 if -1 in layers or not layers else max(layers)

    def input_rows(self) -> list[ProbeRow]:
        return [r for r in self.rows if not r.is_model]

    def pretraining_added(self) -> list[str]:
        """One phrase per accuracy task: the model's score, the best input feature's, and the difference
        in points (positive = the model knows more)."""
        out = []
        for task in self.tasks:
            model = next((r for r in self.model_rows() if r.task == task), None)
            inputs = [r for r in self.input_rows() if r.task == task]
            if model is None or not inputs or not model.score.is_accuracy:
                continue
            best = max(inputs, key=lambda r: r.score.score)
            out.append(f"{task} {100 * model.score.score:.1f} % vs {best.representation} "
                       f"{100 * best.score.score:.1f} % ({100 * (model.score.score - best.score.score):+.1f} pts)")
        return out

    def best_layers(self) -> list[dict[str, Any]]:
        """Per accuracy task: the best layer, its score, and the best input feature's score."""
        out = []
        for task in self.tasks:
            rows = [r for r in self.rows if r.is_model and r.task == task and r.score.is_accuracy]
            if len(rows) < 2:
                continue
            best = max(rows, key=lambda r: r.score.score)
            inputs = [r for r in self.input_rows() if r.task == task]
            top_input = max(inputs, key=lambda r: r.score.score) if inputs else None
            out.append({"task": task, "best_layer": best.layer, "score": best.score.score,
                        "best_input": top_input.representation if top_input else None,
                        "input_score": top_input.score.score if top_input else None,
                        "layers": {r.layer: r.score.score for r in rows}})
        return out


def rows_from_scores(scores: Sequence[ProbeScore], representation: str = MODEL, **context: Any) -> list[ProbeRow]:
    """:class:`ProbeRow` s for task results of one representation under one setting."""
    return [ProbeRow(representation, s, **context) for s in scores]
