"""The on-disk schema of an attention cache, and what its files must contain.

``manifest.json`` (provenance and the planned utterances: :func:`build_manifest` makes it,
:func:`check_manifest` checks it) and the shards' names, attributes and per-utterance metadata are
described here; every check turns an edited, damaged, mixed or replaced
file into one :class:`~satool.errors.InputError` naming it, before a wrong number can come out of it
(docs/cache.md).
"""


from __future__ import annotations

import json
import math
import os
import re
import stat
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from satool.errors import InputError

# Fields of the manifest that every shard's own copy must repeat exactly: they decide what the
# numbers in the shard mean (which model, which layers, which corpus and phone set, which rate).
SHARD_AGREEMENT = ("schema_version", "model", "layers", "heads", "hidden_states", "settings", "planned",
                   "frames_per_step", "corpus", "maps")
ROW_SUM_TOLERANCE = 0.02  # float16 storage: a row of weights sums to 1 within this
DEFAULT_COMPRESSION = "blosc"  # Blosc LZ4 + byte shuffle: the fastest (docs/performance.md)
FLUSH_EVERY_S = 30.0  # seconds a shard stays open: at most this much work is redone after a crash
# The extraction settings a manifest records under "settings" (they decide which utterances are
# planned and what was stored for each; a cache resumes only under the same ones).
MANIFEST_SETTINGS = ("split", "phone_set", "max_utts", "max_frames", "attention")


def build_manifest(model: Any, corpus: Any, *, corpus_path: str | Path, alignments: str | Path | None,
                   layers: list[int], heads: list[int], hidden_states: list[int], settings: dict[str, Any],
                   planned: list[str], compression: str, maps: str = "attention") -> dict[str, Any]:
    """The manifest of a cache of ``model`` (an :class:`~satool.models.base.AttentionModel`) over
    ``corpus`` (an opened :class:`~satool.data.corpus.Corpus`): provenance, what is stored, the planned
    utterances in order, and the conventions of the stored arrays. ``settings``: the extraction
    settings named in :data:`MANIFEST_SETTINGS`. ``maps``: the map kind stored (satool.maps; a
    rollout cache stores one map per layer as head 1). The writer adds ``schema_version``."""
    from satool import __version__
    from satool.maps import DESCRIPTIONS, check_kind

    missing = set(MANIFEST_SETTINGS) - set(settings)
    if missing:
        raise ValueError(f"manifest settings lack {sorted(missing)}")
    return {
        "satool_version": __version__,
        "model": model.provenance(),
        "layers": layers,
        "heads": heads,
        "hidden_states": hidden_states,
        "hidden_state_names": [model.hidden_state_names[s] for s in hidden_states],
        "maps": check_kind(maps),
        "maps_definition": DESCRIPTIONS[maps],
        "settings": {key: settings[key] for key in MANIFEST_SETTINGS},
        "planned": planned,
        "frames_per_step": model.frames_per_step,
        "step_s": model.step_s,
        "frame_shift_s": 0.01,
        "axes": {"attention": "[layer, head, query, key]", "hidden": "[state, step, hidden]",
                 "frame_labels": "[frame] ids into corpus.phone_set, -1 = unlabelled",
                 "boundaries": "[boundary] seconds"},
        "layer_numbering": "1-based layer and head numbers; hidden state 0 = embedding output",
        "dtype": "float16",
        "compression": compression,
        "corpus": {"root": str(Path(corpus_path).resolve()), "layout": corpus.layout,
                   "alignments": str(Path(alignments).resolve()) if alignments else None,
                   "phone_set_name": corpus.phone_set.name, "phone_set": list(corpus.phone_set.names)},
        "boundary_convention": "phone interval edges strictly inside the utterance (start and end excluded)",
        "frame_label_convention": "label of the phone containing each 10 ms frame's centre t = i * 0.01 s",
    }


