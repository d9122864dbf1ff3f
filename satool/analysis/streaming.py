"""Streaming reductions: per-head analyses straight from a model, without keeping attention maps.

A model gives one utterance's maps in query blocks (``AttentionModel.attention_blocks``:
``probs[head, query block, key]`` of one layer at a time, within a memory budget), and each block is
reduced at once into per-head sums, then dropped:

- the built-in metrics G, V, D, W (sums over query rows: G's row entropies, V's column sums, D's
  weighted distances, W's running maximum), the offset sums (locality), and the phone relation sums
  ``c^T Â c`` of P'_h (rows normalised one block at a time) with P_U;
- the weights per power of two (:mod:`satool.analysis.histogram`);
- the maps of the heads a segmentation streams (:class:`~satool.analysis.segmentation.streamed.SegmentSums`),
  assembled for one utterance at a time (T^2 per head), segmented, and counted;
- a plugin metric sees whole maps ``[layer, head, query, key]`` as always: for an utterance where one
  is asked, the blocks are assembled (memory L x H x T^2, checked against the attention budget).

Per utterance the values are the same as those of the whole-map functions (up to float rounding)
and go into the same accumulators (:class:`~satool.analysis.scoring.ScoreSums`,
:class:`~satool.analysis.relations.RelationSums`), so a stream and a cache give the same
``HeadScores`` and ``Relations``. Maps are rounded to float16 before they are reduced, as a cache
stores them: a stream and a cache of the same model then reduce the same numbers. A model on a GPU
gives its blocks as torch tensors, reduced there (:meth:`UtteranceReduction.add_tensor`), so only
per-head sums come back to the host.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from satool.analysis.histogram import BINS, weight_histogram
from satool.analysis.metrics import (
    _LN2,
    _TINY,
    HeadMetric,
    _distances,
    _log_p,
    _xlogx_sum,
    diagonality,
    globalness,
    verticality,
    weight,
)
from satool.timebase import frames_to_seconds
from satool.utterance import UtteranceMeta

BLOCK_FORMS = {globalness: "globalness", verticality: "verticality", diagonality: "diagonality", weight: "weight"}
"""The metric functions whose values are reduced block by block (others see whole maps)."""


def blockwise(metric: HeadMetric) -> bool:
    return metric.per_utterance in BLOCK_FORMS


@functools.lru_cache(maxsize=256)
def _band_rows(first: int, rows: int, steps: int, max_offset: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For queries ``first .. first + rows - 1`` of a T-step map given as ``[rows * key]``: the flat
    indices of ``(q, q + d)`` grouped by offset d, the start of each non-empty group and which
    offsets those are (read-only)."""
    indices, starts, present = [], [], []
    position = 0
    q = np.arange(first, first + rows)
    for i, d in enumerate(range(-max_offset, max_offset + 1)):
        keep = q[(q + d >= 0) & (q + d < steps)]
        if len(keep):
            indices.append((keep - first) * steps + keep + d)
            starts.append(position)
            present.append(i)
            position += len(keep)
    arrays = (np.concatenate(indices) if indices else np.zeros(0, int), np.array(starts, int), np.array(present, int))
    for a in arrays:
        a.flags.writeable = False
    return arrays


