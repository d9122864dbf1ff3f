"""A Whisper checkpoint directory, checked before anything is built from it.

config.json must say ``model_type: whisper``; its encoder numbers are checked for type and range and
against the weights (every encoder tensor present with the shape the config implies, no layer more
or less) before a module is allocated. Weights: ``model.safetensors`` (headers checked by
:func:`satool.models.hf.checks.safetensors_keys`, only the encoder's tensors read) or
``pytorch_model.bin`` through satool's restricted unpickler, or the sharded form of either. The
encoder's keys are found under ``encoder.`` (``WhisperModel``) or ``model.encoder.``
(``WhisperForConditionalGeneration``); the decoder's tensors are not kept.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from satool.errors import InputError
from satool.models.hf.directory import HFDirectory, inspect_hf_directory

WHISPER_TYPES = ("whisper",)
ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu", "swish")
LIMITS = {"encoder_layers": (1, 128), "encoder_attention_heads": (1, 256), "d_model": (1, 16384),
          "encoder_ffn_dim": (1, 65536), "num_mel_bins": (1, 512), "max_source_positions": (1, 100000)}
PREFIXES = ("model.encoder.", "encoder.")
_LAYER = re.compile(r"^layers\.(\d+)\.")


@dataclass(frozen=True)
class WhisperConfig:
    """The encoder's numbers from config.json."""

    layers: int
    heads: int
    width: int
    ffn: int
    n_mels: int
    max_positions: int
    activation: str

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every encoder tensor (names without the prefix) and its shape."""
        d, f = self.width, self.ffn
        shapes: dict[str, tuple[int, ...]] = {
            "conv1.weight": (d, self.n_mels, 3), "conv1.bias": (d,), "conv2.weight": (d, d, 3), "conv2.bias": (d,),
            "embed_positions.weight": (self.max_positions, d), "layer_norm.weight": (d,), "layer_norm.bias": (d,),
        }
        for i in range(self.layers):
            p = f"layers.{i}."
            for name in ("q_proj", "v_proj", "out_proj"):
                shapes[f"{p}self_attn.{name}.weight"] = (d, d)
                shapes[f"{p}self_attn.{name}.bias"] = (d,)
            shapes[f"{p}self_attn.k_proj.weight"] = (d, d)  # Whisper's keys have no bias
            for norm in ("self_attn_layer_norm", "final_layer_norm"):
                shapes[f"{p}{norm}.weight"] = (d,)
                shapes[f"{p}{norm}.bias"] = (d,)
            shapes[f"{p}fc1.weight"], shapes[f"{p}fc1.bias"] = (f, d), (f,)
            shapes[f"{p}fc2.weight"], shapes[f"{p}fc2.bias"] = (d, f), (d,)
        return shapes

    def to_dict(self) -> dict[str, Any]:
        return {"encoder_layers": self.layers, "encoder_attention_heads": self.heads, "d_model": self.width,
                "encoder_ffn_dim": self.ffn, "num_mel_bins": self.n_mels,
                "max_source_positions": self.max_positions, "activation_function": self.activation}


def read_config(config: dict[str, Any], path: Path) -> WhisperConfig:
    where = path / "config.json"
    values = {}
    for key, (low, high) in LIMITS.items():
        value = config.get(key, {"num_mel_bins": 80, "max_source_positions": 1500}.get(key))
        if type(value) is not int or not low <= value <= high:
            raise InputError(f"config.json: {key} = {value!r} is not an integer in {low}..{high}", path=where)
        values[key] = value
    if values["d_model"] % values["encoder_attention_heads"]:
        raise InputError(f"config.json: d_model {values['d_model']} is not a multiple of encoder_attention_heads "
                         f"{values['encoder_attention_heads']}", path=where)
    activation = config.get("activation_function", "gelu")
    if activation not in ACTIVATIONS:
        raise InputError(f"config.json: activation_function {activation!r} (satool knows {', '.join(ACTIVATIONS)})",
                         path=where)
    return WhisperConfig(values["encoder_layers"], values["encoder_attention_heads"], values["d_model"],
                         values["encoder_ffn_dim"], values["num_mel_bins"], values["max_source_positions"], activation)


def feature_settings(directory: HFDirectory, config: WhisperConfig) -> dict[str, Any]:
    """WhisperFeatureExtractor's settings from preprocessor_config.json (its defaults without one)."""
    pre = directory.preprocessor or {}
    where = directory.path / "preprocessor_config.json"
    expected = {"sampling_rate": 16000, "hop_length": 160, "n_fft": 400, "feature_size": config.n_mels}
    for key, value in expected.items():
        found = pre.get(key, value)
        if found != value:
            why = {"sampling_rate": "satool reads 16000 Hz audio only",
                   "hop_length": "satool's label frames are 160 samples (10 ms)",
                   "feature_size": "config.json's num_mel_bins"}.get(key, "Whisper's front end")
            raise InputError(f"preprocessor_config.json: {key} = {found!r}, expected {value} ({why})", path=where)
    dither = pre.get("dither", 0.0)
    if dither not in (0, 0.0):
        raise InputError(f"preprocessor_config.json: dither = {dither!r}: satool analyses deterministic inputs only",
                         path=where)
    return {"input": "log-Mel (WhisperFeatureExtractor)", "sampling_rate": 16000, "n_fft": 400, "hop_length": 160,
            "n_mels": config.n_mels, "padding": "none: the utterance's own frames (Whisper pads to 30 s)",
            "source": "preprocessor_config.json" if directory.preprocessor is not None
            else "defaults (no preprocessor_config.json)"}


