"""Feature extraction speed: satool's s3prl-compatible front end vs s3prl's own, and MFCC.

    python benchmarks/bench_features.py

Prints seconds of audio processed per second of wall time and the ratio to
s3prl's OnlinePreprocessor measured in the same run (if s3prl is installed).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _bench import best_time, print_table  # noqa: E402

from satool import testing  # noqa: E402
from satool.data.features import FeatureConfig, FeatureExtractor, mfcc  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    phones = testing.DEFAULT_PHONES * 9  # ~10 s of audio
    wave = torch.from_numpy(testing.tone_audio(phones))
    seconds = len(wave) / 16000
    config = FeatureConfig()
    extractor = FeatureExtractor(config)
    rows = []
    t_ours = best_time(lambda: extractor.input_and_target(wave))
    rows.append(["satool log-Mel + linear target", seconds / t_ours, 1.0])
    t_in = best_time(lambda: extractor(wave))
    rows.append(["satool log-Mel input only", seconds / t_in, t_ours / t_in])
    t_mfcc = best_time(lambda: mfcc(wave))
    rows.append(["satool MFCC + deltas", seconds / t_mfcc, t_ours / t_mfcc])
    try:
        from s3prl.upstream.baseline.preprocessor import get_preprocessor

        pre = get_preprocessor(config.to_s3prl(), process_input_only=False)[0]
        batch = wave.view(1, 1, -1)
        t_s3prl = best_time(lambda: pre(batch))
        rows.append(["s3prl OnlinePreprocessor (input + target)", seconds / t_s3prl, t_ours / t_s3prl])
    except ImportError:
        rows.append(["s3prl not installed", "-", "-"])
    print_table(
        f"Feature extraction, one {seconds:.1f} s utterance, 1 thread (ratio = satool input+target time / row time)",
        ["front end", "audio s per wall s", "ratio"], rows,
    )


if __name__ == "__main__":
    main()
