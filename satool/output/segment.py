"""Figures of segmentation results: precision and recall over beta for every source (paper Fig. 2,
right) and, for chosen sources, one utterance's frames, kernel-Gram matrix, score curve and
boundaries (paper Fig. 2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from satool.output.figures import figure
from satool.results.segment import SegmentationExample, SegmentResults
from satool.timebase import FRAME_S


def draw(results: SegmentResults, out: Path) -> dict[str, Path]:
    """pr_curve.png (when any source has a precision-recall sweep)."""
    curves = [r for r in results.results if r.curve]
    if not curves:
        return {}
    path = out / "pr_curve.png"
    with figure(path, size=(5.5, 4.5)) as (fig, ax):
        for r in curves:
            # points, not a line: the number of boundaries is not monotonic in beta
            dots = ax.scatter([p["strict"]["recall"] for p in r.curve], [p["strict"]["precision"] for p in r.curve],
                              s=12, label=f"{r.source} (R = {100 * r.strict['r_value']:.1f})")
            ax.scatter([r.strict["recall"]], [r.strict["precision"]], marker="*", s=160,
                       color=dots.get_facecolor()[0], edgecolor="black", linewidth=0.6)
        ax.set_xlabel("recall (hit rate)")
        ax.set_ylabel("precision")
        ax.set_title(f"Precision and recall over beta (star: tuned), strict, {results.tolerance_s * 1000:.0f} ms",
                     fontsize=9)
        ax.legend(fontsize=7)
    return {"pr_png": path}


def draw_example(example: SegmentationExample, path: Path) -> Path:
    """Paper Fig. 2 for one utterance and source: frames, Gram matrix, score curve and boundaries."""
    v = example.frames
    seconds = len(v) * FRAME_S
    with figure(path, size=(14, 4.4), ncols=3) as (fig, axes):
        if example.kind == "attn":  # rows of the up-sampled map: query down, key across, weights from 0
            image = axes[0].imshow(v, aspect="auto", cmap="magma", interpolation="nearest", vmin=0,
                                   extent=(0, seconds, seconds, 0))
            axes[0].set_ylabel("query (s)")
            axes[0].set_xlabel("key (s)")
            fig.colorbar(image, ax=axes[0], label="attention weight (from 0)")
        else:
            image = axes[0].imshow(v.T, aspect="auto", cmap="magma", interpolation="nearest", origin="lower",
                                   extent=(0, seconds, 0, v.shape[1]))
            axes[0].set_ylabel("coefficient")
            axes[0].set_xlabel("time (s)")
            fig.colorbar(image, ax=axes[0], label="value (normalised per utterance)")
        axes[0].set_title(f"{example.source} ({'up-sampled map' if example.kind == 'attn' else 'features'})")
        gram = axes[1].imshow(example.gram, cmap="viridis", interpolation="nearest", vmin=0, vmax=1,
                              extent=(0, seconds, seconds, 0))
        fig.colorbar(gram, ax=axes[1], label="K (0..1)")
        axes[1].set_title(f"kernel-Gram matrix (alpha = {example.alpha:.3g})")
        axes[1].set_xlabel("time (s)")
        time_axis = np.arange(len(example.score)) * FRAME_S
        axes[2].plot(time_axis, example.score, lw=1, color="black", label="score S")
        for i, t in enumerate(example.reference):
            axes[2].axvline(t * FRAME_S, color="tab:green", lw=0.8, alpha=0.7, label="true" if i == 0 else None)
        for i, t in enumerate(example.predicted):
            axes[2].axvline(t * FRAME_S, color="tab:red", lw=0.8, ls="--", alpha=0.8,
                            label="predicted" if i == 0 else None)
        axes[2].set_title(f"score curve (beta = {example.beta:.3g}): minima = boundaries")
        axes[2].set_xlabel("time (s)")
        axes[2].legend(fontsize=7, loc="upper right")
        fig.suptitle(f"Phoneme segmentation of {example.utterance}", fontsize=10)
    return path
