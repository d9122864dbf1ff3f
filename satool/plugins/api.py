"""What a satool plugin may import: everything a metric, probing task, corpus reader, model loader or
command needs, and nothing else (docs/plugins.md). Names outside this module are satool's own and
may change between versions; these keep their meaning.

    from satool.plugins.api import HeadMetric, UtteranceMeta, hookimpl

Hooks (see :mod:`satool.plugins.hookspecs`): ``register_commands``, ``register_metrics``,
``register_tasks``, ``register_corpora``, ``register_models``; decorate yours with :data:`hookimpl`.

- Metrics: :class:`HeadMetric` (``per_utterance(attn, meta)`` with ``meta`` an :class:`UtteranceMeta`:
  ``meta.frames_per_step``, ``meta.n_steps``, ``meta.frame_labels``, ``meta.phone_set``, ...).
- Probing tasks: :class:`ProbeTask` (``evaluate(train, test, *, seed, device, settings) ->
  ProbeScore``) over :class:`ProbeSplit` s of :class:`ProbeUtterance`; :class:`ProbeSettings` is the
  training budget; :class:`FrameClassificationTask`, :class:`UtteranceClassificationTask` and
  :func:`train_and_score_classifier` do the training for the common cases.
- Corpus readers: :class:`CorpusReader` (``name``, ``detect(path)``, ``open(path, alignments)``)
  returning a :class:`Corpus` of :class:`Utterance` s, with a :class:`PhoneSet` (``PHONE_SETS``: the
  built-in ones).
- Model loaders: :class:`ModelLoader` (``name``, ``can_load(path)``, ``load(path, device)``) returning
  an :class:`AttentionModel`, whose ``encode`` gives :class:`EncodedUtterance` s.
- Errors a plugin raises for its user's mistakes: :class:`UsageError`, :class:`InputError` (one red
  line and a documented exit code).

Names are imported on first use (``import satool.plugins.api`` loads nothing heavy), so a plugin
module stays cheap to import at every ``satool`` command.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from satool import hookimpl

_EXPORTS = {
    # metrics
    "HeadMetric": "satool.analysis.metrics",
    "UtteranceMeta": "satool.utterance",
    # probing tasks
    "ProbeTask": "satool.analysis.probing.tasks",
    "ProbeScore": "satool.results.probe",
    "ProbeSplit": "satool.analysis.probing.tasks",
    "ProbeUtterance": "satool.analysis.probing.tasks",
    "ProbeSettings": "satool.analysis.probing.tasks",
    "FrameClassificationTask": "satool.analysis.probing.tasks",
    "UtteranceClassificationTask": "satool.analysis.probing.tasks",
    "train_and_score_classifier": "satool.analysis.probing.tasks",
    # corpus readers
    "CorpusReader": "satool.data.corpus.base",
    "Corpus": "satool.data.corpus.base",
    "Utterance": "satool.data.corpus.base",
    "PhoneSet": "satool.data.phones",
    "PHONE_SETS": "satool.data.phones",
    # model loaders
    "ModelLoader": "satool.models.base",
    "AttentionModel": "satool.models.base",
    "EncodedUtterance": "satool.models.base",
    # errors
    "UsageError": "satool.errors",
    "InputError": "satool.errors",
}

__all__ = [  # the same names as _EXPORTS, plus hookimpl (a test keeps them equal)
    "hookimpl",
    "HeadMetric", "UtteranceMeta",
    "ProbeTask", "ProbeScore", "ProbeSplit", "ProbeUtterance", "ProbeSettings", "FrameClassificationTask",
    "UtteranceClassificationTask", "train_and_score_classifier",
    "CorpusReader", "Corpus", "Utterance", "PhoneSet", "PHONE_SETS",
    "ModelLoader", "AttentionModel", "EncodedUtterance",
    "UsageError", "InputError",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and editors
    from satool.analysis.metrics import HeadMetric
    from satool.analysis.probing.tasks import (
        FrameClassificationTask,
        ProbeSettings,
        ProbeSplit,
        ProbeTask,
        ProbeUtterance,
        UtteranceClassificationTask,
        train_and_score_classifier,
    )
    from satool.data.corpus.base import Corpus, CorpusReader, Utterance
    from satool.data.phones import PHONE_SETS, PhoneSet
    from satool.errors import InputError, UsageError
    from satool.models.base import AttentionModel, EncodedUtterance, ModelLoader
    from satool.results.probe import ProbeScore
    from satool.utterance import UtteranceMeta


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'satool.plugins.api' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
