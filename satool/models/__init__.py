"""Models satool can look inside.

The Mockingjay encoder lives in :mod:`satool.models.mockingjay`, checkpoint
reading and writing in :mod:`satool.models.checkpoint`. Names are exported
lazily so that importing this package (e.g. for the loader interfaces in
:mod:`satool.models.base`) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MockingjayConfig": "mockingjay",
    "MockingjayEncoder": "mockingjay",
    "SpecHead": "mockingjay",
    "EncoderOutput": "mockingjay",
    "PRESETS": "mockingjay",
    "encode_chunked": "mockingjay",
    "stack_frames": "mockingjay",
    "unstack_frames": "mockingjay",
    "position_encoding": "mockingjay",
    "MockingjayCheckpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "default_audio_config": "checkpoint",
    "atomic_save": "checkpoint",
    "capture_rng_state": "checkpoint",
    "restore_rng_state": "checkpoint",
    # Written by the lead (satool/models/base.py).
    "ModelLoader": "base",
    "AttentionModel": "base",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'satool.models' has no attribute {name!r}")
    return getattr(importlib.import_module(f"satool.models.{module}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
