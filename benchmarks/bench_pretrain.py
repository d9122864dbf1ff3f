"""Pre-training throughput: real (unpadded) frames per second, as a fraction of the matmul rate.

    python benchmarks/bench_pretrain.py [--steps 40] [--compile]

Batches of 8 utterances whose lengths follow the built-in corpus (1.5-5 s, i.e.
50-166 steps at R = 3) are drawn two ways: from all utterances (padding to the
longest) and from length buckets (what ``satool pretrain`` does, 8 groups).
The matmul rate is measured in the same run, so the efficiency column (model
FLOP/s on real frames / plain-matmul FLOP/s) is comparable across machines.
``--compile`` adds a torch.compile row (it compiles for minutes on CPU and, on
the machine measured in docs/performance.md, ran slower than eager).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _bench import print_table  # noqa: E402
from bench_model import forward_flops, matmul_rate  # noqa: E402

from satool.models.mockingjay import MockingjayConfig, MockingjayEncoder, SpecHead  # noqa: E402
from satool.training.masking import MaskPolicy, mask_batch  # noqa: E402
from satool.training.pretrain import MaskedAcousticModel, draw_batch, length_buckets  # noqa: E402


def run(model, optimiser, batches, config) -> tuple[float, float]:
    """(seconds, real model FLOPs) for training on ``batches`` of ``(inputs, targets, lengths)``."""
    rng = np.random.default_rng(0)
    flops = 0.0
    began = time.perf_counter()
    for inputs, targets, lengths in batches:
        masked, chosen = mask_batch(inputs, lengths, MaskPolicy(span=3), rng)
        loss = (model(masked, lengths) - targets).abs()[chosen].mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimiser.step()
        flops += sum(3 * forward_flops(config, int(n)) for n in lengths)
    return time.perf_counter() - began, flops


def make_batches(lengths: np.ndarray, groups, steps: int, config, seed: int):
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(steps):
        chosen = lengths[draw_batch(groups, 8, rng)]
        width = int(chosen.max())
        inputs = torch.zeros(8, width, config.step_input_dim)
        targets = torch.zeros(8, width, config.step_output_dim)
        for b, n in enumerate(chosen):
            inputs[b, :n] = torch.randn(int(n), config.step_input_dim)
            targets[b, :n] = torch.randn(int(n), config.step_output_dim)
        batches.append((inputs, targets, torch.as_tensor(chosen)))
    return batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="training steps per row (after 5 warm-up steps)")
    parser.add_argument("--compile", action="store_true", help="add a torch.compile row (slow to compile)")
    args = parser.parse_args()
    config = MockingjayConfig.preset("demo", input_dim=80, output_dim=201, downsample_rate=3, pre_layer_norm=True,
                                     hidden_dropout=0.0)
    lengths = np.random.default_rng(0).integers(50, 167, size=840)
    rate = matmul_rate()
    variants = [("any lengths (padded)", length_buckets(lengths, 1), False),
                ("8 length buckets (satool pretrain)", length_buckets(lengths, 8), False)]
    if args.compile:
        variants.append(("8 length buckets + torch.compile", length_buckets(lengths, 8), True))
    rows = []
    baseline = None
    for name, groups, compiled in variants:
        torch.manual_seed(0)
        model = MaskedAcousticModel(MockingjayEncoder(config), SpecHead(config)).train()
        optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
        runner = torch.compile(model, dynamic=True) if compiled else model
        warm_began = time.perf_counter()
        run(runner, optimiser, make_batches(lengths, groups, 5, config, seed=1), config)
        warm = time.perf_counter() - warm_began
        batches = make_batches(lengths, groups, args.steps, config, seed=2)
        seconds, flops = run(runner, optimiser, batches, config)
        frames = sum(int(b[2].sum()) for b in batches) * 3
        padded = sum(b[0].shape[0] * b[0].shape[1] for b in batches) * 3
        per_second = frames / seconds
        baseline = baseline or per_second
        rows.append([name, args.steps / seconds, per_second, per_second / baseline, 1 - frames / padded,
                     flops / seconds / rate, warm])
    print_table(
        f"Pre-training the demo model (pre-LN, batch 8, lengths 50-166 steps); matmul rate "
        f"{rate / 1e9:.1f} GFLOP/s on {torch.get_num_threads()} threads",
        ["batches", "steps/s", "real frames/s", "ratio to padded", "padding share", "efficiency vs matmul",
         "warm-up s"], rows)


if __name__ == "__main__":
    main()
