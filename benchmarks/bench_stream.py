"""Streaming passes at real model size: throughput against the matmul floor and against the usual
alternative, memory against corpus size, bytes kept per utterance (docs/scale.md).

    python benchmarks/bench_stream.py [--sizes base,large] [--utts 3] [--memory-utts 10,1000]
                                      [--memory-seconds 10,20] [--long 60] [--cores-per-node 32] [--quick]
                                      [--device cuda]

Models are HuBERT-shaped and randomly initialised from local configs (base: 12 x 12 heads, 768;
large: 24 x 16 heads, 1024, pre-LN), saved as transformers directories and loaded by satool's
hf-speech loader; the corpus is synthetic (LibriSpeech layout, 10-20 s utterances of tones and
noise). Every ratio is measured in the same run:

- **floor**: float32 GEMM rate (n = 1024) of this machine; the forward's efficiency is its matmul
  FLOPs (feature encoder, transformer, attention) per second over that rate, for the forward that
  computes every layer's maps in query blocks (what a metric pass needs);
- **alternative**: transformers' own ``HubertModel`` with ``attn_implementation="eager"`` and
  ``output_attentions=True`` (every layer's maps at once), then the same numpy reductions
  (``ScoreSums.add_maps``: G, V, D, W, offset sums, 200 bootstrap replicates);
- **heads**: the forward a segmentation of two heads needs (the middle and the last layer's first
  head), with every head's weights of those layers (1) against the two heads' only (fused attention
  for the others);
- **satool**: ``satool metric CKPT CORPUS``'s pass (the stream: query blocks, float16 rounding,
  block-wise reductions, the same replicates), audio reading included;
- **memory**: peak RSS of a streaming pass over 10 and over 1,000 utterances (a fresh process each;
  ``--memory-size``, default a narrow HuBERT-shaped model so that 1,000 utterances of 10-20 s fit
  in minutes on a laptop), and the partial-sums file's size: its growth per utterance is the bytes
  a stream keeps per utterance.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _bench import best_time, print_table  # noqa: E402

SIZES = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                 conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                  do_stable_layer_norm=True, feat_extract_norm="layer"),
}


def build_model(root: Path, size: str) -> Path:
    """A randomly initialised HuBERT-shaped transformers directory (safetensors)."""
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    directory = root / f"hubert-{size}"
    if (directory / "config.json").exists():
        return directory
    torch.manual_seed(0)
    model = HubertModel(HubertConfig(**SIZES[size])).eval()
    model.save_pretrained(directory)
    Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(directory)
    return directory


def build_corpus(root: Path, count: int, low: float = 10.0, high: float = 20.0, seed: int = 0) -> Path:
    """LibriSpeech layout, ``count`` utterances of ``low``-``high`` s (tones with an envelope, noise)."""
    import soundfile

    corpus = root / f"corpus-{count}-{low:g}-{high:g}"
    if corpus.exists():
        return corpus
    rng = np.random.default_rng(seed)
    per_chapter = 100
    for start in range(0, count, per_chapter):
        speaker, chapter = str(100 + start // per_chapter), "1"
        folder = corpus / "dev-clean" / speaker / chapter
        folder.mkdir(parents=True)
        lines = []
        for n in range(start, min(count, start + per_chapter)):
            seconds = rng.uniform(low, high)
            t = np.arange(int(seconds * 16000)) / 16000
            pitch = rng.uniform(100, 300) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.2, 1) * t))
            envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 6) * t) ** 2
            wave = 0.2 * envelope * np.sin(2 * np.pi * np.cumsum(pitch) / 16000) + 0.01 * rng.standard_normal(len(t))
            utt = f"{speaker}-{chapter}-{n:04d}"
            soundfile.write(folder / f"{utt}.flac", wave.astype(np.float32), 16000)
            lines.append(f"{utt} SYNTHETIC")
        (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    return corpus


def forward_flops(config: dict, samples: int, steps: int) -> float:
    """Matmul FLOPs (2 x multiply-adds) of one utterance: conv feature encoder, projection,
    convolutional position embedding, and the transformer with its attention."""
    dims = config["conv_dim"]
    kernels, strides = config["conv_kernel"], config["conv_stride"]
    total, length, channels = 0.0, samples, 1
    for dim, k, s in zip(dims, kernels, strides):
        length = (length - k) // s + 1
        total += 2.0 * length * dim * channels * k
        channels = dim
    h, f, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    total += 2.0 * steps * channels * h  # feature projection
    total += 2.0 * steps * h * (h // config["num_conv_pos_embedding_groups"]) * config["num_conv_pos_embeddings"]
    total += layers * (steps * (2 * 4 * h * h + 2 * 2 * h * f) + 2 * 2 * steps * steps * h)
    return total


DEVICE = "cpu"  # --device: where the models run (the floor is measured there too)


def synced(fn):
    """``fn`` that returns only once the device has finished (GPU work is asynchronous)."""
    def run():
        fn()
        if DEVICE.startswith("cuda"):
            torch.cuda.synchronize()
    return run


def matmul_rate(n: int = 1024) -> float:
    a, b = torch.randn(n, n, device=DEVICE), torch.randn(n, n, device=DEVICE)
    return 2 * n**3 / best_time(synced(lambda: a @ b), repeats=10, warmup=3)


def _load(directory: Path):
    from satool.models.loading import load_model

    return load_model(directory, device=DEVICE)


def _utterances(corpus_path: Path, count: int):
    from satool.data.corpus import open_corpus

    corpus = open_corpus(corpus_path)
    return corpus, corpus.select(None, count)


def time_stream(model, corpus, utterances, block_mb: float) -> tuple[float, float]:
    """(seconds, audio seconds) of satool's streaming metric pass over ``utterances``."""
    from satool.analysis.metrics import BUILTIN_METRICS
    from satool.analysis.scoring import ScoreSums
    from satool.analysis.streaming import model_utterances, stream

    layers = list(range(model.num_layers))
    sums = ScoreSums(BUILTIN_METRICS, [i + 1 for i in layers], list(range(1, model.num_heads + 1)))
    audio = [0.0]
    skipped: list = []

    def counted(items):
        for item in items:
            audio[0] += item.meta.duration_s
            yield item

    start = time.perf_counter()
    stream(counted(model_utterances(model, corpus, utterances, layers, block_bytes=int(block_mb * 2**20),
                                    skipped=skipped)), scores=sums)
    assert not skipped, skipped
    return time.perf_counter() - start, audio[0]


