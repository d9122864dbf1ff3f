"""satool: understand the self-attention of self-supervised speech transformers.

Library first: the ``satool`` command is a thin Typer layer over plain functions. From Python
(docs/api.md)::

    import satool
    model = satool.load_model("model.ckpt")
    run = satool.run_with_cache(model, "utt.flac", alignment="utt.TextGrid")
    cache = satool.open_cache("attention-cache")
    scores = satool.score(cache)            # scores.to_frame(): a pandas DataFrame

Names are imported on first use, so ``import satool`` (and ``satool --help``) stays fast. Plugins
import what they need from :mod:`satool.plugins.api` (the ``hookimpl`` marker below included) and
implement the hooks in :mod:`satool.plugins.hookspecs`.
"""

import importlib

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("satool")

_LAZY = {
    "load_model": "satool.api",
    "open_cache": "satool.cache",
    "open_corpus": "satool.api",
    "run_with_cache": "satool.api",
    "score": "satool.api",
    "Run": "satool.api",
    "HeadScores": "satool.results.metrics",
    "relate": "satool.analysis.relations",
    "cache_stream": "satool.analysis.scoring",
    "UtteranceMeta": "satool.utterance",
}

__all__ = ["__version__", "hookimpl", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'satool' has no attribute {name!r}")
