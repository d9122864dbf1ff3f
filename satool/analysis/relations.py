"""Phone relation maps of heads (`satool relate`, docs/science.md §6 with the authors' erratum).

For a head h, with frame labels y over the phone set Y and the up-sampled map
A (docs/science.md §4):

- ``P'_h[m, n] = E_u[(1/T) sum_q sum_k 1[y_q=m] 1[y_k=n] A[q, k]]``,
- ``P_U[m, n] = E_u[(1/T^2) sum_q sum_k 1[y_q=m] 1[y_k=n]]`` (uniform attention),
- ``P_h = (P'_h - P_U) / P_U`` (NaN where P_U = 0),
- ``C_h[n] = mean over m of P_h[m, n]`` (phones m with P_U[m, n] > 0).

The up-sampled map is never built. With R label frames per step, ``c[k, m]``
the number of frames of step k labelled m, and ``Â`` the map with every row
normalised to sum to 1 (all-zero rows stay zero), the up-sampled map is
``Â[q//R, k//R] / R``, hence
``sum_{q,k} 1[y_q=m] 1[y_k=n] A_up[q, k] = (c^T Â c)[m, n] / R`` and
``P'_h = c^T Â c / (R T)`` with T = R x steps label frames. Frames past
``R * steps`` and unlabelled frames (-1) count in T but in no phone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from satool.errors import InputError
from satool.heads import label
from satool.results.relations import Relations


def step_label_counts(frame_labels: np.ndarray, n_steps: int, frames_per_step: int, n_phones: int) -> np.ndarray:
    """float64 ``[step, phone]``: how many of each step's label frames carry each phone."""
    labels = np.asarray(frame_labels)[: n_steps * frames_per_step]
    counts = np.zeros((n_steps, n_phones))
    valid = labels >= 0
    steps = np.arange(len(labels)) // frames_per_step
    np.add.at(counts, (steps[valid], labels[valid].astype(int)), 1.0)
    return counts


def row_normalised(attn: np.ndarray) -> np.ndarray:
    """Rows scaled to sum to 1 (all-zero rows stay zero): ``[..., query, key]``."""
    sums = attn.sum(axis=-1, keepdims=True, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sums > 0, attn / np.where(sums > 0, sums, 1.0), 0.0)


class RelationSums:
    """The sums a relation pass accumulates: P' of every head and P_U, each summed over the aligned
    utterances, and every head's verticality (for Fig. 4). Shards merge by adding
    (:meth:`arrays`, :meth:`from_arrays`); :meth:`relations` divides by the utterance count."""

    def __init__(self, layers: Sequence[int], heads: Sequence[int], phones: Sequence[str]):
        self.layers, self.heads, self.phones = [int(v) for v in layers], [int(v) for v in heads], list(phones)
        n_heads, n_phones = len(self.layers) * len(self.heads), len(self.phones)
        self.p_prime = np.zeros((n_heads, n_phones, n_phones))
        self.p_uniform = np.zeros((n_phones, n_phones))
        self.verticality = np.zeros(n_heads)
        self.used = 0

    def add(self, p_prime: np.ndarray, p_uniform: np.ndarray, verticality: np.ndarray) -> None:
        """One aligned utterance's P' ``[head, m, n]``, P_U ``[m, n]`` and verticality ``[head]``."""
        self.p_prime += p_prime
        self.p_uniform += p_uniform
        self.verticality += verticality
        self.used += 1

    def add_maps(self, attn: np.ndarray, meta) -> bool:
        """One utterance's maps ``attn[layer, head, q, k]``; False (nothing added) without frame labels."""
        from satool.analysis.metrics import verticality

        labels = meta.get("frame_labels")
        if labels is None:
            return False
        rate = int(meta["frames_per_step"])
        n_steps = attn.shape[-1]
        n_heads, n_phones = self.p_prime.shape[:2]
        counts = step_label_counts(labels, n_steps, rate, n_phones)  # [step, phone]
        total_frames = n_steps * rate
        a = row_normalised(attn.reshape(n_heads, n_steps, n_steps))
        # c^T Â c for all heads: [head, phone, phone]
        p_prime = np.einsum("sm,hst,tn->hmn", counts, a, counts, optimize=True) / (rate * total_frames)
        self.add(p_prime, uniform_relation(counts, total_frames), verticality(attn).ravel())
        return True

    def relations(self) -> Relations:
        if self.used == 0:
            raise InputError("no utterance has phone labels: extract with alignments (--alignments) first")
        grid_layers = np.repeat(np.asarray(self.layers), len(self.heads))
        grid_heads = np.tile(np.asarray(self.heads), len(self.layers))
        labels_ = [label(layer, head) for layer, head in zip(grid_layers, grid_heads)]
        used = self.used
        return Relations(labels_, grid_layers, grid_heads, list(self.phones), self.p_prime / used,
                         self.p_uniform / used, used, self.verticality / used)

    def describe(self) -> dict[str, Any]:
        return {"layers": self.layers, "heads": self.heads, "phones": self.phones}

    def arrays(self) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        arrays = {"relate/p_prime": self.p_prime, "relate/p_uniform": self.p_uniform,
                  "relate/verticality": self.verticality, "relate/used": np.float64(self.used)}
        return arrays, {k: "sum" for k in arrays}

    @classmethod
    def from_arrays(cls, described: dict[str, Any], arrays: dict[str, np.ndarray], *, where=None) -> RelationSums:
        def fail(message: str):
            raise InputError(message, path=where)

        try:
            layers, heads = [int(v) for v in described["layers"]], [int(v) for v in described["heads"]]
            phones = [str(v) for v in described["phones"]]
        except (KeyError, TypeError, ValueError):
            fail("the relation settings do not name layers, heads and phones")
        if not (layers and heads and phones) or len(layers) * len(heads) * len(phones) ** 2 > 50_000_000:
            fail("the relation settings hold impossible layers, heads or phones")
        sums = cls(layers, heads, phones)
        expected, _ = sums.arrays()
        for name, template in expected.items():
            got = arrays.get(name)
            if got is None or np.shape(got) != np.shape(template):
                fail(f"{name} must be an array of shape {list(np.shape(template))}")
        used = arrays["relate/used"]
        if used < 0 or used != np.round(used):
            fail("relate/used must be a whole number >= 0")
        if (arrays["relate/p_prime"] < 0).any() or (arrays["relate/p_uniform"] < 0).any() \
                or (arrays["relate/p_prime"] > used + 1e-6).any() or (arrays["relate/p_uniform"] > used + 1e-6).any():
            fail("relation sums must lie between 0 and the utterance count")
        sums.p_prime, sums.p_uniform = arrays["relate/p_prime"].copy(), arrays["relate/p_uniform"].copy()
        sums.verticality, sums.used = arrays["relate/verticality"].copy(), int(used)
        return sums


