"""The attention cache: round trip, shards, resume, locks, manifests, disk errors."""

from __future__ import annotations

import errno
import json

import numpy as np
import pytest
from cachefiles import manifest, random_maps, write

from satool.cache import SCHEMA_VERSION, CacheWriter, attention_chunks, open_cache
from satool.errors import BusyError, EnvironmentProblem, InputError, UsageError


def test_attention_chunks_hold_whole_maps_of_one_layer_up_to_one_mib():
    assert attention_chunks((4, 12, 100, 100)) == (1, 12, 100, 100)  # 12 x 20 kB: the whole layer
    assert attention_chunks((1, 12, 300, 300)) == (1, 5, 300, 300)  # 180 kB maps: 5 fit in 1 MiB
    assert attention_chunks((2, 12, 1000, 1000)) == (1, 1, 1000, 1000)  # 2 MB maps: one per chunk
    assert attention_chunks((1, 3, 1, 1)) == (1, 3, 1, 1)


def test_one_head_reads_right_when_a_chunk_holds_several_heads(tmp_path):
    rng = np.random.default_rng(3)
    maps = random_maps(rng, 400, layers=2, heads=5)  # 320 kB per map: chunks of 3 heads, then 2
    with CacheWriter(tmp_path / "c", manifest(["u"], heads=[1, 2, 3, 4, 5])) as writer:
        writer.add("u", attention=maps, meta={"n_steps": 400})
    cache = open_cache(tmp_path / "c")
    for layer in range(2):
        for head in range(5):
            np.testing.assert_allclose(cache.attention("u", layer=layer, head=head), maps[layer, head], atol=5e-4)


@pytest.mark.parametrize("compression", ["none", "blosc", "lzf", "gzip"])
def test_round_trip(tmp_path, compression):
    rng = np.random.default_rng(0)
    ids = [f"u{i}" for i in range(5)]
    maps = write(tmp_path / "c", ids, rng, compression=compression, shard_bytes=500)
    assert len(list((tmp_path / "c").glob("shard-*.h5"))) >= 2  # several shards
    cache = open_cache(tmp_path / "c")
    assert cache.utterance_ids == ids and cache.complete
    assert cache.layers == [1, 2] and cache.heads == [1, 2, 3] and cache.frames_per_step == 3
    for utt, a in maps.items():
        np.testing.assert_allclose(cache.attention(utt), a, atol=5e-4)  # float16 on disk
        np.testing.assert_array_equal(cache.attention(utt, layer=1, head=2), cache.attention(utt)[1, 2])
        np.testing.assert_array_equal(cache.attention(utt, layer=0), cache.attention(utt)[0])
        assert cache.attention(utt).dtype == np.float32
    meta = cache.meta("u3")
    assert meta["speaker"] == "s1" and meta["n_steps"] == 7 and meta.frames_per_step == 3
    assert meta["frame_labels"].tolist() == (np.arange(21) % 2).tolist()
    assert meta["phone_set"] == ["AA", "sil"]
    assert cache.attrs["schema_version"] == SCHEMA_VERSION


def test_stored_maps_and_float32_copies(tmp_path):
    import torch

    from satool.cache import to_float32

    rng = np.random.default_rng(5)
    maps = write(tmp_path / "c", ["a", "b"], rng)
    cache = open_cache(tmp_path / "c")
    stored = cache.attention("b", stored=True)
    assert stored.dtype == np.float16 and stored.shape == maps["b"].shape
    np.testing.assert_array_equal(stored.astype(np.float32), cache.attention("b"))  # numpy's own cast
    threads = torch.get_num_threads()
    out = np.full(stored.shape, np.nan, np.float32)
    assert to_float32(stored, out) is out
    np.testing.assert_array_equal(out, stored.astype(np.float32))
    assert torch.get_num_threads() == threads  # the single-thread cast restores torch's setting
    np.testing.assert_array_equal(to_float32(maps["b"].astype(np.float64), out), maps["b"])


def test_cache_stream_reuses_one_buffer_and_matches_attention(tmp_path):
    from satool.analysis.scoring import cache_stream

    rng = np.random.default_rng(6)
    ids = [f"u{i}" for i in range(4)]
    write(tmp_path / "c", ids, rng)
    cache = open_cache(tmp_path / "c")
    seen = []
    longest_first = ids[::-1]  # maps of 7, 6, 5 and 4 steps
    for (attn, meta), utt in zip(cache_stream(cache, longest_first, reuse_buffer=True), longest_first, strict=True):
        assert meta["id"] == utt and attn.dtype == np.float32
        np.testing.assert_array_equal(attn, cache.attention(utt))
        seen.append(attn)
    assert all(np.shares_memory(seen[0], a) for a in seen)  # one buffer, sized by the first map
    fresh = [a for a, _ in cache_stream(cache)]
    assert not np.shares_memory(fresh[0], fresh[1])
    for a, utt in zip(fresh, ids):
        np.testing.assert_array_equal(a, cache.attention(utt))


