"""Extraction benchmarks: overhead over the forward pass, compression, memory, and a transformers baseline.

    python benchmarks/bench_extract.py [--checkpoint CKPT --corpus DIR] [--quick]

Everything is measured in the same run and reported as ratios:

1. extract throughput / forward-only throughput on the same utterances (target >= 0.8);
2. cache size and write time per utterance for compression none / lzf / gzip+shuffle,
   on the maps of a trained model when --checkpoint is given (the demo's model by
   default if ./satool-demo exists; random weights otherwise, which compress worse);
3. peak RSS of `satool extract` for 10 vs 100 utterances (bounded memory);
4. satool vs the usual alternative: a transformers BertModel of the same size with
   eager attention and output_attentions=True, maps written per utterance as float32
   with h5py, at T = 250 steps (targets: satool >= 1.1x faster, <= half the bytes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _bench import print_table  # noqa: E402

from satool import testing  # noqa: E402

DEMO = Path("satool-demo")


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def inputs(args, work: Path) -> tuple[Path, Path, str]:
    if args.checkpoint and args.corpus:
        return Path(args.checkpoint), Path(args.corpus), "given checkpoint"
    if (DEMO / "model.ckpt").exists() and (DEMO / "corpus").exists():
        return DEMO / "model.ckpt", DEMO / "corpus", "demo model (trained)"
    corpus = work / "LS"
    testing.make_librispeech(corpus, speakers=tuple(str(100 + i) for i in range(30)), per_speaker=4)
    return testing.make_checkpoint(work / "ckpt.pt", preset="demo"), corpus, "random weights (untrained)"


def overhead(ckpt: Path, corpus: Path, work: Path, n: int, label: str) -> list[list]:
    """The cache's cost: the same pipeline (prefetched audio + features, encode) with and without writing."""
    from satool.data.corpus import open_corpus
    from satool.models.loading import load_model
    from satool.prefetch import prefetched
    from satool.stages import extract as extract_stage

    model = load_model(ckpt)
    c = open_corpus(corpus)
    utts = c.select(None, n)

    def prepare(utt):
        return model.input_features(c.load(utt).wave)

    start = time.perf_counter()
    for _, features in prefetched(utts, prepare):
        model.encode([features], layers=None)[0].attentions.to(torch.float16).numpy()
    forward = time.perf_counter() - start
    summary = extract_stage.run(extract_stage.Settings(checkpoint=ckpt, corpus=corpus,
                                                       out=work / f"overhead-{label}", max_utts=n))
    return [[f"{label}: audio -> features -> maps, not stored", forward / n * 1e3, 1.0],
            [f"{label}: satool extract (same, stored in the cache)", summary.seconds / n * 1e3,
             forward / summary.seconds]]


def compression(ckpt: Path, corpus: Path, work: Path, n: int) -> list[list]:
    from satool.stages import extract as extract_stage

    rows = []
    for method in ("none", "blosc", "lzf", "gzip"):
        out = work / f"comp-{method}"
        start = time.perf_counter()
        extract_stage.run(extract_stage.Settings(checkpoint=ckpt, corpus=corpus, out=out, max_utts=n,
                                                 compression=method))
        seconds = time.perf_counter() - start
        from satool.cache import open_cache

        cache = open_cache(out)
        values = sum(int(np.prod(cache.attention(u).shape)) for u in cache.utterance_ids)
        size = dir_bytes(out)
        read_start = time.perf_counter()
        for u in cache.utterance_ids:
            cache.attention(u)
        read = time.perf_counter() - read_start
        rows.append([method, size / n / 1e6, size / values, seconds / n * 1e3, read / n * 1e3])
    return rows