def inspect_whisper_directory(path: Path) -> tuple[HFDirectory, WhisperConfig]:
    directory = inspect_hf_directory(Path(path), WHISPER_TYPES)
    return directory, read_config(directory.config, directory.path)


def _encoder_prefix(keys: list[str], path: Path) -> str:
    for prefix in PREFIXES:
        if f"{prefix}conv1.weight" in keys:
            return prefix
    raise InputError("the weights hold no Whisper encoder (no encoder.conv1.weight or model.encoder.conv1.weight)",
                     path=path)


def _check_keys(config: WhisperConfig, names: dict[str, tuple[int, ...]], path: Path) -> None:
    """Every expected tensor, with its shape, and no layer the config does not describe."""
    expected = config.expected_shapes()
    layers = {int(m.group(1)) for m in map(_LAYER.match, names) if m}
    if layers != set(range(config.layers)):
        found = f"{len(layers)} ({min(layers)}..{max(layers)})" if layers else "none"
        raise InputError(f"config.json asks for {config.layers} encoder layers but the weights hold {found}", path=path)
    for key, shape in expected.items():
        if key not in names:
            raise InputError(f"missing encoder weight {key}; satool will not analyse a partly random model",
                             path=path)
        if tuple(names[key]) != shape:
            raise InputError(f"encoder weight {key} has shape {list(names[key])}, config.json implies {list(shape)}",
                             path=path)
    extra = sorted(set(names) - set(expected))
    if extra:
        raise InputError(f"unexpected encoder weight {extra[0]} (not part of the encoder config.json describes)",
                         path=path)


def read_encoder_weights(directory: HFDirectory, config: WhisperConfig) -> dict[str, Any]:
    """The encoder's tensors (names without the prefix), float32, checked against ``config`` before any
    tensor data is read from safetensors files."""
    import torch

    path = directory.path
    if directory.safetensors:
        from satool.models.hf.checks import safetensors_keys

        try:
            from safetensors import safe_open
        except ImportError as exc:
            from satool.errors import EnvironmentProblem

            raise EnvironmentProblem(f"Whisper checkpoints need the safetensors package ({exc}): "
                                     "pip install 'satool[hf]'") from None
        per_file = {f: safetensors_keys(f) for f in directory.weights}
        prefix = _encoder_prefix([k for keys in per_file.values() for k in keys], path)
        shapes = {}
        for f in directory.weights:
            header = _safetensors_shapes(f)
            shapes.update({k[len(prefix):]: header[k] for k in per_file[f] if k.startswith(prefix)})
        _check_keys(config, shapes, path)
        state = {}
        for f, keys in per_file.items():
            with safe_open(str(f), framework="pt") as handle:
                for key in keys:
                    if key.startswith(prefix):
                        state[key[len(prefix):]] = handle.get_tensor(key)
    else:
        from satool.errors import UnsafeFileError
        from satool.models.safe_pickle import safe_load

        raw: dict[str, Any] = {}
        for f in directory.weights:
            loaded = safe_load(f)
            if not isinstance(loaded, dict):
                raise InputError(f"expected a dictionary of tensors, found a {type(loaded).__name__}", path=f)
            odd = next(((k, v) for k, v in loaded.items() if not isinstance(v, torch.Tensor)), None)
            if odd is not None:
                raise UnsafeFileError(f"refused to load: not a weights-only pickle of tensors (entry {odd[0]!r} is a "
                                      f"{type(odd[1]).__name__})", path=f)
            raw.update({str(k): v for k, v in loaded.items()})
        prefix = _encoder_prefix(list(raw), path)
        state = {k[len(prefix):]: v for k, v in raw.items() if k.startswith(prefix)}
        _check_keys(config, {k: tuple(v.shape) for k, v in state.items()}, path)
    for key, value in state.items():
        if not value.is_floating_point():
            raise InputError(f"encoder weight {key} has dtype {value.dtype}, expected floating point", path=path)
        if not bool(torch.isfinite(value).all()):
            raise InputError(f"encoder weight {key} holds NaN or infinite values: such a model gives no usable "
                             "attention maps", path=path)
    return {k: v.to(torch.float32) for k, v in state.items()}


def _safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Shapes from a safetensors header already checked by ``safetensors_keys``."""
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(length))
    return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}


def n_steps(n_frames: int) -> int:
    """Encoder steps for ``n_frames`` log-Mel frames (conv2: kernel 3, stride 2, padding 1)."""
    return (n_frames - 1) // 2 + 1 if n_frames > 0 else 0
