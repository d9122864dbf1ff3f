"""The Whisper encoder (Radford et al., 2022) with every head's attention returned and maskable.

Module names are transformers' ``WhisperEncoder`` ones, so its state dict loads strictly:

    x = GELU(conv1(mel))                      Conv1d(n_mels, d, 3, padding 1)
    x = GELU(conv2(x))                        Conv1d(d, d, 3, stride 2, padding 1): one step per 20 ms
    x = x + embed_positions[0:T]              the stored (sinusoidal) position table
    layer i (pre-LN):
        a = x + out_proj(Attention(self_attn_layer_norm(x)))
        x = a + fc2(act(fc1(final_layer_norm(a))))
    last_hidden_state = layer_norm(x)

Attention: ``P = softmax((x Wq + bq) (x Wk)^T / sqrt(d_head))`` (the keys have no bias), then satool's
head mask and span (``P * head_mask[layer, head]``, ``P * 1[|q - k| <= r]``, no renormalisation), then
``P V``. The maps returned are these ``P``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from satool.models.whisper.directory import WhisperConfig

_ACT = {"gelu": F.gelu, "relu": F.relu, "silu": F.silu, "swish": F.silu,
        "gelu_new": lambda x: F.gelu(x, approximate="tanh"), "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh")}


class _Attention(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width, bias=False)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)


class _Layer(nn.Module):
    def __init__(self, config: WhisperConfig):
        super().__init__()
        self.self_attn = _Attention(config.width)
        self.self_attn_layer_norm = nn.LayerNorm(config.width)
        self.fc1 = nn.Linear(config.width, config.ffn)
        self.fc2 = nn.Linear(config.ffn, config.width)
        self.final_layer_norm = nn.LayerNorm(config.width)


@dataclass
class WhisperOutput:
    hidden_states: list[torch.Tensor]  # [embedding, layer 1 .. layer L, final layer norm] ([step, width] each)
    attentions: dict[int, torch.Tensor]  # layer index -> [head, query, key]
    value_norms: dict[int, torch.Tensor] | None = None  # layer index -> [head, key] (want_value_norms)


class WhisperEncoderNet(nn.Module):
    def __init__(self, config: WhisperConfig):
        super().__init__()
        self.config = config
        self.conv1 = nn.Conv1d(config.n_mels, config.width, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(config.width, config.width, kernel_size=3, stride=2, padding=1)
        self.embed_positions = nn.Embedding(config.max_positions, config.width)
        self.layers = nn.ModuleList(_Layer(config) for _ in range(config.layers))
        self.layer_norm = nn.LayerNorm(config.width)
        self.act = _ACT[config.activation]

    def embed(self, mel: torch.Tensor) -> torch.Tensor:
        """``[frame, n_mels]`` -> ``[step, width]`` (caller checks step <= max_positions)."""
        x = F.gelu(self.conv1(mel.transpose(0, 1)[None]))
        x = F.gelu(self.conv2(x))[0].transpose(0, 1)
        return x + self.embed_positions.weight[: x.shape[0]]

    def attend(self, layer: _Layer, x: torch.Tensor, head_scale, band) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        t = x.shape[0]
        attn = layer.self_attn

        def heads(linear):
            return linear(x).view(t, c.heads, c.head_dim).transpose(0, 1)  # [head, t, d]

        q, k, v = heads(attn.q_proj), heads(attn.k_proj), heads(attn.v_proj)
        probs = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * (c.head_dim ** -0.5), dim=-1)
        if head_scale is not None:
            probs = probs * head_scale.view(-1, 1, 1)
        if band is not None:
            probs = probs * band
        context = torch.matmul(probs, v).transpose(0, 1).reshape(t, c.width)
        return attn.out_proj(context), probs

    def forward(self, mel: torch.Tensor, *, head_mask: torch.Tensor | None = None, attention_span: int | None = None,
                run: int | None = None, keep: set[int] | frozenset[int] = frozenset(),
                want_hidden: bool = True, want_value_norms: bool = False) -> WhisperOutput:
        """One utterance ``[frame, n_mels]``; ``run`` layers (default all), maps of the layers in ``keep``
        (and with ``want_value_norms`` their keys' ``||f_h(x_k)||``, satool.maps)."""
        x = self.embed(mel)
        t = x.shape[0]
        band = None
        if attention_span is not None:
            pos = torch.arange(t, device=x.device)
            band = ((pos[:, None] - pos[None, :]).abs() <= int(attention_span)).to(x.dtype)
        run = self.config.layers if run is None else run
        states = [x] if want_hidden else []
        maps, norms = {}, {}
        for i in range(run):
            layer = self.layers[i]
            normed = layer.self_attn_layer_norm(x)
            if want_value_norms and i in keep:
                norms[i] = self.value_norms(layer, normed)
            out, probs = self.attend(layer, normed, None if head_mask is None else head_mask[i], band)
            x = x + out
            x = x + layer.fc2(self.act(layer.fc1(layer.final_layer_norm(x))))
            if i in keep:
                maps[i] = probs
            if want_hidden:
                states.append(x)
        if want_hidden and run == self.config.layers:
            states.append(self.layer_norm(x))
        return WhisperOutput(states, maps, norms if want_value_norms else None)

    def value_norms(self, layer: _Layer, x: torch.Tensor) -> torch.Tensor:
        """``[head, key]``: each key's value vector (bias included) of the attention input ``x[step, width]``
        through its head's columns of ``out_proj`` (its bias left out)."""
        from satool.maps import head_value_norms

        c = self.config
        v = layer.self_attn.v_proj(x).view(x.shape[0], c.heads, c.head_dim).transpose(0, 1)
        return head_value_norms(v, layer.self_attn.out_proj.weight)
