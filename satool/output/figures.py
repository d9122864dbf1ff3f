"""Figures: the one place that sets up matplotlib (headless, ``figure``), and the paper's figures
drawn from saved results (every function writes one PNG).

Each function takes plain arrays / result objects, so ``satool report`` can
redraw everything from the CSV/JSON/NPZ files the stages save.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


@contextlib.contextmanager
def figure(path: str | Path, size: tuple[float, float] = (6, 4), nrows: int = 1, ncols: int = 1, squeeze: bool = True,
           **kwargs):
    """``with figure('x.png') as (fig, ax): ...`` saves the PNG (150 dpi) and closes the figure."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, figsize=size, squeeze=squeeze, **kwargs)
    try:
        yield fig, axes
        if not fig.get_layout_engine():  # figures made with layout="constrained" lay themselves out
            fig.tight_layout()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=150)
    finally:
        plt.close(fig)


def _layer_colours(n_layers: int):
    import matplotlib

    return matplotlib.colormaps["viridis"](np.linspace(0, 0.95, max(n_layers, 1)))


def head_distribution(scores, path: str | Path) -> Path:
    """Every head's globalness, verticality and diagonality, coloured by layer (3 scatter panels)."""
    pairs = [("globalness", "verticality"), ("globalness", "diagonality"), ("verticality", "diagonality")]
    pairs = [(a, b) for a, b in pairs if a in scores.values and b in scores.values]
    colours = _layer_colours(len(scores.layers))
    with figure(path, size=(4.2 * max(len(pairs), 1), 4), ncols=max(len(pairs), 1)) as (fig, axes):
        axes = np.atleast_1d(axes)
        for ax, (x, y) in zip(axes, pairs):
            for i, layer in enumerate(scores.layers):
                ax.scatter(scores.values[x][i], scores.values[y][i], s=18, color=colours[i], label=f"layer {layer}")
            ax.set_xlabel(x)
            ax.set_ylabel(y)
        if pairs:
            axes[-1].legend(fontsize=7, loc="best", ncol=2 if len(scores.layers) > 6 else 1)
        fig.suptitle(f"Head distribution ({scores.utterances} utterances)")
    return Path(path)


def attention_grid(maps: Mapping[str, Sequence[tuple[str, np.ndarray]]], path: str | Path, title: str,
                   step_s: float | None = None) -> Path:
    """Rows = groups (e.g. metrics), columns = ``(label, map[query, key])`` pairs.

    Every panel shares one colour scale, from 0 to the largest weight shown, with a colour bar: a
    near-uniform head looks near-uniform beside a peaked one. Axes are in seconds when ``step_s``
    (seconds per model step) is given.
    """
    rows = [(name, items) for name, items in maps.items() if items]
    n_cols = max((len(items) for _, items in rows), default=1)
    vmax = max((float(np.max(a)) for _, items in rows for _, a in items), default=1.0) or 1.0
    with figure(path, size=(2.4 * n_cols + 1.4, 2.4 * max(len(rows), 1) + 0.4), nrows=max(len(rows), 1),
                ncols=n_cols, layout="constrained") as (fig, axes):
        axes = np.array(axes).reshape(max(len(rows), 1), n_cols)
        image = None
        for r, (name, items) in enumerate(rows):
            for c in range(n_cols):
                ax = axes[r, c]
                if c >= len(items):
                    ax.axis("off")
                    continue
                label, a = items[c]
                extent = None if step_s is None else (0, a.shape[1] * step_s, a.shape[0] * step_s, 0)
                image = ax.imshow(a, cmap="magma", interpolation="nearest", aspect="equal", vmin=0, vmax=vmax,
                                  extent=extent)
                ax.set_title(label, fontsize=8)
                ax.tick_params(labelsize=6)
                if c == 0:
                    ax.set_ylabel(f"{name}\nquery" + (" (s)" if step_s else " (step)"), fontsize=8)
                if r == len(rows) - 1:
                    ax.set_xlabel("key" + (" (s)" if step_s else " (step)"), fontsize=7)
        if image is not None:
            fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label=f"attention weight (one scale, 0..{vmax:.3g})")
        fig.suptitle(title, fontsize=10)
    return Path(path)


