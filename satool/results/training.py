"""Training curves: what pre-training recorded step by step, saved beside its checkpoint.

- ``OUT.loss.csv``: step, training loss (masked L1), learning rate;
- ``OUT.heldout.csv``: one row per held-out check (masked L1 beside the four baselines, attention
  off, locality summary);
- ``OUT.heads.csv``: one row per held-out check and head: its locality and signed favourite offset
  (in steps and in ms), to follow how the most local heads settle during training.

The same values live inside the checkpoint (its 'Satool' block); :meth:`TrainingCurves.of_checkpoint`
reads them from there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from satool.heads import label
from satool.results.files import write_csv


@dataclass
class TrainingCurves:
    """``history``: {step, loss, lr} per step; ``checks``: HealthCheck rows per held-out check;
    ``head_checks``: {step, locality[layer][head], favourite_offset[layer][head]} per check."""

    history: list[dict[str, float]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    head_checks: list[dict[str, Any]] = field(default_factory=list)
    step_ms: float | None = None  # milliseconds per model step (for offsets in ms)

    @staticmethod
    def paths(out: Path) -> dict[str, Path]:
        """Where the curves of checkpoint ``out`` are saved."""
        out = Path(out)
        return {kind: out.with_name(out.name + suffix) for kind, suffix in
                (("loss", ".loss.csv"), ("heldout", ".heldout.csv"), ("heads", ".heads.csv"))}

    def head_rows(self) -> list[dict[str, Any]]:
        rows = []
        for check in sorted(self.head_checks, key=lambda c: c["step"]):
            local = np.asarray(check["locality"], dtype=float)
            offset = np.asarray(check["favourite_offset"], dtype=int)
            for i in range(local.shape[0]):
                for j in range(local.shape[1]):
                    rows.append({"step": check["step"], "label": label(i + 1, j + 1), "locality": float(local[i, j]),
                                 "favourite_offset": int(offset[i, j]),
                                 "favourite_offset_ms": None if self.step_ms is None else
                                 round(int(offset[i, j]) * self.step_ms, 3)})
        return rows

    def save(self, out: Path) -> dict[str, Path]:
        """The CSV files beside checkpoint ``out`` (those with something to say)."""
        paths = self.paths(out)
        written = {}
        if self.history:
            written["loss"] = write_csv(paths["loss"], self.history, columns=("step", "loss", "lr"))
        if self.checks:
            written["heldout"] = write_csv(paths["heldout"], sorted(self.checks, key=lambda c: c["step"]))
        if self.head_checks:
            written["heads"] = write_csv(paths["heads"], self.head_rows())
        return written

    @classmethod
    def of_checkpoint(cls, satool_block: dict[str, Any] | None, step_ms: float | None = None) -> TrainingCurves:
        """The per-head curves a satool checkpoint carries (its 'Satool' block): every check's step and
        ``[layer][head]`` tables are checked (types, equal shapes, finite numbers, whole offsets); a
        block that fails is an InputError saying what is wrong."""
        from satool.errors import InputError

        block = satool_block or {}
        checks = block.get("head_checks", [])
        if not isinstance(checks, list) or len(checks) > 100_000:
            raise InputError("its head_checks must be a list of held-out checks")
        shape = None
        kept = []
        for n, check in enumerate(checks):
            if not isinstance(check, dict) or not isinstance(check.get("step"), int) or isinstance(check["step"], bool):
                raise InputError(f"head_checks[{n}] must have a whole-number step")
            try:
                local = np.asarray(check["locality"], dtype=np.float64)
                offset = np.asarray(check["favourite_offset"], dtype=np.float64)
            except (KeyError, TypeError, ValueError):
                raise InputError(f"head_checks[{n}] must hold [layer][head] tables of numbers") from None
            if local.ndim != 2 or local.shape != offset.shape or (shape is not None and local.shape != shape) \
                    or not np.isfinite(offset).all() or (offset != np.round(offset)).any() or np.isinf(local).any():
                raise InputError(f"head_checks[{n}]: locality and favourite_offset must be equal-shaped "
                                 "[layer][head] tables (finite; whole offsets)")
            shape = local.shape
            kept.append({"step": check["step"], "locality": local.tolist(), "favourite_offset": offset.astype(int).tolist()})
        return cls([], [], kept, step_ms)
