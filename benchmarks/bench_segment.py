"""Kernel-Gram segmentation speed: satool's vectorised code vs the SPEC-literal reference.

    python benchmarks/bench_segment.py

One attention head of one utterance: a 100 x 100 map at the model's step rate
(R = 3) is up-sampled to 300 frames (3 s), then Gram matrix + filter + score
curve + local minima. The slow reference is the plain-Python implementation
in tests/test_segmentation.py, timed in the same run (one call, no warm-up).
Then the beta sweep: 20 betas reusing K (SegmentationWork) vs 20 separate
segment() calls, and the largest supported size (3000 frames). BLAS is
limited to 1 thread (set before numpy is imported) so the numbers do not
depend on how busy the other core is.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _bench import best_time, print_table  # noqa: E402

from satool.analysis import segmentation as seg  # noqa: E402

RATE = 3


def block_head(steps: int, seed: int = 0) -> np.ndarray:
    """A block-diagonal-looking attention map [steps, steps]: phones of 2-6 steps attend within."""
    rng = np.random.default_rng(seed)
    phone = np.repeat(np.arange(steps), rng.integers(2, 7, steps))[:steps]
    q = np.arange(steps)
    logits = 3.0 * (phone[:, None] == phone[None, :]) - 0.1 * np.abs(q[:, None] - q[None, :])
    logits += rng.normal(0, 0.5, logits.shape)
    a = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (a / a.sum(axis=1, keepdims=True)).astype(np.float32)


def one_head(attn: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    return seg.segment(seg.upsample_attention(attn, RATE), alpha, beta)


def main() -> None:
    from test_segmentation import reference_segment, reference_upsample_attention

    attn = block_head(100)
    frames = seg.upsample_attention(attn, RATE)
    alpha = float(seg.default_alpha_grid([frames])[4])  # the median frame distance
    beta = 1.0
    T = len(frames)

    rows = []
    t_ours = best_time(lambda: one_head(attn, alpha, beta), repeats=50, warmup=5)
    t_ref = best_time(
        lambda: reference_segment(np.array(reference_upsample_attention(attn.astype(float), RATE)), alpha, beta),
        repeats=1, warmup=0,
    )
    ours = one_head(attn, alpha, beta)
    ref = reference_segment(np.array(reference_upsample_attention(attn.astype(float), RATE)), alpha, beta)
    same = len(ours) == len(ref) and np.allclose(ours, ref)
    rows.append([f"satool, one head, T = {T}", t_ours * 1e3, t_ref / t_ours, len(ours)])
    rows.append([f"reference (plain Python, SPEC text), T = {T}", t_ref * 1e3, 1.0, len(ref)])
    print_table(
        f"One attention head: up-sample x{RATE} + Gram + filter + score + minima "
        f"(same boundaries: {same}; speed-up = reference time / satool time)",
        ["implementation", "ms per utterance per head", "speed-up", "boundaries"], rows,
    )

    betas = np.linspace(0.5, 2.4, 20)
    t_sweep = best_time(lambda: [w.boundaries(b) for w in [seg.SegmentationWork(frames, alpha)] for b in betas],
                        repeats=20)
    work = seg.SegmentationWork(frames, alpha)
    t_betas = best_time(lambda: [work.boundaries(b) for b in betas], repeats=20)
    t_work = best_time(lambda: seg.SegmentationWork(frames, alpha), repeats=20)
    t_separate = best_time(lambda: [seg.segment(frames, alpha, b) for b in betas], repeats=20)
    print_table(
        f"Sweep of 20 betas on one head, T = {T} (speed-up vs 20 separate segment() calls)",
        ["what", "ms", "speed-up"],
        [
            ["SegmentationWork (K once) + 20 betas", t_sweep * 1e3, t_separate / t_sweep],
            ["  of which: building the work (K, running minima)", t_work * 1e3, "-"],
            ["  of which: 20 betas on a built work", t_betas * 1e3, "-"],
            ["20 x segment()", t_separate * 1e3, 1.0],
        ],
    )

    big_attn = block_head(1000, seed=1)
    big = seg.upsample_attention(big_attn, RATE)
    big_alpha = float(seg.default_alpha_grid([big])[4])
    t_big = best_time(lambda: seg.segment(big, big_alpha, beta), repeats=3)
    t_big_work = best_time(lambda: seg.SegmentationWork(big, big_alpha), repeats=3)
    big_work = seg.SegmentationWork(big, big_alpha)
    t_big_betas = best_time(lambda: [big_work.boundaries(b) for b in betas], repeats=3)
    print_table(
        f"Largest size: one head, T = {len(big)} frames (30 s)",
        ["what", "s"],
        [
            ["segment() (one beta)", t_big],
            ["SegmentationWork construction", t_big_work],
            ["20 betas on a built work", t_big_betas],
        ],
    )
    all_heads()


def all_heads() -> None:
    """The whole tune-and-evaluate run for every head of a demo-size model (tone corpus, dev/test)."""
    import shutil
    import tempfile
    import time
    from pathlib import Path

    from satool import testing
    from satool.analysis.segmentation.study import FrameSource, aligned_ids, rank_heads
    from satool.cache import open_cache
    from satool.stages import extract as extract_stage

    demo = Path("satool-demo/attention-cache")
    work = Path(tempfile.mkdtemp(prefix="satool-bench-"))
    try:
        if demo.exists():
            cache_path, what = demo, "the demo's cache"
        else:
            for split, chapter in (("dev", "10"), ("test", "20")):
                testing.make_librispeech(work / "LS", speakers=tuple(str(i) for i in range(1, 6)), per_speaker=4,
                                         split=split, chapter_id=chapter)
            extract_stage.run(extract_stage.Settings(checkpoint=testing.make_checkpoint(work / "m.ckpt", preset="demo"),
                                                     corpus=work / "LS", out=work / "cache"))
            cache_path, what = work / "cache", "tone corpus, random demo-size model"
        cache = open_cache(cache_path)
        frames = FrameSource(cache)
        tune_ids, test_ids = aligned_ids(cache, "dev"), aligned_ids(cache, "test")
        start = time.perf_counter()
        rows = rank_heads(frames, tune_ids, test_ids, tolerance=0.02)
        seconds = time.perf_counter() - start
        n = len(rows)
        print_table(
            f"--all-heads: tune (5 alphas x 12 betas) and test every head ({what})",
            ["heads", "tuning utterances", "test utterances", "seconds", "seconds per head"],
            [[n, min(len(tune_ids), 40), len(test_ids), seconds, seconds / n]],
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
