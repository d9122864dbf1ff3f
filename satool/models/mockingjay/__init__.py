"""Mockingjay (Liu et al., ICASSP 2020) as the s3prl toolkit implements it.

``network``: the encoder and the prediction head; ``checkpoint``: reading (safely) and writing s3prl
and satool checkpoints; ``model``: the encoder behind satool's model interface; ``loader``: the
built-in ``mockingjay`` loader. The network's names are re-exported here, imported on first use
(the loader is registered without importing torch).
"""

import importlib

_NETWORK = ("ACTIVATIONS", "PRESETS", "EncoderOutput", "LayerNorm", "MockingjayConfig", "MockingjayEncoder",
            "SpecHead", "encode_chunked", "position_encoding", "stack_frames", "unstack_frames")

__all__ = list(_NETWORK)


def __getattr__(name: str):
    if name in _NETWORK:
        return getattr(importlib.import_module("satool.models.mockingjay.network"), name)
    raise AttributeError(f"module 'satool.models.mockingjay' has no attribute {name!r}")
