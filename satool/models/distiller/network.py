"""The distiller encoder (DistilHuBERT), written for satool with s3prl's state-dict names.

    wave [sample]
    feature_extractor: conv_layers[i] = Conv1d(no bias) -> [GroupNorm(dim, dim) in layer 0 ("default" mode)
                       | LayerNorm over channels in every layer ("layer_norm" mode)] -> GELU
    post_extract_proj: Linear(conv dim, width) (absent when they are equal)  -> state 0, "embedding"
    encoder: x = x + GELU(SamePad(weight-normed grouped Conv1d(x)))          the convolutional positions
             x = layer_norm(x)                    (post-LN models; pre-LN models normalise at the end)
             layer i, post-LN: x = self_attn_layer_norm(x + out_proj(Attention(x)))
                               x = final_layer_norm(x + fc2(act(fc1(x))))             -> state i
             layer i, pre-LN:  x = x + out_proj(Attention(self_attn_layer_norm(x)))
                               x = x + fc2(act(fc1(final_layer_norm(x))))             -> state i
             pre-LN only: layer_norm(x)                                               -> "final layer norm"

Attention: ``P = softmax((x Wq + bq) / sqrt(d_head) (x Wk + bk)^T)``, then satool's head mask and
span (``P * head_mask[layer, head]``, ``P * 1[|q - k| <= r]``, no renormalisation), then ``P V``.
The prediction heads (``output_layer``) are not built.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from satool.models.distiller.checkpoint import DistillerConfig


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * torch.pow(x, 3))))


ACT = {"gelu": F.gelu, "relu": F.relu, "gelu_fast": _gelu_tanh, "gelu_accurate": _gelu_tanh, "tanh": torch.tanh,
       "linear": lambda x: x}


class _ChannelNorm(nn.Module):
    """Holds the LayerNorm of "layer_norm" mode at index 1, as s3prl's Sequential(Transpose, LN, Transpose)."""

    def __init__(self, dim: int):
        super().__init__()
        self.add_module("1", nn.LayerNorm(dim))

    def forward(self, x):  # [1, channel, time]
        return getattr(self, "1")(x.transpose(-2, -1)).transpose(-2, -1)


class _ConvBlock(nn.Module):
    """conv_layers[i]: module 0 the convolution, module 2 the normalisation (if any)."""

    def __init__(self, in_dim: int, dim: int, kernel: int, stride: int, norm: str | None):
        super().__init__()
        self.add_module("0", nn.Conv1d(in_dim, dim, kernel, stride=stride, bias=False))
        if norm == "group":
            self.add_module("2", nn.GroupNorm(dim, dim))
        elif norm == "layer":
            self.add_module("2", _ChannelNorm(dim))

    def forward(self, x):
        x = getattr(self, "0")(x)
        if hasattr(self, "2"):
            x = getattr(self, "2")(x)
        return F.gelu(x)


class _FeatureExtractor(nn.Module):
    def __init__(self, config: DistillerConfig):
        super().__init__()
        blocks, in_dim = [], 1
        for i, (dim, kernel, stride) in enumerate(config.conv_layers):
            norm = "layer" if config.extractor_mode == "layer_norm" else ("group" if i == 0 else None)
            blocks.append(_ConvBlock(in_dim, dim, kernel, stride, norm))
            in_dim = dim
        self.conv_layers = nn.ModuleList(blocks)

    def forward(self, wave):  # [sample] -> [step, dim]
        x = wave.view(1, 1, -1)
        for block in self.conv_layers:
            x = block(x)
        return x[0].transpose(0, 1)