def relation_map(matrix: np.ndarray, phones: Sequence[str], path: str | Path, title: str,
                 *, diverging: bool = True, bound: float | None = None) -> Path:
    """A phone x phone heat map (rows = query phone, columns = key phone). ``bound``: the diverging
    scale's limit (give one bound to every head drawn so that their maps compare)."""
    size = max(5.0, 0.16 * len(phones) + 2)
    with figure(path, size=(size + 1, size)) as (fig, ax):
        finite = matrix[np.isfinite(matrix)]
        if diverging:
            if bound is None:
                bound = float(np.nanpercentile(np.abs(finite), 99)) if finite.size else 1.0
            image = ax.imshow(matrix, cmap="RdBu_r", vmin=-bound, vmax=bound, interpolation="nearest")
        else:
            image = ax.imshow(matrix, cmap="viridis", interpolation="nearest")
        ax.set_xticks(range(len(phones)), phones, rotation=90, fontsize=6)
        ax.set_yticks(range(len(phones)), phones, fontsize=6)
        ax.set_xlabel("key phone (attended to)")
        ax.set_ylabel("query phone")
        ax.set_title(title, fontsize=10)
        fig.colorbar(image, ax=ax, shrink=0.8)
    return Path(path)


def verticality_vs_concentration(verticality: np.ndarray, concentration: np.ndarray, labels: Sequence[str],
                                 layers: np.ndarray, path: str | Path) -> Path:
    """Paper Fig. 4: each head's verticality against its strongest phone concentration."""
    colours = _layer_colours(int(layers.max()) if len(layers) else 1)
    with figure(path, size=(6, 4.5)) as (fig, ax):
        for layer in sorted(set(layers.tolist())):
            sel = layers == layer
            ax.scatter(verticality[sel], concentration[sel], s=18, color=colours[layer - 1], label=f"layer {layer}")
        order = np.argsort(-concentration)[:5]
        for i in order:
            ax.annotate(labels[i], (verticality[i], concentration[i]), fontsize=7)
        ax.set_xlabel("verticality")
        ax.set_ylabel("max over phones of concentration C_h[n]")
        ax.set_title("Vertical heads focus on particular phones")
        ax.legend(fontsize=7)
    return Path(path)


def offset_profiles(profile: np.ndarray, labels: Sequence[str], path: str | Path, *, step_s: float | None = None,
                    title: str = "Offset profiles") -> Path:
    """Mean weight by relative offset, in units of uniform attention, one line per head.

    ``profile[head, offset]`` over offsets ``-M..M`` (model steps); a dashed line marks uniform
    attention (1) and a dotted one the locality threshold (5x). With ``step_s`` the axis is in
    milliseconds.
    """
    from satool.results.metrics import LOCAL_RATIO

    max_offset = (profile.shape[-1] - 1) // 2
    offsets = np.arange(-max_offset, max_offset + 1)
    x = offsets * step_s * 1000 if step_s else offsets
    with figure(path, size=(7, 4)) as (fig, ax):
        for row, label in zip(profile, labels):
            ax.plot(x, row, marker="o", ms=2.5, lw=1, label=label)
        ax.axhline(1, color="gray", ls="--", lw=0.8, label="uniform attention (1x)")
        ax.axhline(LOCAL_RATIO, color="gray", ls=":", lw=0.8, label=f"local threshold ({LOCAL_RATIO:g}x)")
        ax.set_ylim(bottom=0)
        ax.set_xlabel("key offset from the query (ms)" if step_s else "key offset from the query (model steps)")
        ax.set_ylabel("mean weight / uniform weight")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7, ncol=2)
    return Path(path)


def weight_histograms(shares: np.ndarray, labels: Sequence[str], path: str | Path, *, title: str) -> Path:
    """Every head's share of attention weights per power-of-two bin (``shares[head, bin]``, bins of
    ``HISTOGRAM_LOWER_EDGES``): one row per head, one scale (0..the largest share) with a bar."""
    from satool.results.metrics import HISTOGRAM_LOWER_EDGES as LOWER_EDGES

    height = max(3.0, 0.14 * len(labels) + 1.6)
    with figure(path, size=(8, height)) as (fig, ax):
        vmax = float(np.nanmax(shares)) if np.isfinite(shares).any() else 1.0
        image = ax.imshow(shares, cmap="viridis", vmin=0, vmax=vmax, aspect="auto", interpolation="nearest")
        ticks = [0] + list(range(1, len(LOWER_EDGES), 4)) + [len(LOWER_EDGES) - 1]
        names = ["0"] + [f"2^{int(np.log2(LOWER_EDGES[k]))}" for k in ticks[1:]]
        ax.set_xticks(ticks, names, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=max(4, min(8, int(300 / max(len(labels), 1)))))
        ax.set_xlabel("attention weight (bin = one power of two, from its lower edge; 0 = exactly zero)")
        ax.set_ylabel("head")
        ax.set_title(title, fontsize=10)
        fig.colorbar(image, ax=ax, shrink=0.8, label=f"share of the head's weights (0..{vmax:.2g})")
    return Path(path)
