"""The built-in ``hf-speech`` loader (transformers and torch imported only when loading)."""

from __future__ import annotations

from pathlib import Path

from satool.errors import InputError
from satool.models.hf.directory import hf_config, inspect_hf_directory, require_transformers


class HFLoader:
    """Local Hugging Face transformers checkpoint directories of wav2vec 2.0, HuBERT, WavLM and data2vec-audio."""

    name = "hf-speech"
    description = ("local transformers checkpoint directories (config.json + weights) of "
                   "wav2vec2, hubert, wavlm or data2vec-audio; nothing is downloaded")

    def can_load(self, path: Path) -> bool:
        try:
            hf_config(Path(path))
        except InputError:
            return False
        return True

    def load(self, path: Path, device: str = "cpu"):
        directory = inspect_hf_directory(Path(path))
        require_transformers()
        from satool.models.hf.model import HFSpeechModel

        return HFSpeechModel.from_directory(directory, device=device)
