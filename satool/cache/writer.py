"""Writing an attention cache: crash-safe shards under a per-rank lock (docs/cache.md)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from satool.cache.schema import (
    COMPRESSIONS,
    DEFAULT_COMPRESSION,
    FLUSH_EVERY_S,
    IDENTITY_FIELDS,
    MANIFEST,
    PARTIAL_SUFFIX,
    SCHEMA_VERSION,
    SHARD_RE,
    finished_utterances,
    meta_checksum,
    read_manifest,
    same_field,
)
from satool.durable import fsync_directory
from satool.errors import BusyError, EnvironmentProblem, UsageError
from satool.utterance import UtteranceMeta

MIN_FREE_BYTES = 8 << 20  # head room for HDF5 metadata and the shard being closed


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
        fsync_directory(path.parent)
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
        flush_every: ... or once it has been open this many seconds (at most this much work is redone
            after a crash).
    """

    def __init__(self, path: str | Path, manifest: dict[str, Any], *, rank: int = 0,
                 compression: str = DEFAULT_COMPRESSION, shard_bytes: int = 256 << 20,
                 flush_every: float = FLUSH_EVERY_S):
        if compression not in COMPRESSIONS:
            raise UsageError(f"unknown compression {compression!r} (choose from {', '.join(COMPRESSIONS)})")
        self.path = Path(path)
        self.rank = rank
        self.compression = compression
        self.shard_bytes = shard_bytes
        self.flush_every = flush_every
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
                if not same_field(key, existing, manifest):
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

    def add(self, utt_id: str, *, attention: np.ndarray | None, meta: UtteranceMeta | dict[str, Any],
            hidden: np.ndarray | None = None, value_norms: np.ndarray | None = None) -> None:
        """Store one utterance (attention float ``[layer, head, query, key]``, hidden ``[state, step, hidden]``,
        and in value-norm caches the keys' norms ``||f_h(x_k)||`` ``[layer, head, key]`` as float32)."""
        if isinstance(meta, UtteranceMeta):
            meta = meta.stored()
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
            if value_norms is not None:
                v = np.asarray(value_norms, dtype=np.float32)
                group.create_dataset("value_norms", data=v, fletcher32=bool(v.size))
                shard.nbytes += v.nbytes
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
        if shard.nbytes >= self.shard_bytes or time.monotonic() - shard.opened >= self.flush_every:
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
            fsync_directory(self.path)
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
