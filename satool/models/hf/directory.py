"""What a local Hugging Face checkpoint directory holds, read without torch or transformers, and the
built-in ``hf-speech`` loader."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from satool.errors import InputError

# Hugging Face ``model_type`` values the hf-speech loader reads (see docs/other-models.md).
HF_MODEL_TYPES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio")
HF_EXPECTED = ("a local transformers checkpoint of type wav2vec2, hubert, wavlm, data2vec-audio or whisper, "
               "or a Mockingjay, TERA, Audio ALBERT or DistilHuBERT checkpoint file")
HF_INSTALL_HINT = "pip install 'satool[hf]'"


@dataclass
class HFDirectory:
    """What a local transformers checkpoint directory holds (read without torch or transformers)."""

    path: Path
    config: dict[str, Any]  # config.json as saved
    model_type: str
    weights: list[Path]  # the weight files transformers will read (one, or the shards of an index)
    safetensors: bool
    preprocessor: dict[str, Any] | None  # preprocessor_config.json, if present


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read {what}: {exc.strerror or exc}", path=path) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{what} is not valid JSON ({exc})", path=path) from None
    if not isinstance(data, dict):
        raise InputError(f"{what} is not a JSON object", path=path)
    return data


def hf_config(path: Path, types: tuple[str, ...] = HF_MODEL_TYPES) -> dict[str, Any]:
    """config.json of the directory ``path``; InputError saying what is wrong (no torch needed)."""
    if not path.is_dir():
        raise InputError("not a directory (a transformers checkpoint is a directory with config.json)", path=path)
    config_path = path / "config.json"
    if not config_path.is_file():
        raise InputError(f"not a model directory: no config.json (expected {HF_EXPECTED})", path=path)
    config = _read_json(config_path, "config.json")
    model_type = config.get("model_type")
    if model_type not in types:
        found = f"model_type {model_type!r}" if model_type is not None else "no model_type"
        raise InputError(f"not a model satool can read: config.json has {found} (expected {HF_EXPECTED})",
                         path=path)
    return config


def _shards(index: Path) -> list[Path]:
    data = _read_json(index, index.name)
    weight_map = data.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise InputError(f"{index.name} has no weight_map", path=index)
    names = sorted(set(map(str, weight_map.values())))
    for name in names:
        if Path(name).name != name or name in (".", "..") or not (index.parent / name).is_file():
            raise InputError(f"{index.name} names a shard that is not in the directory: {name!r}",
                             path=index.parent)
    return [index.parent / name for name in names]


def hf_weight_files(path: Path) -> tuple[list[Path], bool]:
    """(weight files, are they safetensors): safetensors when present, else PyTorch .bin."""
    for name, safetensors in (("model.safetensors", True), ("pytorch_model.bin", False)):
        if (path / name).is_file():
            return [path / name], safetensors
        index = path / f"{name}.index.json"
        if index.is_file():
            return _shards(index), safetensors
    others = [n for n in ("tf_model.h5", "flax_model.msgpack") if (path / n).exists()]
    extra = f" (found only {', '.join(others)}: convert to PyTorch weights first)" if others else ""
    raise InputError("no weights: expected model.safetensors or pytorch_model.bin (or a sharded "
                     f"*.index.json) beside config.json{extra}", path=path)


def inspect_hf_directory(path: Path, types: tuple[str, ...] = HF_MODEL_TYPES) -> HFDirectory:
    """Everything the hf-speech loader needs to know before importing torch; InputError if unusable."""
    path = Path(path)
    config = hf_config(path, types)
    weights, safetensors = hf_weight_files(path)
    pre_path = path / "preprocessor_config.json"
    preprocessor = _read_json(pre_path, "preprocessor_config.json") if pre_path.is_file() else None
    return HFDirectory(path, config, config["model_type"], weights, safetensors, preprocessor)


def directory_problem(path: Path) -> str:
    """Why no built-in loader accepts the directory ``path`` (for load_model's error)."""
    try:
        inspect_hf_directory(path)
    except InputError as exc:
        text = str(exc)
        prefix = f"{exc.path}: " if exc.path is not None else ""
        return text[len(prefix):] if prefix and text.startswith(prefix) else text
    return f"no loader accepts it (expected {HF_EXPECTED})"


def require_transformers() -> None:
    """EnvironmentProblem (exit 6) unless the optional transformers package imports."""
    from satool.errors import EnvironmentProblem

    try:
        import transformers  # noqa: F401
    except ImportError as exc:
        raise EnvironmentProblem(
            f"wav2vec2/HuBERT/WavLM/data2vec-audio checkpoints need the transformers package ({exc}): {HF_INSTALL_HINT}"
        ) from None
