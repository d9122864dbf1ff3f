"""Figures of phone relation results: P_h heat maps of chosen heads on one shared diverging scale
(paper Fig. 3) with phones grouped by broad class, and every head's verticality against its strongest
phone concentration (paper Fig. 4)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from satool.output import figures
from satool.results.relations import Relations

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


def draw(relations: Relations, chosen: Sequence[int], out_dir: str | Path, *, prefix: str = "") -> dict[str, Any]:
    """Heat maps (P_h) of the heads at indices ``chosen``, named ``relation_<head>.png`` (after
    ``prefix``), plus ``verticality_vs_concentration.png`` (Fig. 4)."""
    out = Path(out_dir)
    present = set(np.flatnonzero(np.diag(relations.p_uniform) > 0).tolist())
    order = [i for i in display_order(relations.phones) if i in present]
    names = [relations.phones[i] for i in order]
    paths: dict[str, Any] = {"maps": []}
    norm = relations.p_norm
    drawn = norm[list(chosen)][:, order][:, :, order] if len(chosen) else np.zeros((0,))
    finite = np.abs(drawn[np.isfinite(drawn)])
    bound = float(np.percentile(finite, 99)) if finite.size else 1.0  # one scale for every map drawn
    for h in chosen:
        label = relations.labels[h]
        paths["maps"].append(figures.relation_map(
            norm[h][np.ix_(order, order)], names, out / f"{prefix}relation_{label}.png",
            f"{prefix}{label}: P_h = (P' - P_U) / P_U (red = preference, blue = avoidance; one scale, "
            f"+-{bound:.3g})", bound=bound))
    if relations.verticality is not None and not prefix:
        paths["fig4"] = figures.verticality_vs_concentration(
            relations.verticality, relations.strongest_concentration(), relations.labels, relations.layers,
            out / "verticality_vs_concentration.png")
    return paths
