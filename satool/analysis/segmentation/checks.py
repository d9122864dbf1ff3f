"""Shared settings and argument checks of the segmentation code (one-line UsageErrors)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from satool.errors import UsageError

DEFAULT_TOLERANCE_S = 0.02
"""The paper's (and Räsänen et al.'s) hit tolerance: 20 ms."""

TOLERANCE_SLACK_S = 1e-9
"""Added to the tolerance so that float rounding never decides a hit: a
prediction hits a reference when ``|t_pred - t_ref| <= tolerance + 1e-9``
(0.05 - 0.03 is 0.020000000000000004 in binary floating point)."""

ALPHA_MULTIPLIERS = np.logspace(-1.0, 1.0, 9)
""":func:`default_alpha_grid`: alpha = these x the median within-utterance
distance between frames (0.1 ... 10, log-spaced)."""

DEFAULT_BETAS = np.array([
    0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.15, 1.2,
    1.3, 1.4, 1.5, 1.6, 1.8, 2.0, 2.25, 2.5, 2.75, 3.0,
])
"""Default beta grid: 24 values from 0.3 to 3.0, denser around 1.

Why: ``K[i, i] = 1`` and ``eps_i = beta * mean_i(K)``, so rows whose mean
kernel value reaches ``1/beta`` are empty. With wide kernels (alpha of a few
median frame distances or more) every row mean is close to 1, only betas
within about +-0.1 of 1 give any boundaries, and 0.05 steps matter; with
narrow kernels (alpha ~ 0.1-0.5 x the median distance) betas from 0.3 to 3
all give between ~0.2 and ~1.3 boundaries per reference boundary on MFCC
and log-Mel features (docs/segmentation.md has the measured counts). The
number of boundaries is not monotonic in beta once rows start to empty."""


def _check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise UsageError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_number(value: Any, name: str, *, positive: bool = False) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(x) or x < 0 or (positive and x == 0):
        kind = "a positive" if positive else "a non-negative"
        raise UsageError(f"{name} must be {kind} finite number, got {value!r}")
    return x


def _check_alpha(alpha: Any) -> float:
    return _check_number(alpha, "alpha", positive=True)


def _check_beta(beta: Any) -> float:
    return _check_number(beta, "beta")


def _check_frame_shift(frame_shift_s: Any) -> float:
    return _check_number(frame_shift_s, "frame_shift_s", positive=True)


def _check_tolerance(tolerance: Any) -> float:
    return _check_number(tolerance, "tolerance")


def _as_frames(v: Any) -> np.ndarray:
    """float64 copy of ``v [frame, dim]`` with -0.0 turned into 0.0; rejects NaN/inf."""
    x = np.asarray(v)
    if x.ndim != 2:
        raise ValueError(f"expected frames [frame, dim], got an array of shape {x.shape}")
    x = x.astype(np.float64) + 0.0  # a fresh array; -0.0 + 0.0 == +0.0 bit for bit
    if not np.isfinite(x).all():
        raise ValueError("frames contain NaN or inf")
    return x


def _as_square(m: Any, name: str) -> np.ndarray:
    a = np.asarray(m)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {a.shape}")
    return a
