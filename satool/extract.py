"""`satool extract`: run a model over a corpus and cache its attention (and hidden states).

One utterance at a time (bounded memory): read audio (at most ``max_frames``
10 ms frames of it), compute the model's input, encode, keep the chosen
layers and heads, append to the cache (:mod:`satool.cache`). Audio reading and
feature computation for the next utterance run ahead in one background thread,
and writing the previous utterance runs behind in another, both overlapping the
current forward pass (:mod:`satool.prefetch`). Bad utterances are recorded as skipped with the
reason and never block the cache from being complete.

Scale-out: ``shard=(i, N)`` (``--shard i/N``, or torchrun's RANK/WORLD_SIZE)
processes every N-th planned utterance starting at i into shards of its own;
the N processes together produce the same logical cache as one process.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from satool.errors import InputError, UsageError
from satool.prefetch import WriteBehind
from satool.timebase import HOP_SAMPLES, frames_to_seconds
from satool.utterance import UtteranceMeta


@dataclass
class ExtractSettings:
    layers: list[int] | None = None  # 1-based; None = all
    heads: list[int] | None = None  # 1-based; None = all
    hidden_states: list[int] = field(default_factory=list)  # 0 = embedding output
    split: str | list[str] | None = None
    phone_set: str = "auto"  # see satool.data.phones
    max_utts: int | None = None
    max_frames: int | None = None  # 10 ms frames per utterance (longer ones are truncated)
    attention: bool = True


@dataclass
class ExtractSummary:
    cache: Path
    planned: int
    written: int
    already_done: int
    skipped: list[tuple[str, str]]
    seconds: float
    audio_seconds: float


def _check_selection(name: str, chosen: list[int] | None, available: int, first: int = 1) -> list[int]:
    if chosen is None:
        return list(range(first, available + first))
    bad = [c for c in chosen if not first <= c < available + first]
    if bad:
        raise UsageError(f"--{name} {','.join(map(str, bad))} out of range ({first}..{available + first - 1})")
    return sorted(set(chosen))


def world_shard(shard: tuple[int, int] | None = None) -> tuple[int, int]:
    """(index, count) from ``shard`` or torchrun's RANK/WORLD_SIZE."""
    if shard is not None:
        index, count = shard
        if not 0 <= index < count:
            raise UsageError(f"--shard {index}/{count}: need 0 <= i < N")
        return index, count
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def extract(
    model_path: str | Path,
    corpus_path: str | Path,
    out: str | Path,
    settings: ExtractSettings | None = None,
    *,
    alignments: str | Path | None = None,
    device: str = "cpu",
    compression: str = "blosc",
    shard: tuple[int, int] | None = None,
    strict: bool = False,
    progress: Callable[[int, int], None] | None = None,
    shard_seconds: float = 30.0,
    on_ready: Callable[[dict[str, Any]], None] | None = None,
) -> ExtractSummary:
    """Extract (or resume extracting) attention maps into the cache ``out``.

    ``on_ready(plan)`` is called once every check that can be made before the work passed, with
    ``utterances`` (this process's), ``aligned`` (how many carry phone alignments) and ``phone_set``;
    ``progress(done, total)`` is called after each utterance of this process.
    """
    import torch

    from satool import __version__
    from satool.cache import CacheWriter
    from satool.data.corpus import open_corpus
    from satool.models.loading import load_model

    settings = settings or ExtractSettings()
    if settings.max_frames is not None and settings.max_frames < 1:
        raise UsageError("--max-frames must be >= 1")
    index, count = world_shard(shard)
    model = load_model(model_path, device=device)
    corpus = open_corpus(corpus_path, alignments, phone_set=settings.phone_set)
    utterances = corpus.select(settings.split, settings.max_utts)
    layers = _check_selection("layers", settings.layers, model.num_layers)
    heads = _check_selection("heads", settings.heads, model.num_heads)
    states = _check_selection("hidden", settings.hidden_states or [], len(model.hidden_state_names), first=0) \
        if settings.hidden_states else []
    planned = [u.id for u in utterances]
    if len(set(planned)) != len(planned):
        seen: set[str] = set()
        twice = next(u for u in planned if u in seen or seen.add(u))
        raise InputError(f"utterance id {twice!r} occurs more than once in this corpus", path=corpus_path)
    manifest: dict[str, Any] = {
        "satool_version": __version__,
        "model": model.provenance(),
        "layers": layers,
        "heads": heads,
        "hidden_states": states,
        "hidden_state_names": [model.hidden_state_names[s] for s in states],
        "settings": {k: v for k, v in asdict(settings).items() if k not in ("layers", "heads", "hidden_states")},
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
    layer_list = [layer - 1 for layer in layers]
    head_index = torch.tensor([h - 1 for h in heads])
    max_seconds = None if settings.max_frames is None else frames_to_seconds(settings.max_frames)

    mine = [u for i, u in enumerate(utterances) if i % count == index]
    if on_ready is not None:
        on_ready({"utterances": len(mine), "aligned": sum(u.alignment is not None for u in mine),
                  "phone_set": corpus.phone_set.name})
    writer = CacheWriter(out, manifest, rank=index, compression=compression, shard_seconds=shard_seconds)
    order = {u: i for i, u in enumerate(planned)}
    already = sum(1 for u in mine if u.id in writer.done)
    todo = [u for u in mine if u.id not in writer.done]
    skipped: list[tuple[str, str]] = []
    audio_seconds = 0.0
    began = time.perf_counter()
    phone_set = list(corpus.phone_set.names)

    def prepare(loaded):
        if settings.max_frames is not None:
            loaded.wave = loaded.wave[: (settings.max_frames - 1) * HOP_SAMPLES + 1]
        features = model.input_features(loaded.wave)  # may refuse, e.g. too short for the model
        if settings.attention:
            model.check_attention_size(features, max(layers))
        return features, audio_checksum(loaded.utterance.audio)

    done = already
    with writer, WriteBehind() as write_behind:
        if progress is not None:
            progress(done, len(mine))
        for utt, loaded, prepared in corpus.prepared(todo, prepare, max_seconds=max_seconds, strict=strict):
            if loaded is None:  # prepared holds the reason
                skipped.append((utt.id, prepared))
                write_behind(writer.add_skipped, utt.id, prepared)
            else:
                features, crc = prepared
                encoded = model.encode([features], want_attentions=settings.attention, want_hidden=bool(states),
                                       layers=layer_list)[0]
                attention = None
                if encoded.attentions is not None:
                    maps = encoded.attentions
                    if not bool(torch.isfinite(maps).all()):
                        raise InputError(f"the model produced NaN or infinite attention weights for {utt.id!r}: "
                                         "its numbers cannot be analysed (finished utterances are kept)",
                                         path=model_path)
                    if len(heads) < model.num_heads:
                        maps = maps.index_select(1, head_index)
                    attention = maps.to(torch.float16).cpu().numpy()
                hidden = encoded.hidden_states[states].to(torch.float16).cpu().numpy() if states else None
                meta = UtteranceMeta.of_loaded(utt, loaded, n_steps=encoded.n_steps,
                                               frames_per_step=model.frames_per_step, phone_set=phone_set,
                                               audio_crc32=crc, order=order[utt.id])
                write_behind(writer.add, utt.id, attention=attention, hidden=hidden, meta=meta)
                audio_seconds += loaded.duration_s
            done += 1
            if progress is not None:
                progress(done, len(mine))
    return ExtractSummary(Path(out), len(mine), done - already - len(skipped), already, skipped,
                          time.perf_counter() - began, audio_seconds)


def audio_checksum(path: Path) -> int:
    """CRC-32 of an audio file's bytes: the cache records it, so that a stage reading the corpus again
    (MFCC for segmentation, say) notices a corpus regenerated or edited under an existing cache."""
    import zlib

    checksum = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            checksum = zlib.crc32(block, checksum)
    return checksum


def parse_numbers(value: str | None) -> list[int] | None:
    """'1,3-5' -> [1, 3, 4, 5]; None/'' -> None (all)."""
    if not value:
        return None
    out: list[int] = []
    for part in value.split(","):
        part = part.strip()
        try:
            if "-" in part:
                a, b = part.split("-", 1)
                out.extend(range(int(a), int(b) + 1))
            elif part:
                out.append(int(part))
        except ValueError:
            raise UsageError(f"cannot read {value!r} as numbers (e.g. '1,3-5')") from None
    return out

