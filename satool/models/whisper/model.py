"""Whisper encoders behind satool's model interface (the built-in ``whisper`` loader).

**The 30 s window.** Whisper is trained on 30 s windows: ``WhisperFeatureExtractor`` pads every
waveform with zeros to 30 s (3000 log-Mel frames, 1500 encoder steps) and transformers' encoder refuses
any other length. satool encodes the utterance alone, without that padding: T = ceil(N / 320) steps
for N samples (N // 160 frames), positions 0..T-1 of the stored table, T x T maps that are complete
softmax rows over the utterance's own steps. Padding would make every map 1500 x 1500, most of it
padding (a 3 s utterance: 150 of 1500 steps), and the utterance's rows would not sum to 1 once the
padded keys were cut off. Encoding the utterance alone is what the Whisper encoder never saw in
training, so its states are not those of a padded 30 s window; inside the utterance the maps and
states equal transformers' for an encoder whose window is the utterance's length (tested). Utterances
longer than the table (30 s for released models) are skipped with the reason (``--max-frames 3000``
truncates them).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from satool.errors import InputError
from satool.models.base import AttentionModel, EncodedUtterance
from satool.models.hf.directory import HFDirectory
from satool.models.whisper.directory import (
    WhisperConfig,
    feature_settings,
    n_steps,
    read_encoder_weights,
)
from satool.models.whisper.features import WhisperFeatures
from satool.models.whisper.network import WhisperEncoderNet

FINAL_NORM_STATE = "final layer norm"


def _sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class WhisperModel(AttentionModel):
    """A Whisper encoder (no decoder) with its log-Mel front end."""

    name = "whisper"
    frames_per_step = 2  # conv2's stride 2 over 10 ms frames
    gives_value_norms = True

    def __init__(self, directory: HFDirectory, config: WhisperConfig, network: WhisperEncoderNet,
                 device: str = "cpu"):
        self.directory = directory
        self.path = Path(directory.path).resolve()
        self.config = config
        self.features = feature_settings(directory, config)
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()
        self.front_end = WhisperFeatures(config.n_mels, device=str(self.device))
        self.num_layers, self.num_heads, self.hidden_size = config.layers, config.heads, config.width
        self.hidden_state_names = (["embedding"] + [f"layer {i}" for i in range(1, config.layers + 1)]
                                   + [FINAL_NORM_STATE])
        self._sha: dict[str, str] | None = None

    @classmethod
    def from_directory(cls, directory: HFDirectory, config: WhisperConfig, device: str = "cpu") -> WhisperModel:
        feature_settings(directory, config)  # a front end satool cannot compute fails before the weights are read
        state = read_encoder_weights(directory, config)
        network = WhisperEncoderNet(config)
        network.load_state_dict(state, strict=True)
        return cls(directory, config, network, device=device)

    # -- input -----------------------------------------------------------------------------

    def input_features(self, wave: np.ndarray) -> torch.Tensor:
        mel = self.front_end(wave)
        steps = n_steps(mel.shape[0])
        if steps > self.config.max_positions:
            raise InputError(f"longer than this Whisper encoder's window: {steps} steps of 20 ms, its position "
                             f"table has {self.config.max_positions} ({self.config.max_positions / 50:g} s); "
                             f"truncate with --max-frames {2 * self.config.max_positions}")
        return mel

    def steps(self, features: torch.Tensor) -> int:
        return n_steps(int(features.shape[0]))

    # -- the forward pass ------------------------------------------------------------------

    @torch.no_grad()
    def encode(self, features, *, head_mask=None, attention_span=None, want_attentions=True,
               want_hidden=False, layers=None, want_value_norms=False) -> list[EncodedUtterance]:
        """One utterance at a time (no padding); see :meth:`AttentionModel.encode`."""
        keep = self.checked_layers(layers)
        mask = self.checked_head_mask(head_mask)
        run = self.num_layers if want_hidden else (max(keep) + 1 if (want_attentions or want_value_norms) and keep
                                                   else 0)
        wanted = set(keep) if want_attentions or want_value_norms else set()
        results = []
        for f in features:
            mel = f.to(self.device, torch.float32)
            if self.steps(mel) > self.config.max_positions:
                raise InputError(f"{self.steps(mel)} steps exceed the encoder's {self.config.max_positions} positions")
            out = self.network(mel, head_mask=mask, attention_span=attention_span, run=run, keep=wanted,
                               want_hidden=want_hidden, want_value_norms=want_value_norms)
            attentions = torch.stack([out.attentions[i] for i in keep]).float() if want_attentions else None
            hidden = torch.stack(out.hidden_states).float() if want_hidden else None
            norms = torch.stack([out.value_norms[i] for i in keep]).float() if want_value_norms else None
            results.append(EncodedUtterance(attentions, hidden, self.steps(mel), norms))
        return results

    # -- bookkeeping -----------------------------------------------------------------------

    def provenance(self) -> dict[str, Any]:
        if self._sha is None:
            self._sha = {f.name: _sha256_file(f) for f in self.directory.weights}
        shas = self._sha
        digest = next(iter(shas.values())) if len(shas) == 1 else hashlib.sha256(
            "".join(f"{n}:{s}\n" for n, s in sorted(shas.items())).encode()).hexdigest()
        return {
            "type": "whisper",
            "loader": "whisper",
            "checkpoint": str(self.path),
            "directory": str(self.path),
            "sha256": digest,
            "weights": shas,
            "weights_format": "safetensors" if self.directory.safetensors else "pytorch .bin (weights_only)",
            "config": self.directory.config,
            "encoder": self.config.to_dict(),
            "features": self.features,
            "frames_per_step": self.frames_per_step,
            "step_s": self.step_s,
            "hidden_state_names": self.hidden_state_names,
            "attention": "encoder self-attention computed by satool (softmax after head/span masks); no decoder",
        }

    def to(self, device: str) -> WhisperModel:
        self.device = torch.device(device)
        self.network.to(self.device)
        self.front_end = WhisperFeatures(self.config.n_mels, device=device)
        return self