def require_regular_file(path: Path) -> None:
    """A FIFO, device or directory under a cache file's name would block or mislead a reader."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise InputError("file not found", path=path) from None
    except OSError as exc:
        raise InputError(f"cannot read ({exc.strerror})", path=path) from None
    if not stat.S_ISREG(mode):
        raise InputError("not a regular file (a pipe, device or directory under a cache file's name)", path=path)


def _int_list(value: Any, low: int, what: str, path: Path) -> list[int]:
    if not isinstance(value, list) or not all(type(v) is int and v >= low for v in value):
        raise InputError(f"manifest field {what!r} must be a list of integers >= {low}", path=path)
    if len(set(value)) != len(value):
        raise InputError(f"manifest field {what!r} repeats a number", path=path)
    return value


def check_manifest(manifest: Any, path: Path) -> dict[str, Any]:
    """Types and ranges of every field later stages read (``path``: the manifest file)."""
    if not isinstance(manifest, dict):
        raise InputError(f"the manifest is a {type(manifest).__name__}, expected an object", path=path)
    _int_list(manifest.get("layers"), 1, "layers", path)
    _int_list(manifest.get("heads"), 1, "heads", path)
    _int_list(manifest.get("hidden_states", []), 0, "hidden_states", path)
    if not manifest["layers"] or not manifest["heads"]:
        raise InputError("manifest lists no layers or no heads", path=path)
    rate = manifest.get("frames_per_step")
    if type(rate) is not int or not 1 <= rate <= 64:
        raise InputError(f"manifest field 'frames_per_step' = {rate!r} is not an integer in 1..64", path=path)
    planned = manifest.get("planned")
    if not isinstance(planned, list) or not all(isinstance(u, str) and u for u in planned):
        raise InputError("manifest field 'planned' must be a list of utterance ids", path=path)
    model = manifest.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("sha256"), (str, type(None))):
        raise InputError("manifest field 'model' must be an object with the model's sha256", path=path)
    corpus = manifest.get("corpus", {})
    if not isinstance(corpus, dict):
        raise InputError("manifest field 'corpus' must be an object", path=path)
    phones = corpus.get("phone_set", [])
    if not isinstance(phones, list) or not all(isinstance(p, str) for p in phones) or len(set(phones)) != len(phones):
        raise InputError("manifest field 'corpus.phone_set' must be a list of distinct phone names", path=path)
    for key in ("root", "alignments", "layout"):
        if not isinstance(corpus.get(key), (str, type(None))):
            raise InputError(f"manifest field 'corpus.{key}' must be text", path=path)
    if not isinstance(manifest.get("settings", {}), dict):
        raise InputError("manifest field 'settings' must be an object", path=path)
    from satool.maps import MAP_KINDS, PER_LAYER, kind_of

    kind = manifest.get("maps")
    if kind is not None and kind not in MAP_KINDS:
        raise InputError(f"manifest field 'maps' = {kind!r} is not a map kind ({', '.join(MAP_KINDS)})", path=path)
    if kind_of(manifest) in PER_LAYER and manifest["heads"] != [1]:
        raise InputError(f"a {kind} cache stores one map per layer (heads [1]), the manifest lists heads "
                         f"{manifest['heads']}", path=path)
    return manifest


def same_field(key: str, one: dict[str, Any], other: dict[str, Any]) -> bool:
    """Whether two manifests agree on ``key`` (a manifest written before map kinds existed holds raw weights)."""
    if key == "maps":
        from satool.maps import kind_of

        return kind_of(one) == kind_of(other)
    return one.get(key) == other.get(key)


def check_shard_agrees(shard_manifest: Any, manifest: dict[str, Any], shard: Path) -> None:
    """A shard records the manifest it was written under; it must be this cache's (not another
    model's, corpus's or settings' shard copied in, and not a manifest edited afterwards)."""
    if not isinstance(shard_manifest, dict):
        raise InputError("the shard does not record its manifest", path=shard)
    for key in SHARD_AGREEMENT:
        if not same_field(key, shard_manifest, manifest):
            what = {"model": "another model", "corpus": "another corpus or phone set",
                    "frames_per_step": "another frame rate", "maps": "another map kind"}.get(key, f"other {key.replace('_', ' ')}")
            raise InputError(f"this shard was written with {what} than manifest.json records (mixed caches, or "
                             "an edited manifest); extract again into a new directory", path=shard)


def meta_checksum(text: str) -> int:
    return zlib.crc32(text.encode())


