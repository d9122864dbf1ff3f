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

from satool.cache.precision import to_float32, torch_threads
from satool.cache.reader import AttentionCache, open_cache
from satool.cache.schema import (
    MANIFEST,
    SCHEMA_VERSION,
    finished_shards,
    finished_utterances,
    read_manifest,
)
from satool.cache.writer import CacheWriter, attention_chunks, write_json_atomic

__all__ = [
    "MANIFEST", "SCHEMA_VERSION", "AttentionCache", "CacheWriter", "attention_chunks", "finished_shards",
    "finished_utterances", "open_cache", "read_manifest", "to_float32", "torch_threads", "write_json_atomic",
]
