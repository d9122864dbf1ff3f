"""Model throughput: forward and training, as frames/s and as a fraction of the machine's matmul rate.

    python benchmarks/bench_model.py [--presets demo,base] [--steps 300]

The matmul rate is measured in the same run (float32 GEMM of the model's
typical shape), so the "efficiency" column is comparable across machines:
achieved model FLOP/s divided by plain-matmul FLOP/s.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _bench import best_time, print_table  # noqa: E402

from satool.models.mockingjay import MockingjayConfig, MockingjayEncoder, SpecHead  # noqa: E402
from satool.training.pretrain import MaskedAcousticModel  # noqa: E402


def forward_flops(config: MockingjayConfig, steps: int, with_head: bool = True) -> float:
    """Multiply-adds x 2 of one utterance's forward pass (matmuls only)."""
    h, f, layers = config.hidden_size, config.intermediate_size, config.num_layers
    per_layer = steps * (2 * 4 * h * h + 2 * 2 * h * f) + 2 * 2 * steps * steps * h
    total = layers * per_layer + 2 * steps * config.step_input_dim * h
    if with_head:
        total += 2 * steps * (h * h + h * config.step_output_dim)
    return float(total)


def matmul_rate(n: int = 1024) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    seconds = best_time(lambda: a @ b, repeats=10, warmup=3)
    return 2 * n**3 / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--presets", default="demo,base")
    parser.add_argument("--steps", type=int, default=300, help="model steps per utterance (T)")
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    rate = matmul_rate()
    rows = []
    for name in args.presets.split(","):
        config = MockingjayConfig.preset(name, input_dim=80, output_dim=201, downsample_rate=3)
        encoder = MockingjayEncoder(config).eval()
        frames = args.steps * config.downsample_rate
        x1 = torch.randn(1, args.steps, config.step_input_dim)
        with torch.no_grad():
            t_fwd = best_time(lambda: encoder(x1, output_attentions=False), repeats=5)
            t_att = best_time(lambda: encoder(x1, output_attentions=True), repeats=5)
        flops = forward_flops(config, args.steps, with_head=False)
        rows.append([name, "forward, 1 utt", frames / t_fwd, flops / t_fwd / rate])
        rows.append([name, "forward + maps, 1 utt", frames / t_att, flops / t_att / rate])
        model = MaskedAcousticModel(MockingjayEncoder(config), SpecHead(config)).train()
        optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)
        xb = torch.randn(args.batch, args.steps, config.step_input_dim)
        yb = torch.randn(args.batch, args.steps, config.step_output_dim)
        lengths = torch.full((args.batch,), args.steps)

        def train_step():
            loss = (model(xb, lengths) - yb).abs().mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()

        t_train = best_time(train_step, repeats=3)
        train_flops = 3 * forward_flops(config, args.steps) * args.batch  # backward ~ 2x forward
        rows.append([name, f"train step, batch {args.batch}", frames * args.batch / t_train,
                     train_flops / t_train / rate])
    print_table(
        f"Mockingjay throughput at T = {args.steps} steps (R = 3, so {args.steps * 3} frames); "
        f"matmul rate {rate / 1e9:.1f} GFLOP/s on {torch.get_num_threads()} threads",
        ["preset", "what", "frames/s", "efficiency (model FLOP/s / matmul FLOP/s)"], rows,
    )


if __name__ == "__main__":
    main()
