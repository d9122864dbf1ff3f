"""Reading an attention cache: one logical cache over its finished shards, checked as it is read."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from satool.cache.precision import to_float32
from satool.cache.schema import (
    _shard_contents,
    check_attention,
    check_attention_rows,
    check_meta,
    finished_shards,
    meta_checksum,
    read_manifest,
)
from satool.errors import InputError, UsageError
from satool.utterance import STORED_ARRAYS, UtteranceMeta

META_KEPT = 4096  # utterances' metadata kept in memory (a few kB each: labels of every 10 ms frame)


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
        self._metas: OrderedDict[str, UtteranceMeta] = OrderedDict()  # the last META_KEPT read

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
    def maps(self) -> str:
        """The map kind stored (satool.maps): ``attention``, ``value-norm`` or ``rollout`` (head 1 of each
        layer is the rollout through that layer)."""
        from satool.maps import kind_of

        return kind_of(self.attrs)

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
        if name == "attention":  # all maps: their shape and a sample of rows; one head or layer: every row
            if selection:
                check_attention_rows(data, utt_id, shard)
            else:
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

    def value_norms(self, utt_id: str) -> np.ndarray | None:
        """float32 ``[layer, head, key]``: each key's transformed value norm ``||f_h(x_k)||`` before the
        rows were normalised (value-norm caches written since satool stores them; else None)."""
        group, shard = self._group(utt_id)
        if "value_norms" not in group:
            return None
        data = self._read(utt_id, "value_norms", stored=True).astype(np.float32)
        expected = (len(self.layers), len(self.heads))
        if data.ndim != 3 or data.shape[:2] != expected or not np.all(np.isfinite(data)) or data.min() < 0:
            raise InputError(f"utterance {utt_id!r}: value_norms are not {list(expected)} x keys of finite norms",
                             path=shard)
        return data

    def meta(self, utt_id: str) -> UtteranceMeta:
        """The utterance's metadata (speaker, split, n_frames, n_steps, frame_labels, boundaries, ...),
        read and checked once while it is among the last :data:`META_KEPT` asked for (its arrays are
        read-only)."""
        if utt_id in self._metas:
            self._metas.move_to_end(utt_id)
        else:
            self._metas[utt_id] = self._read_meta(utt_id)
            if len(self._metas) > META_KEPT:
                self._metas.popitem(last=False)
        return self._metas[utt_id]

    def _read_meta(self, utt_id: str) -> UtteranceMeta:
        group, shard = self._group(utt_id)
        try:
            text = group.attrs["meta"]
            text = text.decode() if isinstance(text, bytes) else str(text)
            recorded = group.attrs.get("meta_crc32")
            if recorded is not None and int(recorded) != meta_checksum(text):
                raise ValueError("its checksum does not match")
            stored: dict[str, Any] = json.loads(text)
            for key in STORED_ARRAYS:
                stored[key] = group[key][()] if key in group else None
        except Exception as exc:
            raise InputError(f"utterance {utt_id!r}: unreadable metadata ({' '.join(str(exc).split())[:80]})",
                             path=shard) from None
        check_meta(stored, utt_id, self.attrs, shard)
        for value in stored.values():
            if isinstance(value, np.ndarray):
                value.setflags(write=False)
        return UtteranceMeta.of_stored(utt_id, stored, frames_per_step=self.frames_per_step,
                                       phone_set=self.phone_set)

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


def open_cache(path: str | Path) -> AttentionCache:
    """Open a cache directory for reading (InputError naming it if it is not one)."""
    return AttentionCache(path)
