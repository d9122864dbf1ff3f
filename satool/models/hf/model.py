"""wav2vec 2.0, HuBERT and WavLM from local Hugging Face checkpoints (the ``hf-speech`` loader).

transformers builds the modules and loads the weights (``local_files_only``:
nothing is downloaded; safetensors when present, ``.bin`` only through
``torch.load(weights_only=True)``). satool then runs the transformer part
itself, with each layer's own modules (projections, layer norms, feed-forward,
WavLM's gated relative position bias), so that it can

- return every head's attention map (transformers' sdpa/flash paths return
  none, and its WavLM path returns the head *average*), and
- apply satool's head mask and attention span *inside* the layer: the
  softmax output is multiplied by ``head_mask[layer, head]`` and zeroed where
  ``|q - k| > span`` (no renormalisation) before it weights the values, so a
  masked head contributes nothing before the output projection. The maps
  returned are the ones the layer used.

Time axis: one step per hop of the convolutional feature encoder (usually 320
samples = 20 ms, so ``frames_per_step`` R = 2 label frames of 10 ms).

Hidden states (``hidden_state_names``) follow transformers' (v5)
``output_hidden_states`` tuple: ``"embedding"`` is the input to the first layer
(feature projection + convolutional position embedding, layer-normed in the
post-LN "base" models, not in the pre-LN "stable layer norm" ones), then
``"layer 1"`` .. ``"layer L"`` are the layers' outputs. Pre-LN models end the
encoder with a LayerNorm that transformers (v5) leaves out of that tuple; satool
appends it as a last state ``"final layer norm"`` (= ``last_hidden_state``) so
that "-1 = last" means the encoder's output for every model.
"""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from satool.errors import InputError, UnsafeFileError
from satool.models.base import (
    DEFAULT_BLOCK_MB,
    AttentionModel,
    EncodedUtterance,
    asked_heads,
    attention_in_blocks,
    conv_receptive_field,
    conv_steps,
    labelled,
)
from satool.models.hf.checks import strict_flag
from satool.models.hf.directory import HFDirectory
from satool.timebase import HOP_SAMPLES, SAMPLE_RATE

NORM_EPS = 1e-7  # Wav2Vec2FeatureExtractor's zero-mean unit-variance epsilon
FINAL_NORM_STATE = "final layer norm"

# Parameters the model may lack in a checkpoint without harm: only used for masked pre-training.
_OPTIONAL_WEIGHTS = ("masked_spec_embed",)


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _check_weight_files(directory: HFDirectory) -> None:
    """Before transformers reads anything: the config's numbers, every safetensors header, ``.bin``
    files through satool's restricted unpickler (nothing in them runs; exit 4 if one asks to), and
    the layers the weights hold against the layers config.json asks for."""
    from satool.models.hf.checks import check_config, check_layers, safetensors_keys
    from satool.models.safe_pickle import safe_load

    check_config(directory.config, directory.path)
    keys: list[str] = []
    for f in directory.weights:
        if directory.safetensors:
            keys += safetensors_keys(f)
        else:
            state = safe_load(f)  # refuses code (exit 4) and enforces satool's memory limits
            if not isinstance(state, dict):
                raise InputError(f"expected a dictionary of tensors, found a {type(state).__name__}", path=f)
            odd = next(((k, v) for k, v in state.items() if not isinstance(v, torch.Tensor)), None)
            if odd is not None:  # transformers reads .bin weights-only: it would refuse, and suggest an unsafe load
                raise UnsafeFileError(f"refused to load: not a weights-only pickle of tensors (entry {odd[0]!r} is a "
                                      f"{type(odd[1]).__name__})", path=f)
            keys += [str(k) for k in state]
    check_layers(directory.config, keys, directory.path / "config.json")


def _model_classes(model_type: str):
    import transformers

    return {
        "wav2vec2": transformers.Wav2Vec2Model,
        "hubert": transformers.HubertModel,
        "wavlm": transformers.WavLMModel,
        "data2vec-audio": transformers.Data2VecAudioModel,  # wav2vec2's layers; a stack of position convs
    }[model_type]


