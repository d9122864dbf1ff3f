"""The built-in ``whisper`` loader (torch imported only when loading; transformers never)."""

from __future__ import annotations

from pathlib import Path

from satool.errors import InputError
from satool.models.hf.directory import hf_config


class WhisperLoader:
    """Local Hugging Face checkpoint directories of Whisper models (the encoder is analysed)."""

    name = "whisper"
    description = ("local transformers checkpoint directories (config.json + weights) of Whisper models: "
                   "the encoder, on log-Mel features of the utterance (no 30 s padding); nothing is downloaded")

    def can_load(self, path: Path) -> bool:
        try:
            hf_config(Path(path), ("whisper",))
        except InputError:
            return False
        return True

    def load(self, path: Path, device: str = "cpu"):
        from satool.models.whisper.directory import inspect_whisper_directory

        directory, config = inspect_whisper_directory(Path(path))
        from satool.models.whisper.model import WhisperModel

        return WhisperModel.from_directory(directory, config, device=device)