def measure_size(size: str, root: Path, utts: int, rate: float, block_mb: float) -> list[list[object]]:
    from transformers import HubertModel

    from satool.analysis.metrics import BUILTIN_METRICS
    from satool.analysis.scoring import ScoreSums

    directory = build_model(root, size)
    corpus_path = build_corpus(root, utts, seed=1)
    model = _load(directory)
    config = json.loads((directory / "config.json").read_text())
    corpus, utterances = _utterances(corpus_path, utts)
    waves = [corpus.load(u).wave for u in utterances]
    features = [model.input_features(w) for w in waves]
    steps = [model.steps(f) for f in features]
    audio = sum(len(w) for w in waves) / 16000
    flops = sum(forward_flops(config, len(w), t) for w, t in zip(waves, steps))
    layers = list(range(model.num_layers))

    def forward_with_maps():
        for f in features:
            for _ in model.attention_blocks(f, layers, block_bytes=int(block_mb * 2**20)):
                pass

    t_maps = best_time(synced(forward_with_maps), repeats=2, warmup=1)
    # a segmentation of two heads (the middle layer's first, the last layer's first): every head's
    # weights of those layers, as before, against the asked heads' only (fused attention for the rest)
    chosen = {model.num_layers // 2 - 1: [0], model.num_layers - 1: [0]}

    def two_layers(heads):
        def run():
            for f in features:
                for _ in model.attention_blocks(f, sorted(chosen), block_bytes=int(block_mb * 2**20), heads=heads):
                    pass
        return run

    t_layers = best_time(synced(two_layers(None)), repeats=2, warmup=1)
    t_heads = best_time(synced(two_layers(chosen)), repeats=2, warmup=1)
    t_stream, _ = min(time_stream(model, corpus, utterances, block_mb) for _ in range(2))
    reference = HubertModel.from_pretrained(directory, attn_implementation="eager").eval().to(DEVICE)
    phones: list[str] = []

    def alternative():
        sums = ScoreSums(BUILTIN_METRICS, [i + 1 for i in layers], list(range(1, model.num_heads + 1)))
        for u, f in zip(utterances, features):
            with torch.no_grad():
                out = reference(f.reshape(1, -1).to(DEVICE), output_attentions=True)
            maps = np.stack([a[0].cpu().numpy() for a in out.attentions])
            del out
            sums.add_maps(maps, {"id": u.id, "phone_set": phones})

    t_alt = best_time(alternative, repeats=2, warmup=0)
    rows = [
        [size, "forward + every layer's maps (query blocks)", audio / t_maps, flops / t_maps / rate, ""],
        [size, "satool stream (forward, float16, reductions, audio)", audio / t_stream, flops / t_stream / rate,
         t_alt / t_stream],
        [size, "transformers eager output_attentions + numpy", audio / t_alt, flops / t_alt / rate, 1.0],
        [size, "2 heads' layers, every head's weights (1)", audio / t_layers, flops / t_layers / rate, 1.0],
        [size, "2 heads' layers, the 2 heads' weights only", audio / t_heads, flops / t_heads / rate,
         t_layers / t_heads],
    ]
    print(f"  {size}: {utts} utterances, {audio:.1f} s of audio, mean T = {np.mean(steps):.0f} steps, "
          f"{flops / 1e12:.2f} TFLOP; stream {t_stream:.1f} s, maps-only forward {t_maps:.1f} s, "
          f"alternative {t_alt:.1f} s", flush=True)
    return rows, t_stream / audio


def long_utterance(size: str, root: Path, seconds: float, block_mb: float) -> list[object]:
    """One ``seconds``-long utterance through the streaming pass in a fresh process: peak RSS."""
    directory = build_model(root, size)
    corpus = build_corpus(root, 1, low=seconds, high=seconds + 0.01, seed=7)
    result = _child(directory, corpus, 1, block_mb, root / f"long-{size}")
    return [size, f"{seconds:g} s utterance", result["rss_mb"], result["seconds"]]


def _child(directory: Path, corpus: Path, count: int, block_mb: float, out: Path) -> dict:
    command = [sys.executable, __file__, "--child", str(directory), str(corpus), str(count), str(block_mb), str(out)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def child(directory: str, corpus_path: str, count: str, block_mb: str, out: str) -> None:
    """A streaming metric pass in this fresh process: peak RSS, time and the partial file's size."""
    from satool.stages import metric

    start = time.perf_counter()
    result = metric.run(metric.Settings(source=Path(directory), corpus=Path(corpus_path), max_utts=int(count),
                                        out=Path(out), block_mb=float(block_mb), shard=(0, 1),
                                        by=["globalness", "verticality", "diagonality", "weight"]))
    seconds = time.perf_counter() - start
    partial = result.stream.file
    print(json.dumps({"rss_mb": peak_rss_mb(), "seconds": seconds,
                      "partial_bytes": partial.stat().st_size, "utterances": result.scores.utterances}))


def peak_rss_mb() -> float:
    """This process's peak resident memory. On Linux from /proc (VmHWM, the high-water mark of this
    process's own memory map): ``getrusage``'s ``ru_maxrss`` keeps, across ``exec``, the peak of the
    process that forked it, so a child of a benchmark that had loaded a large model reported that
    model's memory as its own."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="base,large")
    parser.add_argument("--utts", type=int, default=3, help="utterances for the throughput rows")
    parser.add_argument("--memory-utts", default="10,1000")
    parser.add_argument("--memory-size", default="tiny")
    parser.add_argument("--memory-seconds", default="10,20", help="utterance lengths of the memory corpus (s)")
    parser.add_argument("--long", type=float, default=0.0, help="also one utterance this long (s) on --long-size")
    parser.add_argument("--long-size", default="large")
    parser.add_argument("--block-mb", type=float, default=256.0)
    parser.add_argument("--device", default="cpu", help="where the models run, e.g. cuda (the floor is measured "
                        "there; satool's stream then reduces its blocks on the device)")
    parser.add_argument("--cores-per-node", type=int, default=32)
    parser.add_argument("--keep", type=Path, default=None, help="keep models and corpora here between runs")
    parser.add_argument("--quick", action="store_true", help="base size only, 10 vs 100 short utterances")
    args = parser.parse_args()
    global DEVICE
    DEVICE = args.device
    if args.quick:
        args.sizes, args.utts, args.memory_utts, args.memory_seconds = "base", 2, "10,100", "1,2"
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-stream-"))
    root.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    try:
        rate = matmul_rate()
        print(f"matmul floor: {rate / 1e9:.1f} GFLOP/s (float32, n = 1024) on {threads} threads", flush=True)
        rows, per_audio = [], {}
        for size in [s for s in args.sizes.split(",") if s]:
            size_rows, per_audio[size] = measure_size(size, root, args.utts, rate, args.block_mb)
            rows += size_rows
        if rows:
            print_table(f"Throughput (audio seconds per second; efficiency = model FLOP/s / matmul FLOP/s; "
                        f"speed-up = alternative time / satool time), {threads} threads",
                        ["size", "what", "x real time", "efficiency", "speed-up"], rows)
        memory = []
        counts = [int(c) for c in args.memory_utts.split(",") if c]
        if counts:
            directory = build_model(root, args.memory_size)
            low, high = (float(v) for v in args.memory_seconds.split(","))
            corpus = build_corpus(root, max(counts), low, high, seed=2)
            results = {n: _child(directory, corpus, n, args.block_mb, root / f"mem-{n}") for n in counts}
            for n, r in results.items():
                memory.append([args.memory_size, n, r["rss_mb"], r["partial_bytes"], r["seconds"]])
            if len(counts) >= 2:
                lo, hi = min(counts), max(counts)
                slope = (results[hi]["partial_bytes"] - results[lo]["partial_bytes"]) / (hi - lo)
                print(f"  peak RSS {hi} vs {lo} utterances: {results[hi]['rss_mb'] / results[lo]['rss_mb']:.3f}; "
                      f"partial sums grow by {slope:.1f} bytes per utterance", flush=True)
            print_table(f"Memory of a streaming pass (fresh process each; {args.memory_seconds} s utterances)",
                        ["size", "utterances", "peak RSS MB", "partial-sums bytes", "seconds"], memory)
        if args.long:
            row = long_utterance(args.long_size, root, args.long, args.block_mb)
            print_table("A long utterance (fresh process)", ["size", "what", "peak RSS MB", "seconds"], [row])
        for size, seconds_per_audio_second in per_audio.items():
            core_hours = seconds_per_audio_second * threads  # core-hours per audio hour
            print(f"\ncost model, {size}: {core_hours:.2f} core-hours per audio hour ({threads} threads measured); "
                  f"LibriSpeech 960 h = {960 * core_hours:,.0f} core-hours:")
            for nodes in (1, 8, 64):
                hours = 960 * core_hours / (nodes * args.cores_per_node)
                print(f"  {nodes:3d} nodes x {args.cores_per_node} cores: {hours:8.1f} h")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:7])
    else:
        main()