def _load_transformers_model(directory: HFDirectory) -> nn.Module:
    """The bare encoder model (``Wav2Vec2Model`` etc.), float32, eval mode; InputError if weights are missing."""
    cls = _model_classes(directory.model_type)
    _check_weight_files(directory)
    from transformers.utils import logging as hf_logging

    hf_logger = logging.getLogger("transformers")
    level = hf_logger.level
    bars = hf_logging.is_progress_bar_enabled()
    hf_logger.setLevel(logging.ERROR)  # unused pre-training/CTC heads are expected; missing weights are checked below
    if bars:
        hf_logging.disable_progress_bar()  # satool shows its own progress
    try:
        model, info = cls.from_pretrained(
            str(directory.path), local_files_only=True, use_safetensors=directory.safetensors,
            output_loading_info=True, trust_remote_code=False,
        )
    except Exception as exc:  # the files were checked above; anything transformers still rejects is theirs
        raise InputError(f"transformers cannot load this {directory.model_type} checkpoint: "
                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                         path=directory.path) from None
    finally:
        hf_logger.setLevel(level)
        if bars:
            hf_logging.enable_progress_bar()
    missing = sorted(k for k in info.get("missing_keys", ()) if not k.endswith(_OPTIONAL_WEIGHTS))
    mismatched = list(info.get("mismatched_keys", ()))
    if missing or mismatched:
        shown = ", ".join(map(str, (missing + mismatched)[:5]))
        more = len(missing) + len(mismatched) - 5
        raise InputError(
            f"the weights do not fit config.json: {len(missing)} missing and {len(mismatched)} mis-shaped "
            f"tensors ({shown}{f', ... {more} more' if more > 0 else ''}); satool will not analyse a "
            "partly random model", path=directory.path)
    return model.float().eval()


def feature_settings(directory: HFDirectory) -> dict[str, Any]:
    """Waveform preprocessing from preprocessor_config.json (Wav2Vec2FeatureExtractor's defaults without one)."""
    pre = directory.preprocessor
    source = "preprocessor_config.json" if pre is not None else "defaults (no preprocessor_config.json)"
    pre = pre or {}
    rate = pre.get("sampling_rate", SAMPLE_RATE)
    if rate != SAMPLE_RATE:
        raise InputError(f"preprocessor_config.json: sampling_rate {rate} Hz, but satool reads 16000 Hz "
                         "audio only (its labels are 10 ms = 160-sample frames)", path=directory.path)
    size = pre.get("feature_size", 1)
    if size != 1:
        raise InputError(f"preprocessor_config.json: feature_size {size}, expected 1 (raw waveform input)",
                         path=directory.path)
    return {
        "input": "waveform",
        "sampling_rate": SAMPLE_RATE,
        "do_normalize": strict_flag(pre.get("do_normalize", True), "preprocessor_config.json: do_normalize",
                                    directory.path),
        "normalize": "per utterance: (x - mean) / sqrt(var + 1e-7)",
        "feature_extractor_type": pre.get("feature_extractor_type", "Wav2Vec2FeatureExtractor"),
        "source": source,
    }


def conv_stride(config: dict[str, Any]) -> int:
    return int(math.prod(int(s) for s in config.get("conv_stride", (5, 2, 2, 2, 2, 2, 2))))


def frame_rate(directory: HFDirectory) -> tuple[int, int]:
    """(total conv stride in samples, label frames per step); InputError if not a whole number of frames."""
    stride = conv_stride(directory.config)
    if stride <= 0 or stride % HOP_SAMPLES:
        raise InputError(
            f"the convolutional feature encoder's total stride is {stride} samples "
            f"({stride / SAMPLE_RATE * 1000:g} ms), not a whole number of satool's 10 ms "
            "(160-sample) label frames: models with such a frame rate are not supported",
            path=directory.path)
    return stride, stride // HOP_SAMPLES


