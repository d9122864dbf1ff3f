"""Read Mockingjay checkpoints (s3prl and paper-era) and write satool's own.

Reading goes through :mod:`satool.models.safe_pickle` (checkpoints are untrusted)
and checks every weight against the model the checkpoint's config describes,
so a mismatch is one line naming the file and the key. Writing uses s3prl's
current layout, so ``s3prl.upstream.mockingjay.expert.UpstreamExpert`` loads
satool checkpoints, and only plain values, so
``torch.load(weights_only=True)`` loads them too. docs/checkpoints.md
describes every layout.
"""

from __future__ import annotations

import copy
import os
import random
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from satool.durable import fsync_directory
from satool.errors import EnvironmentProblem, InputError
from satool.models.mockingjay.network import (
    EncoderOutput,
    MockingjayConfig,
    MockingjayEncoder,
    SpecHead,
    encode_chunked,
    stack_frames,
)
from satool.models.safe_pickle import safe_load_with_digest

__all__ = [
    "LAYOUT_PAPER",
    "LAYOUT_S3PRL",
    "LAYOUT_SATOOL",
    "MockingjayCheckpoint",
    "atomic_save",
    "capture_rng_state",
    "default_audio_config",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
]

LAYOUT_S3PRL = "s3prl"  # 'Transformer' + 'Config' or 'Upstream_Config' with a 'transformer' block
LAYOUT_SATOOL = "satool"  # the s3prl layout plus a 'Satool' block
LAYOUT_PAPER = "paper-era"  # 'Mockingjay'/'Transformer' + 'Settings' {'Config', 'Paras'}

SATOOL_FORMAT = 1