class Scratch:
    """Work memory reused from block to block (and utterance to utterance) of a stream: a block
    is tens of MB, and memory freed and taken again costs page faults each time (measured: log2 of a
    fresh 12 x 778^2 block took 3x its time on reused memory)."""

    def __init__(self):
        self._memory: dict[str, np.ndarray] = {}

    def array(self, name: str, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
        """An uninitialised array of ``shape`` and ``dtype``, a view of the buffer ``name`` (valid until the
        next call with that name)."""
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        memory = self._memory.get(name)
        if memory is None or memory.size < size:
            memory = self._memory[name] = np.empty(size, np.uint8)
        return memory[:size].view(dtype).reshape(shape)


class UtteranceReduction:
    """One utterance's per-head values, from its maps given as query blocks of one layer at a time.

    ``names``: built-in metrics to compute; ``offsets``: the offset sums (``max_offset``);
    ``counts``: step label counts ``[step, phone]`` for the relation sums (None: none);
    ``full``: also assemble the whole maps (for plugin metrics and kept utterances); ``scratch``: work
    memory to reuse (:class:`Scratch`).
    """

    def __init__(self, n_layers: int, n_heads: int, steps: int, *, names: Iterable[str] = (), offsets: bool = True,
                 max_offset: int = 10, counts: np.ndarray | None = None, full: bool = False,
                 scratch: Scratch | None = None):
        self.shape, self.steps, self.max_offset = (n_layers, n_heads), steps, max_offset
        self.scratch = scratch or Scratch()
        self.names = set(names)
        if counts is not None:
            self.names.add("verticality")
        zeros = np.zeros(self.shape)
        self.entropy = zeros.copy() if "globalness" in self.names else None
        self.columns = np.zeros((n_layers, n_heads, steps)) if "verticality" in self.names else None
        self.distance = zeros.copy() if "diagonality" in self.names else None
        self.largest = np.full(self.shape, -np.inf) if "weight" in self.names else None
        self.offsets = np.zeros((*self.shape, 2 * max_offset + 1)) if offsets else None
        self.histogram = np.zeros((*self.shape, BINS)) if offsets else None  # kept beside the offsets
        self.counts = counts
        self.relation = None if counts is None else np.zeros((n_layers * n_heads, counts.shape[1], counts.shape[1]))
        self.maps = np.zeros((n_layers, n_heads, steps, steps), np.float32) if full else None

    def add(self, layer: int, first: int, probs) -> None:
        """``probs[head, query, key]`` (float32) of queries ``first ..`` of layer position ``layer``: a numpy
        array, or a torch tensor (reduced where it lies, e.g. on the GPU: :meth:`add_tensor`)."""
        if not isinstance(probs, np.ndarray):
            self.add_tensor(layer, first, probs)
            return
        heads, rows, steps = probs.shape
        flat = probs.reshape(heads, rows * steps)
        if self.entropy is not None:
            logs = _log_p(flat, out=self.scratch.array("logs", flat.shape))
            self.entropy[layer] += np.matmul(flat[:, None, :], logs[:, :, None])[:, 0, 0]
        if self.columns is not None:
            self.columns[layer] += np.matmul(np.full((1, rows), 1 / steps, np.float32), probs)[:, 0, :]
        if self.distance is not None:
            if first == 0 and rows == steps:
                dist = _distances(steps)
            else:
                q = np.arange(first, first + rows, dtype=np.float32)
                dist = np.abs(q[:, None] - np.arange(steps, dtype=np.float32)[None, :]).reshape(-1)
            self.distance[layer] += np.dot(flat, dist)
        if self.largest is not None:
            self.largest[layer] = np.maximum(self.largest[layer], flat.max(axis=1))
        if self.offsets is not None:
            indices, starts, present = _band_rows(first, rows, steps, self.max_offset)
            if len(indices):
                self.offsets[layer][:, present] += np.add.reduceat(np.take(flat, indices, axis=1), starts, axis=1,
                                                                   dtype=np.float64)
        if self.histogram is not None:
            self.histogram[layer] += weight_histogram(probs)
        if self.relation is not None:
            from satool.analysis.relations import row_normalised

            n_heads = self.shape[1]
            block = self.counts[first:first + rows]
            self.relation[layer * n_heads:(layer + 1) * n_heads] += np.einsum(
                "sm,hst,tn->hmn", block, row_normalised(probs), self.counts, optimize=True)
        if self.maps is not None:
            self.maps[layer, :, first:first + rows] = probs

    def add_tensor(self, layer: int, first: int, probs) -> None:
        """:meth:`add` for a torch tensor ``probs[head, query, key]`` (float32, on any device), in torch where
        it lies: only the per-head sums (and any maps to assemble) come back to the host. The same sums
        as :meth:`add` up to float rounding (sums in float64; the histogram's counts exactly)."""
        import torch

        from satool.analysis.histogram import weight_histogram_tensor

        heads, rows, steps = probs.shape
        flat = probs.reshape(heads, rows * steps)
        double = torch.float64 if probs.device.type != "mps" else torch.float32  # MPS has no float64

        def host(t) -> np.ndarray:
            return t.cpu().to(torch.float64).numpy()

        if self.entropy is not None:
            self.entropy[layer] += host((flat * torch.log2(flat + float(_TINY))).sum(1, dtype=double))
        if self.columns is not None:
            self.columns[layer] += host(probs.sum(1, dtype=double)) / steps
        if self.distance is not None:
            q = torch.arange(first, first + rows, device=probs.device, dtype=probs.dtype)
            dist = (q[:, None] - torch.arange(steps, device=probs.device, dtype=probs.dtype)[None, :]).abs_()
            self.distance[layer] += host((flat * dist.reshape(1, -1)).sum(1, dtype=double))
        if self.largest is not None:
            self.largest[layer] = np.maximum(self.largest[layer], host(flat.amax(1)))
        if self.offsets is not None:  # (q, q + d) lies on the block's diagonal first + d
            sums = torch.stack([torch.diagonal(probs, first + d, dim1=1, dim2=2).sum(-1, dtype=double)
                                for d in range(-self.max_offset, self.max_offset + 1)], dim=1)
            self.offsets[layer] += host(sums)
        if self.histogram is not None:
            self.histogram[layer] += weight_histogram_tensor(probs)
        if self.relation is not None:
            n_heads = self.shape[1]
            counts = torch.as_tensor(self.counts, device=probs.device, dtype=double)
            sums = probs.sum(-1, keepdim=True, dtype=double)
            normalised = torch.where(sums > 0, probs / torch.where(sums > 0, sums, 1.0), 0.0)
            self.relation[layer * n_heads:(layer + 1) * n_heads] += host(torch.einsum(
                "sm,hst,tn->hmn", counts[first:first + rows], normalised, counts))
        if self.maps is not None:
            self.maps[layer, :, first:first + rows] = probs.cpu().numpy()

    def values(self, name: str) -> np.ndarray:
        """``[layer, head]`` values of a built-in metric for this utterance."""
        steps = self.steps
        if name == "globalness":
            return -self.entropy * (_LN2 / steps)
        if name == "verticality":
            return _xlogx_sum(self.columns.astype(np.float32))
        if name == "diagonality":
            return -self.distance / float(steps * steps)
        if name == "weight":
            return self.largest.copy()
        raise KeyError(name)

    def offset_sums(self) -> tuple[np.ndarray, np.ndarray]:
        from satool.analysis.locality import _band

        return self.offsets * self.steps, _band(self.steps, self.max_offset)[3].copy()


@dataclass
class StreamedUtterance:
    """One utterance of a stream: its metadata, length and query blocks (computed as they are read)."""

    meta: UtteranceMeta
    steps: int
    blocks: Iterator[tuple[int, int, Any]]  # (layer position, first query, probs[head, query, key]: numpy or torch)
    wave: np.ndarray | None = None  # float32 [sample] at 16 kHz, as analysed
    hidden: dict[int, np.ndarray] = field(default_factory=dict)  # state -> float16-rounded [step, dim]
    block_heads: dict[int, list[int]] = field(default_factory=dict)  # layer position -> its blocks' heads (0-based)


@dataclass
class StreamResult:
    """What one streaming pass accumulated (either part may be None)."""

    scores: Any = None  # ScoreSums
    relations: Any = None  # RelationSums
    done: list[str] = field(default_factory=list)  # ids reduced, in order
    skipped: list[tuple[str, str]] = field(default_factory=list)


def model_utterances(model, corpus, utterances, layers: Sequence[int], *, max_frames: int | None = None,
                     block_bytes: int, skipped: list, whole_maps: Callable[[Any], bool] = lambda utt: False,
                     maps: str = "attention", hidden_states: Sequence[int] = (),
                     heads: Mapping[int, Sequence[int]] | None = None,
                     on_device: bool | None = None) -> Iterator[StreamedUtterance]:
    """Each utterance through ``model``, its maps of kind ``maps`` (satool.maps) of ``layers`` (0-based)
    as float16-rounded float32 query blocks of at most ``block_bytes``; audio and features are read one
    ahead. An utterance the corpus or the model refuses is appended to ``skipped`` as (id, reason).
    ``heads`` (layer -> 0-based heads) limits a layer's blocks to those heads (ascending): the model
    computes only their weights (``AttentionModel.attention_blocks``). ``on_device``: give the blocks as
    torch tensors where the model made them, so that :func:`stream` reduces them there (default: when
    the model is not on the CPU, where numpy's reductions are faster).
    ``hidden_states``: hidden states (0 = embedding output) to give too, rounded to float16 as a cache
    stores them, from a second pass without maps (fused attention), as ``extract`` makes them when it
    stores hidden states only.
    ``whole_maps(utt)``: the whole maps of that utterance will be assembled, so they must fit the
    attention budget."""
    import torch

    max_seconds = None if max_frames is None else frames_to_seconds(max_frames)

    # a model without blockwise attention makes every layer's maps at once: for rollout, every layer up to the last
    made = max(layers) + 1 if maps == "rollout" and layers else len(layers)

    def prepare(loaded):
        features = model.input_features(loaded.wave)
        if whole_maps(loaded.utterance) or not getattr(model, "blockwise_attention", False):
            model.check_attention_size(features, made)
        return features

    scratch = Scratch()
    if on_device is None:
        on_device = getattr(model, "device", torch.device("cpu")).type != "cpu"

    def rounded(probs: torch.Tensor):
        """``probs`` rounded to float16 as a cache stores them, as float32: a tensor where it lies
        (``on_device``), else a numpy array in reused memory (valid until the next block)."""
        if on_device:
            return probs.to(torch.float16).to(torch.float32)
        if probs.device.type != "cpu":
            probs = probs.to(torch.float16).cpu()
        half = torch.from_numpy(scratch.array("half", tuple(probs.shape), np.float16))
        half.copy_(probs)
        out = scratch.array("block", tuple(probs.shape))
        torch.from_numpy(out).copy_(half)
        return out

    phone_set = list(corpus.phone_set.names)
    position = {layer: i for i, layer in enumerate(layers)}
    block_heads = {position[layer]: sorted({int(h) for h in chosen}) for layer, chosen in (heads or {}).items()
                   if layer in position}
    for utt, loaded, features in corpus.prepared(utterances, prepare, max_seconds=max_seconds):
        if loaded is None:  # features holds the reason
            skipped.append((utt.id, features))
            continue
        steps = model.steps(features)
        meta = UtteranceMeta.of_loaded(utt, loaded, n_steps=steps, frames_per_step=model.frames_per_step,
                                       phone_set=phone_set)

        def blocks(features=features):
            if not layers:  # no maps asked for (e.g. segmentation of MFCC only)
                return
            for layer, first, probs in model.map_blocks(features, list(layers), maps=maps, block_bytes=block_bytes,
                                                        heads=heads):
                yield position[layer], first, rounded(probs)

        hidden = {}
        if hidden_states:
            states = model.encode([features], want_attentions=False, want_hidden=True)[0].hidden_states
            hidden = {state: states[state].to(torch.float16).to(torch.float32).cpu().numpy()
                      for state in hidden_states}
        yield StreamedUtterance(meta, steps, blocks(), loaded.wave, hidden, block_heads)


def segmented_heads(segments) -> dict[int, list[int]]:
    """The heads a segmentation streams, as ``model_utterances``'s ``heads``: layer -> heads, 0-based."""
    heads: dict[int, list[int]] = {}
    for layer, head in segments.heads():
        heads.setdefault(layer - 1, []).append(head - 1)
    return heads


def stream(items: Iterable[StreamedUtterance], *, scores=None, relations=None, segments=None,
           on_utterance: Callable[[str], None] | None = None,
           on_maps: Callable[[UtteranceMeta, np.ndarray], None] | None = None,
           keep: Callable[[UtteranceMeta], bool] = lambda meta: False,
           result: StreamResult | None = None) -> StreamResult:
    """Reduce every utterance of ``items`` into ``scores`` (a ScoreSums), ``relations`` (a
    RelationSums) and/or ``segments`` (a SegmentSums: the maps of its heads are assembled, one
    utterance at a time, and segmented). ``on_utterance(id)`` after each utterance (a stage saves its state there);
    utterances for which ``keep(meta)`` is true have their whole maps assembled and given to
    ``on_maps(meta, maps)``. Memory does not grow with the number of utterances."""
    from satool.analysis.relations import step_label_counts, uniform_relation

    result = result or StreamResult(scores, relations)
    metrics = [] if scores is None else list(scores.metrics)
    names = [BLOCK_FORMS[m.per_utterance] for m in metrics if blockwise(m)]
    plugins = [m for m in metrics if not blockwise(m)]
    owner = scores if scores is not None else relations
    n_layers, n_heads = (len(owner.layers), len(owner.heads)) if owner is not None else (0, 0)
    wanted: dict[int, list[tuple[int, int]]] = {}  # layer position -> the segmented heads (layer, head) in it
    for layer, head in ([] if segments is None else segments.heads()):
        wanted.setdefault(segments.layers().index(layer), []).append((layer, head))
    scratch = Scratch()
    with threadpool_limits(limits=1, user_api="blas"):
        for item in items:
            meta = item.meta
            counts = None
            labels = meta.frame_labels
            if relations is not None and labels is not None:
                counts = step_label_counts(labels, item.steps, meta.frames_per_step, len(relations.phones))
            kept = keep(meta)
            reduction = UtteranceReduction(n_layers, n_heads, item.steps, names=names, offsets=scores is not None,
                                           max_offset=(len(scores.offset_queries) - 1) // 2 if scores else 10,
                                           counts=counts, full=bool(plugins) or kept, scratch=scratch)
            head_maps = {head: np.zeros((item.steps, item.steps), np.float32) for heads in wanted.values()
                         for head in heads}
            if owner is not None and item.block_heads:
                raise ValueError("per-head sums need every head's weights: stream them without choosing heads")
            for layer, first, probs in item.blocks:
                if owner is not None:
                    reduction.add(layer, first, probs)
                chosen = item.block_heads.get(layer)
                for number in wanted.get(layer, ()):
                    index = number[1] - 1 if chosen is None else chosen.index(number[1] - 1)
                    rows = probs[index] if isinstance(probs, np.ndarray) else probs[index].cpu().numpy()
                    head_maps[number][first:first + len(rows)] = rows
            if segments is not None:
                segments.add_utterance(meta, item.wave, head_maps, item.hidden)
            if scores is not None:
                def values_of(metric, reduction=reduction, meta=meta):
                    if blockwise(metric):
                        return reduction.values(BLOCK_FORMS[metric.per_utterance])
                    return metric.per_utterance(reduction.maps, meta)

                scores.add(meta.id, values_of, reduction.offset_sums(), item.steps, histogram=reduction.histogram,
                           has_labels=lambda meta=meta: meta.frame_labels is not None, where=lambda meta=meta: meta.id)
            if counts is not None:
                total_frames = item.steps * meta.frames_per_step
                relations.add(reduction.relation / (meta.frames_per_step * total_frames),
                              uniform_relation(counts, total_frames), reduction.values("verticality").ravel())
            if kept and on_maps is not None:
                on_maps(meta, reduction.maps)
            result.done.append(meta.id)
            if on_utterance is not None:
                on_utterance(meta.id)
    return result
