"""Cost of a full pruning sweep: 4 metrics (+ random), 13 levels, 3 tasks.

    python benchmarks/bench_prune.py [--workspace satool-demo] [--max-utts N] [--steps 1500]

Uses the demo's workspace (model, corpus, metric results) when it exists;
otherwise builds a small one (tone corpus, random demo-size model, metrics
from a cache). Reports the number of representation passes (shared across
orders and tasks), the time per pass and per probe, and the total.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _bench import print_table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workspace", default="satool-demo")
    parser.add_argument("--max-utts", type=int, default=None)
    parser.add_argument("--steps", type=int, default=1500)
    args = parser.parse_args()

    from satool import testing
    from satool.analysis.metrics import BUILTIN_METRICS
    from satool.analysis.probing.passes import ProbeData
    from satool.analysis.probing.tasks import ProbeSettings
    from satool.analysis.pruning import RepresentationStore, plan, sweep_heads
    from satool.analysis.scoring import score_cache
    from satool.data.corpus import open_corpus
    from satool.models.loading import load_model
    from satool.results.metrics import HeadScores

    work = Path(tempfile.mkdtemp(prefix="satool-bench-"))
    try:
        ws = Path(args.workspace)
        if (ws / "model.ckpt").exists():
            ckpt, corpus_path, metrics = ws / "model.ckpt", ws / "corpus", ws / "results" / "metric"
            what = f"{ws} (demo model, synthetic corpus)"
        else:
            from satool.cache import open_cache
            from satool.stages import extract as extract_stage

            speakers = tuple(str(i) for i in range(1, 9))
            testing.make_librispeech(work / "LS", speakers=speakers, per_speaker=6, split="train", chapter_id="1")
            testing.make_librispeech(work / "LS", speakers=speakers, per_speaker=2, split="test", chapter_id="2")
            ckpt = testing.make_checkpoint(work / "m.ckpt", preset="demo")
            extract_stage.run(extract_stage.Settings(checkpoint=ckpt, corpus=work / "LS", out=work / "cache"))
            score_cache(open_cache(work / "cache"), BUILTIN_METRICS).save(work / "metrics")
            corpus_path, metrics, what = work / "LS", work / "metrics", "tone corpus, random demo-size model"
        model = load_model(ckpt)
        corpus = open_corpus(corpus_path)
        tasks_names = ("phone", "speaker", "speaker-utt")
        from satool.plugins import get_plugins

        tasks = [get_plugins().tasks.get(t) for t in tasks_names]
        start = time.perf_counter()
        data = [ProbeData(model, corpus, corpus.select(s, args.max_utts)) for s in ("train", "test")]
        read = time.perf_counter() - start
        store = RepresentationStore(*data)
        sweep = plan(["globalness", "verticality", "diagonality", "weight", "random"], HeadScores.load(metrics),
                     model.num_layers, model.num_heads)
        start = time.perf_counter()
        rows = sweep_heads(store, sweep, tasks, settings=ProbeSettings(steps=args.steps))
        seconds = time.perf_counter() - start
        t0 = time.perf_counter()
        from satool.analysis.probing.passes import Configuration

        store.train.represent(Configuration())
        store.test.represent(Configuration())
        per_pass = time.perf_counter() - t0
        configs = len(rows) // len(tasks)
        print_table(
            f"Full pruning sweep: 4 metrics + random (3 seeds), {len(sweep.levels)} levels, 3 tasks ({what})",
            ["what", "value"],
            [["utterances (train / test)", f"{len(data[0].items)} / {len(data[1].items)}"],
             ["reading audio + features once (s)", read],
             ["(order, level) points scored", configs],
             ["representation passes (shared)", store.passes],
             ["seconds per representation pass (train + test)", per_pass],
             ["seconds per probe (approx.)", (seconds - store.passes * per_pass) / max(1, store.passes * len(tasks))],
             ["total sweep seconds", seconds],
             ["sharing: passes / points", store.passes / configs]],
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
