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

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from satool.errors import InputError

# Broad phone classes, so heat maps read vowels | stops | ... | silence.
_CLASS_ORDER = [
    "aa ae ah ao aw ay eh er ey ih iy ow oy uh uw",
    "b d g k p t dx",
    "ch jh",
    "dh f hh s sh th v z zh",
    "m n ng",
    "l r w y",
    "sil",
]


def display_order(phones: Sequence[str]) -> list[int]:
    """Indices of ``phones`` grouped by broad class (vowels, stops, affricates, fricatives, nasals, glides, sil)."""
    rank = {p: (c, i) for c, group in enumerate(_CLASS_ORDER) for i, p in enumerate(group.split())}
    return sorted(range(len(phones)), key=lambda i: rank.get(phones[i].lower(), (len(_CLASS_ORDER), i)))


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


@dataclass
class Relations:
    """Corpus-level relation maps of a set of heads."""

    labels: list[str]  # head labels 'L3.H7'
    layers: np.ndarray  # int [head]
    heads: np.ndarray  # int [head]
    phones: list[str]
    p_prime: np.ndarray  # [head, query phone, key phone]
    p_uniform: np.ndarray  # [query phone, key phone]
    utterances: int
    verticality: np.ndarray | None = None  # [head] (for Fig. 4)

    @property
    def p_norm(self) -> np.ndarray:
        """P_h = (P'_h - P_U) / P_U, NaN where P_U = 0: ``[head, m, n]``."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.p_uniform > 0, (self.p_prime - self.p_uniform) / self.p_uniform, np.nan)

    @property
    def concentration(self) -> np.ndarray:
        """C_h[n]: mean over query phones m (with P_U[m, n] > 0) of P_h[m, n]: ``[head, phone]``."""
        p = self.p_norm
        with np.errstate(invalid="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                return np.nanmean(p, axis=1)

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        """relations.npz, relations.csv (long format) and concentration.csv."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            out / "relations.npz", labels=np.array(self.labels), layers=self.layers, heads=self.heads,
            phones=np.array(self.phones), p_prime=self.p_prime, p_uniform=self.p_uniform, p_norm=self.p_norm,
            concentration=self.concentration, utterances=self.utterances,
            verticality=self.verticality if self.verticality is not None else np.array([]),
        )
        norm = self.p_norm
        with open(out / "relations.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["layer", "head", "query_phone", "key_phone", "p_prime", "p_uniform", "p_norm"])
            for h in range(len(self.labels)):
                for m, pm in enumerate(self.phones):
                    for n, pn in enumerate(self.phones):
                        if self.p_uniform[m, n] > 0:
                            w.writerow([self.layers[h], self.heads[h], pm, pn, f"{self.p_prime[h, m, n]:.6g}",
                                        f"{self.p_uniform[m, n]:.6g}", f"{norm[h, m, n]:.6g}"])
        concentration = self.concentration
        with open(out / "concentration.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["layer", "head", "phone", "concentration", "verticality"])
            for h in range(len(self.labels)):
                vert = "" if self.verticality is None else f"{self.verticality[h]:.6g}"
                for n, phone in enumerate(self.phones):
                    if np.isfinite(concentration[h, n]):
                        w.writerow([self.layers[h], self.heads[h], phone, f"{concentration[h, n]:.6g}", vert])
        return {"npz": out / "relations.npz", "csv": out / "relations.csv",
                "concentration": out / "concentration.csv"}


def relate(stream, layers: Sequence[int], heads: Sequence[int], phones: Sequence[str], *,
           progress: Callable[[int], None] | None = None) -> Relations:
    """Accumulate P' (every stored head) and P_U over ``(attn[layer, head, q, k], meta)`` pairs.

    Utterances without frame labels are skipped. Also accumulates every head's
    verticality (for the verticality-vs-concentration figure). Nothing keeps a
    reference to ``attn``, so the stream may reuse one buffer.
    """
    from satool.analysis.metrics import verticality

    n_phones = len(phones)
    n_heads = len(layers) * len(heads)
    p_prime = np.zeros((n_heads, n_phones, n_phones))
    p_uniform = np.zeros((n_phones, n_phones))
    vert = np.zeros(n_heads)
    used = 0
    for attn, meta in stream:
        if progress is not None:
            progress(1)
        labels = meta.get("frame_labels")
        if labels is None:
            continue
        rate = int(meta["frames_per_step"])
        n_steps = attn.shape[-1]
        counts = step_label_counts(labels, n_steps, rate, n_phones)  # [step, phone]
        total_frames = n_steps * rate
        a = row_normalised(attn.reshape(n_heads, n_steps, n_steps))
        # c^T Â c for all heads: [head, phone, phone]
        p_prime += np.einsum("sm,hst,tn->hmn", counts, a, counts, optimize=True) / (rate * total_frames)
        freq = counts.sum(axis=0) / total_frames
        p_uniform += np.outer(freq, freq)
        vert += verticality(attn).ravel()
        used += 1
    if used == 0:
        raise InputError("no utterance has phone labels: extract with alignments (--alignments) first")
    grid_layers = np.repeat(np.asarray(layers), len(heads))
    grid_heads = np.tile(np.asarray(heads), len(layers))
    labels_ = [f"L{layer}.H{head}" for layer, head in zip(grid_layers, grid_heads)]
    return Relations(labels_, grid_layers, grid_heads, list(phones), p_prime / used, p_uniform / used, used,
                     vert / used)


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


def write_figures(relations: Relations, chosen: Sequence[int], out_dir: str | Path) -> dict[str, Any]:
    """Heat maps (P_h) of the chosen heads with phone names on both axes, plus Fig. 4."""
    from satool.output import figures

    out = Path(out_dir)
    present = np.flatnonzero(np.diag(relations.p_uniform) > 0)
    order = [i for i in display_order(relations.phones) if i in set(present.tolist())]
    names = [relations.phones[i] for i in order]
    paths: dict[str, Any] = {"maps": []}
    norm = relations.p_norm
    drawn = norm[list(chosen)][:, order][:, :, order] if len(chosen) else np.zeros((0,))
    finite = np.abs(drawn[np.isfinite(drawn)])
    bound = float(np.percentile(finite, 99)) if finite.size else 1.0  # one scale for every map drawn
    for h in chosen:
        matrix = norm[h][np.ix_(order, order)]
        label = relations.labels[h]
        paths["maps"].append(figures.relation_map(
            matrix, names, out / f"relation_{label}.png",
            f"{label}: P_h = (P' - P_U) / P_U (red = preference, blue = avoidance; one scale, +-{bound:.3g})",
            bound=bound,
        ))
    if relations.verticality is not None:
        strongest = np.nanmax(np.where(np.isfinite(relations.concentration), relations.concentration, -np.inf),
                              axis=1)
        paths["fig4"] = figures.verticality_vs_concentration(
            relations.verticality, strongest, relations.labels, relations.layers,
            out / "verticality_vs_concentration.png",
        )
    return paths


def top_heads(values: np.ndarray, n: int) -> list[int]:
    """Indices of the ``n`` highest ``values`` (NaN last; ties in head order)."""
    return list(np.argsort(-np.nan_to_num(np.asarray(values, dtype=float), nan=-np.inf), kind="stable")[:n])


def save_all(relations: Relations, chosen: Sequence[int], out_dir: str | Path) -> dict[str, Any]:
    """Arrays and tables (:meth:`Relations.save`) plus the figures of the chosen heads and Fig. 4."""
    paths: dict[str, Any] = dict(relations.save(out_dir))
    paths.update(write_figures(relations, chosen, out_dir))
    return paths
