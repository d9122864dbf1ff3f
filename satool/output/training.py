"""Figures of pre-training curves, beside the checkpoint: the training loss, the held-out checks
against training steps (masked L1 beside the baselines, head locality), and the favourite offset of
the most local heads against training steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from satool.heads import label
from satool.output.figures import figure
from satool.results.health import BASELINES
from satool.results.metrics import LOCAL_RATIO
from satool.results.training import TrainingCurves


def draw(curves: TrainingCurves, out: Path, *, heads: int = 4) -> dict[str, Path]:
    """OUT.loss.png, OUT.heldout.png and OUT.offsets.png (those with data to draw)."""
    out = Path(out)
    paths = {}
    if curves.history:
        paths["loss_png"] = loss_figure(curves.history, out.with_name(out.name + ".loss.png"))
    if curves.checks:
        paths["heldout_png"] = heldout_figure(curves.checks, out.with_name(out.name + ".heldout.png"))
    if curves.head_checks:
        paths["offsets_png"] = offsets_figure(curves, out.with_name(out.name + ".offsets.png"), heads=heads)
    return paths


def loss_figure(history: list[dict[str, float]], path: Path) -> Path:
    with figure(path, size=(6, 3.5)) as (fig, ax):
        steps = [h["step"] for h in history]
        losses = [h["loss"] for h in history]
        ax.plot(steps, losses, lw=0.6, alpha=0.5, label="loss per step")
        window = max(1, len(losses) // 50)
        if window > 1:
            smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
            ax.plot(steps[window - 1:], smooth, lw=1.5, label=f"mean of {window}")
        ax.set_xlabel("step")
        ax.set_ylabel("masked L1")
        ax.set_title("Masked acoustic model pre-training")
        ax.legend()
    return path


def heldout_figure(checks: list[dict[str, float]], path: Path) -> Path:
    """Held-out masked L1 beside the four baselines and attention-off, and head locality."""
    checks = sorted(checks, key=lambda c: c["step"])
    steps = [c["step"] for c in checks]
    with figure(path, size=(10, 3.8), ncols=2) as (fig, axes):
        ax = axes[0]
        ax.plot(steps, [c["heldout_l1"] for c in checks], marker="o", ms=3, lw=1.5, color="black", label="model")
        ax.plot(steps, [c["attention_off_l1"] for c in checks], marker="o", ms=3, lw=1, color="tab:red",
                label="model, attention off")
        for name, style in zip(BASELINES, (":", "-.", "--", (0, (5, 1)))):
            ax.axhline(checks[-1][f"{name}_l1"], color="gray", lw=1, ls=style, label=f"baseline: {name}")
        ax.set_xlabel("training step")
        ax.set_ylabel("held-out masked L1 (lower is better)")
        ax.set_title(f"Held-out masked L1 ({checks[-1]['utterances']} utterances, fixed masks)", fontsize=9)
        ax.legend(fontsize=7)
        ax = axes[1]
        ax.plot(steps, [c["max_locality"] for c in checks], marker="o", ms=3, color="black",
                label="most local head")
        ax.axhline(LOCAL_RATIO, color="gray", ls="--", lw=0.8, label=f"{LOCAL_RATIO:g}x (local)")
        ax.axhline(1, color="gray", ls=":", lw=0.8, label="1x (uniform)")
        ax.set_ylim(bottom=0)
        ax.set_xlabel("training step")
        ax.set_ylabel("weight at favourite offset / uniform weight")
        ax.set_title("Locality of heads", fontsize=9)
        counts = ax.twinx()
        counts.plot(steps, [c["heads_ge_3x"] for c in checks], marker="s", ms=3, lw=0.8, color="tab:blue",
                    label="heads >= 3x (right axis)")
        counts.plot(steps, [c[f"heads_ge_{LOCAL_RATIO:g}x"] for c in checks], marker="^", ms=3, lw=0.8,
                    color="tab:orange", label=f"heads >= {LOCAL_RATIO:g}x (right axis)")
        counts.set_ylabel("number of heads")
        counts.set_ylim(bottom=0)
        lines = ax.get_legend_handles_labels()
        more = counts.get_legend_handles_labels()
        ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7)
    return path


def offsets_figure(curves: TrainingCurves, path: Path, *, heads: int = 4) -> Path:
    """The favourite offset (left) and locality (right) of the ``heads`` heads most local at the last
    check, against training steps. Offsets in ms when the step length is known."""
    checks = sorted(curves.head_checks, key=lambda c: c["step"])
    steps = [c["step"] for c in checks]
    local = np.array([c["locality"] for c in checks], dtype=float)  # [check, layer, head]
    offset = np.array([c["favourite_offset"] for c in checks], dtype=float)
    last = np.where(np.isfinite(local[-1]), local[-1], -np.inf).ravel()
    chosen = np.argsort(-last, kind="stable")[:heads]
    n_heads = local.shape[2]
    scale = curves.step_ms or 1.0
    with figure(path, size=(10, 3.8), ncols=2) as (fig, axes):
        for flat in chosen:
            i, j = divmod(int(flat), n_heads)
            name = label(i + 1, j + 1)
            axes[0].plot(steps, offset[:, i, j] * scale, marker="o", ms=3, lw=1, label=name)
            axes[1].plot(steps, local[:, i, j], marker="o", ms=3, lw=1, label=name)
        axes[0].axhline(0, color="gray", lw=0.8, ls=":", label="main diagonal (0)")
        axes[0].set_ylabel("favourite offset (ms, key - query)" if curves.step_ms else "favourite offset (steps)")
        axes[0].set_title("Where the most local heads look", fontsize=9)
        axes[1].axhline(LOCAL_RATIO, color="gray", ls="--", lw=0.8, label=f"{LOCAL_RATIO:g}x (local)")
        axes[1].set_ylim(bottom=0)
        axes[1].set_ylabel("weight at favourite offset / uniform weight")
        axes[1].set_title("How much weight they put there", fontsize=9)
        for ax in axes:
            ax.set_xlabel("training step")
            ax.legend(fontsize=7)
        fig.suptitle(f"The {len(chosen)} heads most local at step {steps[-1]}, through training", fontsize=10)
    return path
