"""Loading a model: the first registered loader that accepts the path (plugins' first, built-ins last)."""

from __future__ import annotations

from pathlib import Path

from satool.models.base import AttentionModel

BUILTIN_LOADERS = ("mockingjay", "hf-speech")  # names of the loaders registered by satool's built-ins


def load_model(path: str | Path, device: str = "cpu", plugins=None) -> AttentionModel:
    """Load ``path`` with the first loader that accepts it: plugins' loaders first, built-ins last."""
    from satool.errors import InputError
    from satool.plugins import get_plugins

    path = Path(path)
    if not path.exists():
        import re

        if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", str(path)) and not str(path).endswith((".pt", ".ckpt", ".pth")):
            raise InputError(f"checkpoint not found; satool reads local files only and never downloads: fetch the "
                             f"model first (e.g. 'huggingface-cli download {path} --local-dir {path.name}'), "
                             "then pass that directory", path=path)
        raise InputError("checkpoint not found", path=path)
    loaders = (plugins or get_plugins()).models
    for entry in reversed(list(loaders)):
        if entry.obj.can_load(path):
            return entry.obj.load(path, device=resolve_device(device))
    known = "; ".join(f"{e.name}: {e.obj.description}" for e in loaders)
    if path.is_dir():  # say what the directory lacks (the built-in loaders take files or checkpoint dirs)
        from satool.models.hf.directory import directory_problem

        others = "; ".join(f"{e.name}: {e.obj.description}" for e in loaders if e.name not in BUILTIN_LOADERS)
        raise InputError(directory_problem(path) + (f"; other loaders: {others}" if others else ""), path=path)
    raise InputError(f"no model loader accepts this path (loaders: {known})", path=path)


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' if available, else 'mps' if available, else 'cpu'."""
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"