class _PosConv(nn.Module):
    """``pos_conv.0``: the grouped convolution with weight norm over dim 2 (either storage of it)."""

    def __init__(self, config: DistillerConfig, parametrized: bool):
        super().__init__()
        d, k = config.width, config.conv_pos
        self.kernel, self.groups = k, config.conv_pos_groups
        self.parametrized = parametrized
        if parametrized:
            self.parametrizations = nn.Module()
            self.parametrizations.weight = nn.Module()
            self.parametrizations.weight.original0 = nn.Parameter(torch.ones(1, 1, k))
            self.parametrizations.weight.original1 = nn.Parameter(torch.zeros(d, d // self.groups, k))
        else:
            self.weight_g = nn.Parameter(torch.ones(1, 1, k))
            self.weight_v = nn.Parameter(torch.zeros(d, d // self.groups, k))
        self.bias = nn.Parameter(torch.zeros(d))

    def weight(self) -> torch.Tensor:
        if self.parametrized:
            g, v = self.parametrizations.weight.original0, self.parametrizations.weight.original1
        else:
            g, v = self.weight_g, self.weight_v
        return g * v / v.norm(dim=(0, 1), keepdim=True)

    def forward(self, x):  # [1, width, time]
        out = F.conv1d(x, self.weight(), self.bias, padding=self.kernel // 2, groups=self.groups)
        if self.kernel % 2 == 0:  # SamePad
            out = out[:, :, :-1]
        return F.gelu(out)


class _Attention(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.q_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)


class _Layer(nn.Module):
    def __init__(self, config: DistillerConfig):
        super().__init__()
        self.self_attn = _Attention(config.width)
        self.self_attn_layer_norm = nn.LayerNorm(config.width)
        self.fc1 = nn.Linear(config.width, config.ffn)
        self.fc2 = nn.Linear(config.ffn, config.width)
        self.final_layer_norm = nn.LayerNorm(config.width)


class _Encoder(nn.Module):
    def __init__(self, config: DistillerConfig, parametrized: bool):
        super().__init__()
        self.pos_conv = nn.ModuleList([_PosConv(config, parametrized)])  # keys pos_conv.0.*
        self.layers = nn.ModuleList(_Layer(config) for _ in range(config.layers))
        self.layer_norm = nn.LayerNorm(config.width)


class DistillerNet(nn.Module):
    def __init__(self, config: DistillerConfig, parametrized_pos_conv: bool = False):
        super().__init__()
        self.config = config
        self.feature_extractor = _FeatureExtractor(config)
        if config.conv_layers[-1][0] != config.width:
            self.post_extract_proj = nn.Linear(config.conv_layers[-1][0], config.width)
        else:
            self.post_extract_proj = None
        self.encoder = _Encoder(config, parametrized_pos_conv)
        self.act = ACT[config.activation]

    def embed(self, wave: torch.Tensor) -> torch.Tensor:
        """``[sample]`` -> ``[step, width]``: s3prl's ``feat_final`` (its hidden state 0)."""
        x = self.feature_extractor(wave)
        return self.post_extract_proj(x) if self.post_extract_proj is not None else x

    def attend(self, layer: _Layer, x: torch.Tensor, head_scale, band) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        t = x.shape[0]
        attn = layer.self_attn

        def heads(linear, scale=1.0):
            return (linear(x) * scale).view(t, c.heads, c.head_dim).transpose(0, 1)  # [head, t, d]

        q = heads(attn.q_proj, c.head_dim ** -0.5)
        k, v = heads(attn.k_proj), heads(attn.v_proj)
        probs = torch.softmax(torch.matmul(q, k.transpose(-1, -2)), dim=-1)
        if head_scale is not None:
            probs = probs * head_scale.view(-1, 1, 1)
        if band is not None:
            probs = probs * band
        context = torch.matmul(probs, v).transpose(0, 1).reshape(t, c.width)
        return attn.out_proj(context), probs

    def value_norms(self, layer: _Layer, x: torch.Tensor) -> torch.Tensor:
        """``[head, key]``: each key's value vector (bias included) of the attention input ``x[step, width]``
        through its head's columns of ``out_proj`` (its bias left out; satool.maps)."""
        from satool.maps import head_value_norms

        c = self.config
        v = layer.self_attn.v_proj(x).view(x.shape[0], c.heads, c.head_dim).transpose(0, 1)
        return head_value_norms(v, layer.self_attn.out_proj.weight)

    def forward(self, wave: torch.Tensor, *, head_mask=None, attention_span=None, run=None, keep=frozenset(),
                want_hidden=True, norms: dict[int, torch.Tensor] | None = None
                ) -> tuple[list[torch.Tensor], dict[int, torch.Tensor]]:
        """(hidden states, maps of the layers in ``keep``); with a dict ``norms``, the value norms of
        those layers are put in it (``[head, key]`` by layer index)."""
        c = self.config
        feat = self.embed(wave)
        x = feat + self.encoder.pos_conv[0](feat.transpose(0, 1)[None])[0].transpose(0, 1)
        if not c.layer_norm_first:
            x = self.encoder.layer_norm(x)
        t = x.shape[0]
        band = None
        if attention_span is not None:
            pos = torch.arange(t, device=x.device)
            band = ((pos[:, None] - pos[None, :]).abs() <= int(attention_span)).to(x.dtype)
        run = c.layers if run is None else run
        states = [feat] if want_hidden else []
        maps = {}
        for i in range(run):
            layer = self.encoder.layers[i]
            scale = None if head_mask is None else head_mask[i]
            attn_in = layer.self_attn_layer_norm(x) if c.layer_norm_first else x
            if norms is not None and i in keep:
                norms[i] = self.value_norms(layer, attn_in)
            if c.layer_norm_first:
                out, probs = self.attend(layer, attn_in, scale, band)
                x = x + out
                x = x + layer.fc2(self.act(layer.fc1(layer.final_layer_norm(x))))
            else:
                out, probs = self.attend(layer, x, scale, band)
                x = layer.self_attn_layer_norm(x + out)
                x = layer.final_layer_norm(x + layer.fc2(self.act(layer.fc1(x))))
            if i in keep:
                maps[i] = probs
            if want_hidden:
                states.append(x)
        if want_hidden and c.layer_norm_first and run == c.layers:
            states.append(self.encoder.layer_norm(x))
        return states, maps
