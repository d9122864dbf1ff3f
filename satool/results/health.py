"""Health results: has a masked acoustic model learned? Its held-out masked L1 beside four baselines
that need no model (zeros, median frame, nearest unmasked frame, linear interpolation), with
attention off, and every head's locality (docs/science.md, "Is the model healthy?").

``satool health`` saves a :class:`HealthCheck` as ``health.json`` (the numbers plus every head's
locality and favourite offset) and ``health.csv`` (one row); pre-training records one per interval
inside the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from satool.results.files import Document, StoredResult, read_json, write_csv, write_json
from satool.results.metrics import LOCAL_RATIO

BASELINES = ("zeros", "median", "nearest", "interpolation")
PROFILE_KINDS = ("clean", "masked_queries", "unmasked_queries")


@dataclass
class HealthCheck(StoredResult):
    """One held-out evaluation of a model (what ``satool pretrain`` records at intervals, and
    ``satool health`` for any checkpoint). L1 values are means over every masked target value."""

    step: int
    model_l1: float
    attention_off_l1: float
    baselines: dict[str, float]  # name in BASELINES -> L1
    locality: np.ndarray  # [layer, head] ratio to uniform at the favourite offset
    favourite_offset: np.ndarray  # [layer, head] steps, signed (negative = a key before the query)
    utterances: int
    split: str | None = None  # where it was measured (satool health)
    checkpoint: str | None = None
    # offset profiles [layer, head, offset] (offsets -M..M steps, units of uniform attention): "clean"
    # (unmasked input) and, under pre-training masks, "masked_queries" / "unmasked_queries"
    profiles: dict[str, np.ndarray] = field(default_factory=dict)

    JSON: ClassVar[str] = "health.json"
    CSV: ClassVar[str] = "health.csv"

    def row(self) -> dict[str, float]:
        """A flat row for CSV: step, L1s, locality summary (max, heads >= 3x, heads >= 5x)."""
        return {
            "step": self.step, "heldout_l1": self.model_l1, "attention_off_l1": self.attention_off_l1,
            **{f"{name}_l1": value for name, value in self.baselines.items()},
            "max_locality": float(np.nanmax(self.locality)),
            "heads_ge_3x": int(np.sum(self.locality >= 3)),
            f"heads_ge_{LOCAL_RATIO:g}x": int(np.sum(self.locality >= LOCAL_RATIO)),
            "utterances": self.utterances,
        }

    def heads(self) -> dict[str, Any]:
        """Every head's locality and signed favourite offset (steps) at this step, ``[layer][head]``
        lists (what pre-training keeps to draw offsets against training steps)."""
        return {"step": self.step, "locality": np.round(self.locality, 4).tolist(),
                "favourite_offset": self.favourite_offset.astype(int).tolist()}

    @property
    def best_baseline(self) -> tuple[str, float]:
        name = min(self.baselines, key=self.baselines.get)
        return name, self.baselines[name]

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        out = Path(out_dir)
        document = {"split": self.split, "checkpoint": self.checkpoint, **self.row(),
                    "locality": self.locality.round(4).tolist(),
                    "favourite_offset": self.favourite_offset.tolist()}
        if self.profiles:
            document["offset_profiles"] = {kind: np.round(p, 5) for kind, p in self.profiles.items()}
        return {"json": write_json(out / self.JSON, document),
                "csv": write_csv(out / self.CSV, [{"split": self.split, **self.row()}])}


    @classmethod
    def load(cls, directory: str | Path) -> HealthCheck:
        file = Path(directory) / cls.JSON
        doc = Document(read_json(file), file)
        baselines = {name: doc.number(f"{name}_l1", allow_missing_value=False) for name in BASELINES}
        local = np.asarray(doc.raw("locality"), dtype=object)
        if local.ndim != 2 or not local.size:
            doc.fail("field 'locality' must be a [layer][head] table of numbers")
        shape = local.shape
        locality = doc.grid("locality", shape)
        offsets = doc.grid("favourite_offset", shape)
        if np.isnan(offsets).any() or (offsets != np.round(offsets)).any():
            doc.fail("field 'favourite_offset' must hold whole numbers")
        profiles = {}
        if doc.has("offset_profiles"):
            kept = doc.child("offset_profiles")
            for kind in kept.value:
                if kind not in PROFILE_KINDS:
                    doc.fail(f"offset_profiles.{kind} is not one of {', '.join(PROFILE_KINDS)}")
                try:
                    width = len(kept.value[kind][0][0])
                except (TypeError, IndexError, KeyError):
                    width = 0
                if width % 2 != 1 or width > 2001:
                    doc.fail(f"offset_profiles.{kind} must be [layer][head][offset] over an odd number of offsets")
                profiles[kind] = kept.grid(kind, (*shape, width))
        return cls(doc.integer("step", minimum=0), doc.number("heldout_l1", allow_missing_value=False),
                   doc.number("attention_off_l1", allow_missing_value=False), baselines, locality,
                   offsets.astype(int), doc.integer("utterances", minimum=1), doc.text("split", None),
                   doc.text("checkpoint", None), profiles)