class HFSpeechModel(AttentionModel):
    """A wav2vec2 / HuBERT / WavLM encoder whose attention satool computes (and masks) itself."""

    blockwise_attention = True
    gives_value_norms = True

    def __init__(self, directory: HFDirectory, model: nn.Module, device: str = "cpu"):
        self.directory = directory
        self.path = Path(directory.path).resolve()
        self.name = directory.model_type
        self.model_type = directory.model_type
        self.config = directory.config
        self.stride, self.frames_per_step = frame_rate(directory)
        self.kernels = [int(k) for k in self.config.get("conv_kernel", (10, 3, 3, 3, 3, 2, 2))]
        self.strides = [int(s) for s in self.config.get("conv_stride", (5, 2, 2, 2, 2, 2, 2))]
        self.features = feature_settings(directory)
        self.model = model
        self.device = torch.device(device)
        self.model.to(self.device)
        self.encoder = model.encoder
        self.layers = list(self.encoder.layers)
        self.stable_layer_norm = bool(getattr(model.config, "do_stable_layer_norm", False))
        self.num_layers = len(self.layers)
        first = self.layers[0].attention
        self.num_heads = int(first.num_heads)
        self.hidden_size = int(first.embed_dim)
        self.head_dim = self.hidden_size // self.num_heads
        self.is_wavlm = self.model_type == "wavlm"
        self.hidden_state_names = ["embedding"] + [f"layer {i}" for i in range(1, self.num_layers + 1)]
        if self.stable_layer_norm:
            self.hidden_state_names.append(FINAL_NORM_STATE)
        self._sha: dict[str, str] | None = None

    @classmethod
    def from_directory(cls, directory: HFDirectory, device: str = "cpu") -> HFSpeechModel:
        frame_rate(directory)  # fail on an unsupported frame rate or preprocessor before loading weights
        feature_settings(directory)
        return cls(directory, _load_transformers_model(directory), device=device)

    # -- input -----------------------------------------------------------------------------

    def receptive_field(self) -> int:
        """Samples the feature encoder needs for one step (400 for the usual conv stack)."""
        return conv_receptive_field(zip(self.kernels, self.strides))

    def n_steps(self, n_samples: int) -> int:
        """Model steps for ``n_samples`` samples (transformers' conv output length)."""
        return conv_steps(n_samples, zip(self.kernels, self.strides))

    def steps(self, features: torch.Tensor) -> int:
        return self.n_steps(int(features.shape[0]))

    def input_features(self, wave: np.ndarray) -> torch.Tensor:
        """``[sample, 1]`` float32: the waveform, normalised per utterance if ``do_normalize``."""
        x = np.asarray(wave, dtype=np.float32).reshape(-1)
        if self.n_steps(len(x)) < 1:
            raise InputError(f"utterance too short for {self.model_type}: {len(x)} samples, its feature "
                             f"encoder needs at least {self.receptive_field()} ({self.receptive_field() / 16:g} ms)")
        if self.features["do_normalize"]:  # as Wav2Vec2FeatureExtractor (float32 numpy)
            x = (x - x.mean()) / np.sqrt(x.var() + NORM_EPS)
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[:, None]

    # -- the forward pass ------------------------------------------------------------------

    def _embed(self, wave: torch.Tensor) -> torch.Tensor:
        """``[1, step, hidden]``: conv features -> projection -> + conv position embedding (-> LayerNorm)."""
        extracted = self.model.feature_extractor(wave).transpose(1, 2)
        projected = self.model.feature_projection(extracted)
        if isinstance(projected, tuple):  # wav2vec2 and WavLM also return the normed conv features
            projected = projected[0]
        x = projected + self.encoder.pos_conv_embed(projected)
        if not self.stable_layer_norm:
            x = self.encoder.layer_norm(x)
        return x

    def _wavlm_bias(self, attention: nn.Module, x: torch.Tensor, position_bias: torch.Tensor) -> torch.Tensor:
        """WavLM's gated relative position bias ``[1, head, query, key]`` for the attention input ``x``."""
        b, t, _ = x.shape
        per_head = x.view(b, t, self.num_heads, self.head_dim).permute(0, 2, 1, 3)  # [b, head, t, d]
        gates = attention.gru_rel_pos_linear(per_head).view(b, self.num_heads, t, 2, 4).sum(-1)
        gate_a, gate_b = torch.sigmoid(gates).chunk(2, dim=-1)  # [b, head, t, 1] each
        gate = gate_a * (gate_b * attention.gru_rel_pos_const - 1.0) + 2.0
        return gate * position_bias[None]  # position_bias: [head, t, t]

    def _attend(self, attention: nn.Module, x: torch.Tensor, head_scale: torch.Tensor | None,
                band: torch.Tensor | None, bias: torch.Tensor | None,
                want_probs: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Multi-head self-attention with satool's masks: (output [1, t, hidden], probs [1, head, t, t])."""
        b, t, _ = x.shape

        def heads(linear: nn.Module) -> torch.Tensor:
            return linear(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(attention.q_proj), heads(attention.k_proj), heads(attention.v_proj)
        if not want_probs and head_scale is None and band is None:  # nothing to look at or edit: fused
            context = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)
            return attention.out_proj(context.transpose(1, 2).reshape(b, t, self.hidden_size)), None
        scores = torch.matmul(q, k.transpose(-1, -2)) * (self.head_dim ** -0.5)
        if bias is not None:
            scores = scores + bias
        probs = torch.softmax(scores, dim=-1)
        if head_scale is not None:
            probs = probs * head_scale.view(1, -1, 1, 1)
        if band is not None:
            probs = probs * band
        context = torch.matmul(probs, v).transpose(1, 2).reshape(b, t, self.hidden_size)
        return attention.out_proj(context), probs

    def _layer(self, index: int, x: torch.Tensor, head_scale, band, position_bias, want_probs: bool = True):
        """One encoder layer (eval mode: no dropout). Returns (output, probs, position_bias)."""
        layer = self.layers[index]
        attention = layer.attention
        attn_in = layer.layer_norm(x) if self.stable_layer_norm else x
        bias = None
        if self.is_wavlm:
            if position_bias is None:  # the first layer computes the bucketed bias; later layers reuse it
                t = x.shape[1]
                position_bias = attention.compute_bias(t, t)  # [head, t, t]
            bias = self._wavlm_bias(attention, attn_in, position_bias)
        out, probs = self._attend(attention, attn_in, head_scale, band, bias, want_probs)
        return self._feed_forward(layer, x, out), probs, position_bias

    def _value_norms(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """``||f_h(x_k)||`` of layer ``index`` for its input ``x[1, t, hidden]`` -> ``[head, t]``: the value
        vectors (bias included) of the attention input through each head's columns of ``out_proj``."""
        from satool.maps import head_value_norms

        layer = self.layers[index]
        attn_in = layer.layer_norm(x) if self.stable_layer_norm else x
        t = attn_in.shape[1]
        v = layer.attention.v_proj(attn_in).view(t, self.num_heads, self.head_dim).transpose(0, 1)
        return head_value_norms(v, layer.attention.out_proj.weight)

    def _layer_blocks(self, index: int, x: torch.Tensor, position_bias, block_bytes: int, last: bool,
                      value_norms: bool = False, heads: list[int] | None = None):
        """One layer with the weights of its ``heads`` (0-based; None: all) computed one query block at a
        time within ``block_bytes``, fused attention for its other heads: yields ``(first query,
        probs[asked head, query, key])``, returns (output, position_bias) (output None when ``last``:
        nothing after the weights is needed)."""
        layer = self.layers[index]
        attention = layer.attention
        attn_in = layer.layer_norm(x) if self.stable_layer_norm else x
        b, t, _ = attn_in.shape
        gate = None
        if self.is_wavlm:
            if position_bias is None:
                position_bias = attention.compute_bias(t, t)  # [head, t, t]
            per_head = attn_in.view(b, t, self.num_heads, self.head_dim).permute(0, 2, 1, 3)
            gates = attention.gru_rel_pos_linear(per_head).view(b, self.num_heads, t, 2, 4).sum(-1)
            gate_a, gate_b = torch.sigmoid(gates).chunk(2, dim=-1)
            gate = (gate_a * (gate_b * attention.gru_rel_pos_const - 1.0) + 2.0)[0]  # [head, t, 1]

        def split(linear: nn.Module) -> torch.Tensor:
            return linear(attn_in).view(t, self.num_heads, self.head_dim).transpose(0, 1)  # [head, t, d]

        q, k, v = split(attention.q_proj), split(attention.k_proj), split(attention.v_proj)

        def scores(rows: torch.Tensor, keys: torch.Tensor, first: int, chosen) -> torch.Tensor:
            raw = torch.matmul(rows, keys) * (self.head_dim ** -0.5)
            if gate is None:
                return raw
            end = first + rows.shape[1]
            if chosen is None:
                return raw + gate[:, first:end] * position_bias[:, first:end]
            return raw + gate[chosen, first:end] * position_bias[chosen, first:end]

        def fused_mask(others):
            return None if gate is None else gate[others] * position_bias[others]

        weigh = None
        if value_norms:
            from satool.maps import head_value_norms, value_weighted

            norms = head_value_norms(v, attention.out_proj.weight)

            def weigh(probs, chosen):
                return value_weighted(probs, norms if chosen is None else norms[chosen])

        context = yield from attention_in_blocks(q, k, v, heads=heads, block_bytes=block_bytes, scores=scores,
                                                 fused_mask=fused_mask, weigh=weigh, want_context=not last)
        if last:
            return None, position_bias
        out = attention.out_proj(context.transpose(0, 1).reshape(1, t, self.hidden_size))
        return self._feed_forward(layer, x, out), position_bias

    @torch.no_grad()
    def attention_blocks(self, features, layers, *, block_bytes=int(DEFAULT_BLOCK_MB * 2**20), value_norms=False,
                         heads=None):
        """Maps of ``layers`` in query blocks within ``block_bytes`` (see
        :meth:`AttentionModel.attention_blocks`), eagerly for the asked ``heads`` only; fused attention
        elsewhere, and the pass stops after the last asked layer's weights. WavLM keeps its relative
        position bias ``[head, T, T]`` whole, as its layers share it. ``value_norms``: value-norm maps
        (satool.maps)."""
        wanted = sorted({int(i) for i in layers})
        if not wanted:
            return
        if wanted[0] < 0 or wanted[-1] >= self.num_layers:
            raise ValueError(f"layers {wanted} out of range 0..{self.num_layers - 1}")
        x = self._embed(features.reshape(1, -1).to(self.device, torch.float32))
        position_bias = None
        for i in range(wanted[-1] + 1):
            if i not in wanted:
                x, _, position_bias = self._layer(i, x, None, None, position_bias, want_probs=False)
                continue
            blocks = self._layer_blocks(i, x, position_bias, block_bytes, i == wanted[-1], value_norms,
                                        asked_heads(heads, i, self.num_heads))
            x, position_bias = yield from labelled(i, blocks)

    def _feed_forward(self, layer: nn.Module, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The rest of a layer after its attention output ``out`` (residuals, layer norms, feed-forward)."""
        if self.stable_layer_norm:
            x = x + out
            x = x + layer.feed_forward(layer.final_layer_norm(x))
            adapter = getattr(layer, "adapter_layer", None)
            if adapter is not None:
                x = x + adapter(x)
        else:
            x = layer.layer_norm(x + out)
            x = layer.final_layer_norm(x + layer.feed_forward(x))
        return x

    def _band(self, t: int, span: int | None) -> torch.Tensor | None:
        if span is None:
            return None
        pos = torch.arange(t, device=self.device)
        return ((pos[:, None] - pos[None, :]).abs() <= int(span)).to(torch.float32)

    @torch.no_grad()
    def encode(self, features, *, head_mask=None, attention_span=None, want_attentions=True,
               want_hidden=False, layers=None, want_value_norms=False) -> list[EncodedUtterance]:
        """One utterance at a time (no padding); see :meth:`AttentionModel.encode`."""
        keep = self.checked_layers(layers)
        mask = self.checked_head_mask(head_mask)
        if want_hidden:
            run = self.num_layers
        elif (want_attentions or want_value_norms) and keep:
            run = max(keep) + 1
        else:
            run = 0
        wanted = set(keep) if want_attentions else set()
        normed = set(keep) if want_value_norms else set()
        results = []
        for f in features:
            wave = f.reshape(1, -1).to(self.device, torch.float32)
            x = self._embed(wave)
            t = x.shape[1]
            band = self._band(t, attention_span)
            states = [x[0]] if want_hidden else []
            maps: dict[int, torch.Tensor] = {}
            norms: dict[int, torch.Tensor] = {}
            position_bias = None
            for i in range(run):
                if i in normed:
                    norms[i] = self._value_norms(i, x)
                x, probs, position_bias = self._layer(i, x, None if mask is None else mask[i], band, position_bias)
                if i in wanted:
                    maps[i] = probs[0]
                if want_hidden:
                    states.append(x[0])
            if want_hidden and self.stable_layer_norm:
                states.append(self.encoder.layer_norm(x)[0])
            attentions = torch.stack([maps[i] for i in keep]).float() if want_attentions else None
            hidden = torch.stack(states).float() if want_hidden else None
            value_norms = torch.stack([norms[i] for i in keep]).float() if want_value_norms else None
            results.append(EncodedUtterance(attentions, hidden, t, value_norms))
        return results

    # -- bookkeeping -----------------------------------------------------------------------

    def weight_sha256(self) -> dict[str, str]:
        if self._sha is None:
            self._sha = {f.name: sha256_file(f) for f in self.directory.weights}
        return self._sha

    def provenance(self) -> dict[str, Any]:
        shas = self.weight_sha256()
        if len(shas) == 1:
            digest = next(iter(shas.values()))
        else:  # sharded: a digest of the shards' digests
            digest = hashlib.sha256("".join(f"{n}:{s}\n" for n, s in sorted(shas.items())).encode()).hexdigest()
        return {
            "type": self.model_type,
            "loader": "hf-speech",
            "checkpoint": str(self.path),
            "directory": str(self.path),
            "sha256": digest,
            "weights": shas,
            "weights_format": "safetensors" if self.directory.safetensors else "pytorch .bin (weights_only)",
            "config": self.config,
            "features": self.features,
            "conv_stride_samples": self.stride,
            "frames_per_step": self.frames_per_step,
            "step_s": self.step_s,
            "hidden_state_names": self.hidden_state_names,
            "stable_layer_norm": self.stable_layer_norm,
            "attention": "computed by satool from the layers' own projections (softmax after head/span masks)",
        }

    def to(self, device: str) -> HFSpeechModel:
        self.device = torch.device(device)
        self.model.to(self.device)
        return self
