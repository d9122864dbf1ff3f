"""Stage `extract`: run a model over a corpus and cache its attention maps (and hidden states).

One utterance at a time (bounded memory): read audio (at most ``max_frames`` 10 ms frames of it),
compute the model's input, encode, keep the chosen layers and heads, append to the cache
(:mod:`satool.cache`; the manifest is :func:`satool.cache.schema.build_manifest`). Audio reading and
feature computation for the next utterance run ahead in one background thread, and writing the
previous utterance runs behind in another, both overlapping the current forward pass
(:mod:`satool.prefetch`). Bad utterances are recorded as skipped with the reason and never block the
cache from being complete.

Scale-out: ``shard=(i, N)`` (``--shard i/N``, or torchrun's RANK/WORLD_SIZE) processes every N-th
planned utterance starting at i into shards of its own; the N processes together produce the same
logical cache as one process.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from satool.cache.schema import DEFAULT_COMPRESSION, FLUSH_EVERY_S
from satool.stages import Log, NoProgress, Progress, quiet


@dataclass
class Settings:
    checkpoint: Path  # any registered model
    corpus: Path
    out: Path = Path("attention-cache")
    alignments: Path | None = None
    split: str | list[str] | None = None  # splits or families; None = all
    phone_set: str = "auto"  # see satool.data.phones
    layers: list[int] | None = None  # 1-based; None = all
    heads: list[int] | None = None  # 1-based; None = all
    hidden_states: list[int] = field(default_factory=list)  # 0 = embedding output
    max_utts: int | None = None
    max_frames: int | None = None  # 10 ms frames per utterance (longer ones are truncated)
    attention: bool = True  # store the maps (False: hidden states only)
    maps: str = "attention"  # map kind stored (satool.maps): attention, value-norm or rollout
    compression: str = DEFAULT_COMPRESSION
    shard: tuple[int, int] | None = None  # (i, N): this process's share; None = torchrun's or all
    strict: bool = False  # stop at the first bad utterance instead of skipping it
    flush_every: float = FLUSH_EVERY_S  # seconds between shard closes
    device: str = "auto"


@dataclass
class ExtractSummary:
    """What ``run`` returns: this process's share of the cache."""

    cache: Path
    planned: int
    written: int
    already_done: int
    skipped: list[tuple[str, str]]
    seconds: float
    audio_seconds: float



def _check_selection(name: str, chosen: list[int] | None, available: int, first: int = 1) -> list[int]:
    from satool.errors import UsageError

    if chosen is None:
        return list(range(first, available + first))
    bad = [c for c in chosen if not first <= c < available + first]
    if bad:
        raise UsageError(f"--{name} {','.join(map(str, bad))} out of range ({first}..{available + first - 1})")
    return sorted(set(chosen))


