"""Speed of the synthetic corpus generator (satool.data.synth), in seconds of audio per second.

    python benchmarks/bench_synth.py [--speakers 10] [--utterances 10]

Rows: eSpeak NG alone (engine.synthesize on the corpus sentences), the
alignment step, and the whole corpus (synthesis, alignment, resampling to
16 kHz, FLAC/TextGrid/PHN writing). Import and engine start-up are timed
separately, once.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--speakers", type=int, default=10)
    ap.add_argument("--utterances", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    t0 = time.perf_counter()
    import numpy as np
    import torchaudio  # noqa: F401  (the corpus step resamples with it; time its import here)

    from satool.data.synth import get_engine, make_voices, synthesize_corpus
    from satool.data.synth.align import align
    from satool.data.synth.text import make_sentence

    engine = get_engine()
    startup = time.perf_counter() - t0

    # eSpeak alone and alignment alone, on comparable sentences
    voices = make_voices(args.speakers, args.seed)
    rng = np.random.default_rng(args.seed)
    jobs = [(engine.select_variant(v.variant_text()), make_sentence(rng)) for v in voices
            for _ in range(args.utterances)]
    t = time.perf_counter()
    synths = [engine.synthesize(text, voice, seed=i) for i, (voice, text) in enumerate(jobs)]
    t_synth = time.perf_counter() - t
    audio_s = sum(len(s.audio) / s.sample_rate for s in synths)
    t = time.perf_counter()
    for s, (_, text) in zip(synths, jobs, strict=True):
        align(s, text)
    t_align = time.perf_counter() - t

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        m = synthesize_corpus(Path(tmp) / "corpus", speakers=args.speakers,
                              utterances_per_speaker=args.utterances, seed=args.seed)
        t_corpus = time.perf_counter() - t
    corpus_s = m["total_hours"] * 3600

    rows = [
        ("eSpeak NG synthesis only", audio_s, t_synth),
        ("alignment (silences, closures)", audio_s, t_align),
        ("whole corpus (incl. resample + files)", corpus_s, t_corpus),
    ]
    print(f"satool.data.synth benchmark: {args.speakers} speakers x {args.utterances} utterances, "
          f"eSpeak NG {engine.version}; import + start-up {startup:.2f} s")
    print(f"{'stage':40s} {'audio s':>9s} {'wall s':>8s} {'audio s / s':>12s}")
    for name, a, w in rows:
        print(f"{name:40s} {a:9.1f} {w:8.2f} {a / w:12.1f}")


if __name__ == "__main__":
    main()
