"""Writing result tables: CSV (one row per dict) and JSON next to every figure.

One policy for numbers that are not numbers: NaN and infinity become an empty CSV cell and
JSON ``null`` (JSON has no NaN; a bare ``NaN`` token breaks strict readers).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> Path:
    """One row per dict; the columns are ``columns`` or every key seen, in first-seen order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(columns) if columns is not None else list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
    return path


def _cell(value: Any) -> Any:
    """A CSV cell: non-finite floats (numpy's too) as an empty cell, like None."""
    import math

    if isinstance(value, float) or type(value).__module__ == "numpy" and getattr(value, "ndim", 1) == 0:
        try:
            if not math.isfinite(value):
                return ""
        except TypeError:
            pass
    return value


def json_ready(value: Any) -> Any:
    """``value`` with numpy scalars and arrays as plain Python values and NaN/infinity as None
    (JSON has no NaN: a bare ``NaN`` token breaks strict readers)."""
    import math

    import numpy as np

    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: Path, data: Any) -> Path:
    """Indented JSON (numpy values as plain ones, NaN and infinity as null)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_ready(data), indent=1, allow_nan=False, default=str))
    return path
