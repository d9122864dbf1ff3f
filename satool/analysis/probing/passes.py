"""The probing pass: one forward per utterance per model configuration, shared by all tasks.

A *configuration* is a head mask ``[layer, head]`` (0 = pruned), an attention
span and the hidden state to keep. :class:`ProbeData` reads a split once --
audio, labels and the model's input features (and pre-training targets) --
and keeps them while they fit a memory budget; :meth:`ProbeData.represent`
then runs only the model, in batches of similar length, for each
configuration. Every task trains and scores on the result
(:mod:`satool.analysis.probing.tasks`).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from satool.analysis.probing.tasks import ProbeSplit, ProbeUtterance
from satool.errors import InputError
from satool.timebase import frames_to_seconds


@dataclass(frozen=True)
class Configuration:
    """What a representation pass depends on (besides the model and the data)."""

    head_mask: tuple[tuple[float, ...], ...] | None = None  # [layer][head], 1 keep / 0 prune
    attention_span: int | None = None
    state: int = -1  # hidden state index (-1 = last; 0 = embedding output when the model has it)

    @classmethod
    def pruned(cls, n_layers: int, n_heads: int, heads: Sequence[tuple[int, int]], state: int = -1,
               attention_span: int | None = None) -> Configuration:
        """Heads given as (layer, head) numbers (1-based) set to 0; no mask at all if none is pruned."""
        if not heads:
            return cls(None, attention_span, state)
        mask = np.ones((n_layers, n_heads))
        for layer, head in heads:
            mask[layer - 1, head - 1] = 0.0
        return cls(tuple(map(tuple, mask.tolist())), attention_span, state)

    def mask_tensor(self):
        if self.head_mask is None:
            return None
        import torch

        return torch.tensor(self.head_mask, dtype=torch.float32)

    @property
    def key(self) -> str:
        """A short stable id (for sharing passes)."""
        text = repr((self.head_mask, self.attention_span, self.state)).encode()
        return hashlib.sha1(text).hexdigest()[:16]


@dataclass
class _Item:
    utterance: object
    frame_labels: np.ndarray | None
    probe_input: object | None  # None when over the memory budget: recomputed per pass
    n_steps: int


class ProbeData:
    """One split, read once: labels, speakers and the model inputs of every good utterance.

    Args:
        budget_bytes: keep model inputs in memory up to this size; beyond it,
            audio is re-read and features recomputed in each pass.
        batch_size: utterances per forward pass (sorted by length).
    """

    def __init__(self, model, corpus, utterances, *, reconstruction: bool = False, max_frames: int | None = None,
                 budget_bytes: int = 2 << 30, batch_size: int = 16,
                 progress: Callable[[int], None] | None = None):
        self.model, self.corpus = model, corpus
        self.reconstruction = reconstruction
        self.max_seconds = None if max_frames is None else frames_to_seconds(max_frames)
        self.batch_size = batch_size
        self.skipped: list[tuple[str, str]] = []
        self.items: list[_Item] = []
        used = 0

        def prepare(loaded):
            return model.probe_input(loaded.wave, reconstruction=reconstruction)

        for utt, loaded, item_input in corpus.prepared(utterances, prepare, max_seconds=self.max_seconds):
            if progress is not None:
                progress(1)
            if loaded is None:  # item_input holds the reason
                self.skipped.append((utt.id, item_input))
                continue
            size = sum(t.numel() * 4 for t in (item_input.features, item_input.target) if t is not None)
            keep = used + size <= budget_bytes
            used += size if keep else 0
            self.items.append(_Item(utt, loaded.frame_labels, item_input if keep else None,
                                    int(item_input.features.shape[0])))
        self.phone_set = list(corpus.phone_set.names)

    def _input(self, item: _Item):
        if item.probe_input is not None:
            return item.probe_input
        loaded = self.corpus.load(item.utterance, max_seconds=self.max_seconds)
        return self.model.probe_input(loaded.wave, reconstruction=self.reconstruction)

    def hidden_bytes(self) -> int:
        """Bytes of one configuration's hidden states over this split (float32)."""
        return 4 * self.model.hidden_size * sum(item.n_steps for item in self.items)

    def represent(self, configuration: Configuration, progress: Callable[[int], None] | None = None) -> ProbeSplit:
        """Run the model under ``configuration`` over the split (batched by length)."""
        return self.represent_many([configuration], progress)[0]

    def represent_many(self, configurations: Sequence[Configuration], progress: Callable[[int], None] | None = None,
                       *, max_sequences: int = 64) -> list[ProbeSplit]:
        """One :class:`ProbeSplit` per configuration, with as few forward passes as possible: the
        configurations that differ only in the hidden state kept share one pass, and pruned ones that
        share an attention span run side by side in one batch (up to ``max_sequences`` utterances per
        forward) when the model takes a head mask per utterance. The hidden states are exactly those of
        separate passes. ``progress(n)`` counts utterances of every pass."""
        jobs: dict[tuple, list[int]] = {}  # (head mask, span) -> hidden states wanted
        for c in configurations:
            states = jobs.setdefault((c.head_mask, c.attention_span), [])
            if c.state not in states:
                states.append(c.state)
        keys = list(jobs)
        hidden: dict[tuple[int, int], dict[int, np.ndarray]] = {}  # (job, state) -> utterance -> [step, dim]
        recon: dict[int, dict[int, object]] = {}  # job -> utterance -> Reconstruction
        order = sorted(range(len(self.items)), key=lambda i: self.items[i].n_steps)
        batches = [order[s:s + self.batch_size] for s in range(0, len(order), self.batch_size)]
        side_by_side = max(1, max_sequences // self.batch_size) if self.model.masks_per_utterance else 1
        groups: list[list[int]] = []  # jobs run together
        for span in dict.fromkeys(k[1] for k in keys):
            masked = [j for j, k in enumerate(keys) if k[1] == span and k[0] is not None]
            groups += [[j] for j, k in enumerate(keys) if k[1] == span and k[0] is None]  # the fused path, alone
            groups += [masked[s:s + side_by_side] for s in range(0, len(masked), side_by_side)]
        for group in groups:
            states = sorted({s for j in group for s in jobs[keys[j]]})
            if len(group) == 1:
                mask = Configuration(keys[group[0]][0]).mask_tensor()
            for batch in batches:
                inputs = [self._input(self.items[i]) for i in batch]
                if len(group) > 1:
                    import torch

                    mask = torch.stack([Configuration(keys[j][0]).mask_tensor() for j in group]).repeat_interleave(
                        len(batch), dim=0)
                reps = self.model.represent(inputs * len(group), state=states[0], head_mask=mask,
                                            attention_span=keys[group[0]][1], states=states)
                for g, j in enumerate(group):
                    for i, rep in zip(batch, reps[g * len(batch):(g + 1) * len(batch)]):
                        for state in jobs[keys[j]]:
                            hidden.setdefault((j, state), {})[i] = rep.states[state]
                        recon.setdefault(j, {})[i] = rep.reconstruction
                if progress is not None:
                    progress(len(batch) * len(group))
        out = []
        for c in configurations:
            j = keys.index((c.head_mask, c.attention_span))
            splits = []
            for i, item in enumerate(self.items):
                r = recon[j][i]
                splits.append(ProbeUtterance(
                    item.utterance.id, item.utterance.speaker, hidden[(j, c.state)][i], self.model.frames_per_step,
                    item.frame_labels, r.l1 if r else None, r.n_values if r else 0, r.mean_frame_l1 if r else None))
            out.append(ProbeSplit(splits, self.phone_set))
        return out


INPUT_FEATURES = ("log-Mel", "MFCC")


def input_feature_split(corpus, utterances, kind: str, *, max_frames: int | None = None,
                        progress: Callable[[int], None] | None = None) -> ProbeSplit:
    """The probes' inputs without any model: ``"log-Mel"`` (80 bins, -25 dB, per-utterance CMVN: what
    a Mockingjay model reads) or ``"MFCC"`` (13 + deltas + delta-deltas, CMVN), ``[frame, dim]`` at
    the 10 ms label rate. Probing them shows what pre-training added. Unreadable utterances are left out.

    Frames normalised per utterance average to zero, so the utterance-level tasks get, as each
    utterance's ``summary``, the mean and standard deviation over frames of the features *before*
    that normalisation (``[2 * dim]``: the classic statistics-pooling baseline for speaker identity).
    """
    from dataclasses import replace

    from satool.data.features import FeatureConfig, FeatureExtractor, mfcc

    if kind not in INPUT_FEATURES:
        raise ValueError(f"kind must be one of {INPUT_FEATURES}, got {kind!r}")
    if kind == "log-Mel":
        config = FeatureConfig()
        extract = FeatureExtractor(config)
        extract_raw = FeatureExtractor(replace(config, input=replace(config.input, cmvn=False)))
    else:
        extract, extract_raw = mfcc, functools.partial(mfcc, cmvn=False)
    max_seconds = None if max_frames is None else frames_to_seconds(max_frames)
    out = []
    for utt in utterances:
        try:
            loaded = corpus.load(utt, max_seconds=max_seconds)
        except InputError:
            continue
        finally:
            if progress is not None:
                progress(1)
        raw = np.asarray(extract_raw(loaded.wave), np.float64)
        summary = np.concatenate([raw.mean(axis=0), raw.std(axis=0)]).astype(np.float32)
        out.append(ProbeUtterance(utt.id, utt.speaker, np.asarray(extract(loaded.wave), np.float32), 1,
                                  loaded.frame_labels, summary=summary))
    return ProbeSplit(out, list(corpus.phone_set.names))
