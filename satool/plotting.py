"""Figures: one place that sets up matplotlib (headless) and saves PNGs."""

from __future__ import annotations

import contextlib
from pathlib import Path


@contextlib.contextmanager
def figure(path: str | Path, size: tuple[float, float] = (6, 4), nrows: int = 1, ncols: int = 1, **kwargs):
    """``with figure('x.png') as (fig, ax): ...`` saves the PNG (150 dpi) and closes the figure."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, figsize=size, squeeze=True, **kwargs)
    try:
        yield fig, axes
        if not fig.get_layout_engine():  # figures made with layout="constrained" lay themselves out
            fig.tight_layout()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=150)
    finally:
        plt.close(fig)
