"""Maintainers: ship a finished pre-training run as one of satool's reference models, with provenance.

    python docs/make_reference.py M6 /path/to/model.ckpt --command "satool pretrain ..." --work /tmp/ref

Writes satool/data/reference/<name>/model.ckpt (float16 weights, no optimiser state) and
provenance.json (command, seed, steps, versions, training settings, the held-out checks and every
head's locality and favourite offset at each check, SHA-256), then measures the shipped weights on
voices they never heard (``satool health`` on the demo corpus, seed 0, dev; and on a corpus of seed
2, dev and test) and records those numbers as the provenance's ``measurements``. Also writes the
training curves beside the docs (docs/figures/<name>-heldout.csv/.png, <name>-heads.csv,
<name>-offsets.png). The training corpus is the one docs/pretraining.md names.
"""

from __future__ import annotations

import argparse
from pathlib import Path

TRAINING_CORPUS = {
    "command": "satool corpus synth train-corpus --speakers 200 --utterances-per-speaker 40 --seed 1",
    "generator": "satool's synthetic corpus (eSpeak NG 1.52.0 voices, exact phone alignments)",
    "seed": 1, "speakers": 200, "utterances_per_speaker": 40, "hours": 6.55,
    "trained_on": "train split (70 % of each speaker's utterances)",
    "checked_during_training_on": "first 150 utterances of its dev split",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=["M3", "M6", "M9"])
    parser.add_argument("checkpoint", type=Path, help="the finished satool pretrain checkpoint")
    parser.add_argument("--command", required=True, help="the pretrain command that made it")
    parser.add_argument("--work", type=Path, required=True, help="scratch directory for the held-out corpora")
    args = parser.parse_args()

    from satool import reference
    from satool.data.synth import synthesize_corpus
    from satool.models.mockingjay.checkpoint import load_checkpoint
    from satool.output import training as figures
    from satool.results.training import TrainingCurves
    from satool.timebase import FRAME_S
    from satool.training.heldout import evaluate_checkpoint

    document = reference.export(args.checkpoint, name=args.name, command=args.command, corpus=TRAINING_CORPUS)
    weights = reference.checkpoint(args.name)
    print(f"{args.name}: {weights} ({document['bytes'] / 2**20:.1f} MB, sha256 {document['sha256'][:16]}...)")

    corpora = {"demo": (0, 40, 30), "seed2": (2, 40, 30)}
    for label, (seed, speakers, per_speaker) in corpora.items():
        root = args.work / f"corpus-{label}"
        if not (root / "manifest.json").exists():
            synthesize_corpus(root, speakers=speakers, utterances_per_speaker=per_speaker, seed=seed)
    checks = []
    for label, split, utts in (("demo", "dev", 120), ("seed2", "dev", 120), ("seed2", "test", 240)):
        check = evaluate_checkpoint(weights, args.work / f"corpus-{label}", split, max_utts=utts, seed=0)
        checks.append({"split": split, "utterances": check.utterances, **check.row(), "source": f"{label}-{split}"})
        print(label, split, {k: round(v, 4) if isinstance(v, float) else v for k, v in check.row().items()})
    first = checks[0]
    measurements = {
        "heldout": {**{k: v for k, v in first.items() if k != "source"},
                    "corpus": "demo corpus (synthetic, seed 0, 40 speakers x 30 utterances; voices unseen in training)"},
        "other_checks": checks[1:],
    }
    reference.record_measurements(measurements, args.name)

    loaded = load_checkpoint(weights)
    curves = TrainingCurves.of_checkpoint(loaded.satool, 1000 * loaded.config.downsample_rate * FRAME_S)
    curves.checks = list((loaded.satool or {}).get("checks", []))
    out = Path(__file__).parent / "figures" / args.name
    curves.save(out)
    figures.draw(curves, out)
    print("curves:", ", ".join(str(p) for p in sorted(out.parent.glob(f"{args.name}.*"))))


if __name__ == "__main__":
    main()