def test_partial_shard_is_ignored_and_resume_skips_finished(tmp_path):
    rng = np.random.default_rng(1)
    ids = ["a", "b", "c", "d"]
    writer = CacheWriter(tmp_path / "c", manifest(ids))
    writer.add("a", attention=random_maps(rng, 3), meta={"speaker": "x"})
    writer.finish_shard()
    writer.add("b", attention=random_maps(rng, 3), meta={"speaker": "x"})
    # simulate a crash: the shard holding 'b' is never finished, the lock dies with us
    writer._lock.release()
    partial = list((tmp_path / "c").glob("*.partial"))
    assert len(partial) == 1
    cache = open_cache(tmp_path / "c")
    assert cache.utterance_ids == ["a"] and cache.missing_ids == ["b", "c", "d"]
    with pytest.raises(InputError, match=r"3 of 4 planned utterances are missing"):
        cache.require_complete()
    warnings = []
    cache.require_complete(allow_partial=True, warn=warnings.append)
    assert "using the 1 finished ones" in warnings[0]
    resumed = CacheWriter(tmp_path / "c", manifest(ids))
    assert resumed.done == {"a"}
    assert not list((tmp_path / "c").glob("*.partial"))  # stale partial removed
    for utt in ids:
        resumed.add(utt, attention=random_maps(rng, 3), meta={"speaker": "x"})  # 'a' is skipped
    resumed.close()
    assert open_cache(tmp_path / "c").utterance_ids == ids
    assert not open_cache(tmp_path / "c").duplicate_ids


def test_second_writer_is_refused(tmp_path):
    first = CacheWriter(tmp_path / "c", manifest(["a"]))
    with pytest.raises(BusyError, match="another satool process is writing this cache"):
        CacheWriter(tmp_path / "c", manifest(["a"]))
    first.close()
    CacheWriter(tmp_path / "c", manifest(["a"])).close()  # free again


def test_other_settings_are_refused(tmp_path):
    CacheWriter(tmp_path / "c", manifest(["a"])).close()
    with pytest.raises(UsageError, match="made with different layers"):
        CacheWriter(tmp_path / "c", {**manifest(["a"]), "layers": [1]})


def test_not_a_cache_and_wrong_schema(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "file.txt").write_text("hi")
    with pytest.raises(UsageError, match="not a satool cache"):
        CacheWriter(tmp_path / "x", manifest(["a"]))
    with pytest.raises(InputError, match="x: not a satool cache"):
        open_cache(tmp_path / "x")
    CacheWriter(tmp_path / "c", manifest(["a"])).close()
    data = json.loads((tmp_path / "c" / "manifest.json").read_text())
    data["schema_version"] = 99
    (tmp_path / "c" / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match="cache schema version 99 is not supported"):
        open_cache(tmp_path / "c")


def test_truncated_shard_is_reported(tmp_path):
    write(tmp_path / "c", ["a", "b"], np.random.default_rng(2))
    shard = next((tmp_path / "c").glob("shard-*.h5"))
    shard.write_bytes(shard.read_bytes()[:300])
    with pytest.raises(InputError, match=rf"{shard.name}: corrupt cache shard"):
        open_cache(tmp_path / "c")


def test_missing_dataset_and_corrupt_chunk_are_reported(tmp_path):
    import h5py

    diagonal = np.broadcast_to(np.eye(40, dtype=np.float32), (2, 3, 40, 40))  # compresses well
    with CacheWriter(tmp_path / "c", manifest(["a", "b"])) as writer:  # attention only, no hidden states
        for utt in ("a", "b"):
            writer.add(utt, attention=diagonal, meta={"n_steps": 40})
    shard = next((tmp_path / "c").glob("shard-*.h5"))
    cache = open_cache(tmp_path / "c")
    with pytest.raises(InputError, match=rf"{shard.name}: utterance 'a' has no 'hidden' dataset"):
        cache.hidden("a")
    cache.close()
    with h5py.File(shard, "r") as f:  # where b's first Blosc-compressed chunk sits in the file
        chunk = f["utterances/b/attention"].id.get_chunk_info(0)
    assert chunk.filter_mask == 0  # the filter ran on it (tiny chunks are stored raw)
    with open(shard, "r+b") as f:
        f.seek(chunk.byte_offset)
        f.write(b"\xff" * chunk.size)
    cache = open_cache(tmp_path / "c")
    with pytest.raises(InputError, match=rf"{shard.name}: corrupt data for 'b'"):
        cache.attention("b")
    assert cache.attention("a").shape == (2, 3, 40, 40)  # the other utterance still reads


def test_disk_full_leaves_no_finished_shard(tmp_path, monkeypatch):
    import os

    ids = ["a", "b"]
    writer = CacheWriter(tmp_path / "c", manifest(ids))
    writer.add("a", attention=random_maps(np.random.default_rng(3), 3), meta={})

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("satool.cache.writer.os.replace", full)
    with pytest.raises(EnvironmentProblem, match="cannot write the cache \\(No space left on device\\)"):
        writer.finish_shard()
    monkeypatch.undo()
    writer._lock.release()
    assert not list((tmp_path / "c").glob("shard-*.h5*"))  # nothing taken for finished
    assert open_cache(tmp_path / "c").utterance_ids == []


def test_read_only_directory(tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("root ignores directory permissions; covered by the simulated disk-error test")
    (tmp_path / "ro").mkdir()
    os.chmod(tmp_path / "ro", 0o555)
    with pytest.raises(EnvironmentProblem, match="cannot write the cache"):
        CacheWriter(tmp_path / "ro" / "c", manifest(["a"]))
