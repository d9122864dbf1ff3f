"""What every model loader provides: waveform in, attention maps and hidden states out.

A :class:`ModelLoader` (registered through the ``register_models`` hook)
recognises a checkpoint path and loads it as an :class:`AttentionModel`.
Stages only talk to this interface, so Mockingjay checkpoints (s3prl's and
satool's own) and other transformers (wav2vec 2.0, HuBERT, WavLM) are
analysed the same way.

Time axes: the model's attention maps are ``[layer, head, query, key]`` over
*steps* of ``step_s`` seconds; labels live on 10 ms *frames*. A step covers
``frames_per_step`` label frames (R = 3 for paper-era Mockingjay, 1 for
current s3prl checkpoints, 2 for 20 ms wav2vec 2.0-style models).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from satool.timebase import FRAME_S

if TYPE_CHECKING:  # torch is imported lazily at run time
    import torch

LABEL_FRAME_S = FRAME_S
# Attention maps of one utterance grow as T^2: above this many bytes (float32, all maps computed)
# the utterance is skipped with the reason rather than exhausting memory. SATOOL_MAX_ATTENTION_GB
# raises or lowers it.
DEFAULT_MAX_ATTENTION_GB = 4.0


DEFAULT_BLOCK_MB = 256.0  # streaming passes: at most this many MB of one layer's maps (float32) at a time


def rows_per_block(block_bytes: int, heads: int, steps: int) -> int:
    """Query rows per block so that ``probs[head, rows, key]`` (float32) stays within ``block_bytes``
    (at least one row)."""
    return max(1, min(steps, int(block_bytes) // max(1, heads * steps * 4)))


def asked_heads(heads: Mapping[int, Sequence[int]] | None, layer: int, n_heads: int) -> list[int] | None:
    """The heads (0-based, ascending) of ``layer`` whose weights are asked for in ``heads`` (layer ->
    heads; a layer it does not name, or ``heads`` None, asks for all): None when that is all of them."""
    if heads is None or layer not in heads:
        return None
    chosen = sorted({int(h) for h in heads[layer]})
    if not chosen or chosen[0] < 0 or chosen[-1] >= n_heads:
        raise ValueError(f"heads {chosen} of layer {layer} out of range 0..{n_heads - 1}")
    return None if len(chosen) == n_heads else chosen


def attention_in_blocks(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, heads: list[int] | None,
                        block_bytes: int, scores: Callable, fused_mask: Callable | None = None,
                        weigh: Callable | None = None, want_context: bool = True):
    """One layer's attention computed eagerly, one query block at a time, for the asked ``heads`` only.

    ``q, k, v[head, step, d]`` of every head; ``heads``: the asked ones (0-based; None: all).
    ``scores(q_rows, keys, first, index)`` gives the pre-softmax scores ``[asked, rows, key]`` of the
    rows ``q_rows[asked, rows, d]`` starting at query ``first`` against ``keys[asked, d, key]`` (scaling and
    any bias; ``index`` the asked heads' tensor, None for all). ``weigh(probs, index)``, if given, maps
    each block before it is yielded (value-norm maps). Yields ``(first, probs[asked, rows, key])`` with at
    most ``block_bytes`` of float32 each, valid until the next; returns the context ``[head, step, d]``
    (None without ``want_context``): the asked heads' from their blocks, the other heads' from fused
    attention (``fused_mask(index)``: their additive mask ``[other, step, step]``, or None)."""
    import torch

    n_heads, steps, d = q.shape
    index = None if heads is None else torch.tensor(heads, device=q.device)
    qs, vs = (q, v) if index is None else (q[index], v[index])
    keys = (k if index is None else k[index]).transpose(-1, -2)
    rows = rows_per_block(block_bytes, len(qs), steps)
    context = torch.empty(len(qs), steps, d, device=q.device, dtype=q.dtype) if want_context else None
    for first in range(0, steps, rows):
        probs = torch.softmax(scores(qs[:, first:first + rows], keys, first, index), dim=-1)
        yield first, probs if weigh is None else weigh(probs, index)
        if context is not None:
            torch.matmul(probs, vs, out=context[:, first:first + rows])
    if context is None or index is None:
        return context
    others = torch.tensor([h for h in range(n_heads) if h not in set(heads)], device=q.device)
    whole = torch.empty(n_heads, steps, d, device=q.device, dtype=q.dtype)
    whole[index] = context
    mask = None if fused_mask is None else fused_mask(others)
    whole[others] = torch.nn.functional.scaled_dot_product_attention(q[others], k[others], v[others], attn_mask=mask)
    return whole


def labelled(layer: int, blocks: Iterator) -> Iterator:
    """``blocks`` of ``(first, probs)`` as ``(layer, first, probs)``; returns what ``blocks`` returns."""
    while True:
        try:
            first, probs = next(blocks)
        except StopIteration as done:
            return done.value
        yield layer, first, probs


def max_attention_bytes() -> int:
    import os

    try:
        gigabytes = float(os.environ.get("SATOOL_MAX_ATTENTION_GB", DEFAULT_MAX_ATTENTION_GB))
    except ValueError:
        gigabytes = DEFAULT_MAX_ATTENTION_GB
    return int(gigabytes * 2**30)


@dataclass
class EncodedUtterance:
    """One utterance through the model.

    Attributes:
        attentions: float32 ``[layer, head, query, key]`` (softmax output after
            head/span masking), or None if not requested.
        hidden_states: float32 ``[state, step, hidden]`` where state 0 is the
            embedding output when the model has one (see
            ``AttentionModel.hidden_state_names``), or None.
        n_steps: number of model steps (query/key axis length).
        value_norms: float32 ``[layer, head, key]`` (``encode(want_value_norms=True)``), or None.
    """

    attentions: torch.Tensor | None
    hidden_states: torch.Tensor | None
    n_steps: int
    # float32 ``[layer, head, key]``: ``||f_h(x_k)||``, each key's value vector through its head's columns of
    # the output projection (satool.maps), for the returned layers; only with ``want_value_norms``
    value_norms: torch.Tensor | None = None


@dataclass
class Reconstruction:
    """Pre-training head output against the un-masked target, for one utterance."""

    l1: float  # mean |prediction - target| over the utterance's target values
    mean_frame_l1: float  # the same for predicting the utterance's mean target frame
    n_values: int


@dataclass
class ProbeInput:
    """An utterance's model input (and pre-training target, if asked), reused by every probing pass."""

    features: Any  # torch.Tensor [frame or step, dim]
    target: Any = None  # torch.Tensor [step, dim] or None


@dataclass
class Representation:
    """What the probing pass keeps of one utterance."""

    hidden: np.ndarray  # float32 [step, hidden]
    reconstruction: Reconstruction | None
    states: dict[int, np.ndarray] | None = None  # hidden state index -> [step, hidden], when several were asked


def conv_steps(n_samples: int, kernels_strides) -> int:
    """Output length of a stack of unpadded 1-D convolutions ``[(kernel, stride), ...]`` (first layer
    first) over ``n_samples`` inputs: the model steps of a wav2vec 2.0-style feature encoder."""
    n = n_samples
    for kernel, stride in kernels_strides:
        n = (n - kernel) // stride + 1 if n >= kernel else 0
    return n


def conv_receptive_field(kernels_strides) -> int:
    """Inputs one output step of that stack depends on (400 samples for the usual wav2vec 2.0 stack)."""
    field = 1
    for kernel, stride in reversed(list(kernels_strides)):
        field = (field - 1) * stride + kernel
    return field


class AttentionModel(ABC):
    """A loaded transformer whose attention satool can read and mask."""

    name: str = "model"
    # True when ``represent``/``encode`` accept one head mask per utterance (``[batch, layer, head]``),
    # so several pruned versions of the model run as one batch
    masks_per_utterance: bool = False
    num_layers: int
    num_heads: int
    hidden_size: int
    frames_per_step: int  # 10 ms label frames per model step
    hidden_state_names: list[str]  # e.g. ["embedding", "layer 1", ...]
    has_prediction_head: bool = False
    # True when ``attention_blocks`` computes query blocks as they are asked for (bounded memory)
    blockwise_attention: bool = False
    # True when ``encode(want_value_norms=True)`` returns ``value_norms`` (and ``attention_blocks`` takes
    # ``value_norms=True``): the model can give value-norm maps (satool.maps)
    gives_value_norms: bool = False

    @property
    def step_s(self) -> float:
        """Seconds per model step."""
        return self.frames_per_step * LABEL_FRAME_S

    @abstractmethod
    def input_features(self, wave: np.ndarray) -> torch.Tensor:
        """The model's input for a mono 16 kHz waveform: ``[frame, dim]`` (or ``[sample, 1]``)."""

    @abstractmethod
    def encode(
        self,
        features: list[torch.Tensor],
        *,
        head_mask: torch.Tensor | None = None,
        attention_span: int | None = None,
        want_attentions: bool = True,
        want_hidden: bool = False,
        layers: list[int] | None = None,
    ) -> list[EncodedUtterance]:
        """Run a batch of utterances (each ``[frame, dim]`` from :meth:`input_features`).

        ``head_mask[layer, head]``: 0 zeroes that head's attention weights, 1
        keeps them. ``attention_span`` r: weights with |q - k| > r are zeroed.
        ``layers``: 0-based attention layers to return (default all); without
        ``want_hidden`` a model may stop computing after the last of them.
        Models with :attr:`gives_value_norms` also take ``want_value_norms``
        (``EncodedUtterance.value_norms`` of the returned layers).
        """

    def checked_layers(self, layers) -> list[int]:
        """The 0-based attention layers asked for (all when None), checked against the model's."""
        keep = list(range(self.num_layers)) if layers is None else [int(i) for i in layers]
        bad = [i for i in keep if not 0 <= i < self.num_layers]
        if bad:
            raise ValueError(f"layers {bad} out of range 0..{self.num_layers - 1}")
        return keep

    def checked_head_mask(self, head_mask) -> torch.Tensor | None:
        """``head_mask`` as a float tensor ``[layer, head]`` on the model's device (None stays None)."""
        if head_mask is None:
            return None
        import torch

        mask = torch.as_tensor(head_mask, dtype=torch.float32, device=self.device)
        if tuple(mask.shape) != (self.num_layers, self.num_heads):
            raise ValueError(f"head_mask must be [layer, head] = [{self.num_layers}, {self.num_heads}], "
                             f"got {tuple(mask.shape)}")
        return mask

    def require_maps(self, kind: str) -> str:
        """``kind`` when this model can give maps of that kind (satool.maps), else a UsageError."""
        from satool.maps import VALUE_NORM, check_kind

        check_kind(kind)
        if kind == VALUE_NORM and not self.gives_value_norms:
            from satool.errors import UsageError

            raise UsageError(f"--maps {kind}: this {self.name} model does not give its value vectors (satool "
                             "computes value norms for Mockingjay, TERA, Audio ALBERT, wav2vec 2.0, HuBERT, WavLM, "
                             "data2vec-audio, Whisper and DistilHuBERT)")
        return kind

    def encode_maps(self, features: torch.Tensor, *, maps: str = "attention", layers: list[int] | None = None,
                    want_hidden: bool = False) -> EncodedUtterance:
        """One utterance with ``attentions`` holding maps of kind ``maps`` (satool.maps) of ``layers``
        (0-based, default all): raw weights, value-norm maps, or rollout (``[layer, 1, T, T]``, computed
        from every layer up to the last asked)."""
        from satool import maps as kinds

        self.require_maps(maps)
        keep = list(range(self.num_layers)) if layers is None else [int(i) for i in layers]
        if maps == kinds.VALUE_NORM:
            encoded = self.encode([features], layers=keep, want_hidden=want_hidden, want_value_norms=True)[0]
            encoded.attentions = kinds.value_weighted(encoded.attentions, encoded.value_norms)
        elif maps == kinds.ROLLOUT:
            every = list(range(max(keep) + 1)) if keep else []
            encoded = self.encode([features], layers=every, want_hidden=want_hidden)[0]
            if every:
                encoded.attentions = kinds.rollout(encoded.attentions)[keep]
        else:
            encoded = self.encode([features], layers=keep, want_hidden=want_hidden)[0]
        return encoded

    def map_blocks(self, features: torch.Tensor, layers: list[int], *, maps: str = "attention",
                   block_bytes: int = int(DEFAULT_BLOCK_MB * 2**20),
                   heads: Mapping[int, Sequence[int]] | None = None) -> Iterator[tuple[int, int, torch.Tensor]]:
        """:meth:`attention_blocks` for any map kind: value-norm blocks are weighted by the norms of their
        layer's keys; rollout needs every layer's head-mean map, so it keeps two T x T matrices (the mean
        being summed and the rollout so far) and yields the rollout of the asked layers in row blocks
        ``[1, query, key]`` (``heads`` must then be None)."""
        from satool import maps as kinds

        self.require_maps(maps)
        if maps in (kinds.ATTENTION, kinds.VALUE_NORM):
            yield from self.attention_blocks(features, layers, block_bytes=block_bytes,
                                             value_norms=maps == kinds.VALUE_NORM, heads=heads)
            return
        if heads is not None:
            raise ValueError("rollout maps are made from every head: no heads can be chosen")
        wanted = sorted({int(i) for i in layers})
        if not wanted:
            return
        state: dict[str, Any] = {"layer": None, "sum": None, "rollout": None}

        def finish():
            current = kinds.rollout_step(state["rollout"], state["sum"][None])
            state["rollout"] = current
            if state["layer"] in wanted:
                steps = current.shape[-1]
                rows = rows_per_block(block_bytes, 1, steps)
                for first in range(0, steps, rows):
                    yield state["layer"], first, current[None, first:first + rows]

        for layer, first, probs in self.attention_blocks(features, list(range(wanted[-1] + 1)),
                                                         block_bytes=block_bytes):
            if layer != state["layer"]:
                if state["layer"] is not None:
                    yield from finish()
                steps = probs.shape[-1]
                state["layer"] = layer
                state["sum"] = probs.new_zeros(steps, steps)
            state["sum"][first:first + probs.shape[1]] = probs.mean(dim=0)
        if state["layer"] is not None:
            yield from finish()

    def attention_blocks(self, features: torch.Tensor, layers: list[int], *,
                         block_bytes: int = int(DEFAULT_BLOCK_MB * 2**20),
                         value_norms: bool = False,
                         heads: Mapping[int, Sequence[int]] | None = None) -> Iterator[tuple[int, int, torch.Tensor]]:
        """One utterance's maps of ``layers`` (0-based, ascending) in query blocks: ``(layer, first
        query, probs[head, query, key])`` with at most ``block_bytes`` of float32 per block, layer by
        layer. A block is only valid until the next one is asked for. ``heads`` (layer -> 0-based heads,
        see :func:`asked_heads`) limits a layer's blocks to those heads, in ascending order.

        This default encodes the whole utterance first (every asked layer's maps at once); models with
        ``blockwise_attention`` compute each block as it is asked for, eagerly only for the asked
        heads of the asked layers (fused attention elsewhere), so peak memory is one block plus the
        model's activations. With ``value_norms`` (models with :attr:`gives_value_norms`) the blocks
        are value-norm maps."""
        layers = sorted(layers)
        encoded = self.encode_maps(features, maps="value-norm" if value_norms else "attention", layers=layers)
        for position, layer in enumerate(layers):
            maps = encoded.attentions[position]
            chosen = asked_heads(heads, layer, maps.shape[0])
            if chosen is not None:
                maps = maps[chosen]
            rows = rows_per_block(block_bytes, maps.shape[0], maps.shape[-1])
            for first in range(0, maps.shape[1], rows):
                yield layer, first, maps[:, first:first + rows]

    def steps(self, features: torch.Tensor) -> int:
        """Model steps of one utterance's :meth:`input_features` (its attention maps are T x T)."""
        return int(features.shape[0])

    def check_attention_size(self, features: torch.Tensor, layers: int | None = None) -> None:
        """InputError (the utterance is skipped with this reason) when the attention maps of
        ``layers`` layers (default all) would exceed :func:`max_attention_bytes`."""
        steps = self.steps(features)
        needed = (layers or self.num_layers) * self.num_heads * steps * steps * 4
        limit = max_attention_bytes()
        if needed > limit:
            from satool.errors import InputError

            raise InputError(f"too long for the attention budget: {steps} steps ({steps * self.step_s:.0f} s) need "
                             f"{needed / 2**30:.1f} GB of maps, more than {limit / 2**30:.1f} GB; truncate with "
                             "--max-frames or raise SATOOL_MAX_ATTENTION_GB")

    def probe_input(self, wave: np.ndarray, *, reconstruction: bool = False) -> ProbeInput:
        """What a probing pass needs of one utterance, independent of head masks (computed once)."""
        return ProbeInput(self.input_features(wave), None)

    def represent(self, inputs: list[ProbeInput], *, state: int = -1, head_mask=None,
                  attention_span=None, states=None) -> list[Representation]:
        """One batched forward pass for probing: hidden state ``state`` (index into
        ``hidden_state_names``; -1 = last) as float32 ``[step, hidden]`` per utterance and,
        where the input carries a target and the model has a pre-training head, its L1. With
        ``states`` (indices), every one of those hidden states too (``Representation.states``)."""
        import torch

        encoded = self.encode([i.features for i in inputs], head_mask=head_mask, attention_span=attention_span,
                              want_attentions=False, want_hidden=True)

        def state_array(e, index):
            return e.hidden_states[index].to(torch.float32).cpu().numpy()

        return [Representation(state_array(e, state), None,
                               None if states is None else {s: state_array(e, s) for s in states})
                for e in encoded]

    @abstractmethod
    def provenance(self) -> dict[str, Any]:
        """Everything a cache records about the model: type, config, features, sha256."""

    def to(self, device: str) -> AttentionModel:
        return self


class ModelLoader(Protocol):
    """What a ``register_models`` plugin registers."""

    name: str
    description: str

    def can_load(self, path: Path) -> bool:
        """True if ``path`` looks like this loader's checkpoint (cheap: no full load)."""

    def load(self, path: Path, device: str = "cpu") -> AttentionModel:
        """Load (safely: checkpoints are untrusted) and return the model in eval mode."""
