"""`satool metric` over a cache vs reading every attention map of that cache once.

    python benchmarks/bench_metric.py [--cache DIR] [--utterances N] [--rounds R]

Target (issue 6): scoring all built-in metrics takes at most 1.2x the time of
reading every map once with ``cache.attention`` (float32). All rows are
measured in the same run on the same cache, in interleaved rounds (one cache is
built from tone audio and a random demo-size model if none is given). Two more
rows put the ratio in context: satool's streaming reader alone (read ahead,
float32 copy into one reused buffer, no metrics) and decompression alone
(float16 as stored, no float32 copy at all: a lower bound for any reader).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _bench import best_times_interleaved, print_table  # noqa: E402

from satool import testing  # noqa: E402
from satool.analysis.metrics import BUILTIN_METRICS  # noqa: E402
from satool.analysis.scoring import cache_stream, score_cache  # noqa: E402
from satool.cache import open_cache  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache")
    parser.add_argument("--utterances", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="satool-bench-"))
    try:
        if args.cache:
            path = Path(args.cache)
        else:
            from satool.stages import extract as extract_stage

            n = args.utterances
            testing.make_librispeech(work / "LS", speakers=tuple(str(10 + i) for i in range(n // 4)), per_speaker=4)
            phones = testing.DEFAULT_PHONES * 3  # ~3.4 s utterances: 110 steps at R = 3
            for flac in sorted((work / "LS").rglob("*.flac")):
                import soundfile

                soundfile.write(flac, testing.tone_audio(phones, seed=zlib.crc32(flac.name.encode()) % 1000), 16000)
                flac.with_suffix(".TextGrid").unlink()
            extract_stage.run(extract_stage.Settings(checkpoint=testing.make_checkpoint(work / "m.ckpt", preset="demo"),
                                                     corpus=work / "LS", out=work / "cache"))
            path = work / "cache"
        cache = open_cache(path)
        values = sum(cache.meta(u)["n_steps"] ** 2 for u in cache.utterance_ids) * len(cache.layers) * len(
            cache.heads)

        def read_all():
            for u in cache.utterance_ids:
                cache.attention(u)

        def stream_all():
            for _ in cache_stream(cache, reuse_buffer=True):
                pass

        def decompress_all():
            for u in cache.utterance_ids:
                cache.attention(u, stored=True)

        best = best_times_interleaved({
            "read": read_all, "stream": stream_all, "decompress": decompress_all,
            "score": lambda: score_cache(cache, BUILTIN_METRICS),
        }, rounds=args.rounds)
        read = best["read"]
        print_table(
            f"satool metric on {len(cache.utterance_ids)} cached utterances ({values / 1e6:.1f} M attention values, "
            f"best of {args.rounds} interleaved rounds)",
            ["what", "seconds", "ratio to reading (target <= 1.2)", "ratio to decompressing"],
            [["read every map once (cache.attention, float32)", read, 1.0, read / best["decompress"]],
             ["stream every map (read ahead, one float32 buffer)", best["stream"], best["stream"] / read,
              best["stream"] / best["decompress"]],
             ["decompress every map (float16 as stored)", best["decompress"], best["decompress"] / read, 1.0],
             ["score G, V, D, W (one pass)", best["score"], best["score"] / read,
              best["score"] / best["decompress"]]],
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
