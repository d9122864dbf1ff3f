"""Attention caches: a directory of immutable HDF5 shards plus a JSON manifest.

Layout (docs/cache.md)::

    CACHE/
      manifest.json                  provenance + the planned utterance list
      shard-r000-000000.h5           finished shards (never modified again)
      shard-r000-000001.h5.partial   the shard being written (ignored by readers)
      locks/rank-000.lock            held (flock) by the writing process

Crash safety: a shard is written under a ``.partial`` name, closed, fsync'ed
and renamed; only renamed shards count, so SIGKILL at any moment loses at
most the open shard's utterances and never leaves a half-written file under a
final name. The finished shards *are* the index: rerunning the same command
skips every utterance they hold. Several processes (``--shard i/N`` or
torchrun) write disjoint shards into the same directory; readers see one
logical cache in the planned order.

Reading (what every later stage uses)::

    from satool.cache import open_cache
    cache = open_cache("attn.cache")
    cache.utterance_ids                    # finished utterances, planned order
    cache.attention(utt)                   # float32 [layer, head, query, key]
    cache.attention(utt, layer=0, head=3)  # one map [query, key] (array indices)
    cache.meta(utt)                        # speaker, n_frames, n_steps, frame_labels, boundaries, ...
    cache.attrs                            # provenance (the manifest)

Layer and head *numbers* shown to users are 1-based (``cache.layers``,
``cache.heads`` list the stored ones); array indices are 0-based positions
into those lists.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from satool.cache_schema import (
    check_attention,
    check_manifest,
    check_meta,
    check_shard_agrees,
    meta_checksum,
    require_regular_file,
)
from satool.errors import BusyError, EnvironmentProblem, InputError, UsageError

SCHEMA_VERSION = 2
MANIFEST = "manifest.json"
SHARD_RE = re.compile(r"^shard-r(\d{3})-(\d{6})\.h5$")
PARTIAL_SUFFIX = ".partial"
AXES = {
    "attention": "[layer, head, query, key]",
    "hidden": "[state, step, hidden]",
    "frame_labels": "[frame]",
    "boundaries": "[boundary] seconds",
}
# Manifest fields that must match when resuming into an existing cache.
IDENTITY_FIELDS = ("schema_version", "model", "layers", "heads", "hidden_states", "settings", "planned")
MIN_FREE_BYTES = 8 << 20  # head room for HDF5 metadata and the shard being closed
COMPRESSIONS = ("blosc", "lzf", "gzip", "none")  # blosc = Blosc LZ4 + byte shuffle (hdf5plugin)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _disk_error(exc: OSError, path: Path) -> EnvironmentProblem:
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    return EnvironmentProblem(f"cannot write the cache ({reason})", path=path)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON under a temporary name, fsync, rename (readers never see half a file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1, default=_json_default)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise _disk_error(exc, path) from None


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_manifest(path: Path) -> dict[str, Any]:
    file = path / MANIFEST
    if not file.exists():
        raise InputError(f"not a satool cache (no {MANIFEST})", path=path)
    require_regular_file(file)
    try:
        manifest = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"unreadable cache manifest ({' '.join(str(exc).split())})", path=file) from None
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if version != SCHEMA_VERSION:
        raise InputError(
            f"cache schema version {version} is not supported by this satool (needs {SCHEMA_VERSION}); "
            "re-run 'satool extract' into a new directory", path=path,
        )
    return check_manifest(manifest, file)


# --------------------------------------------------------------------------
# Writing


class _RankLock:
    """An exclusive flock on CACHE/locks/rank-NNN.lock (released when the process dies)."""

    def __init__(self, cache_dir: Path, rank: int):
        self.path = cache_dir / "locks" / f"rank-{rank:03d}.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise _disk_error(exc, self.path.parent) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise BusyError(
                    "another satool process is writing this cache (lock held); wait for it or use another --out",
                    path=self.path.parent.parent,
                ) from None
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


@dataclass
class _OpenShard:
    path: Path  # the .partial file
    file: Any  # h5py.File
    utterances: list[str]
    skipped: dict[str, str]
    nbytes: int
    opened: float


CHUNK_BYTES = 1 << 20


def attention_chunks(shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """HDF5 chunk shape for float16 maps ``[layer, head, query, key]``: whole maps of one
    layer, as many heads as fit in about 1 MiB (at least one). Fewer, larger chunks
    write and read faster; the cap keeps reading one head of a long utterance cheap."""
    layers, heads, queries, keys = shape
    per_map = max(1, queries * keys * 2)
    return 1, max(1, min(heads, CHUNK_BYTES // per_map)), queries, keys


class CacheWriter:
    """Appends utterances to a cache directory in crash-safe shards.

    Args:
        path: cache directory (created).
        manifest: provenance and plan (see docs/cache.md); must equal the
            existing manifest's identity fields when resuming.
        rank: this writer's shard namespace (0 for single-process runs).
        compression: 'blosc' (LZ4 + byte shuffle; the default, chosen by measurement, see
            docs/performance.md), 'lzf', 'gzip' (level 4 + shuffle) or 'none'.
        shard_bytes: close a shard once it holds about this many raw bytes.
        shard_seconds: ... or once it has been open this long.
    """

    def __init__(self, path: str | Path, manifest: dict[str, Any], *, rank: int = 0,
                 compression: str = "blosc", shard_bytes: int = 256 << 20, shard_seconds: float = 30.0):
        if compression not in COMPRESSIONS:
            raise UsageError(f"unknown compression {compression!r} (choose from {', '.join(COMPRESSIONS)})")
        self.path = Path(path)
        self.rank = rank
        self.compression = compression
        self.shard_bytes = shard_bytes
        self.shard_seconds = shard_seconds
        foreign = [p for p in self.path.iterdir() if p.name != "locks" and not p.name.startswith(".")] \
            if self.path.is_dir() else []
        if foreign and not (self.path / MANIFEST).exists():
            raise UsageError(f"{self.path}: directory exists and is not a satool cache; choose another --out")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _disk_error(exc, self.path) from None
        self._lock = _RankLock(self.path, rank)
        self._lock.acquire()
        try:
            self.manifest = self._agree_on_manifest(manifest)
            for stale in self.path.glob(f"shard-r{rank:03d}-*.h5{PARTIAL_SUFFIX}"):
                stale.unlink()
            self._next_seq = 1 + max(
                (int(m.group(2)) for m in map(SHARD_RE.match, os.listdir(self.path)) if m and int(m.group(1)) == rank),
                default=-1,
            )
            self.done = finished_utterances(self.path, self.manifest)
        except BaseException:
            self._lock.release()
            raise
        self._shard: _OpenShard | None = None

    def _agree_on_manifest(self, manifest: dict[str, Any]) -> dict[str, Any]:
        manifest = json.loads(json.dumps({"schema_version": SCHEMA_VERSION, **manifest}, default=_json_default))
        existing_file = self.path / MANIFEST
        if existing_file.exists():
            existing = read_manifest(self.path)
            for key in IDENTITY_FIELDS:
                if existing.get(key) != manifest.get(key):
                    raise UsageError(
                        f"{self.path}: this cache was made with different {key.replace('_', ' ')}; "
                        "use another --out (or delete the directory) to start over"
                    )
            return existing
        write_json_atomic(existing_file, manifest)
        return manifest

    # -- shards --------------------------------------------------------------
    def _open_shard(self) -> _OpenShard:
        import h5py

        name = f"shard-r{self.rank:03d}-{self._next_seq:06d}.h5"
        self._next_seq += 1
        partial = self.path / (name + PARTIAL_SUFFIX)
        try:
            f = h5py.File(partial, "w", libver="latest")
        except OSError as exc:
            raise _disk_error(exc, partial) from None
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["manifest"] = json.dumps(self.manifest, default=_json_default)
        return _OpenShard(partial, f, [], {}, 0, time.monotonic())

    def _filters(self) -> dict[str, Any]:
        if self.compression == "blosc":
            import hdf5plugin

            return dict(hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE))
        if self.compression == "lzf":
            return {"compression": "lzf"}
        if self.compression == "gzip":
            return {"compression": "gzip", "compression_opts": 4, "shuffle": True}
        return {}

    def add(self, utt_id: str, *, attention: np.ndarray | None, meta: dict[str, Any],
            hidden: np.ndarray | None = None) -> None:
        """Store one utterance (attention float ``[layer, head, query, key]``, hidden ``[state, step, hidden]``)."""
        if utt_id in self.done:
            return
        self._check_free_space(sum(np.asarray(a).size * 2 for a in (attention, hidden) if a is not None))
        if self._shard is None:
            self._shard = self._open_shard()
        shard = self._shard
        try:
            group = shard.file.create_group(f"utterances/{utt_id}")
            if attention is not None:
                a = np.asarray(attention, dtype=np.float16)
                group.create_dataset("attention", data=a, chunks=attention_chunks(a.shape) if a.size else None,
                                     fletcher32=bool(a.size), **(self._filters() if a.size else {}))
                shard.nbytes += a.nbytes
            if hidden is not None:
                h = np.asarray(hidden, dtype=np.float16)
                group.create_dataset("hidden", data=h, chunks=(1, *h.shape[1:]) if h.size else None,
                                     fletcher32=bool(h.size), **(self._filters() if h.size else {}))
                shard.nbytes += h.nbytes
            scalars = {}
            for key, value in meta.items():
                if isinstance(value, np.ndarray):
                    group.create_dataset(key, data=value, chunks=value.shape if value.size else None,
                                         fletcher32=bool(value.size))
                elif value is not None:
                    scalars[key] = value
            text = json.dumps(scalars, default=_json_default)
            group.attrs["meta"] = text  # one attribute: fast
            group.attrs["meta_crc32"] = meta_checksum(text)
        except OSError as exc:
            self._abandon_shard()
            raise _disk_error(exc, shard.path) from None
        shard.utterances.append(utt_id)
        if shard.nbytes >= self.shard_bytes or time.monotonic() - shard.opened >= self.shard_seconds:
            self.finish_shard()

    def _check_free_space(self, nbytes: int) -> None:
        """Refuse to write when the disk cannot hold it: HDF5 does not survive running out of space mid-write."""
        needed = nbytes + MIN_FREE_BYTES
        try:
            free = shutil.disk_usage(self.path).free
        except OSError:
            return
        if free < needed:
            self._abandon_shard()
            raise EnvironmentProblem(
                f"not enough free disk space for the cache: about {needed / 1e6:.1f} MB needed, "
                f"{free / 1e6:.1f} MB free; finished utterances are kept, rerun to resume", path=self.path,
            )

    def add_skipped(self, utt_id: str, reason: str) -> None:
        """Record that ``utt_id`` was skipped (bad input) so it is neither redone nor reported missing."""
        if utt_id in self.done:
            return
        if self._shard is None:
            self._shard = self._open_shard()
        self._shard.skipped[utt_id] = reason

    def finish_shard(self) -> None:
        """Close, fsync and rename the open shard: its utterances are now finished."""
        shard, self._shard = self._shard, None
        if shard is None:
            return
        final = shard.path.with_name(shard.path.name[: -len(PARTIAL_SUFFIX)])
        try:
            shard.file.attrs["utterances"] = json.dumps(shard.utterances)
            shard.file.attrs["skipped"] = json.dumps(shard.skipped)
            shard.file.close()
            fd = os.open(shard.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(shard.path, final)
            _fsync_dir(self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                shard.path.unlink()
            raise _disk_error(exc, final) from None
        self.done.update(shard.utterances)
        self.done.update(shard.skipped)

    def _abandon_shard(self) -> None:
        shard, self._shard = self._shard, None
        if shard is not None:
            with contextlib.suppress(Exception):
                shard.file.close()
            with contextlib.suppress(OSError):
                shard.path.unlink()

    def close(self) -> None:
        """Finish the open shard and release the lock."""
        try:
            self.finish_shard()
        finally:
            self._lock.release()

    def abort(self) -> None:
        """Drop the open shard (its utterances will be redone) and release the lock."""
        self._abandon_shard()
        self._lock.release()

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif issubclass(exc_type, KeyboardInterrupt):
            # Ctrl-C: keep what is complete (the open shard's utterances are whole).
            self.close()
        else:
            self.abort()


def finished_shards(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if SHARD_RE.match(p.name))


def _shard_contents(shard: Path, manifest: dict[str, Any] | None = None) -> tuple[list[str], dict[str, str]]:
    """(stored utterance ids, {skipped id: reason}) of a finished shard, after checking that it was
    written under ``manifest`` (when given)."""
    import h5py

    require_regular_file(shard)
    try:
        with h5py.File(shard, "r") as f:
            stored, skipped = json.loads(f.attrs["utterances"]), json.loads(f.attrs.get("skipped", "{}"))
            recorded = json.loads(f.attrs["manifest"]) if manifest is not None else None
    except Exception as exc:
        raise InputError(f"corrupt cache shard ({type(exc).__name__}: {' '.join(str(exc).split())})",
                         path=shard) from None
    if not (isinstance(stored, list) and all(isinstance(u, str) for u in stored) and isinstance(skipped, dict)):
        raise InputError("corrupt cache shard (its list of utterances is not a list of ids)", path=shard)
    if manifest is not None:
        check_shard_agrees(recorded, manifest, shard)
    return stored, skipped


def finished_utterances(path: Path, manifest: dict[str, Any] | None = None) -> set[str]:
    done: set[str] = set()
    for shard in finished_shards(path):
        stored, skipped = _shard_contents(shard, manifest)
        done.update(stored)
        done.update(skipped)
    return done


# --------------------------------------------------------------------------
# Reading


class AttentionCache:
    """Read access to a cache directory (see module docstring)."""

    def __init__(self, path: str | Path, max_open_files: int = 32):
        import h5py  # noqa: F401  (fail early if missing)

        self.path = Path(path)
        if not self.path.is_dir():
            if self.path.exists():
                raise InputError("not a satool cache directory", path=self.path)
            raise InputError("cache not found", path=self.path)
        self.attrs: dict[str, Any] = read_manifest(self.path)
        self._where: dict[str, Path] = {}
        duplicates = []
        self.skipped: dict[str, str] = {}
        for shard in finished_shards(self.path):
            stored, skipped = _shard_contents(shard, self.attrs)
            self.skipped.update(skipped)
            for utt in stored:
                if utt in self._where:
                    duplicates.append(utt)
                    continue
                self._where[utt] = shard
        planned = list(self.attrs.get("planned", []))
        order = {u: i for i, u in enumerate(planned)}
        self.utterance_ids: list[str] = sorted(self._where, key=lambda u: (order.get(u, len(order)), u))
        self.planned_ids = planned
        self.missing_ids = [u for u in planned if u not in self._where and u not in self.skipped]
        self.duplicate_ids = duplicates
        self._files: OrderedDict[Path, Any] = OrderedDict()
        self._max_open = max_open_files

    # -- provenance ----------------------------------------------------------
    @property
    def layers(self) -> list[int]:
        """Stored layer numbers (1-based), in array order."""
        return list(self.attrs["layers"])

    @property
    def heads(self) -> list[int]:
        """Stored head numbers (1-based), in array order."""
        return list(self.attrs["heads"])

    @property
    def hidden_states(self) -> list[int]:
        """Stored hidden-state numbers (0 = embedding output), in array order."""
        return list(self.attrs.get("hidden_states", []))

    @property
    def frames_per_step(self) -> int:
        return int(self.attrs["frames_per_step"])

    @property
    def phone_set(self) -> list[str]:
        return list(self.attrs.get("corpus", {}).get("phone_set", []))

    @property
    def complete(self) -> bool:
        return not self.missing_ids

    def require_complete(self, allow_partial: bool = False, warn=None) -> None:
        """InputError listing missing utterances unless ``allow_partial`` (then warn)."""
        if self.complete:
            return
        preview = ", ".join(self.missing_ids[:3]) + (" ..." if len(self.missing_ids) > 3 else "")
        message = (f"{len(self.missing_ids)} of {len(self.planned_ids)} planned utterances are missing "
                   f"(extraction unfinished? e.g. {preview})")
        if not allow_partial:
            raise InputError(message + "; rerun 'satool extract' to finish it, or pass --allow-partial",
                             path=self.path)
        if warn is not None:
            warn(f"{self.path}: {message}; using the {len(self.utterance_ids)} finished ones (--allow-partial)")

    # -- data ----------------------------------------------------------------
    def _file(self, shard: Path):
        import h5py
        import hdf5plugin  # noqa: F401  (registers the Blosc filter for reading)

        f = self._files.get(shard)
        if f is None:
            try:
                f = h5py.File(shard, "r", rdcc_nbytes=8 << 20)
            except Exception as exc:
                raise InputError(f"corrupt cache shard ({type(exc).__name__})", path=shard) from None
            self._files[shard] = f
            if len(self._files) > self._max_open:
                self._files.popitem(last=False)[1].close()
        else:
            self._files.move_to_end(shard)
        return f

    def _shard(self, utt_id: str) -> Path:
        try:
            return self._where[utt_id]
        except KeyError:
            raise UsageError(f"{self.path}: no utterance {utt_id!r} in this cache") from None

    def _group(self, utt_id: str):
        shard = self._shard(utt_id)
        try:
            return self._file(shard)[f"utterances/{utt_id}"], shard
        except Exception as exc:
            raise InputError(f"utterance {utt_id!r}: unreadable ({' '.join(str(exc).split())[:80]})",
                             path=shard) from None

    def _read(self, utt_id: str, name: str, selection: tuple = (), *, stored: bool = False) -> np.ndarray:
        shard = self._shard(utt_id)
        file = self._file(shard)
        path = f"utterances/{utt_id}/{name}"
        try:
            data = file[path][selection] if selection else _read_whole(file, path)
        except KeyError:
            raise InputError(f"utterance {utt_id!r} has no {name!r} dataset", path=shard) from None
        except Exception as exc:
            raise InputError(f"corrupt data for {utt_id!r} ({type(exc).__name__}: {' '.join(str(exc).split())[:80]})",
                             path=shard) from None
        if name == "attention" and not selection:
            check_attention(data, utt_id, self.attrs, shard)
        return data if stored else to_float32(data)

    def position(self, head: str) -> tuple[int, int]:
        """0-based (layer, head) array positions of a head named ``"L3.H7"`` (1-based numbers)."""
        from satool.heads import check, parse

        layer_number, head_number = parse(head)
        check([(layer_number, head_number)], self.layers, self.heads)
        return self.layers.index(layer_number), self.heads.index(head_number)

    def attention(self, utt_id: str, layer: int | None = None, head: int | str | None = None, *,
                  stored: bool = False) -> np.ndarray:
        """float32 maps: all ``[layer, head, query, key]``, one layer ``[head, query, key]``, or one head.

        ``head="L3.H7"`` names one head as everything satool prints does (layer and head counted
        from 1). Integers are 0-based *positions* into :attr:`layers` / :attr:`heads`; a position
        out of range is a :class:`~satool.errors.UsageError` naming the valid range.

        ``stored=True`` (all maps only) returns them as stored, float16, without the
        float32 copy (:func:`to_float32` makes it later, e.g. into a reused buffer).
        """
        if isinstance(head, str):
            if layer is not None:
                raise UsageError("give either a head label such as head='L3.H7' or positions layer= and head=")
            layer, head = self.position(head)
        for value, stored_numbers, what in ((layer, self.layers, "layer"), (head, self.heads, "head")):
            if value is not None and not (type(value) is int and 0 <= value < len(stored_numbers)):
                raise UsageError(f"{what} position {value!r} is out of range: this cache stores {what}s "
                                 f"{stored_numbers} at positions 0..{len(stored_numbers) - 1}")
        if layer is None and head is None:
            return self._read(utt_id, "attention", stored=stored)
        if head is None:
            return self._read(utt_id, "attention", (layer,))
        if layer is None:
            return self._read(utt_id, "attention", (slice(None), head))
        return self._read(utt_id, "attention", (layer, head))

    def hidden(self, utt_id: str, state: int | None = None) -> np.ndarray:
        """float32 hidden states ``[state, step, hidden]`` or one state ``[step, hidden]`` (array index)."""
        return self._read(utt_id, "hidden", () if state is None else (state,))

    def meta(self, utt_id: str) -> dict[str, Any]:
        """speaker, split, n_frames, n_steps, frames_per_step (``downsample``), frame_labels, boundaries, phone_set."""
        group, shard = self._group(utt_id)
        try:
            text = group.attrs["meta"]
            text = text.decode() if isinstance(text, bytes) else str(text)
            recorded = group.attrs.get("meta_crc32")
            if recorded is not None and int(recorded) != meta_checksum(text):
                raise ValueError("its checksum does not match")
            meta: dict[str, Any] = json.loads(text)
            for key in ("frame_labels", "boundaries"):
                meta[key] = group[key][()] if key in group else None
        except Exception as exc:
            raise InputError(f"utterance {utt_id!r}: unreadable metadata ({' '.join(str(exc).split())[:80]})",
                             path=shard) from None
        check_meta(meta, utt_id, self.attrs, shard)
        meta["id"] = utt_id
        meta["downsample"] = self.frames_per_step
        meta["frames_per_step"] = self.frames_per_step
        meta["phone_set"] = self.phone_set
        return meta

    def close(self) -> None:
        while self._files:
            self._files.popitem()[1].close()

    def __enter__(self) -> AttentionCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self.utterance_ids)


def _read_whole(file, path: str) -> np.ndarray:
    """A whole dataset through h5py's low-level API: about 25% faster than ``file[path][()]``
    for a demo-size utterance, and it holds the GIL for less of the read, which matters
    when the read runs next to metric computation (docs/performance.md)."""
    import h5py

    dataset = h5py.h5d.open(file.id, path.encode())
    out = np.empty(dataset.shape, dtype=dataset.dtype)
    if out.size:
        dataset.read(h5py.h5s.ALL, h5py.h5s.ALL, out)
    return out


def to_float32(data: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """float16 (or any) maps -> float32, into ``out`` if given (same shape, C-contiguous).

    float16 goes through torch's vectorised cast (numpy's is ~25x slower), on
    the calling thread only: torch's OpenMP workers would otherwise wake up and
    keep spinning next to a metric thread's numpy work. The cast releases the
    GIL, so a reader thread overlaps with it.
    """
    if out is None:
        if data.dtype != np.float16:
            return np.asarray(data, dtype=np.float32)
        out = np.empty(data.shape, dtype=np.float32)
    if data.dtype != np.float16:
        np.copyto(out, data)
        return out
    import torch

    with torch_threads(1):
        torch.from_numpy(out).copy_(torch.from_numpy(np.ascontiguousarray(data)))
    return out


@contextlib.contextmanager
def torch_threads(n: int):
    """Run torch's CPU ops with ``n`` intra-op threads inside the block, then restore."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def open_cache(path: str | Path) -> AttentionCache:
    """Open a cache directory for reading (InputError naming it if it is not one)."""
    return AttentionCache(path)