def check_meta(meta: Any, utt_id: str, manifest: dict[str, Any], shard: Path) -> dict[str, Any]:
    """One utterance's stored metadata: counts are positive integers, labels index the phone set,
    boundaries are finite times inside the utterance."""
    def bad(what: str) -> InputError:
        return InputError(f"utterance {utt_id!r}: {what}", path=shard)

    if not isinstance(meta, dict):
        raise bad("metadata is not an object")
    for key in ("n_steps", "n_frames", "n_samples", "order"):
        value = meta.get(key)
        if value is not None and (type(value) is not int or value < (0 if key == "order" else 1)):
            raise bad(f"{key} = {value!r} is not a positive integer")
    if meta.get("n_steps") is None:
        raise bad("n_steps is missing")
    duration = meta.get("duration_s")
    if duration is not None and (not isinstance(duration, (int, float)) or not math.isfinite(duration)
                                 or duration <= 0):
        raise bad(f"duration_s = {duration!r} is not a positive number")
    for key in ("speaker", "split", "transcript"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise bad(f"{key} is not text")
    crc = meta.get("audio_crc32")
    if crc is not None and (type(crc) is not int or not 0 <= crc < 2**32):
        raise bad(f"audio_crc32 = {crc!r} is not a CRC-32")
    labels = meta.get("frame_labels")
    if labels is not None:
        labels = np.asarray(labels)
        phones = len(manifest.get("corpus", {}).get("phone_set", []))
        if labels.ndim != 1 or labels.dtype.kind not in "iu" or (labels.size and (labels.min() < -1 or
                                                                                  labels.max() >= phones)):
            raise bad(f"frame labels are not phone ids in -1..{phones - 1}")
        if meta.get("n_frames") is not None and len(labels) > meta["n_frames"]:
            raise bad("more frame labels than frames")
    bounds = meta.get("boundaries")
    if bounds is not None:
        bounds = np.asarray(bounds)
        if bounds.ndim != 1 or bounds.dtype.kind != "f" or not np.all(np.isfinite(bounds)) or \
                np.any(np.diff(bounds) < 0) or (bounds.size and bounds[0] < 0) or \
                (duration is not None and bounds.size and bounds[-1] > duration + 1e-6):
            raise bad("boundaries are not sorted finite times inside the utterance")
    return meta


def check_attention(data: np.ndarray, utt_id: str, manifest: dict[str, Any], shard: Path) -> None:
    """Shape ``[layer, head, step, step]`` as the manifest says, and a sample of rows (every query
    row of a quarter of the steps) that are non-negative, finite and sum to 1."""
    def bad(what: str) -> InputError:
        return InputError(f"utterance {utt_id!r}: attention {what}", path=shard)

    expected = (len(manifest["layers"]), len(manifest["heads"]))
    if data.ndim != 4 or data.shape[:2] != expected or data.shape[2] != data.shape[3]:
        raise bad(f"has shape {list(data.shape)}, expected [{expected[0]}, {expected[1]}, T, T]")
    steps = data.shape[-1]
    if steps == 0:
        raise bad("has no steps")
    check_attention_rows(data[:, :, :: max(1, steps // 4), :], utt_id, shard)


def check_attention_rows(rows: np.ndarray, utt_id: str, shard: Path) -> None:
    """Attention rows ``[..., key]`` (a sample of an utterance's maps, or a head or layer read on its
    own, checked whole) that are non-negative, finite and sum to 1."""
    rows = np.asarray(rows, dtype=np.float32)
    if rows.size == 0:
        return
    if not np.all(np.isfinite(rows)) or rows.min() < 0:
        raise InputError(f"utterance {utt_id!r}: attention has negative, NaN or infinite weights", path=shard)
    sums = rows.sum(axis=-1)
    if np.abs(sums - 1).max() > ROW_SUM_TOLERANCE:
        worst = float(sums.flat[np.abs(sums - 1).argmax()])
        raise InputError(f"utterance {utt_id!r}: attention rows do not sum to 1 (one sums to {worst:.3f}): not "
                         "softmax weights", path=shard)

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
IDENTITY_FIELDS = ("schema_version", "model", "layers", "heads", "hidden_states", "settings", "planned", "maps")
COMPRESSIONS = (DEFAULT_COMPRESSION, "lzf", "gzip", "none")  # blosc = Blosc LZ4 + byte shuffle (hdf5plugin)


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