def uniform_relation(counts: np.ndarray, total_frames: int) -> np.ndarray:
    """P_U of one utterance from its step label counts ``[step, phone]``."""
    freq = counts.sum(axis=0) / total_frames
    return np.outer(freq, freq)


def relate(stream, layers: Sequence[int], heads: Sequence[int], phones: Sequence[str], *,
           progress: Callable[[int], None] | None = None) -> Relations:
    """Accumulate P' (every stored head) and P_U over ``(attn[layer, head, q, k], meta)`` pairs.

    Utterances without frame labels are skipped. Also accumulates every head's
    verticality (for the verticality-vs-concentration figure). Nothing keeps a
    reference to ``attn``, so the stream may reuse one buffer.
    """
    sums = RelationSums(layers, heads, phones)
    for attn, meta in stream:
        if progress is not None:
            progress(1)
        sums.add_maps(attn, meta)
    return sums.relations()


def relate_upsampled_reference(attn_map: np.ndarray, frame_labels: np.ndarray, rate: int,
                               n_phones: int) -> tuple[np.ndarray, np.ndarray]:
    """(P', P_U) of ONE head and ONE utterance, computed the direct way on the up-sampled map.

    Builds the Kronecker up-sampled, row-renormalised map (docs/science.md §4);
    for tests and for readers who want to see the definition at work.
    """
    from satool.analysis.segmentation import upsample_attention

    up = upsample_attention(attn_map, rate)
    t = up.shape[0]
    y = np.asarray(frame_labels)[:t]
    onehot = np.zeros((t, n_phones))
    valid = y >= 0
    onehot[np.flatnonzero(valid), y[valid].astype(int)] = 1.0
    return onehot.T @ up @ onehot / t, np.outer(onehot.sum(0), onehot.sum(0)) / t**2


def select_heads(relations: Relations, chosen: Sequence[tuple[int, int]]) -> list[int]:
    """Indices into ``relations`` of the chosen (layer, head) numbers."""
    from satool.heads import check

    index = {(int(layer), int(head)): i for i, (layer, head) in enumerate(zip(relations.layers, relations.heads))}
    check(chosen, sorted({layer for layer, _ in index}), sorted({head for _, head in index}))
    return [index[c] for c in chosen]


def parse_heads(text: str) -> list[tuple[int, int]]:
    """'L3.H7,L1.H2' (or '3.7') -> [(3, 7), (1, 2)] (1-based layer and head numbers)."""
    from satool.heads import parse_list

    return parse_list(text)


def top_heads(values: np.ndarray, n: int) -> list[int]:
    """Indices of the ``n`` highest ``values`` (NaN last; ties in head order)."""
    return list(np.argsort(-np.nan_to_num(np.asarray(values, dtype=float), nan=-np.inf), kind="stable")[:n])
