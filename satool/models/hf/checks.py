"""What a Hugging Face checkpoint directory must contain before transformers builds anything from it.

transformers trusts config.json (a config with 20,000 layers is allocated before anything fails) and
reports a damaged safetensors file with its own exceptions. satool checks the files first, without
torch: the config's numbers and their agreement with each other, every safetensors header (size,
JSON, dtypes, shapes, offsets inside the file), and the layers the weights actually hold against
the layers the config asks for. Problems become one :class:`~satool.errors.InputError` line naming
the file.
"""

from __future__ import annotations

import json
import math
import re
import struct
from pathlib import Path
from typing import Any

from satool.errors import InputError

MAX_HEADER_BYTES = 100 << 20  # safetensors' own reader refuses larger headers
_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
             "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}
_LAYER = re.compile(r"(?:^|\.)encoder\.layers\.(\d+)\.")
LIMITS = {  # plausible ranges; a real wav2vec2/HuBERT/WavLM config is far inside them
    "num_hidden_layers": (1, 128), "num_attention_heads": (1, 256), "hidden_size": (1, 16384),
    "intermediate_size": (1, 65536), "num_feat_extract_layers": (1, 32),
}


def check_config(config: dict[str, Any], path: Path) -> None:
    """Numbers in config.json: integers in range, heads dividing the width, conv lists that agree."""
    where = path / "config.json"
    for key, (low, high) in LIMITS.items():
        if key not in config:
            continue
        value = config[key]
        if type(value) is not int or not low <= value <= high:
            raise InputError(f"config.json: {key} = {value!r} is not an integer in {low}..{high}", path=where)
    heads, width = config.get("num_attention_heads"), config.get("hidden_size")
    if isinstance(heads, int) and isinstance(width, int) and width % heads:
        raise InputError(f"config.json: hidden_size {width} is not a multiple of num_attention_heads {heads}",
                         path=where)
    lists = {key: config.get(key) for key in ("conv_dim", "conv_kernel", "conv_stride") if key in config}
    for key, value in lists.items():
        if not isinstance(value, list) or not value or not all(type(v) is int and 1 <= v <= 65536 for v in value):
            raise InputError(f"config.json: {key} must be a list of positive integers", path=where)
    lengths = {len(v) for v in lists.values()}
    expected = config.get("num_feat_extract_layers")
    if len(lengths) > 1 or (isinstance(expected, int) and lengths and lengths != {expected}):
        shown = ", ".join(f"{k} has {len(v)}" for k, v in lists.items())
        raise InputError(f"config.json: the convolution lists disagree ({shown}"
                         + (f"; num_feat_extract_layers is {expected}" if expected is not None else "") + ")",
                         path=where)
    for key in ("layer_norm_eps", "feat_proj_dropout", "hidden_dropout", "attention_dropout"):
        value = config.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value) or value < 0):
            raise InputError(f"config.json: {key} = {value!r} is not a finite non-negative number", path=where)


def safetensors_keys(path: Path) -> list[str]:
    """Tensor names of a safetensors file whose header is sound: length, JSON, dtypes, shapes, and
    offsets that tile the data section without leaving the file."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise InputError("not a safetensors file (shorter than its 8-byte header length)", path=path)
            (length,) = struct.unpack("<Q", head)
            if length > min(MAX_HEADER_BYTES, size - 8):
                raise InputError(f"safetensors header of {length} bytes does not fit the {size}-byte file",
                                 path=path)
            raw = f.read(length)
    except OSError as exc:
        raise InputError(f"cannot read ({exc.strerror or exc})", path=path) from None
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8 text"
        raise InputError(f"safetensors header is not valid JSON ({reason})", path=path) from None
    if not isinstance(header, dict):
        raise InputError("safetensors header is not a JSON object", path=path)
    data_size = size - 8 - length
    keys = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict):
            raise InputError(f"safetensors entry {name!r} is not an object", path=path)
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in _ITEMSIZE:
            raise InputError(f"safetensors entry {name!r} has an unknown dtype {dtype!r}", path=path)
        if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
            raise InputError(f"safetensors entry {name!r} has a bad shape {shape!r}", path=path)
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
                and 0 <= offsets[0] <= offsets[1] <= data_size):
            raise InputError(f"safetensors entry {name!r} has data offsets {offsets!r} outside the file", path=path)
        if offsets[1] - offsets[0] != math.prod(shape) * _ITEMSIZE[dtype]:
            raise InputError(f"safetensors entry {name!r}: its offsets do not hold a {dtype} tensor of shape {shape}",
                             path=path)
        keys.append(name)
    return keys


def check_layers(config: dict[str, Any], keys: list[str], path: Path) -> None:
    """The config's number of layers must be the number the weights hold (checked before building)."""
    wanted = config.get("num_hidden_layers")
    found = {int(m.group(1)) for m in map(_LAYER.search, keys) if m}
    if isinstance(wanted, int) and found and found != set(range(wanted)):
        raise InputError(f"config.json asks for {wanted} layers but the weights hold {len(found)} "
                         f"({min(found)}..{max(found)})", path=path)


def strict_flag(value: Any, key: str, path: Path) -> bool:
    """A JSON boolean, also when written as text ("false" is false, not a non-empty string)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise InputError(f"{key} = {value!r} is not true or false", path=path)
