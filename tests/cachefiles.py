"""Small attention caches of random maps for tests (two layers, three heads, three frames per step)."""

from __future__ import annotations

import numpy as np

from satool.cache import CacheWriter


def manifest(planned, **extra):
    return {
        "model": {"type": "test", "sha256": "0" * 64}, "layers": [1, 2], "heads": [1, 2, 3],
        "hidden_states": [], "settings": {}, "planned": planned, "frames_per_step": 3,
        "corpus": {"phone_set": ["AA", "sil"]}, **extra,
    }


def random_maps(rng, steps, layers=2, heads=3):
    a = rng.random((layers, heads, steps, steps)).astype(np.float32)
    return a / a.sum(-1, keepdims=True)


def write(path, ids, rng, *, shard_bytes=1 << 30, **kwargs):
    maps = {}
    with CacheWriter(path, manifest(ids), shard_bytes=shard_bytes, **kwargs) as writer:
        for i, utt in enumerate(ids):
            maps[utt] = random_maps(rng, 4 + i)
            writer.add(utt, attention=maps[utt], meta={
                "speaker": f"s{i % 2}", "n_steps": 4 + i, "n_frames": 3 * (4 + i) + 1,
                "frame_labels": np.arange(3 * (4 + i), dtype=np.int16) % 2,
                "boundaries": np.array([0.03, 0.06]),
            })
    return maps
