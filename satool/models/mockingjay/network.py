"""Mockingjay: a BERT-like Transformer encoder over acoustic frames.

Liu et al., "Mockingjay: Unsupervised Speech Representation Learning with Deep
Bidirectional Transformer Encoders" (ICASSP 2020), as implemented by the s3prl
toolkit (``s3prl.upstream.mockingjay.model.TransformerModel``). This file is
meant to be read top to bottom:

1. :class:`MockingjayConfig` and the named presets,
2. building blocks: TF-style LayerNorm, activations, sinusoidal positions,
3. one Transformer layer (self-attention + feed-forward), post-LN or pre-LN,
4. :class:`MockingjayEncoder` (what the analysis looks inside) and
   :class:`SpecHead` (the pre-training prediction head),
5. helpers: frame stacking for down-sampled models and chunked encoding of
   inputs longer than the model was trained on.

The module tree, and therefore every state-dict key, is the same as s3prl's
(``input_representations.spec_transform.*``, ``encoder.layer.{i}.attention.
self.query.*``, ...), so an s3prl state dict loads with
``load_state_dict(strict=True)`` and numbers agree with s3prl to float32
rounding (see tests/test_model.py and docs/model.md).

Shapes are written ``[batch, step, hidden]``; attention maps are
``[batch, head, query, key]``. A "step" is one encoder position: one frame, or
``downsample_rate`` stacked frames for paper-era models.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ACTIVATIONS",
    "PRESETS",
    "EncoderOutput",
    "LayerNorm",
    "MockingjayConfig",
    "MockingjayEncoder",
    "SpecHead",
    "encode_chunked",
    "position_encoding",
    "stack_frames",
    "unstack_frames",
]


# ---------------------------------------------------------------------------
# 1. Configuration
# ---------------------------------------------------------------------------

# s3prl 'transformer' block key  ->  MockingjayConfig field
_S3PRL_KEYS = {
    "hidden_size": "hidden_size",
    "num_hidden_layers": "num_layers",
    "num_attention_heads": "num_heads",
    "intermediate_size": "intermediate_size",
    "hidden_act": "hidden_act",
    "hidden_dropout_prob": "hidden_dropout",
    "attention_probs_dropout_prob": "attention_dropout",
    "initializer_range": "initializer_range",
    "layer_norm_eps": "layer_norm_eps",
    "share_layer": "share_layer",
    "pre_layer_norm": "pre_layer_norm",
    "downsample_rate": "downsample_rate",
}
# The keys without which the model cannot be built; the others have defaults.
_S3PRL_REQUIRED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


@dataclass(frozen=True)
class MockingjayConfig:
    """Everything needed to build a :class:`MockingjayEncoder` and its :class:`SpecHead`.

    ``input_dim`` and ``output_dim`` are per *frame*; with ``downsample_rate``
    R > 1 the encoder reads ``R * input_dim`` values per step (R stacked
    frames) and the head predicts ``R * output_dim``.
    """

    hidden_size: int = 768
    num_layers: int = 3
    num_heads: int = 12
    intermediate_size: int = 3072
    input_dim: int = 80
    output_dim: int = 80
    downsample_rate: int = 1
    pre_layer_norm: bool = False
    share_layer: bool = False
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    initializer_range: float = 0.02
    # s3prl's task.sequence_length: longer inputs are cut into chunks (0 = never).
    max_input_length: int = 0
    # Current s3prl returns the embedding output plus one state per layer
    # (L + 1); paper-era checkpoints returned the L layer outputs only.
    embedding_in_hidden_states: bool = True

    def __post_init__(self) -> None:
        for name in ("hidden_size", "num_layers", "num_heads", "intermediate_size",
                     "input_dim", "output_dim", "downsample_rate"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(
                f"hidden_act must be one of {sorted(ACTIVATIONS)}, got {self.hidden_act!r}"
            )
        if not self.layer_norm_eps > 0:
            raise ValueError(f"layer_norm_eps must be > 0, got {self.layer_norm_eps!r}")
        for name in ("hidden_dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if self.max_input_length < 0:
            raise ValueError(f"max_input_length must be >= 0, got {self.max_input_length!r}")
        if self.pre_layer_norm and not self.embedding_in_hidden_states:
            raise ValueError("pre-LN models always report L + 1 hidden states")

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def total_heads(self) -> int:
        return self.num_layers * self.num_heads

    @property
    def step_input_dim(self) -> int:
        """Values per encoder step: ``downsample_rate * input_dim``."""
        return self.downsample_rate * self.input_dim

    @property
    def step_output_dim(self) -> int:
        """Values the head predicts per step: ``downsample_rate * output_dim``."""
        return self.downsample_rate * self.output_dim

    # -- presets and conversions ------------------------------------------

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> MockingjayConfig:
        """A named size (``tiny``, ``demo``, ``base``, ``large``), optionally overridden."""
        try:
            values = PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}") from None
        return cls(**{**values, **overrides})

    @classmethod
    def from_s3prl(
        cls, block: Mapping[str, Any], *, input_dim: int | None = None,
        output_dim: int | None = None, **overrides: Any,
    ) -> MockingjayConfig:
        """Read an s3prl ``transformer`` (or paper-era ``mockingjay``) config block.

        Keys s3prl does not know (``output_dim``) or leaves at -1
        (``input_dim`` of on-the-fly checkpoints) come from the arguments;
        missing optional keys (``pre_layer_norm``, ``share_layer``,
        ``downsample_rate`` in older blocks) take s3prl's defaults.
        Raises ``KeyError`` for a missing required key and ``ValueError`` for a
        bad value (the checkpoint loader turns both into one-line errors).
        """
        values: dict[str, Any] = {}
        for key, name in _S3PRL_KEYS.items():
            if key in block:
                values[name] = _coerce(name, block[key], key)
            elif key in _S3PRL_REQUIRED:
                raise KeyError(key)
        block_input = block.get("input_dim")
        if input_dim is None and block_input is not None and int(block_input) > 0:
            input_dim = int(block_input)
        if input_dim is not None:
            values["input_dim"] = input_dim
        if output_dim is not None:
            values["output_dim"] = output_dim
        elif input_dim is not None:
            values["output_dim"] = input_dim
        if "max_input_length" in block:  # paper-era blocks carried it here
            values["max_input_length"] = _coerce("max_input_length", block["max_input_length"],
                                                 "max_input_length")
        values.update(overrides)
        return cls(**values)

    def to_s3prl(self) -> dict[str, Any]:
        """The s3prl ``transformer`` block (plain Python values)."""
        block: dict[str, Any] = {"input_dim": self.input_dim}
        for key, name in _S3PRL_KEYS.items():
            block[key] = getattr(self, name)
        return block

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> MockingjayConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def replace(self, **changes: Any) -> MockingjayConfig:
        return replace(self, **changes)


def _coerce(name: str, value: Any, key: str) -> Any:
    """Turn a YAML value (possibly a string such as "1e-12") into the field's type."""
    kind = {f.name: f.type for f in fields(MockingjayConfig)}[name]
    try:
        if kind == "bool":
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return lowered in ("true", "1", "yes")
            return bool(value)
        if kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if kind == "float":
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key} = {value!r} is not a valid {kind}") from None


