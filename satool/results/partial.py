"""Partial sums of one shard of a streaming pass (``satool metric|relate|segment CKPT CORPUS --shard
i/N``).

A streaming pass never keeps attention maps: every analysis accumulates per-head sums as each
utterance's maps are made and dropped (:mod:`satool.analysis.streaming`). What one shard has
accumulated is a :class:`PartialSums`: named arrays, each with how it merges (``sum``, ``max`` or
``min``), the ids of the utterances it covers, and the settings every shard of the same run must
share. ``satool merge`` combines the N shards' partial sums into exactly the arrays one process
would have accumulated (sums are sums: the bootstrap replicates too, since each utterance's
replicate weights are seeded by its id), and the analysis turns them into the same ``HeadScores``,
``Relations`` or segmentation scores a cache gives.

Files: ``OUT/partial/KIND-IIIII-of-NNNNN.npz``, written atomically (temporary name, fsync, rename),
so a file is either a whole earlier state or the new one. A shard saves its state every
``flush_every`` seconds while it runs (``complete`` false) and once more at the end (``complete``
true): a finished shard is skipped on a rerun, an interrupted one resumes after the utterances its
last state covers. :meth:`PartialSums.load` reads a file back as untrusted: no pickled objects, the
header's fields, every array's name, dtype, shape and values checked.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from satool.durable import fsync_directory
from satool.errors import InputError
from satool.results.files import MAX_RESULT_BYTES, json_ready

KINDS = ("metric", "relate", "segment")
REDUCTIONS = ("sum", "max", "min")
FORMAT = 1
MAX_UTTERANCES = 50_000_000  # ids one partial file may list


@dataclass
class PartialSums:
    """What one shard of a streaming pass accumulated."""

    kind: str  # "metric", "relate" or "segment": which analysis finishes these sums
    shard: tuple[int, int]  # (index, count)
    settings: dict[str, Any]  # what every shard of one run shares (source, metrics, layers, ...)
    arrays: dict[str, np.ndarray]  # name -> float64 sums (or running max/min)
    reduce: dict[str, str]  # name -> "sum" | "max" | "min"
    utterances: list[str] = field(default_factory=list)  # ids covered (scored or skipped)
    complete: bool = False
    info: dict[str, Any] = field(default_factory=dict)  # merged as a union: failed metrics, skipped utterances

    DIR: ClassVar[str] = "partial"

    def file_name(self) -> str:
        return shard_file_name(self.kind, *self.shard)

    # -- writing ----------------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Write ``DIRECTORY/partial/KIND-i-of-N.npz`` atomically (temporary file, fsync, rename)."""
        folder = Path(directory) / self.DIR
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / self.file_name()
        temporary = folder / f".{self.file_name()}.{os.getpid()}.tmp"
        header = {"format": FORMAT, "kind": self.kind, "shard": list(self.shard), "settings": self.settings,
                  "reduce": self.reduce, "complete": self.complete, "info": self.info}
        payload = {"header": np.array(json.dumps(json_ready(header), allow_nan=False)),
                   "utterances": np.array(self.utterances, dtype=str) if self.utterances else np.zeros(0, "<U1")}
        payload.update({f"array/{name}": np.asarray(value, dtype=np.float64) for name, value in self.arrays.items()})
        try:
            with open(temporary, "wb") as fh:
                np.savez(fh, **payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(temporary, final)
            fsync_directory(folder)
        finally:
            if temporary.exists():
                temporary.unlink()
        return final

    # -- reading ----------------------------------------------------------------------------

    @classmethod
    def load(cls, file: str | Path) -> PartialSums:
        """Read one partial-sums file back; every field checked (one InputError naming the file)."""
        file = Path(file)

        def fail(message: str):
            raise InputError(message, path=file)

        if not file.is_file():
            fail("missing or not a regular file")
        if file.stat().st_size > MAX_RESULT_BYTES:
            fail(f"larger than {MAX_RESULT_BYTES // 2**20} MB: not a satool partial-sums file")
        try:
            with np.load(file, allow_pickle=False) as data:
                contents = {k: data[k] for k in data.files}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
            fail(f"not a satool partial-sums file ({' '.join(str(exc).split())[:160]})")
        header_array = contents.pop("header", None)
        if header_array is None or header_array.shape != () or header_array.dtype.kind != "U":
            fail("not a satool partial-sums file (no header)")
        try:
            header = json.loads(str(header_array), parse_constant=_refuse)
        except (ValueError, RecursionError) as exc:
            fail(f"unreadable header ({' '.join(str(exc).split())[:120]})")
        if not isinstance(header, dict):
            fail("the header must be a JSON object")
        if header.get("format") != FORMAT:
            fail(f"unknown partial-sums format {header.get('format')!r} (this satool reads {FORMAT})")
        kind = header.get("kind")
        if kind not in KINDS:
            fail(f"kind must be one of {', '.join(KINDS)}, found {kind!r}")
        shard = header.get("shard")
        if not (isinstance(shard, list) and len(shard) == 2 and all(type(v) is int for v in shard)
                and 0 <= shard[0] < shard[1] <= 100_000):
            fail("shard must be [i, N] with 0 <= i < N")
        for key, kind_ in (("settings", dict), ("reduce", dict), ("info", dict), ("complete", bool)):
            if not isinstance(header.get(key), kind_):
                fail(f"header field {key!r} must be a {kind_.__name__}")
        utterances = contents.pop("utterances", None)
        if utterances is None or utterances.ndim != 1 or (utterances.size and utterances.dtype.kind != "U") \
                or len(utterances) > MAX_UTTERANCES:
            fail("utterances must be a list of ids")
        ids = [str(u) for u in utterances]
        if len(set(ids)) != len(ids):
            fail("an utterance id occurs twice")
        reduce = header["reduce"]
        arrays: dict[str, np.ndarray] = {}
        for key, array in contents.items():
            name = key.removeprefix("array/")
            if not key.startswith("array/") or name not in reduce:
                fail(f"unexpected entry {key!r}")
            if array.dtype.kind not in "fiu" or array.ndim > 5 or array.size > 200_000_000:
                fail(f"{name} must be a numeric array")
            how = reduce[name]
            if how not in REDUCTIONS:
                fail(f"{name}: reduction must be one of {', '.join(REDUCTIONS)}, found {how!r}")
            values = array.astype(np.float64)
            if np.isnan(values).any() or (how == "sum" and np.isinf(values).any()):
                fail(f"{name} holds NaN or infinite sums")
            if how == "max" and np.isposinf(values).any() or how == "min" and np.isneginf(values).any():
                fail(f"{name} holds an impossible running {how}")
            arrays[name] = values
        missing = sorted(set(reduce) - set(arrays))
        if missing:
            fail(f"arrays missing: {', '.join(missing[:5])}")
        return cls(kind, (shard[0], shard[1]), header["settings"], arrays, dict(reduce), ids, header["complete"],
                   header["info"])


def shard_file_name(kind: str, index: int, count: int) -> str:
    return f"{kind}-{index:05d}-of-{count:05d}.npz"


def shard_files(directory: str | Path) -> list[Path]:
    """The partial-sums files of a results directory (``DIRECTORY/partial/*.npz``), sorted."""
    folder = Path(directory) / PartialSums.DIR
    return sorted(folder.glob("*-of-*.npz")) if folder.is_dir() else []


def merge(parts: list[PartialSums], *, where: Path | None = None) -> PartialSums:
    """The N shards of one run as one :class:`PartialSums` (shard ``(0, 1)``): arrays summed (or their
    running max/min taken), utterances joined. InputError unless the parts are exactly shards 0..N-1
    of the same run (same kind, settings and arrays), each complete, covering disjoint utterances."""
    if not parts:
        raise InputError("no partial sums to merge (run the shards first)", path=where)

    def fail(message: str):
        raise InputError(message, path=where)

    first = parts[0]
    count = first.shard[1]
    for part in parts:
        if part.kind != first.kind:
            fail(f"partial sums of different analyses ({first.kind} and {part.kind})")
        if part.shard[1] != count:
            fail(f"partial sums of different shardings (of {count} and of {part.shard[1]})")
        if part.settings != first.settings:
            changed = sorted(k for k in set(part.settings) | set(first.settings)
                             if part.settings.get(k) != first.settings.get(k))
            fail(f"shard {part.shard[0]} was run with other settings than shard {first.shard[0]} "
                 f"({', '.join(changed[:4])})")
        if part.reduce != first.reduce or any(part.arrays[n].shape != first.arrays[n].shape for n in first.arrays):
            fail(f"shard {part.shard[0]} holds other arrays than shard {first.shard[0]}")
    indices = sorted(p.shard[0] for p in parts)
    if indices != list(range(count)):
        missing = sorted(set(range(count)) - set(indices))
        if missing:
            fail(f"{len(missing)} of {count} shards missing (shard {', '.join(map(str, missing[:8]))})")
        fail("a shard occurs twice")
    unfinished = [p.shard[0] for p in parts if not p.complete]
    if unfinished:
        fail(f"shard {', '.join(map(str, unfinished[:8]))} of {count} not finished (run it again: it resumes)")
    arrays: dict[str, np.ndarray] = {}
    for name, how in first.reduce.items():
        stacked = [p.arrays[name] for p in sorted(parts, key=lambda p: p.shard[0])]
        if how == "sum":
            arrays[name] = np.sum(stacked, axis=0)
        elif how == "max":
            arrays[name] = np.max(stacked, axis=0)
        else:
            arrays[name] = np.min(stacked, axis=0)
    utterances = [u for p in sorted(parts, key=lambda p: p.shard[0]) for u in p.utterances]
    if len(set(utterances)) != len(utterances):
        fail("two shards cover the same utterance")
    info: dict[str, Any] = {}
    for part in sorted(parts, key=lambda p: p.shard[0]):
        for key, value in part.info.items():
            if isinstance(value, dict):
                info.setdefault(key, {}).update(value)
            elif isinstance(value, list):
                info.setdefault(key, []).extend(value)
            else:
                info.setdefault(key, value)
    return PartialSums(first.kind, (0, 1), first.settings, arrays, dict(first.reduce), utterances, True, info)


def _refuse(token: str) -> Any:
    raise ValueError(f"bare {token} is not JSON")
