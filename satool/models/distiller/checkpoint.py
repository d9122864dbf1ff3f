"""Reading s3prl distiller checkpoints (DistilHuBERT) safely.

Layout (s3prl's ``pretrain/distiller`` runner; ``upstream/distiller/builder.py`` reads it):

| key | content |
|-----|---------|
| ``Distiller`` | the ``DistillerModel`` state dict: ``feature_extractor.*``, ``post_extract_proj.*``, ``encoder.*``, the prediction heads ``output_layer.*`` |
| ``Config`` | the run's config; ``Config['distiller']`` is the model config |
| ``Optimizer``, ``Step``, ``Args``, ... | training state (ignored) |

The ``distiller`` block is checked key by key (types and ranges), its conv-layer list
(``extractor_conv_feature_layers``, a Python expression that s3prl ``eval``s) is parsed from its
syntax tree, accepting only integer tuples, lists, ``+`` and ``*``; and every encoder tensor the
config implies must be in the file with its shape, with no layer more or less, before a module is
built.
"""

from __future__ import annotations

import ast
import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from satool.errors import InputError

DEFAULT_CONV = "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"
ACTIVATIONS = ("gelu", "relu", "gelu_fast", "gelu_accurate", "tanh", "linear")
MAX_CONV_LAYERS = 32