# Presets. Head counts: tiny 4, demo 48, base 36, large 144 (the paper's LARGE).
PRESETS: dict[str, dict[str, Any]] = {
    # Unit tests: a forward pass takes milliseconds.
    "tiny": dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64),
    # The demo: pre-trains in minutes on 2 CPU cores and still has 48 heads.
    # No attention dropout: on CPU, sampling a dropout mask for every
    # [batch, head, query, key] map makes a training step ~3x slower.
    "demo": dict(hidden_size=192, num_layers=4, num_heads=12, intermediate_size=768,
                 attention_dropout=0.0),
    # s3prl's "Base" Mockingjay (e.g. logMelBase_T_AdamW_b32_1m_960hr).
    "base": dict(hidden_size=768, num_layers=3, num_heads=12, intermediate_size=3072,
                 max_input_length=1500),
    # The paper's LARGE model (logMel input, 201-bin linear spectrogram target).
    "large": dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072,
                  output_dim=201, max_input_length=1500),
}


# ---------------------------------------------------------------------------
# 2. Building blocks
# ---------------------------------------------------------------------------


class LayerNorm(nn.Module):
    """TF-style LayerNorm: ``weight * (x - mean) / sqrt(var + eps) + bias``.

    The epsilon sits inside the square root and the variance is the biased
    one, which is exactly what ``torch.nn.functional.layer_norm`` computes, so
    the fused kernel is used.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-12):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.bias = nn.Parameter(torch.zeros(hidden_size))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


def _swish(x: Tensor) -> Tensor:
    return x * torch.sigmoid(x)


# "gelu" is the exact erf form: x * 0.5 * (1 + erf(x / sqrt(2))).
ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu, "swish": _swish}


_POSITION_TABLES: dict[int, Tensor] = {}


def position_encoding(length: int, hidden_size: int) -> Tensor:
    """Sinusoidal positions ``[step, hidden]`` (float32, CPU), as s3prl builds them.

    ``angle[p, j] = p / 10000 ** (2 * (j // 2) / hidden_size)``; even columns
    take its sine, odd columns its cosine. Computed in float64 then rounded to
    float32, like s3prl's table, so the values are bit-identical; unlike
    s3prl's table (24000 rows built by a Python loop) it is vectorised and
    grows on demand, so any length works.
    """
    table = _POSITION_TABLES.get(hidden_size)
    if table is None or table.shape[0] < length:
        rows = max(length, 2 * (0 if table is None else table.shape[0]), 1024)
        # One scalar np.power per column, exactly as s3prl evaluates it.
        denominators = np.array(
            [np.power(10000, 2 * (j // 2) / hidden_size) for j in range(hidden_size)]
        )
        angles = np.arange(rows, dtype=np.float64)[:, None] / denominators[None, :]
        angles[:, 0::2] = np.sin(angles[:, 0::2])
        angles[:, 1::2] = np.cos(angles[:, 1::2])
        table = torch.from_numpy(angles).float()
        _POSITION_TABLES[hidden_size] = table
    return table[:length]


def _init_weights(module: nn.Module, std: float) -> None:
    """BERT initialisation: N(0, std) for linear weights, zero biases, unit LayerNorm."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class InputRepresentations(nn.Module):
    """Step features -> hidden: ``LayerNorm(Linear(features) + positions)``."""

    def __init__(self, config: MockingjayConfig):
        super().__init__()
        self.spec_transform = nn.Linear(config.step_input_dim, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, features: Tensor, positions: Tensor) -> Tensor:
        # features [batch, step, step_input_dim], positions [step, hidden]
        return self.dropout(self.LayerNorm(self.spec_transform(features) + positions))


# ---------------------------------------------------------------------------
# 3. One Transformer layer
# ---------------------------------------------------------------------------


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product attention; returns the context and the maps."""

    def __init__(self, config: MockingjayConfig):
        super().__init__()
        self.num_heads = config.num_heads
        self.head_size = config.head_size
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.attention_dropout)

    def forward(
        self,
        x: Tensor,
        padding: Tensor | None,
        head_mask: Tensor | None,
        span: Tensor | None,
        output_attentions: bool,
    ) -> tuple[Tensor, Tensor | None]:
        # x [batch, step, hidden]; padding [batch, 1, 1, key] additive (0 or -10000);
        # head_mask [1, head, 1, 1] multiplicative; span [query, key] bool (True = keep).
        batch, steps, hidden = x.shape

        def split_heads(t: Tensor) -> Tensor:  # [batch, step, hidden] -> [batch, head, step, d]
            return t.view(batch, steps, self.num_heads, self.head_size).transpose(1, 2)

        q = split_heads(self.query(x))
        k = split_heads(self.key(x))
        v = split_heads(self.value(x))

        if not output_attentions and head_mask is None and span is None:
            # Nothing to look at or edit: let PyTorch fuse the whole thing.
            context = F.scaled_dot_product_attention(
                q, k, v, attn_mask=padding,
                dropout_p=self.dropout.p if self.training else 0.0,
            )
            probs = None
        else:
            scores = torch.matmul(q, k.transpose(-1, -2))  # [batch, head, query, key]
            scores.div_(math.sqrt(self.head_size))
            if padding is not None:
                scores.add_(padding)
            probs = scores.softmax(dim=-1)
            # Pruning edits the weights after the softmax, without renormalising
            # (in place when no gradient needs the softmax output).
            if head_mask is not None:
                probs = probs * head_mask if probs.requires_grad else probs.mul_(head_mask)
            if span is not None:
                probs = (probs.masked_fill(~span, 0.0) if probs.requires_grad
                         else probs.masked_fill_(~span, 0.0))
            context = torch.matmul(self.dropout(probs), v)  # [batch, head, query, d]
        context = context.transpose(1, 2).reshape(batch, steps, hidden)
        return context, probs


class ResidualOutput(nn.Module):
    """Projection back to the hidden size, dropout, residual, and (post-LN) LayerNorm.

    Used after the attention block (``in_size`` = hidden size) and after the
    feed-forward block (``in_size`` = intermediate size)."""

    def __init__(self, config: MockingjayConfig, in_size: int):
        super().__init__()
        self.pre_layer_norm = config.pre_layer_norm
        self.dense = nn.Linear(in_size, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        x = self.dropout(self.dense(x)) + residual
        return x if self.pre_layer_norm else self.LayerNorm(x)


class Attention(nn.Module):
    def __init__(self, config: MockingjayConfig):
        super().__init__()
        self.pre_layer_norm = config.pre_layer_norm
        self.self = SelfAttention(config)  # named "self" to keep s3prl's keys
        self.output = ResidualOutput(config, config.hidden_size)
        if self.pre_layer_norm:
            # s3prl registers the same LayerNorm under a second name, so its
            # state dicts carry both "attention.LayerNorm.*" and
            # "attention.output.LayerNorm.*". Do the same.
            self.LayerNorm = self.output.LayerNorm

    def forward(self, x, padding, head_mask, span, output_attentions):
        normed = self.LayerNorm(x) if self.pre_layer_norm else x
        context, probs = self.self(normed, padding, head_mask, span, output_attentions)
        return self.output(context, x), probs


class Intermediate(nn.Module):
    def __init__(self, config: MockingjayConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACTIVATIONS[config.hidden_act]

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.dense(x))


class Layer(nn.Module):
    """Post-LN: x = LN(x + Attn(x)); x = LN(x + FFN(x)).
    Pre-LN:  x = x + Attn(LN(x));   x = x + FFN(LN(x))."""

    def __init__(self, config: MockingjayConfig):
        super().__init__()
        self.pre_layer_norm = config.pre_layer_norm
        self.attention = Attention(config)
        self.intermediate = Intermediate(config)
        self.output = ResidualOutput(config, config.intermediate_size)
        if self.pre_layer_norm:
            self.LayerNorm = self.output.LayerNorm  # alias, as in s3prl

    def forward(self, x, padding, head_mask, span, output_attentions):
        attended, probs = self.attention(x, padding, head_mask, span, output_attentions)
        normed = self.LayerNorm(attended) if self.pre_layer_norm else attended
        return self.output(self.intermediate(normed), attended), probs


class LayerStack(nn.Module):
    """The L layers, plus (pre-LN only) the L + 1 LayerNorms applied to reported states."""

    def __init__(self, config: MockingjayConfig):
        super().__init__()
        if config.share_layer:  # ALBERT-style: one layer applied L times
            shared = Layer(config)
            self.layer = nn.ModuleList([shared] * config.num_layers)
        else:
            self.layer = nn.ModuleList(Layer(config) for _ in range(config.num_layers))
        if config.pre_layer_norm:
            self.LayerNorm = nn.ModuleList(
                LayerNorm(config.hidden_size, config.layer_norm_eps)
                for _ in range(config.num_layers + 1)
            )


# ---------------------------------------------------------------------------
# 4. The encoder and the prediction head
# ---------------------------------------------------------------------------


@dataclass
class EncoderOutput:
    """What one forward pass produced.

    ``hidden_states``: L + 1 tensors ``[batch, step, hidden]`` (embedding
    output, then each layer; pre-LN models report ``LayerNorm[i]`` of each,
    as s3prl does), or L tensors for paper-era models
    (``embedding_in_hidden_states=False``).
    ``attentions``: L tensors ``[batch, head, query, key]`` -- the softmax
    output after head and span masking (what the layer multiplied the values
    by, before dropout); ``None`` with ``output_attentions=False``.
    ``value_norms``: with ``output_value_norms``, one ``[batch, head, step]``
    per layer run: ``||f_h(x_k)||`` (:func:`satool.maps.head_value_norms`).
    """

    hidden_states: tuple[Tensor, ...]
    attentions: tuple[Tensor, ...] | None = None
    value_norms: tuple[Tensor, ...] | None = None  # per layer run: [batch, head, step] (output_value_norms)

    @property
    def last_hidden_state(self) -> Tensor:
        return self.hidden_states[-1]


class MockingjayEncoder(nn.Module):
    """The Mockingjay Transformer encoder (s3prl ``TransformerModel``)."""

    def __init__(self, config: MockingjayConfig):
        super().__init__()
        self.config = config
        self.input_representations = InputRepresentations(config)
        self.encoder = LayerStack(config)
        self.apply(lambda m: _init_weights(m, config.initializer_range))

    def forward(
        self,
        features: Tensor,
        lengths: Tensor | None = None,
        head_mask: Tensor | None = None,
        attention_span: int | None = None,
        output_attentions: bool = True,
        output_hidden_states: bool = True,
        num_layers: int | None = None,
        attention_window: int | None = None,
        output_value_norms: bool = False,
    ) -> EncoderOutput:
        """Encode ``features[batch, step, downsample_rate * input_dim]``.

        - ``lengths[batch]``: valid steps per utterance; later steps are padding
          (as in s3prl, -10000 is added to their attention scores).
        - ``head_mask[layer, head]`` (or ``[head]`` for every layer, or ``[batch, layer, head]``
          for one mask per utterance, so several pruned models run as one batch): each
          head's attention weights are multiplied by it -- 0 prunes the head
          (it contributes nothing before the output projection), 1 keeps it.
        - ``attention_span`` r: weights with ``|query - key| > r`` are set to 0
          after the softmax (rows are not renormalised).
        - ``attention_window`` w: keys with ``|query - key| > w`` are masked
          *before* the softmax (like padding), so each row is renormalised over
          its window; ``0`` makes every head attend only to its own step (the
          model without context: the "attention off" check of pre-training).
        - ``num_layers``: run only the first n layers (attention extraction of
          a subset of layers needs no more).
        - ``output_hidden_states=False`` with ``output_attentions``: the last
          layer run stops after its attention weights (its output projection and
          feed-forward are not needed), and ``hidden_states`` is empty.
        - ``output_value_norms``: also each layer's ``||f_h(x_k)||`` (every key's
          value vector through its head's columns of the output projection).
        """
        config = self.config
        if features.dim() != 3 or features.shape[-1] != config.step_input_dim:
            raise ValueError(
                f"features must be [batch, step, {config.step_input_dim}], "
                f"got {list(features.shape)}"
            )
        batch, steps, _ = features.shape
        device, dtype = features.device, features.dtype

        padding = None
        if lengths is not None:
            lengths = torch.as_tensor(lengths, device=device)
            if lengths.shape != (batch,):
                raise ValueError(f"lengths must be [batch={batch}], got {list(lengths.shape)}")
            valid = torch.arange(steps, device=device)[None, :] < lengths[:, None]
            padding = ((1.0 - valid.to(dtype)) * -10000.0)[:, None, None, :]  # [batch,1,1,key]
        if attention_window is not None:
            if attention_window < 0:
                raise ValueError(f"attention_window must be >= 0, got {attention_window}")
            position = torch.arange(steps, device=device)
            outside = (position[:, None] - position[None, :]).abs() > attention_window
            window = (outside.to(dtype) * -10000.0)[None, None]  # [1, 1, query, key]
            padding = window if padding is None else padding + window

        layer_masks: list[Tensor | None] = [None] * config.num_layers
        if head_mask is not None:
            head_mask = torch.as_tensor(head_mask, device=device, dtype=dtype)
            if head_mask.shape == (config.num_heads,):
                head_mask = head_mask.expand(config.num_layers, -1)
            if head_mask.shape == (batch, config.num_layers, config.num_heads):  # one mask per utterance
                layer_masks = list(head_mask.permute(1, 0, 2)[:, :, :, None, None])  # each [batch, head, 1, 1]
            elif head_mask.shape != (config.num_layers, config.num_heads):
                raise ValueError(
                    f"head_mask must be [layer={config.num_layers}, head={config.num_heads}] or [batch={batch}, "
                    f"layer, head], got {list(head_mask.shape)}"
                )
            else:
                layer_masks = list(head_mask[:, None, :, None, None])  # each [1, head, 1, 1]

        span = None
        if attention_span is not None:
            if attention_span < 0:
                raise ValueError(f"attention_span must be >= 0, got {attention_span}")
            position = torch.arange(steps, device=device)
            span = (position[:, None] - position[None, :]).abs() <= attention_span

        positions = position_encoding(steps, config.hidden_size).to(device=device, dtype=dtype)
        x = self.input_representations(features, positions)

        stack = self.encoder
        run = config.num_layers if num_layers is None else max(1, min(num_layers, config.num_layers))
        maps_only = output_attentions and not output_hidden_states
        hidden: list[Tensor] = []
        maps: list[Tensor] = []
        norms: list[Tensor] = []
        for i, layer in enumerate(stack.layer[:run]):
            if output_value_norms:
                norms.append(value_norms(layer, x))
            if not output_hidden_states:
                pass
            elif config.pre_layer_norm:
                hidden.append(stack.LayerNorm[i](x))
            elif config.embedding_in_hidden_states or i > 0:
                hidden.append(x)
            if maps_only and i == run - 1:
                attention = layer.attention
                normed = attention.LayerNorm(x) if config.pre_layer_norm else x
                maps.append(attention.self(normed, padding, layer_masks[i], span, True)[1])
                break
            x, probs = layer(x, padding, layer_masks[i], span, output_attentions)
            if output_attentions:
                maps.append(probs)
        else:
            if output_hidden_states:
                hidden.append(stack.LayerNorm[run](x) if config.pre_layer_norm else x)
        return EncoderOutput(tuple(hidden), tuple(maps) if output_attentions else None,
                             tuple(norms) if output_value_norms else None)


def value_norms(layer: Layer, x: Tensor) -> Tensor:
    """``||f_h(x_k)||`` of one layer for its input ``x[batch, step, hidden]`` -> ``[batch, head, step]``:
    the value vectors (bias included) of the attention input (``x``, or its LayerNorm in pre-LN models)
    through each head's columns of ``attention.output.dense`` (bias left out)."""
    from satool.maps import head_value_norms

    attention = layer.attention
    normed = attention.LayerNorm(x) if attention.pre_layer_norm else x
    sa = attention.self
    batch, steps, _ = normed.shape
    v = sa.value(normed).view(batch, steps, sa.num_heads, sa.head_size).transpose(1, 2)
    return head_value_norms(v, attention.output.dense.weight)


class SpecHead(nn.Module):
    """Pre-training head: hidden -> dense -> act -> LayerNorm -> predicted frames."""

    def __init__(self, config: MockingjayConfig):
        super().__init__()
        self.config = config
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACTIVATIONS[config.hidden_act]
        self.LayerNorm = LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.output = nn.Linear(config.hidden_size, config.step_output_dim)
        self.apply(lambda m: _init_weights(m, config.initializer_range))

    def forward(self, hidden: Tensor) -> Tensor:
        """``hidden[batch, step, hidden]`` -> ``[batch, step, downsample_rate * output_dim]``."""
        return self.output(self.LayerNorm(self.act(self.dense(hidden))))


# ---------------------------------------------------------------------------
# 5. Helpers
# ---------------------------------------------------------------------------


def stack_frames(features: Tensor, rate: int) -> Tensor:
    """``[batch, frame, dim]`` -> ``[batch, frame // rate, rate * dim]``.

    Drops the last ``frame mod rate`` frames and concatenates each run of
    ``rate`` consecutive frames (frame 0's values first), as the paper-era
    models were trained.
    """
    if rate < 1:
        raise ValueError(f"rate must be >= 1, got {rate}")
    if rate == 1:
        return features
    batch, frames, dim = features.shape
    steps = frames // rate
    return features[:, : steps * rate].reshape(batch, steps, rate * dim)


def unstack_frames(stacked: Tensor, rate: int) -> Tensor:
    """Inverse of :func:`stack_frames`: ``[batch, step, rate * dim]`` -> ``[batch, step * rate, dim]``."""
    if rate == 1:
        return stacked
    batch, steps, width = stacked.shape
    return stacked.reshape(batch, steps * rate, width // rate)


def encode_chunked(
    encoder: MockingjayEncoder,
    features: Tensor,
    lengths: Tensor | None = None,
    *,
    max_input_length: int | None = None,
    chunk_long_inputs: bool = True,
    head_mask: Tensor | None = None,
    attention_span: int | None = None,
    output_attentions: bool = True,
    output_hidden_states: bool = True,
    num_layers: int | None = None,
    output_value_norms: bool = False,
) -> EncoderOutput:
    """Encode like s3prl's ``PretrainedTransformer`` does with long inputs.

    When ``chunk_long_inputs`` and the input has more than
    ``max_input_length`` steps (default: the config's, s3prl's
    ``task.sequence_length``; 0 = no limit), the steps are split with
    ``torch.chunk`` into ``ceil(step / max_input_length)`` pieces, each piece
    is encoded on its own (positions restart at 0, no attention across
    pieces) and the hidden states are concatenated along the step axis.
    Attention maps come back as full ``[batch, head, step, step]`` tensors
    that are block-diagonal (zero between pieces). Otherwise the whole input
    is encoded at once.
    """
    if max_input_length is None:
        max_input_length = encoder.config.max_input_length
    steps = features.shape[1]
    kwargs = dict(head_mask=head_mask, attention_span=attention_span, output_attentions=output_attentions,
                  output_hidden_states=output_hidden_states, num_layers=num_layers,
                  output_value_norms=output_value_norms)
    if not chunk_long_inputs or max_input_length <= 0 or steps <= max_input_length:
        return encoder(features, lengths, **kwargs)

    if lengths is not None:
        lengths = torch.as_tensor(lengths, device=features.device)
    pieces = torch.chunk(features, math.ceil(steps / max_input_length), dim=1)
    outputs: list[EncoderOutput] = []
    start = 0
    for piece in pieces:
        size = piece.shape[1]
        piece_lengths = None if lengths is None else (lengths - start).clamp(0, size)
        outputs.append(encoder(piece, piece_lengths, **kwargs))
        start += size

    hidden = tuple(
        torch.cat([out.hidden_states[i] for out in outputs], dim=1)
        for i in range(len(outputs[0].hidden_states))
    )
    norms = None
    if output_value_norms:  # each key's norm comes from its own piece
        norms = tuple(torch.cat([out.value_norms[i] for out in outputs], dim=-1)
                      for i in range(len(outputs[0].value_norms)))
    if not output_attentions:
        return EncoderOutput(hidden, None, norms)
    maps = []
    for i in range(len(outputs[0].attentions)):
        first = outputs[0].attentions[i]
        full = first.new_zeros(first.shape[0], first.shape[1], steps, steps)
        start = 0
        for out in outputs:
            block = out.attentions[i]
            size = block.shape[-1]
            full[:, :, start:start + size, start:start + size] = block
            start += size
        maps.append(full)
    return EncoderOutput(hidden, tuple(maps), norms)
