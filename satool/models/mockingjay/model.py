"""Mockingjay checkpoints as an :class:`~satool.models.base.AttentionModel` (the built-in loader).

Features come from the checkpoint's own s3prl 'audio' block when it has one
(satool's checkpoints and current s3prl ones), else satool's default front end
(80 log-Mel, -25 dB, CMVN). Paper-era models stack R frames per step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from satool.data.features import FeatureConfig, FeatureExtractor
from satool.models.base import (
    DEFAULT_BLOCK_MB,
    AttentionModel,
    EncodedUtterance,
    ProbeInput,
    Reconstruction,
    Representation,
    asked_heads,
    attention_in_blocks,
    labelled,
)
from satool.models.mockingjay.checkpoint import MockingjayCheckpoint
from satool.models.mockingjay.network import position_encoding, stack_frames


class MockingjayModel(AttentionModel):
    """A loaded Mockingjay encoder (+ prediction head) with its feature front end."""

    name = "mockingjay"
    masks_per_utterance = True
    blockwise_attention = True
    gives_value_norms = True

    def __init__(self, checkpoint: MockingjayCheckpoint, device: str = "cpu"):
        self.checkpoint = checkpoint
        self.config = checkpoint.config
        self.device = torch.device(device)
        self.encoder = checkpoint.encoder.to(self.device).eval()
        self.head = checkpoint.spec_head.to(self.device).eval() if checkpoint.spec_head is not None else None
        self.features = FeatureConfig.from_s3prl(checkpoint.audio) if checkpoint.audio else FeatureConfig(
            n_mels=self.config.input_dim
        )
        self.extractor = FeatureExtractor(self.features, device=str(self.device))
        self.num_layers = self.config.num_layers
        self.num_heads = self.config.num_heads
        self.hidden_size = self.config.hidden_size
        self.frames_per_step = self.config.downsample_rate
        layers = [f"layer {i}" for i in range(1, self.num_layers + 1)]
        self.hidden_state_names = (["embedding"] + layers) if self.config.embedding_in_hidden_states else layers
        self.has_prediction_head = self.head is not None

    def input_features(self, wave: np.ndarray) -> torch.Tensor:
        """``[step, R * input_dim]``: the front end's frames stacked by R (InputError when the
        utterance is too short to give one step)."""
        frames = self.extractor(wave)
        if frames.shape[0] < self.frames_per_step:
            from satool.errors import InputError

            raise InputError(f"too short for this model: {frames.shape[0]} frame(s) of 10 ms, fewer than the "
                             f"{self.frames_per_step} one step stacks")
        return stack_frames(frames[None], self.frames_per_step)[0]

    @torch.no_grad()
    def encode(self, features, *, head_mask=None, attention_span=None, want_attentions=True,
               want_hidden=False, layers=None, want_value_norms=False) -> list[EncodedUtterance]:
        lengths = torch.tensor([f.shape[0] for f in features])
        batch = torch.nn.utils.rnn.pad_sequence(list(features), batch_first=True).to(self.device)
        layers = list(range(self.num_layers)) if layers is None else list(layers)
        output = self.checkpoint.encode(
            batch, lengths if len(features) > 1 else None, head_mask=head_mask,
            attention_span=attention_span, output_attentions=want_attentions,
            output_hidden_states=want_hidden,
            num_layers=None if want_hidden or not layers else max(layers) + 1,
            output_value_norms=want_value_norms,
        )
        results = []
        for b, n in enumerate(lengths.tolist()):
            attn = None
            if want_attentions:
                attn = torch.stack([output.attentions[i][b, :, :n, :n] for i in layers])
            hidden = torch.stack([h[b, :n] for h in output.hidden_states]) if want_hidden else None
            norms = torch.stack([output.value_norms[i][b, :, :n] for i in layers]) if want_value_norms else None
            results.append(EncodedUtterance(attn, hidden, n, norms))
        return results

    @torch.no_grad()
    def attention_blocks(self, features, layers, *, block_bytes=int(DEFAULT_BLOCK_MB * 2**20), value_norms=False,
                         heads=None):
        """Maps of ``layers`` in query blocks within ``block_bytes`` (see
        :meth:`AttentionModel.attention_blocks`): layers not asked for run fused attention; an asked
        layer computes the weights of its asked ``heads`` one query block at a time, and their context
        rows from them (fused attention for its other heads); the pass stops after the last asked
        layer's weights. ``value_norms``: each block weighted by its keys' value norms (value-norm maps,
        satool.maps)."""
        import math

        from satool.maps import head_value_norms, value_weighted

        encoder, config = self.encoder, self.config
        wanted = sorted({int(i) for i in layers})
        if not wanted:
            return
        if wanted[0] < 0 or wanted[-1] >= self.num_layers:
            raise ValueError(f"layers {wanted} out of range 0..{self.num_layers - 1}")
        x = features[None].to(self.device)
        steps = x.shape[1]
        positions = position_encoding(steps, config.hidden_size).to(device=x.device, dtype=x.dtype)
        x = encoder.input_representations(x, positions)
        scale = math.sqrt(config.head_size)

        def scores(rows, keys, first, chosen):
            return torch.matmul(rows, keys).div_(scale)

        for i, layer in enumerate(encoder.encoder.layer[: wanted[-1] + 1]):
            if i not in wanted:
                x, _ = layer(x, None, None, None, False)
                continue
            attention = layer.attention
            normed = attention.LayerNorm(x) if config.pre_layer_norm else x
            sa = attention.self

            def split(t):
                return t.view(1, steps, self.num_heads, config.head_size).transpose(1, 2)[0]  # [head, step, d]

            q, k, v = split(sa.query(normed)), split(sa.key(normed)), split(sa.value(normed))
            last = i == wanted[-1]
            weigh = None
            if value_norms:
                norms = head_value_norms(v, attention.output.dense.weight)

                def weigh(probs, chosen, norms=norms):
                    return value_weighted(probs, norms if chosen is None else norms[chosen])

            blocks = attention_in_blocks(q, k, v, heads=asked_heads(heads, i, self.num_heads), block_bytes=block_bytes,
                                         scores=scores, weigh=weigh, want_context=not last)
            context = yield from labelled(i, blocks)
            if last:
                return
            merged = context.transpose(0, 1).reshape(1, steps, config.hidden_size)
            attended = attention.output(merged, x)
            normed = layer.LayerNorm(attended) if layer.pre_layer_norm else attended
            x = layer.output(layer.intermediate(normed), attended)

    def probe_input(self, wave, *, reconstruction=False) -> ProbeInput:
        """Stacked input steps and, with ``reconstruction`` and a head, the stacked target."""
        rate = self.frames_per_step
        if reconstruction and self.head is not None:
            inputs, target = self.extractor.input_and_target(wave)
            return ProbeInput(stack_frames(inputs[None], rate)[0], stack_frames(target[None], rate)[0])
        return ProbeInput(self.input_features(wave), None)

    @torch.no_grad()
    def represent(self, inputs, *, state=-1, head_mask=None, attention_span=None, states=None) -> list[Representation]:
        """Hidden state ``state`` (and every state in ``states``) and the head's L1 against the
        un-masked target, one batched forward (``head_mask``: ``[layer, head]`` or one per input)."""
        lengths = torch.tensor([i.features.shape[0] for i in inputs])
        batch = torch.nn.utils.rnn.pad_sequence([i.features for i in inputs], batch_first=True).to(self.device)
        output = self.checkpoint.encode(batch, lengths if len(inputs) > 1 else None, head_mask=head_mask,
                                        attention_span=attention_span, output_attentions=False)
        want_head = self.head is not None and any(i.target is not None for i in inputs)
        predictions = self.head(output.last_hidden_state) if want_head else None
        results = []
        for b, (item, n) in enumerate(zip(inputs, lengths.tolist())):
            hidden = output.hidden_states[state][b, :n].float().cpu().numpy()
            more = None if states is None else {s: output.hidden_states[s][b, :n].float().cpu().numpy() for s in states}
            recon = None
            if predictions is not None and item.target is not None:
                target = item.target.to(self.device)
                prediction = predictions[b, :n]
                if prediction.shape == target.shape:  # else the head predicts another target than this front end
                    error = (prediction - target).abs()
                    baseline = (target - target.mean(dim=0, keepdim=True)).abs()
                    recon = Reconstruction(float(error.mean()), float(baseline.mean()), int(error.numel()))
            results.append(Representation(hidden, recon, more))
        return results

    def provenance(self) -> dict[str, Any]:
        return {
            "type": self.name,
            "checkpoint": str(Path(self.checkpoint.path).resolve()),
            "sha256": self.checkpoint.sha256,
            "layout": self.checkpoint.layout,
            "step": self.checkpoint.step,
            "config": self.config.to_dict(),
            "features": self.features.to_s3prl(),
            "frames_per_step": self.frames_per_step,
            "hidden_state_names": self.hidden_state_names,
        }

