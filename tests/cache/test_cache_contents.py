"""What is inside a cache is checked, not only that it opens: edited and mixed manifests, shards of
another model, pipes under cache names, maps that are not softmax rows, bit flips, and random
manifests (hypothesis)."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest
from cachefiles import manifest, random_maps, write
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from satool.cache import CacheWriter, open_cache
from satool.errors import InputError, UsageError


def _edit_manifest(path, **changes):
    file = path / "manifest.json"
    doc = json.loads(file.read_text())
    doc.update(changes)
    file.write_text(json.dumps(doc))


@pytest.mark.parametrize("changes", [
    {"frames_per_step": 1}, {"layers": [1, 3]}, {"corpus": {"phone_set": ["sil", "AA"]}},
    {"model": {"type": "test", "sha256": "1" * 64}},
])
def test_edited_manifest_disagrees_with_its_shards(tmp_path, changes):
    write(tmp_path / "c", ["a", "b"], np.random.default_rng(0))
    _edit_manifest(tmp_path / "c", **changes)
    with pytest.raises(InputError, match="this shard was written with") as info:
        open_cache(tmp_path / "c")
    assert str(info.value).startswith(str(tmp_path / "c")) and "\n" not in str(info.value)


@pytest.mark.parametrize("changes, message", [
    ({"layers": "1,2"}, "'layers' must be a list of integers >= 1"),
    ({"heads": [1, 1]}, "'heads' repeats a number"),
    ({"frames_per_step": "3"}, "'frames_per_step' = '3' is not an integer"),
    ({"frames_per_step": 0}, "'frames_per_step' = 0 is not an integer"),
    ({"planned": {"a": 1}}, "'planned' must be a list of utterance ids"),
    ({"corpus": {"phone_set": ["AA", "AA"]}}, "'corpus.phone_set' must be a list of distinct"),
    ({"model": "x"}, "'model' must be an object"),
])
def test_manifest_fields_of_the_wrong_type(tmp_path, changes, message):
    write(tmp_path / "c", ["a"], np.random.default_rng(0))
    _edit_manifest(tmp_path / "c", **changes)
    with pytest.raises(InputError, match=message):
        open_cache(tmp_path / "c")


def test_shard_of_another_model_copied_in(tmp_path):
    rng = np.random.default_rng(0)
    write(tmp_path / "c", ["a", "b"], rng)
    with CacheWriter(tmp_path / "other", manifest(["a", "b"], model={"type": "test", "sha256": "f" * 64})) as w:
        w.add("b", attention=random_maps(rng, 5), meta={"n_steps": 5})
    (tmp_path / "c" / "shard-r000-000000.h5").unlink()
    for shard in (tmp_path / "other").glob("shard-*.h5"):
        os.replace(shard, tmp_path / "c" / shard.name)
    with pytest.raises(InputError, match="written with another model"):
        open_cache(tmp_path / "c")
    with pytest.raises(InputError, match="written with another model"):  # nor does a writer resume into it
        CacheWriter(tmp_path / "c", manifest(["a", "b"]))


@pytest.mark.parametrize("name", ["manifest.json", "shard-r000-000000.h5"])
def test_a_pipe_under_a_cache_name_does_not_hang(tmp_path, name):
    write(tmp_path / "c", ["a"], np.random.default_rng(0))
    target = tmp_path / "c" / name
    target.unlink()
    os.mkfifo(target)
    outcome = {}

    def attempt():
        try:
            open_cache(tmp_path / "c")
        except InputError as exc:
            outcome["error"] = str(exc)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "opening the cache blocked on a pipe"
    assert "not a regular file" in outcome["error"]


def test_maps_that_are_not_softmax_rows_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    good = random_maps(rng, 6)
    for bad, what in ((good * 1.5, "do not sum to 1"), (good - 0.05, "negative"),
                      (np.where(good > 0.2, np.nan, good), "NaN")):
        path = tmp_path / what.replace(" ", "-")
        with CacheWriter(path, manifest(["u"])) as writer:
            writer.add("u", attention=bad, meta={"n_steps": 6})
        with pytest.raises(InputError, match=what):
            open_cache(path).attention("u")
    path = tmp_path / "shape"
    with CacheWriter(path, manifest(["u"])) as writer:
        writer.add("u", attention=random_maps(rng, 6, layers=1), meta={"n_steps": 6})
    with pytest.raises(InputError, match=r"has shape \[1, 3, 6, 6\], expected \[2, 3, T, T\]"):
        open_cache(path).attention("u")


def test_a_position_out_of_range_is_a_usage_error(tmp_path):
    write(tmp_path / "c", ["a"], np.random.default_rng(0))
    cache = open_cache(tmp_path / "c")
    with pytest.raises(UsageError, match=r"head position 3 is out of range: this cache stores heads \[1, 2, 3\] "
                                         r"at positions 0..2"):
        cache.attention("a", layer=0, head=3)
    with pytest.raises(UsageError, match="layer position -1"):
        cache.attention("a", layer=-1)


def test_metadata_that_lies_is_refused(tmp_path):
    import h5py

    write(tmp_path / "c", ["a"], np.random.default_rng(0))
    shard = next((tmp_path / "c").glob("shard-*.h5"))
    with h5py.File(shard, "r+") as f:
        group = f["utterances/a"]
        group.attrs["meta"] = group.attrs["meta"].replace('"n_steps": 4', '"n_steps": 5')  # crc no longer matches
    with pytest.raises(InputError, match="checksum does not match"):
        open_cache(tmp_path / "c").meta("a")
    with h5py.File(shard, "r+") as f:
        group = f["utterances/a"]
        text = json.dumps({"speaker": "s0", "n_steps": -4})
        group.attrs["meta"] = text
        del group.attrs["meta_crc32"]
        del group["frame_labels"]
        group["frame_labels"] = np.array([0, 7], dtype=np.int16)  # 7 is not a phone id (2 phones)
    with pytest.raises(InputError, match="n_steps = -4 is not a positive integer"):
        open_cache(tmp_path / "c").meta("a")


def test_single_bit_flips_never_give_silently_different_numbers(tmp_path):
    """The red team found 36 of 40 single-bit flips changed results without an error; with
    checksums on every dataset and on the metadata, a flip either changes nothing or is reported."""
    rng = np.random.default_rng(0)
    write(tmp_path / "c", ["a", "b"], rng)
    shard = next((tmp_path / "c").glob("shard-*.h5"))
    original = shard.read_bytes()

    def read_all():
        cache = open_cache(tmp_path / "c")
        out = {}
        for u in cache.utterance_ids:
            meta = cache.meta(u)
            out[u] = (cache.attention(u).tobytes(), json.dumps({k: (v.tolist() if isinstance(v, np.ndarray) else v)
                                                                for k, v in meta.items()}, sort_keys=True))
        return cache.utterance_ids, out

    reference = read_all()
    flips = np.random.default_rng(1).integers(0, len(original) * 8, size=60)
    silent = []
    for bit in flips:
        damaged = bytearray(original)
        damaged[bit // 8] ^= 1 << (bit % 8)
        shard.write_bytes(bytes(damaged))
        try:
            result = read_all()
        except InputError:
            continue
        if result != reference and result[0] == reference[0]:
            silent.append(int(bit))
    shard.write_bytes(original)
    assert silent == [], f"flips at bits {silent} changed numbers without an error"


_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-5, 70) | st.text(max_size=4) |
                       st.floats(allow_nan=True), lambda inner: st.lists(inner, max_size=3) |
                       st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=6)


@settings(max_examples=120, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(["layers", "heads", "hidden_states", "frames_per_step", "planned", "model", "corpus",
                              "settings", "schema_version"]), value=_VALUES)
def test_fuzzed_manifests_open_or_raise_input_error(tmp_path_factory, field, value):
    path = tmp_path_factory.mktemp("fuzz") / "c"
    write(path, ["a"], np.random.default_rng(0))
    _edit_manifest(path, **{field: value})
    try:
        cache = open_cache(path)
        cache.attention("a")
        cache.meta("a")
    except (InputError, UsageError) as exc:
        assert "\n" not in str(exc)


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["n_steps", "n_frames", "n_samples", "duration_s", "speaker", "split"]), value=_VALUES)
def test_fuzzed_shard_metadata(tmp_path_factory, key, value):
    import h5py

    path = tmp_path_factory.mktemp("fuzzmeta") / "c"
    write(path, ["a"], np.random.default_rng(0))
    shard = next(path.glob("shard-*.h5"))
    with h5py.File(shard, "r+") as f:
        group = f["utterances/a"]
        meta = json.loads(group.attrs["meta"])
        meta[key] = value
        group.attrs["meta"] = json.dumps(meta)
        del group.attrs["meta_crc32"]
    try:
        open_cache(path).meta("a")
    except InputError as exc:
        assert "\n" not in str(exc)
