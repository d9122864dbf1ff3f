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


def finite_or_none(value: Any) -> float | None:
    """``value`` as a float, or None when it is NaN or infinite (how results store a missing number)."""
    import math

    value = float(value)
    return value if math.isfinite(value) else None


def write_json(path: Path, data: Any) -> Path:
    """Indented JSON (numpy values as plain ones, NaN and infinity as null)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_ready(data), indent=1, allow_nan=False, default=str))
    return path


class StoredResult:
    """A result saved in a directory; ``exists`` looks for its main file (``JSON``, or ``MAIN`` when the
    main file is not JSON)."""

    @classmethod
    def exists(cls, directory: str | Path | None) -> bool:
        main = getattr(cls, "MAIN", None) or cls.JSON
        return directory is not None and (Path(directory) / main).is_file()


class RowTable(StoredResult):
    """Result rows saved as ``CSV`` (one line each) and ``JSON`` (every row, in full); ``ROW`` reads one
    row back (``ROW.from_document``)."""

    rows: list
    CSV: str
    JSON: str
    ROW: type

    @property
    def tasks(self) -> list[str]:
        """The rows' task names, in the order first met."""
        return list(dict.fromkeys(r.task for r in self.rows))

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        """CSV (without the per-utterance counts) and JSON (everything)."""
        documents = [r.as_dict() for r in self.rows]
        for document, row in zip(documents, self.rows):
            if row.score.per_utterance is not None:
                document["per_utterance"] = [list(pair) for pair in row.score.per_utterance]
        flat = [{k: v for k, v in d.items() if k != "per_utterance"} for d in documents]
        out = Path(out_dir)
        return {"csv": write_csv(out / self.CSV, flat), "json": write_json(out / self.JSON, documents)}

    @classmethod
    def load(cls, directory: str | Path):
        file = Path(directory) / cls.JSON
        value = read_json(file)
        if not isinstance(value, list):
            Document({}, file).fail("must be a list of result rows")
        return cls([cls.ROW.from_document(Document(v, file, f"row {i + 1}")) for i, v in enumerate(value)])


# --------------------------------------------------------------------------
# Reading result files back: every file is untrusted (it may have been edited, truncated or
# crafted), so its container and its content are checked before use, and every problem is one
# InputError naming the file.

MAX_RESULT_BYTES = 512 * 1024 * 1024  # a result file larger than this is refused before it is read


def read_json(path: Path) -> Any:
    """A JSON result file, parsed strictly (no ``NaN``/``Infinity`` tokens; size bounded)."""
    from satool.errors import InputError

    path = Path(path)
    if not path.exists():
        raise InputError("missing (run the stage that writes it first)", path=path)
    if not path.is_file():
        raise InputError("not a regular file", path=path)
    if path.stat().st_size > MAX_RESULT_BYTES:
        raise InputError(f"larger than {MAX_RESULT_BYTES // 2**20} MB: not a satool result file", path=path)

    def refuse(token: str) -> Any:
        raise ValueError(f"bare {token} is not JSON")

    try:
        return json.loads(path.read_bytes(), parse_constant=refuse)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InputError(f"unreadable JSON ({' '.join(str(exc).split())[:160]})", path=path) from None


class Document:
    """Checked access to a parsed JSON object read from ``path``: every accessor raises one
    InputError naming the file and the field when the value is missing or of the wrong kind."""

    def __init__(self, value: Any, path: Path, where: str = ""):
        from satool.errors import InputError

        if not isinstance(value, dict):
            raise InputError(f"{where or 'the file'} must be a JSON object, found {_kind(value)}", path=path)
        self.value, self.path, self.where = value, Path(path), where

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def fail(self, message: str) -> None:
        from satool.errors import InputError

        raise InputError(message, path=self.path)

    def has(self, key: str) -> bool:
        return key in self.value and self.value[key] is not None

    def raw(self, key: str, default: Any = ...) -> Any:
        if key not in self.value:
            if default is ...:
                self.fail(f"field {self._name(key)!r} is missing")
            return default
        return self.value[key]

    def text(self, key: str, default: Any = ...) -> str | None:
        value = self.raw(key, default)
        if value is None and default is not ...:
            return default
        if not isinstance(value, str):
            self.fail(f"field {self._name(key)!r} must be text, found {_kind(value)}")
        return value

    def integer(self, key: str, default: Any = ..., *, minimum: int | None = None) -> int | None:
        value = self.raw(key, default)
        if value is None and default is not ...:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"field {self._name(key)!r} must be a whole number, found {_kind(value)}")
        if minimum is not None and value < minimum:
            self.fail(f"field {self._name(key)!r} must be >= {minimum}, found {value}")
        return value

    def number(self, key: str, default: Any = ..., *, allow_missing_value: bool = True) -> float:
        """A finite number; JSON null (how satool writes NaN) reads back as NaN."""
        value = self.raw(key, default)
        return checked_number(value, self._name(key), self.path, allow_null=allow_missing_value)

    def flag(self, key: str, default: Any = ...) -> bool | None:
        value = self.raw(key, default)
        if value is None and default is not ...:
            return default
        if not isinstance(value, bool):
            self.fail(f"field {self._name(key)!r} must be true or false, found {_kind(value)}")
        return value

    def items(self, key: str, default: Any = ...) -> list[Any]:
        value = self.raw(key, default)
        if not isinstance(value, list):
            self.fail(f"field {self._name(key)!r} must be a list, found {_kind(value)}")
        return value

    def child(self, key: str, default: Any = ...) -> Document:
        value = self.raw(key, default)
        return Document(value, self.path, self._name(key))

    def children(self, key: str) -> list[Document]:
        return [Document(v, self.path, f"{self._name(key)}[{i}]") for i, v in enumerate(self.items(key))]

    def grid(self, key: str, shape: tuple[int, ...]) -> Any:
        """A float64 array of exactly ``shape`` (null cells read as NaN; every other cell finite)."""
        return checked_grid(self.raw(key), shape, self._name(key), self.path)


def checked_number(value: Any, name: str, path: Path, *, allow_null: bool = True) -> float:
    from satool.errors import InputError

    if value is None and allow_null:
        return float("nan")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"field {name!r} must be a number, found {_kind(value)}", path=path)
    import math

    if not math.isfinite(value):
        raise InputError(f"field {name!r} must be finite, found {value}", path=path)
    return float(value)


def checked_grid(value: Any, shape: tuple[int, ...], name: str, path: Path):
    """``value`` (nested lists) as a float64 array of ``shape``; null = NaN; anything else refused."""
    import numpy as np

    from satool.errors import InputError

    def walk(v: Any, depth: int) -> Any:
        if depth == len(shape):
            return checked_number(v, name, path)
        if not isinstance(v, list) or len(v) != shape[depth]:
            raise InputError(f"field {name!r} must be a {' x '.join(map(str, shape))} table of numbers", path=path)
        return [walk(x, depth + 1) for x in v]

    return np.array(walk(value, 0), dtype=np.float64).reshape(shape)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