def world_shard(shard: tuple[int, int] | None = None) -> tuple[int, int]:
    """(index, count) from ``shard`` or torchrun's RANK/WORLD_SIZE."""
    from satool.errors import UsageError

    if shard is not None:
        index, count = shard
        if not 0 <= index < count:
            raise UsageError(f"--shard {index}/{count}: need 0 <= i < N")
        return index, count
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def run(settings: Settings, progress: Progress | None = None, log: Log = quiet,
        on_ready: Callable[[dict[str, Any]], None] | None = None) -> ExtractSummary:
    """Extract (or resume extracting) attention maps into the cache ``settings.out``.

    ``on_ready(plan)`` is called once every check that can be made before the work passed, with
    ``utterances`` (this process's), ``aligned`` (how many carry phone alignments) and ``phone_set``;
    ``progress.total(total, done)`` is called after each utterance of this process.
    """
    import torch

    from satool.cache import CacheWriter
    from satool.cache.schema import build_manifest
    from satool.data.audio import audio_checksum
    from satool.data.corpus import open_corpus
    from satool.errors import InputError, UsageError
    from satool.models.loading import load_model
    from satool.plugins import get_plugins
    from satool.prefetch import WriteBehind
    from satool.timebase import HOP_SAMPLES, frames_to_seconds
    from satool.utterance import UtteranceMeta

    s = settings
    progress = progress or NoProgress()
    if s.max_frames is not None and s.max_frames < 1:
        raise UsageError("--max-frames must be >= 1")
    index, count = world_shard(s.shard)
    plugins = get_plugins()
    model = load_model(s.checkpoint, device=s.device, loaders=plugins.models.objects())
    corpus = open_corpus(s.corpus, s.alignments, readers=plugins.corpora.objects(), phone_set=s.phone_set)
    utterances = corpus.select(s.split, s.max_utts)
    from satool.maps import PER_LAYER, heads_of

    model.require_maps(s.maps)
    layers = _check_selection("layers", s.layers, model.num_layers)
    if s.maps in PER_LAYER and s.heads is not None:
        raise UsageError(f"--maps {s.maps} stores one map per layer: --heads does not apply")
    heads = heads_of(s.maps, model.num_heads) if s.maps in PER_LAYER else \
        _check_selection("heads", s.heads, model.num_heads)
    states = _check_selection("hidden", s.hidden_states, len(model.hidden_state_names), first=0) \
        if s.hidden_states else []
    planned = [u.id for u in utterances]
    if len(set(planned)) != len(planned):
        seen: set[str] = set()
        twice = next(u for u in planned if u in seen or seen.add(u))
        raise InputError(f"utterance id {twice!r} occurs more than once in this corpus", path=s.corpus)
    manifest = build_manifest(
        model, corpus, corpus_path=s.corpus, alignments=s.alignments, layers=layers, heads=heads,
        hidden_states=states, planned=planned, compression=s.compression, maps=s.maps,
        settings={"split": s.split, "phone_set": s.phone_set, "max_utts": s.max_utts, "max_frames": s.max_frames,
                  "attention": s.attention})
    layer_list = [layer - 1 for layer in layers]
    head_index = torch.tensor([h - 1 for h in heads])
    max_seconds = None if s.max_frames is None else frames_to_seconds(s.max_frames)

    mine = [u for i, u in enumerate(utterances) if i % count == index]
    if on_ready is not None:
        on_ready({"utterances": len(mine), "aligned": sum(u.alignment is not None for u in mine),
                  "phone_set": corpus.phone_set.name})
    writer = CacheWriter(s.out, manifest, rank=index, compression=s.compression, flush_every=s.flush_every)
    order = {u: i for i, u in enumerate(planned)}
    already = sum(1 for u in mine if u.id in writer.done)
    todo = [u for u in mine if u.id not in writer.done]
    skipped: list[tuple[str, str]] = []
    audio_seconds = 0.0
    began = time.perf_counter()
    phone_set = list(corpus.phone_set.names)

    def prepare(loaded):
        if s.max_frames is not None:
            loaded.wave = loaded.wave[: (s.max_frames - 1) * HOP_SAMPLES + 1]
        features = model.input_features(loaded.wave)  # may refuse, e.g. too short for the model
        if s.attention:
            model.check_attention_size(features, max(layers))
        return features, audio_checksum(loaded.utterance.audio)

    done = already
    with writer, WriteBehind() as write_behind:
        progress.total(len(mine), done)
        for utt, loaded, prepared in corpus.prepared(todo, prepare, max_seconds=max_seconds, strict=s.strict):
            if loaded is None:  # prepared holds the reason
                skipped.append((utt.id, prepared))
                write_behind(writer.add_skipped, utt.id, prepared)
            else:
                features, crc = prepared
                if s.attention:
                    encoded = model.encode_maps(features, maps=s.maps, layers=layer_list, want_hidden=bool(states))
                else:
                    encoded = model.encode([features], want_attentions=False, want_hidden=bool(states),
                                           layers=layer_list)[0]
                attention = None
                if encoded.attentions is not None:
                    maps = encoded.attentions
                    if not bool(torch.isfinite(maps).all()):
                        raise InputError(f"the model produced NaN or infinite attention weights for {utt.id!r}: "
                                         "its numbers cannot be analysed (finished utterances are kept)",
                                         path=s.checkpoint)
                    if maps.shape[1] > len(heads):
                        maps = maps.index_select(1, head_index)
                    attention = maps.to(torch.float16).cpu().numpy()
                hidden = encoded.hidden_states[states].to(torch.float16).cpu().numpy() if states else None
                norms = None
                if encoded.value_norms is not None:  # the raw norms, before the rows were normalised
                    norms = encoded.value_norms
                    if norms.shape[1] > len(heads):
                        norms = norms.index_select(1, head_index)
                    norms = norms.float().cpu().numpy()
                meta = UtteranceMeta.of_loaded(utt, loaded, n_steps=encoded.n_steps,
                                               frames_per_step=model.frames_per_step, phone_set=phone_set,
                                               audio_crc32=crc, order=order[utt.id])
                write_behind(writer.add, utt.id, attention=attention, hidden=hidden, meta=meta, value_norms=norms)
                audio_seconds += loaded.duration_s
            done += 1
            progress.total(len(mine), done)
    for utt_id, reason in skipped:
        log(f"{utt_id}: {reason}", "skipped")
    return ExtractSummary(Path(s.out), len(mine), done - already - len(skipped), already, skipped,
                          time.perf_counter() - began, audio_seconds)


def record(workspace, settings: Settings, outputs: ExtractSummary) -> None:
    split = settings.split
    workspace.record("extract", {"checkpoint": settings.checkpoint, "corpus": settings.corpus,
                                 "alignments": settings.alignments, "cache": settings.out},
                     split=",".join(split) if isinstance(split, list) else split, max_frames=settings.max_frames,
                     maps=settings.maps)