def parse_conv_layers(text: Any) -> list[tuple[int, int, int]]:
    """``"[(512,10,5)] + [(512,3,2)] * 4"`` -> ``[(512, 10, 5), (512, 3, 2), ...]`` without ``eval``."""
    if not isinstance(text, str) or len(text) > 2000:
        raise InputError(f"distiller.extractor_conv_feature_layers = {str(text)[:80]!r} is not a conv-layer list")
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError:
        raise InputError(f"distiller.extractor_conv_feature_layers = {text[:80]!r} is not a list expression") from None

    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and type(node.value) is int and 0 < node.value <= 65536:
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [value(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = value(node.left), value(node.right)
            if isinstance(node.op, ast.Add) and isinstance(left, list) and isinstance(right, list):
                result = left + right
            elif isinstance(node.op, ast.Mult) and isinstance(left, list) and isinstance(right, int) \
                    and len(left) * right <= MAX_CONV_LAYERS:
                result = left * right
            else:
                raise ValueError
            if len(result) > MAX_CONV_LAYERS:
                raise ValueError
            return result
        raise ValueError

    try:
        layers = value(tree)
    except (ValueError, RecursionError):
        raise InputError(f"distiller.extractor_conv_feature_layers = {text[:80]!r}: only lists of (dim, kernel, "
                         f"stride) integer tuples joined by + and * are read (at most {MAX_CONV_LAYERS} layers)") \
            from None
    if not isinstance(layers, list) or not layers or not all(
            isinstance(t, tuple) and len(t) == 3 and all(isinstance(v, int) for v in t) for t in layers):
        raise InputError(f"distiller.extractor_conv_feature_layers = {text[:80]!r} is not a list of "
                         "(dim, kernel, stride) tuples")
    return layers


@dataclass(frozen=True)
class DistillerConfig:
    conv_layers: tuple[tuple[int, int, int], ...]
    extractor_mode: str  # "default" (group norm in the first conv layer) or "layer_norm" (in every one)
    conv_pos: int
    conv_pos_groups: int
    layers: int
    width: int
    ffn: int
    heads: int
    activation: str
    layer_norm_first: bool

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def stride(self) -> int:
        total = 1
        for _, _, s in self.conv_layers:
            total *= s
        return total

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["conv_layers"] = [list(t) for t in self.conv_layers]
        return data


def read_config(block: Any) -> DistillerConfig:
    if not isinstance(block, Mapping):
        raise InputError(f"Config['distiller'] is a {type(block).__name__}, expected a dictionary")

    def integer(key: str, default: int, low: int, high: int) -> int:
        value = block.get(key, default)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if type(value) is not int or not low <= value <= high:
            raise InputError(f"distiller.{key} = {value!r} is not an integer in {low}..{high}")
        return value

    def flag(key: str) -> bool:
        value = block.get(key, False)
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if isinstance(value, (bool, int)) and value in (0, 1):
            return bool(value)
        raise InputError(f"distiller.{key} = {value!r} is not true or false")

    mode = block.get("extractor_mode", "default")
    if mode not in ("default", "layer_norm"):
        raise InputError(f"distiller.extractor_mode = {mode!r} (s3prl knows default and layer_norm)")
    attention = block.get("attention_type", "original")
    if attention != "original":
        raise InputError(f"distiller.attention_type = {attention!r}: only 'original' (softmax) self-attention has "
                         "attention maps satool can read")
    task_emb = block.get("task_emb_type", "expand-last")
    if task_emb in ("add", "concat"):
        raise InputError(f"distiller.task_emb_type = {task_emb!r}: a task embedding enters the encoder, so there is "
                         "no single set of attention maps per utterance")
    activation = block.get("activation_fn", "gelu")
    if activation not in ACTIVATIONS:
        raise InputError(f"distiller.activation_fn = {activation!r} (satool knows {', '.join(ACTIVATIONS)})")
    conv = parse_conv_layers(block.get("extractor_conv_feature_layers", DEFAULT_CONV))
    for dim, kernel, stride in conv:
        if not (dim <= 16384 and kernel <= 1024 and stride <= 1024):
            raise InputError(f"distiller.extractor_conv_feature_layers: layer ({dim}, {kernel}, {stride}) is too large")
    config = DistillerConfig(
        conv_layers=tuple(conv), extractor_mode=mode,
        conv_pos=integer("conv_pos", 128, 1, 4096), conv_pos_groups=integer("conv_pos_groups", 16, 1, 4096),
        layers=integer("encoder_layers", 1, 0, 128), width=integer("encoder_embed_dim", 768, 1, 16384),
        ffn=integer("encoder_ffn_embed_dim", 3072, 1, 65536), heads=integer("encoder_attention_heads", 12, 1, 256),
        activation=activation, layer_norm_first=flag("layer_norm_first"),
    )
    if config.layers == 0:
        raise InputError("distiller.encoder_layers = 0: a model without transformer layers has no attention maps")
    if config.width % config.heads:
        raise InputError(f"distiller.encoder_embed_dim {config.width} is not a multiple of encoder_attention_heads "
                         f"{config.heads}")
    if config.width % config.conv_pos_groups:
        raise InputError(f"distiller.encoder_embed_dim {config.width} is not a multiple of conv_pos_groups "
                         f"{config.conv_pos_groups}")
    return config


def expected_shapes(config: DistillerConfig, state: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every tensor of the encoder part (feature extractor, projection, transformer) and its shape. The
    position convolution's weight norm is either torch's old ``weight_g``/``weight_v`` pair or the
    parametrization's ``original0``/``original1``, whichever the file holds."""
    shapes: dict[str, tuple[int, ...]] = {}
    in_dim = 1
    for i, (dim, kernel, _) in enumerate(config.conv_layers):
        shapes[f"feature_extractor.conv_layers.{i}.0.weight"] = (dim, in_dim, kernel)
        if config.extractor_mode == "layer_norm":
            shapes[f"feature_extractor.conv_layers.{i}.2.1.weight"] = (dim,)
            shapes[f"feature_extractor.conv_layers.{i}.2.1.bias"] = (dim,)
        elif i == 0:
            shapes[f"feature_extractor.conv_layers.{i}.2.weight"] = (dim,)
            shapes[f"feature_extractor.conv_layers.{i}.2.bias"] = (dim,)
        in_dim = dim
    d = config.width
    if in_dim != d:
        shapes["post_extract_proj.weight"], shapes["post_extract_proj.bias"] = (d, in_dim), (d,)
    g_shape, v_shape = (1, 1, config.conv_pos), (d, d // config.conv_pos_groups, config.conv_pos)
    if "encoder.pos_conv.0.parametrizations.weight.original0" in state:
        shapes["encoder.pos_conv.0.parametrizations.weight.original0"] = g_shape
        shapes["encoder.pos_conv.0.parametrizations.weight.original1"] = v_shape
    else:
        shapes["encoder.pos_conv.0.weight_g"], shapes["encoder.pos_conv.0.weight_v"] = g_shape, v_shape
    shapes["encoder.pos_conv.0.bias"] = (d,)
    shapes["encoder.layer_norm.weight"], shapes["encoder.layer_norm.bias"] = (d,), (d,)
    for i in range(config.layers):
        p = f"encoder.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[f"{p}self_attn.{name}.weight"], shapes[f"{p}self_attn.{name}.bias"] = (d, d), (d,)
        for norm in ("self_attn_layer_norm", "final_layer_norm"):
            shapes[f"{p}{norm}.weight"], shapes[f"{p}{norm}.bias"] = (d,), (d,)
        shapes[f"{p}fc1.weight"], shapes[f"{p}fc1.bias"] = (config.ffn, d), (config.ffn,)
        shapes[f"{p}fc2.weight"], shapes[f"{p}fc2.bias"] = (d, config.ffn), (d,)
    return shapes


NOT_ANALYSED = ("output_layer.", "task_embedding.")  # the distillation heads: not part of the encoder


@dataclass
class DistillerCheckpoint:
    path: str
    sha256: str
    config: DistillerConfig
    block: dict[str, Any]  # Config['distiller'] as saved
    state: dict[str, Any]  # encoder tensors, float32
    heads: list[str]  # names of the prediction-head tensors present (not analysed)
    step: int | None


def load_distiller(path) -> DistillerCheckpoint:
    """Read, check and return a distiller checkpoint (InputError / UnsafeFileError naming the file)."""
    import torch

    from satool.models.safe_pickle import safe_load_with_digest

    name = str(path)
    states, digest = safe_load_with_digest(path)
    if not isinstance(states, Mapping):
        raise InputError(f"expected a checkpoint dictionary, found a {type(states).__name__}", path=name)
    if "Distiller" not in states:
        found = ", ".join(repr(k) for k in list(states)[:8]) or "nothing"
        raise InputError(f"not a distiller checkpoint: expected a 'Distiller' state dict (found {found})", path=name)
    config_all = states.get("Config")
    if not isinstance(config_all, Mapping) or "distiller" not in config_all:
        raise InputError("not a distiller checkpoint: Config has no 'distiller' block", path=name)
    try:
        config = read_config(config_all["distiller"])
    except InputError as exc:
        raise InputError(exc.message, path=name) from None
    raw = states["Distiller"]
    if not isinstance(raw, Mapping):
        raise InputError(f"'Distiller' is a {type(raw).__name__}, expected a state dict", path=name)
    if raw and all(isinstance(k, str) and k.startswith("module.") for k in raw):
        raw = {k[len("module."):]: v for k, v in raw.items()}
    state, heads = {}, []
    for key, value in raw.items():
        if not isinstance(key, str):
            raise InputError(f"'Distiller' has a non-text key {key!r}", path=name)
        if key.startswith(NOT_ANALYSED):
            heads.append(key)
            continue
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise InputError(f"Distiller.{key} is not a floating-point tensor", path=name)
        state[key] = value
    expected = expected_shapes(config, state)
    layers = {int(k.split(".")[2]) for k in state if k.startswith("encoder.layers.") and k.split(".")[2].isdigit()}
    if layers != set(range(config.layers)):
        found = f"{len(layers)} ({min(layers)}..{max(layers)})" if layers else "none"
        raise InputError(f"the config describes {config.layers} encoder layers but the weights hold {found}",
                         path=name)
    for key, shape in expected.items():
        if key not in state:
            raise InputError(f"missing weight Distiller.{key}", path=name)
        if tuple(state[key].shape) != shape:
            raise InputError(f"Distiller.{key} has shape {list(state[key].shape)}, the config implies {list(shape)}",
                             path=name)
        if not bool(torch.isfinite(state[key]).all()):
            raise InputError(f"Distiller.{key} holds NaN or infinite values: such a model gives no usable "
                             "attention maps", path=name)
    extra = sorted(set(state) - set(expected))
    if extra:
        raise InputError(f"unexpected weight Distiller.{extra[0]} (not part of the model the config describes)",
                         path=name)
    step = states.get("Step")
    step = int(step) if type(step) is int else None
    return DistillerCheckpoint(name, digest, config, copy.deepcopy(dict(config_all["distiller"])),
                               {k: v.to(torch.float32) for k, v in state.items()}, heads, step)
