"""satool-phonetics: an example satool plugin (one metric, one probing task).

It imports from :mod:`satool.plugins.api` only: what satool promises plugins.
"""

from __future__ import annotations

import numpy as np

from satool.plugins.api import (
    FrameClassificationTask,
    HeadMetric,
    ProbeScore,
    ProbeSettings,
    ProbeUtterance,
    UtteranceMeta,
    hookimpl,
    train_and_score_classifier,
)

SILENCE = "sil"


def step_silence_share(meta: UtteranceMeta) -> np.ndarray | None:
    """Fraction of each model step's label frames that are silence: float ``[step]``."""
    labels, phone_set = meta.frame_labels, list(meta.phone_set)
    if labels is None or SILENCE not in phone_set:
        return None
    r, n_steps = meta.frames_per_step, meta.n_steps
    frames = np.asarray(labels)[: n_steps * r].reshape(n_steps, r)
    return (frames == phone_set.index(SILENCE)).mean(axis=1)


def silence_focus(attn: np.ndarray, meta: UtteranceMeta) -> np.ndarray:
    """attention mass on silence / silence share - 1, per head ``[layer, head]``; NaN if no silence."""
    share = step_silence_share(meta)
    if share is None or share.sum() == 0:
        return np.full(attn.shape[:2], np.nan)
    mass = (attn @ share.astype(attn.dtype)).mean(axis=-1)  # [layer, head]: mean over queries
    return mass / share.mean() - 1.0


def boundary_labels(utt: ProbeUtterance, classes) -> np.ndarray | None:
    """1 where a phone boundary lies within one frame (±10 ms) of the frame, else 0."""
    labels = utt.frame_labels
    if labels is None:
        return None
    change = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    target = np.zeros(len(labels), dtype=np.int64)
    for offset in (-1, 0):
        target[np.clip(change + offset, 0, len(labels) - 1)] = 1
    target[labels < 0] = -1
    return target


class BoundaryTask(FrameClassificationTask):
    """Phone-boundary detection per frame, scored by the boundary class's F1."""

    score_name = "F1"

    def __init__(self):
        super().__init__(
            "boundary",
            "frame-level phone-boundary detection (linear probe, F1 of the boundary class)",
            boundary_labels,
            classifier="linear",
        )

    def evaluate(self, train, test, *, seed=0, device="cpu", settings=None):
        settings = settings or ProbeSettings()
        x_train, y_train, groups, _ = self.gather(train, {})
        x_test, y_test, _, _ = self.gather(test, {})
        report: dict = {}
        _, predicted = train_and_score_classifier(
            x_train, y_train, x_test, y_test, 2, kind="linear", seed=seed, settings=settings, device=device,
            report=report, groups=groups,
        )
        f1 = f1_score(y_test, predicted)
        p = float(y_test.mean())
        chance = 2 * p / (1 + p) if p > 0 else 0.0  # F1 of predicting "boundary" everywhere
        return ProbeScore(self.name, f1, chance, "F1", True, len(y_train), len(y_test), report)


def f1_score(truth: np.ndarray, predicted: np.ndarray) -> float:
    """F1 of class 1."""
    hits = float(np.sum((truth == 1) & (predicted == 1)))
    n_pred, n_true = float(np.sum(predicted == 1)), float(np.sum(truth == 1))
    return 2 * hits / (n_pred + n_true) if n_pred + n_true else 0.0


SILENCE_FOCUS = HeadMetric(
    "silence-focus",
    silence_focus,
    prune_first="highest",
    description="attention mass on silence relative to uniform attention (> 0: seeks pauses)",
    needs_labels=True,
)


@hookimpl
def register_metrics(register):
    register(SILENCE_FOCUS)


@hookimpl
def register_tasks(register):
    register(BoundaryTask())