@dataclass
class MockingjayCheckpoint:
    """A loaded checkpoint: the model, its settings and where it came from."""

    path: str
    sha256: str
    layout: str
    config: MockingjayConfig
    encoder: MockingjayEncoder
    spec_head: SpecHead | None
    audio: dict[str, Any] | None  # s3prl 'audio' block (feature extraction), if any
    task: dict[str, Any] | None  # s3prl 'task' block (masking, sequence_length), if any
    step: int | None
    satool: dict[str, Any] | None = None  # the 'Satool' block of satool checkpoints
    training_state: dict[str, Any] | None = None  # 'Optimizer'/'Scheduler', if asked for
    # What the trainer recorded that tells the family apart (satool.models.tera.family):
    # 'upstream' (s3prl's Args.upstream, or None) and 'model_block' (the config block, as saved)
    recorded: dict[str, Any] | None = None

    @property
    def downsample_rate(self) -> int:
        return self.config.downsample_rate

    @property
    def max_input_length(self) -> int:
        """s3prl's ``task.sequence_length`` (paper-era: ``max_input_length``); 0 = no limit."""
        return self.config.max_input_length

    def stack(self, frames: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Frames ``[batch, frame, input_dim]`` -> encoder steps (stacks R frames when R > 1)."""
        rate = self.config.downsample_rate
        steps = stack_frames(frames, rate)
        if lengths is not None:
            lengths = torch.as_tensor(lengths) // rate
        return steps, lengths

    def encode(
        self,
        features: Tensor,
        lengths: Tensor | None = None,
        *,
        chunk_long_inputs: bool = True,
        **forward_kwargs: Any,
    ) -> EncoderOutput:
        """Run the encoder on step features the way s3prl's builder does.

        Inputs longer than :attr:`max_input_length` steps are cut into chunks
        (see :func:`satool.models.mockingjay.encode_chunked`) unless
        ``chunk_long_inputs=False``.
        """
        device = next(self.encoder.parameters()).device
        features = features.to(device)
        if lengths is not None:
            lengths = torch.as_tensor(lengths, device=device)
        return encode_chunked(self.encoder, features, lengths,
                              chunk_long_inputs=chunk_long_inputs, **forward_kwargs)


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    keep_training_state: bool = False,
) -> MockingjayCheckpoint:
    """Load a Mockingjay checkpoint of any known layout, safely.

    Raises :class:`~satool.errors.UnsafeFileError` if the file asks to run
    code and :class:`~satool.errors.InputError` if it is unreadable, of an
    unknown layout, or its weights do not fit its own configuration.
    """
    name = str(path)
    states, digest = safe_load_with_digest(path)
    if not isinstance(states, Mapping):
        raise InputError(f"expected a checkpoint dictionary, found a {type(states).__name__}",
                         path=name)

    if "Settings" in states:
        layout = LAYOUT_PAPER
        settings = _mapping(states, "Settings", name)
        full_config = _mapping(settings, "Config", name, where="Settings")
        block_key = next((k for k in ("transformer", "mockingjay") if k in full_config), None)
        if block_key is None:
            raise InputError("Settings['Config'] has no 'transformer' or 'mockingjay' block",
                             path=name)
        block = _mapping(full_config, block_key, name, where="Settings['Config']")
        weights_key = next((k for k in ("Transformer", "Mockingjay") if k in states), None)
        if weights_key is None:
            raise InputError("no 'Transformer' or 'Mockingjay' state dict", path=name)
        audio, task, satool = None, None, None
        step = _int_or_none(states.get("Global_step"))
        max_input_length = block.get("max_input_length", 0)
        embedding_in_hidden_states = False
        saved_output_dim = None
    elif "Transformer" in states:
        weights_key = "Transformer"
        # s3prl's builder looks in 'Config' first (older s3prl checkpoints kept
        # the upstream config there) and then in 'Upstream_Config'.
        config_key = next((k for k in ("Config", "Upstream_Config")
                           if isinstance(states.get(k), Mapping) and "transformer" in states[k]),
                          None)
        if config_key is None:
            raise InputError("neither 'Config' nor 'Upstream_Config' has a 'transformer' block",
                             path=name)
        upstream = states[config_key]
        block = _mapping(upstream, "transformer", name, where=config_key)
        satool = states.get("Satool")
        layout = LAYOUT_SATOOL if isinstance(satool, Mapping) else LAYOUT_S3PRL
        satool = dict(satool) if isinstance(satool, Mapping) else None
        audio = _optional_mapping(upstream, "audio", name, config_key)
        task = _optional_mapping(upstream, "task", name, config_key)
        step = _int_or_none(states.get("Step"))
        max_input_length = (task or {}).get("sequence_length", 0)
        saved = (_optional_mapping(satool, "config", name, "Satool") if satool else None) or {}
        embedding_in_hidden_states = bool(saved.get("embedding_in_hidden_states", True))
        saved_output_dim = saved.get("output_dim")
    else:
        found = ", ".join(repr(k) for k in list(states)[:8]) or "nothing"
        raise InputError(
            "not a Mockingjay checkpoint: expected a 'Transformer' or 'Mockingjay' state dict "
            f"(found {found})", path=name)

    encoder_state = _state_dict(states, weights_key, name)
    head_state = _state_dict(states, "SpecHead", name) if "SpecHead" in states else None

    config = _config(block, encoder_state, head_state, name, max_input_length,
                     embedding_in_hidden_states, saved_output_dim)
    _check_config_against_weights(config, encoder_state, name)
    if audio is not None:
        from satool.models.tera.features import front_end_config  # online or Kaldi-style

        try:
            features = front_end_config(dict(audio))
        except InputError as exc:
            raise InputError(exc.message, path=name) from None
        if features.input_dim != config.input_dim:
            raise InputError(f"the audio block makes {features.input_dim} input features per frame but the model "
                             f"reads {config.input_dim}", path=name)
    encoder = MockingjayEncoder(config)
    _load_weights(encoder, encoder_state, name, label="")
    spec_head = None
    if head_state is not None:
        spec_head = SpecHead(config)
        _load_weights(spec_head, head_state, name, label="SpecHead.")
        spec_head.to(device).eval()
    encoder.to(device).eval()

    training_state = None
    if keep_training_state:
        training_state = {k: states[k] for k in ("Optimizer", "Scheduler") if k in states}
    return MockingjayCheckpoint(
        path=name, sha256=digest, layout=layout, config=config, encoder=encoder,
        spec_head=spec_head, audio=copy.deepcopy(audio), task=copy.deepcopy(task), step=step,
        satool=satool, training_state=training_state,
        recorded={"upstream": _recorded_upstream(states.get("Args")), "model_block": copy.deepcopy(dict(block))},
    )


def _recorded_upstream(args: Any) -> str | None:
    """s3prl's ``Args.upstream`` (``run_pretrain.py -u NAME``), if the file has one."""
    values = args if isinstance(args, Mapping) else getattr(args, "__dict__", None)
    upstream = values.get("upstream") if isinstance(values, Mapping) else None
    return upstream if isinstance(upstream, str) and len(upstream) <= 64 else None


def _mapping(parent: Mapping, key: str, name: str, where: str | None = None) -> Mapping:
    value = parent.get(key)
    label = f"{where}[{key!r}]" if where else repr(key)
    if value is None:
        raise InputError(f"missing {label}", path=name)
    if not isinstance(value, Mapping):
        raise InputError(f"{label} is a {type(value).__name__}, expected a dictionary", path=name)
    return value


def _optional_mapping(parent: Mapping, key: str, name: str, where: str) -> dict | None:
    if parent.get(key) is None:
        return None
    return dict(_mapping(parent, key, name, where))


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    return None


def _state_dict(states: Mapping, key: str, name: str) -> dict[str, Any]:
    """The state dict under ``key``, with old LayerNorm names mapped as s3prl does."""
    raw = _mapping(states, key, name)
    state: dict[str, Any] = {}
    for k, v in raw.items():
        if not isinstance(k, str):
            raise InputError(f"{key} has a non-text key {k!r}", path=name)
        state[k] = v
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    renamed = {}
    for k, v in state.items():
        head, _, last = k.rpartition(".")
        last = {"gamma": "weight", "beta": "bias"}.get(last, last)
        renamed[f"{head}.{last}" if head else last] = v
    return renamed


def _config(block: Mapping, encoder_state: Mapping, head_state: Mapping | None, name: str,
            max_input_length: Any, embedding_in_hidden_states: bool,
            saved_output_dim: Any = None) -> MockingjayConfig:
    try:
        rate = int(block.get("downsample_rate", 1))
    except (TypeError, ValueError):
        raise InputError(f"downsample_rate = {block.get('downsample_rate')!r} is not an integer",
                         path=name) from None
    if rate < 1:
        raise InputError(f"downsample_rate = {rate} must be >= 1", path=name)
    key = "input_representations.spec_transform.weight"
    weight = encoder_state.get(key)
    if not isinstance(weight, Tensor) or weight.dim() != 2:
        raise InputError(f"{key} is missing or not a matrix", path=name)
    if weight.shape[1] % rate:
        raise InputError(f"{key} has {weight.shape[1]} input columns, not a multiple of "
                         f"downsample_rate {rate}", path=name)
    input_dim = weight.shape[1] // rate
    # The head's width, else what satool recorded, else the input's (s3prl's default).
    output_dim = saved_output_dim if isinstance(saved_output_dim, int) and saved_output_dim > 0 \
        else input_dim
    if head_state is not None:
        out = head_state.get("output.weight")
        if isinstance(out, Tensor) and out.dim() == 2 and out.shape[0] % rate == 0:
            output_dim = out.shape[0] // rate
    try:
        return MockingjayConfig.from_s3prl(
            block, input_dim=input_dim, output_dim=output_dim,
            max_input_length=int(max_input_length or 0),
            embedding_in_hidden_states=embedding_in_hidden_states,
        )
    except KeyError as exc:
        raise InputError(f"the model config has no {exc.args[0]!r}", path=name) from None
    except (TypeError, ValueError) as exc:
        raise InputError(f"bad model config: {exc}", path=name) from None


def _check_config_against_weights(config: MockingjayConfig, state: Mapping[str, Any], name: str) -> None:
    """The config must describe the weights the file holds, before a model is built from it (a config
    asking for 100,000 layers would otherwise allocate them all before failing)."""
    def shape(key: str) -> tuple[int, ...] | None:
        value = state.get(key)
        return tuple(value.shape) if isinstance(value, Tensor) else None

    layers = set()
    for key in state:
        if key.startswith("encoder.layer."):
            index = key.split(".")[2]
            if not index.isdigit():
                raise InputError(f"unexpected weight {key}", path=name)
            layers.add(int(index))
    if layers != set(range(config.num_layers)):
        found = f"{len(layers)} ({min(layers)}..{max(layers)})" if layers else "none"
        raise InputError(f"the config describes {config.num_layers} layers but the weights hold layers {found}",
                         path=name)
    embedding = shape("input_representations.spec_transform.weight")
    if embedding is not None and embedding[0] != config.hidden_size:
        raise InputError(f"the config's hidden_size {config.hidden_size} does not match the weights' {embedding[0]}",
                         path=name)
    inner = shape("encoder.layer.0.intermediate.dense.weight")
    if inner is not None and inner[0] != config.intermediate_size:
        raise InputError(f"the config's intermediate_size {config.intermediate_size} does not match the weights' "
                         f"{inner[0]}", path=name)
    if config.num_heads > config.hidden_size:
        raise InputError(f"num_attention_heads {config.num_heads} exceeds hidden_size {config.hidden_size}",
                         path=name)


def _load_weights(module: nn.Module, state: Mapping[str, Any], name: str, label: str) -> None:
    """Strict load with one-line errors; names shared by one tensor may be given once."""
    expected = module.state_dict(keep_vars=True)
    shared: dict[int, list[str]] = {}
    for key, tensor in expected.items():
        shared.setdefault(id(tensor), []).append(key)
    cfg = module.config
    for key, value in state.items():
        if key not in expected:
            raise InputError(
                f"unexpected weight {label}{key} (the config describes {cfg.num_layers} layers, "
                f"pre_layer_norm={cfg.pre_layer_norm})", path=name)
        if not isinstance(value, Tensor):
            raise InputError(f"{label}{key} is a {type(value).__name__}, expected a tensor",
                             path=name)
        if not value.is_floating_point():
            raise InputError(f"{label}{key} has dtype {value.dtype}, expected floating point",
                             path=name)
        if tuple(value.shape) != tuple(expected[key].shape):
            raise InputError(f"{label}{key} has shape {list(value.shape)}, "
                             f"expected {list(expected[key].shape)}", path=name)
        if not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise InputError(f"{label}{key} holds {bad} NaN or infinite value(s): such a model gives no "
                             "usable attention maps", path=name)
    complete = dict(state)
    for keys in shared.values():
        given = [k for k in keys if k in state]
        if not given:
            raise InputError(f"missing weight {label}{keys[0]}", path=name)
        for k in given[1:]:
            if not torch.equal(state[k], state[given[0]]):
                raise InputError(
                    f"{label}{k} differs from {label}{given[0]} but the config shares them "
                    f"(share_layer={cfg.share_layer}, pre_layer_norm={cfg.pre_layer_norm})",
                    path=name)
        for k in keys:
            complete.setdefault(k, state[given[0]])
    with torch.no_grad():
        module.load_state_dict(complete, strict=True)


# ---------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------


def default_audio_config(input_feature: str = "mel", target_feature: str = "linear",
                         n_mels: int = 80) -> dict[str, Any]:
    """An s3prl ``OnlinePreprocessor`` 'audio' block (log features, per-utterance CMVN).

    The default is the paper's LARGE setting: 80-bin log-Mel input, 201-bin
    log-linear target, 25 ms windows every 10 ms, waveforms scaled to -25 dB.
    """

    def feature(kind: str) -> dict[str, Any]:
        return {"feat_type": kind, "channel": 0, "log": True, "delta": 0, "cmvn": True}

    return {
        "target_level": -25, "win_ms": 25, "hop_ms": 10, "n_freq": 201, "n_mels": n_mels,
        "n_mfcc": 13, "input": feature(input_feature), "target": feature(target_feature),
    }


def save_checkpoint(
    path: str | os.PathLike[str],
    encoder: MockingjayEncoder,
    spec_head: SpecHead | None = None,
    *,
    audio: Mapping[str, Any] | None = None,
    task: Mapping[str, Any] | None = None,
    runner_config: Mapping[str, Any] | None = None,
    optimizer_state: Mapping[str, Any] | None = None,
    scheduler_state: Mapping[str, Any] | None = None,
    step: int = 0,
    satool: Mapping[str, Any] | None = None,
) -> None:
    """Write a checkpoint in s3prl's current layout, atomically.

    - 'Transformer' / 'SpecHead': the state dicts (plain dicts of tensors);
    - 'Upstream_Config': {'transformer': config.to_s3prl(), 'task': {...,
      'sequence_length': config.max_input_length}, 'audio': audio} -- give
      ``audio`` (e.g. :func:`default_audio_config`) for s3prl's
      ``UpstreamExpert``, which extracts features itself;
    - 'Config': the runner config (must not contain 'transformer', or s3prl
      would mistake it for the model config); 'Optimizer', 'Scheduler', 'Step';
    - 'Satool': format version, the full :class:`MockingjayConfig` (including
      what s3prl has no key for: output_dim, embedding_in_hidden_states) and
      the caller's ``satool`` entries (training settings, RNG state from
      :func:`capture_rng_state`, loss history, ...).

    Everything must be tensors or plain Python values (checked), so the file
    also loads with ``torch.load(weights_only=True)``.
    """
    from satool import __version__

    config: MockingjayConfig = encoder.config
    runner = dict(runner_config or {})
    if "transformer" in runner:
        raise ValueError("runner_config must not contain a 'transformer' block "
                         "(s3prl would read it as the model config)")
    task_block = {"loss": "L1", "position_encoding_size": config.hidden_size, **(task or {})}
    task_block["sequence_length"] = config.max_input_length
    upstream: dict[str, Any] = {"transformer": config.to_s3prl(), "task": task_block}
    if audio is not None:
        upstream["audio"] = copy.deepcopy(dict(audio))

    states: dict[str, Any] = {
        "Transformer": _plain_state(encoder),
        "Upstream_Config": upstream,
        "Config": runner,
        "Step": int(step),
    }
    if spec_head is not None:
        states["SpecHead"] = _plain_state(spec_head)
    if optimizer_state is not None:
        states["Optimizer"] = optimizer_state
    if scheduler_state is not None:
        states["Scheduler"] = scheduler_state
    states["Satool"] = {
        **dict(satool or {}),
        "format": SATOOL_FORMAT,
        "satool_version": __version__,
        "config": config.to_dict(),
        "downsample_rate": config.downsample_rate,
    }
    _check_plain(states, "checkpoint")
    atomic_save(states, path)


def _plain_state(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


_PLAIN_SCALARS = (str, int, float, bool, type(None))


def _check_plain(value: Any, where: str) -> None:
    kind = type(value)
    if kind in _PLAIN_SCALARS or kind is Tensor:
        return
    if kind is dict:
        for k, v in value.items():
            if type(k) not in _PLAIN_SCALARS:
                raise ValueError(f"{where} has a key of type {type(k).__name__}")
            _check_plain(v, f"{where}[{k!r}]")
        return
    if kind in (list, tuple):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
        return
    raise ValueError(f"{where} is a {kind.__name__}; checkpoints hold only tensors and "
                     "plain Python values")


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename over it.

    A process killed at any moment leaves either the old file or the new one
    under ``path`` (plus, at worst, a ``.<name>.*.tmp`` file), never half a file.
    """
    path = Path(path)
    directory = path.parent
    if not directory.is_dir():
        raise InputError("the directory to write into does not exist", path=directory)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
        fsync_directory(directory)
    except (OSError, RuntimeError) as exc:  # torch reports a failed write (disk full) as RuntimeError
        reason = getattr(exc, "strerror", None) or _write_failure(directory)
        raise EnvironmentProblem(f"cannot write checkpoint: {reason}", path=path) from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files a killed :func:`atomic_save` of ``path`` left behind."""
    path = Path(path)
    removed = []
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            stale.unlink()
            removed.append(stale)
        except OSError:
            pass
    return removed


def _write_failure(directory: Path) -> str:
    """Why a write probably failed, for the one-line message."""
    try:
        stats = os.statvfs(directory)
        free = stats.f_bavail * stats.f_frsize
    except OSError:
        return "the write failed"
    return f"the write failed with {free / 1e6:.1f} MB free on the device (disk full?)"


def _umask() -> int:
    # The only portable way to read the umask is to set it and set it back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# ---------------------------------------------------------------------------
# RNG state (for resumable training), as tensors and plain values
# ---------------------------------------------------------------------------


def capture_rng_state() -> dict[str, Any]:
    """torch, Python ``random`` and NumPy global RNG states, checkpoint-safe."""
    version, words, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": {"version": version, "state": torch.tensor(words, dtype=torch.int64),
                   "gauss_next": gauss_next},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py["version"], tuple(int(w) for w in py["state"].tolist()),
                     py["gauss_next"]))
    nps = state["numpy"]
    np.random.set_state((nps["kind"], nps["keys"].numpy().astype(np.uint32), nps["pos"],
                         nps["has_gauss"], nps["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
