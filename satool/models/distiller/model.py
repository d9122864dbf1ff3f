"""Distiller checkpoints (DistilHuBERT) behind satool's model interface (the built-in ``distiller`` loader).

Input: the raw 16 kHz waveform as read (s3prl's distiller expert does not normalise it). Time axis: one
step per hop of the convolutional front end (320 samples = 20 ms with the usual stack, R = 2).
Hidden states follow s3prl's ``hidden_states`` up to the encoder's layers: ``embedding`` is s3prl's
state 0, the projected convolutional features *before* the convolutional position embedding and the
encoder's LayerNorm, then ``layer 1`` .. ``layer L`` (pre-LN models add ``final layer norm``). s3prl
appends the prediction heads' outputs (DistilHuBERT: its guesses of HuBERT layers 4, 8, 12); satool does
not build the heads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from satool.errors import InputError
from satool.models.base import AttentionModel, EncodedUtterance, conv_receptive_field, conv_steps
from satool.models.distiller.checkpoint import DistillerCheckpoint, load_distiller
from satool.models.distiller.network import DistillerNet
from satool.timebase import HOP_SAMPLES


class DistillerModel(AttentionModel):
    name = "distiller"
    gives_value_norms = True

    def __init__(self, checkpoint: DistillerCheckpoint, device: str = "cpu"):
        self.checkpoint = checkpoint
        self.config = config = checkpoint.config
        if config.stride % HOP_SAMPLES:
            raise InputError(f"the convolutional front end's total stride is {config.stride} samples, not a whole "
                             "number of satool's 10 ms (160-sample) label frames: not supported",
                             path=checkpoint.path)
        self.frames_per_step = config.stride // HOP_SAMPLES
        parametrized = "encoder.pos_conv.0.parametrizations.weight.original0" in checkpoint.state
        self.network = DistillerNet(config, parametrized_pos_conv=parametrized)
        self.network.load_state_dict(checkpoint.state, strict=True)
        self.device = torch.device(device)
        self.network.to(self.device).eval()
        self.num_layers, self.num_heads, self.hidden_size = config.layers, config.heads, config.width
        self.hidden_state_names = ["embedding"] + [f"layer {i}" for i in range(1, config.layers + 1)]
        if config.layer_norm_first:
            self.hidden_state_names.append("final layer norm")

    @classmethod
    def from_file(cls, path, device: str = "cpu") -> DistillerModel:
        return cls(load_distiller(path), device=device)

    def receptive_field(self) -> int:
        return conv_receptive_field((kernel, stride) for _, kernel, stride in self.config.conv_layers)

    def n_steps(self, n_samples: int) -> int:
        return conv_steps(n_samples, ((kernel, stride) for _, kernel, stride in self.config.conv_layers))

    def steps(self, features: torch.Tensor) -> int:
        return self.n_steps(int(features.shape[0]))

    def input_features(self, wave: np.ndarray) -> torch.Tensor:
        x = np.asarray(wave, dtype=np.float32).reshape(-1)
        if self.n_steps(len(x)) < 1:
            raise InputError(f"utterance too short: {len(x)} samples, the convolutional front end needs at least "
                             f"{self.receptive_field()}")
        return torch.from_numpy(np.ascontiguousarray(x))[:, None]

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
            wave = f.reshape(-1).to(self.device, torch.float32)
            norms: dict[int, torch.Tensor] | None = {} if want_value_norms else None
            states, maps = self.network(wave, head_mask=mask, attention_span=attention_span, run=run, keep=wanted,
                                        want_hidden=want_hidden, norms=norms)
            attentions = torch.stack([maps[i] for i in keep]).float() if want_attentions else None
            hidden = torch.stack(states).float() if want_hidden else None
            value_norms = torch.stack([norms[i] for i in keep]).float() if norms is not None else None
            results.append(EncodedUtterance(attentions, hidden, self.n_steps(wave.shape[0]), value_norms))
        return results

    def provenance(self) -> dict[str, Any]:
        return {
            "type": "distiller",
            "loader": "distiller",
            "checkpoint": str(Path(self.checkpoint.path).resolve()),
            "sha256": self.checkpoint.sha256,
            "step": self.checkpoint.step,
            "config": self.config.to_dict(),
            "distiller_block": self.checkpoint.block,
            "prediction_heads": "present, not built" if self.checkpoint.heads else "absent",
            "features": {"input": "waveform", "sampling_rate": 16000, "normalize": "none (as s3prl's expert)"},
            "conv_stride_samples": self.config.stride,
            "frames_per_step": self.frames_per_step,
            "step_s": self.step_s,
            "hidden_state_names": self.hidden_state_names,
        }

    def to(self, device: str) -> DistillerModel:
        self.device = torch.device(device)
        self.network.to(self.device)
        return self
