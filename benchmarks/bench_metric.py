"""`satool metric` over a cache vs reading every attention map of that cache once.

    python benchmarks/bench_metric.py [--cache DIR] [--utterances N]

Target (issue 6): scoring all built-in metrics takes at most 1.2x the time of
reading every map once. Both are measured in the same run on the same cache
(one is built from tone audio and a random demo-size model if none is given).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _bench import best_time, print_table  # noqa: E402

from satool import testing  # noqa: E402
from satool.cache import open_cache  # noqa: E402
from satool.headscores import score_cache  # noqa: E402
from satool.metrics import BUILTIN_METRICS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache")
    parser.add_argument("--utterances", type=int, default=60)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="satool-bench-"))
    try:
        if args.cache:
            path = Path(args.cache)
        else:
            from satool.extract import ExtractSettings, extract

            n = args.utterances
            testing.make_librispeech(work / "LS", speakers=tuple(str(10 + i) for i in range(n // 4)), per_speaker=4)
            phones = testing.DEFAULT_PHONES * 3  # ~3.4 s utterances: 110 steps at R = 3
            for flac in sorted((work / "LS").rglob("*.flac")):
                import soundfile

                soundfile.write(flac, testing.tone_audio(phones, seed=hash(flac.name) % 1000), 16000)
                flac.with_suffix(".TextGrid").unlink()
            extract(testing.make_checkpoint(work / "m.ckpt", preset="demo"), work / "LS", work / "cache",
                    ExtractSettings())
            path = work / "cache"
        cache = open_cache(path)
        values = sum(cache.meta(u)["n_steps"] ** 2 for u in cache.utterance_ids) * len(cache.layers) * len(
            cache.heads)

        def read_all():
            for u in cache.utterance_ids:
                cache.attention(u)

        read = best_time(read_all, repeats=3, warmup=0)
        score = best_time(lambda: score_cache(cache, BUILTIN_METRICS), repeats=3, warmup=0)
        print_table(
            f"satool metric on {len(cache.utterance_ids)} cached utterances ({values / 1e6:.1f} M attention values)",
            ["what", "seconds", "ratio to reading (target <= 1.2)"],
            [["read every map once", read, 1.0], ["score G, V, D, W (one pass)", score, score / read]],
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
