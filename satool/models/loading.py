"""Loading a model: the first of the given loaders that accepts the path (the last given is asked first).

The loaders are passed in: the stages, the command line and :mod:`satool.api` pass every registered one
(``get_plugins().models.objects()``: built-ins first, so plugins' loaders are asked first); without them
only satool's own loaders are asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from satool.models.base import AttentionModel, ModelLoader

# names of the loaders registered by satool's built-ins
BUILTIN_LOADERS = ("mockingjay", "distiller", "hf-speech", "whisper")


def builtin_loaders() -> list[ModelLoader]:
    """satool's own loaders, in registration order (the last is asked first)."""
    from satool.models.distiller.loader import DistillerLoader
    from satool.models.hf.loader import HFLoader
    from satool.models.mockingjay.loader import MockingjayLoader
    from satool.models.whisper.loader import WhisperLoader

    # hf-speech and whisper accept directories only (by config.json's model_type); distiller the files whose
    # pickle names 'Distiller' (peeked, not unpickled); mockingjay any other file
    return [MockingjayLoader(), DistillerLoader(), HFLoader(), WhisperLoader()]


def load_model(path: str | Path, device: str = "cpu", loaders: Sequence[ModelLoader] | None = None) -> AttentionModel:
    """Load ``path`` with the first loader that accepts it, asking ``loaders`` last to first
    (default: :func:`builtin_loaders`)."""
    from satool.errors import InputError

    path = Path(path)
    if not path.exists():
        import re

        if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", str(path)) and not str(path).endswith((".pt", ".ckpt", ".pth")):
            raise InputError(f"checkpoint not found; satool reads local files only and never downloads: fetch the "
                             f"model first (e.g. 'huggingface-cli download {path} --local-dir {path.name}'), "
                             "then pass that directory", path=path)
        raise InputError("checkpoint not found", path=path)
    loaders = builtin_loaders() if loaders is None else list(loaders)
    for loader in reversed(loaders):
        if loader.can_load(path):
            return loader.load(path, device=resolve_device(device))
    known = "; ".join(f"{e.name}: {e.description}" for e in loaders)
    if path.is_dir():  # say what the directory lacks (the built-in loaders take files or checkpoint dirs)
        from satool.models.hf.directory import directory_problem

        others = "; ".join(f"{e.name}: {e.description}" for e in loaders if e.name not in BUILTIN_LOADERS)
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