RSS_SCRIPT = """
import resource, sys
from satool.stages import extract as extract_stage
extract_stage.run(extract_stage.Settings(checkpoint=sys.argv[1], corpus=sys.argv[2], out=sys.argv[3],
                                         max_utts=int(sys.argv[4])))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_rss(ckpt: Path, corpus: Path, work: Path) -> list[list]:
    rows = []
    for n in (10, 100):
        out = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(ckpt), str(corpus), str(work / f"rss{n}"),
                              str(n)], capture_output=True, text=True, check=True)
        rows.append([n, int(out.stdout.strip().splitlines()[-1]) / 1024])
    rows[1].append(rows[1][1] / rows[0][1])
    rows[0].append(1.0)
    return rows


def versus_transformers(work: Path, preset: str, steps: int, n: int) -> list[list]:
    import h5py
    from transformers import BertConfig, BertModel

    from satool.cache import CacheWriter
    from satool.models.mockingjay import MockingjayConfig, MockingjayEncoder
    from satool.prefetch import WriteBehind

    config = MockingjayConfig.preset(preset, input_dim=80, downsample_rate=3)
    encoder = MockingjayEncoder(config).eval()
    bert = BertModel(BertConfig(
        hidden_size=config.hidden_size, num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
        intermediate_size=config.intermediate_size, max_position_embeddings=max(512, steps),
        attn_implementation="eager",
    )).eval()
    x = [torch.randn(1, steps, config.step_input_dim) for _ in range(n)]
    embeds = [torch.randn(1, steps, config.hidden_size) for _ in range(n)]

    hf_dir = work / f"hf-{preset}"
    hf_dir.mkdir()
    start = time.perf_counter()
    with torch.no_grad(), h5py.File(hf_dir / "attn.h5", "w") as f:
        for i, e in enumerate(embeds):
            out = bert(inputs_embeds=e, output_attentions=True)
            maps = torch.stack(out.attentions)[:, 0].numpy()  # [layer, head, q, k] float32
            f.create_dataset(f"utt{i}", data=maps)
    hf_time = time.perf_counter() - start
    hf_bytes = dir_bytes(hf_dir)

    ours = work / f"satool-{preset}"
    manifest = {"model": {"type": "bench"}, "layers": list(range(1, config.num_layers + 1)),
                "heads": list(range(1, config.num_heads + 1)), "hidden_states": [], "settings": {},
                "planned": [f"utt{i}" for i in range(n)], "frames_per_step": 3}
    start = time.perf_counter()
    with torch.no_grad(), CacheWriter(ours, manifest) as writer, WriteBehind() as write_behind:
        for i, xi in enumerate(x):  # as satool extract does it: write one utterance while encoding the next
            maps = torch.stack(encoder(xi, output_hidden_states=False).attentions)[:, 0]
            write_behind(writer.add, f"utt{i}", attention=maps.to(torch.float16).numpy(), meta={"n_steps": steps})
    our_time = time.perf_counter() - start
    our_bytes = dir_bytes(ours)
    return [
        [f"{preset}: transformers BertModel eager + h5py float32", hf_time / n * 1e3, hf_bytes / n / 1e6, 1.0, 1.0],
        [f"{preset}: satool encoder + cache (float16, blosc)", our_time / n * 1e3, our_bytes / n / 1e6,
         hf_time / our_time, our_bytes / hf_bytes],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint")
    parser.add_argument("--corpus")
    parser.add_argument("--quick", action="store_true", help="fewer utterances, demo size only")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="satool-bench-"))
    try:
        ckpt, corpus, what = inputs(args, work)
        n = 10 if args.quick else 40
        rows = overhead(ckpt, corpus, work, n, f"{what}")
        base = testing.make_checkpoint(work / "base.ckpt", preset="base")
        rows += overhead(base, corpus, work, n, "base preset (3 x 12 x 768, random weights)")
        print_table(f"1. Extraction throughput / forward-only throughput ({n} utterances of {corpus})",
                    ["what", "ms per utterance", "throughput ratio (target >= 0.8)"], rows)
        print_table(f"2. Compression of float16 maps ({n} utterances, {what})",
                    ["compression", "MB per utterance", "bytes per value", "write ms/utt (incl. forward)",
                     "read ms/utt"], compression(ckpt, corpus, work, n))
        if not args.quick:
            print_table("3. Peak memory of satool extract (bounded: should not grow with utterances)",
                        ["utterances", "peak RSS MB", "ratio to 10"], peak_rss(ckpt, corpus, work))
        rows = []
        for preset, count in (("demo", 6 if args.quick else 20), ("large", 2 if args.quick else 6)):
            rows += versus_transformers(work, preset, 250, count)
        print_table("4. satool vs transformers BertModel at T = 250 steps (per utterance)",
                    ["what", "ms/utt", "MB/utt", "speed ratio (>= 1.1)", "bytes ratio (<= 0.5)"], rows)
        print(json.dumps({"threads": torch.get_num_threads(), "cpus": os.cpu_count()}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
