"""The reference model that ships with satool: a demo-size Mockingjay pre-trained on the built-in corpus.

``satool demo`` analyses it by default (pre-training a model that learns takes
hours on two CPU cores; the demo's budget is minutes). It was trained by
``satool pretrain`` with one documented command, recorded in its provenance
file together with the seed, the steps, the satool version, the held-out
numbers it reached and the SHA-256 of the weights (see docs/pretraining.md).

The weights file is an ordinary satool checkpoint without optimiser state,
loaded like any other (and checked against its recorded SHA-256 first).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from satool.errors import InputError
from satool.results.files import write_json

REFERENCE_DIR = Path(__file__).parent / "data" / "reference"
WEIGHTS = REFERENCE_DIR / "mockingjay-demo-reference.ckpt"
PROVENANCE = REFERENCE_DIR / "provenance.json"


def provenance() -> dict[str, Any]:
    """The recorded provenance of the shipped reference model."""
    try:
        return json.loads(PROVENANCE.read_text())
    except FileNotFoundError:
        raise InputError("the reference model's provenance is missing from this installation",
                         path=PROVENANCE) from None
    except ValueError as exc:
        raise InputError(f"not valid JSON ({exc})", path=PROVENANCE) from None


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint() -> Path:
    """Path of the shipped weights, after checking them against the recorded checksum."""
    recorded = provenance().get("sha256")
    if not WEIGHTS.is_file():
        raise InputError("the reference model is missing from this installation", path=WEIGHTS)
    actual = sha256(WEIGHTS)
    if actual != recorded:
        raise InputError(f"checksum mismatch (sha256 {actual[:12]}..., recorded {str(recorded)[:12]}...): the file "
                         "was changed or damaged; reinstall satool", path=WEIGHTS)
    return WEIGHTS


def export(training_checkpoint: str | Path, *, command: str, corpus: dict[str, Any],
           out_dir: Path = REFERENCE_DIR) -> dict[str, Any]:
    """Write the shipped weights from a finished ``satool pretrain`` checkpoint (maintainers).

    Keeps the encoder and the prediction head as float16 (half the size; every number in the
    provenance is measured on the shipped, rounded weights), the feature and masking settings, the
    training settings and the held-out checks made during training; drops the optimiser state and the
    per-step loss history. Writes the weights and a provenance file (without measurements: add them
    with :func:`record_measurements`) and returns the provenance.
    """
    import torch

    from satool import __version__
    from satool.models.mockingjay.checkpoint import load_checkpoint, save_checkpoint

    loaded = load_checkpoint(training_checkpoint)
    training = dict((loaded.satool or {}).get("training", {}))
    checks = list((loaded.satool or {}).get("checks", []))
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / WEIGHTS.name
    encoder, head = loaded.encoder.half(), loaded.spec_head.half()
    save_checkpoint(weights, encoder, head, audio=loaded.audio, task=loaded.task, step=int(loaded.step or 0),
                    satool={"training": training, "checks": checks, "reference": {"command": command}})
    encoder.float(), head.float()
    settings = training.get("settings", {})
    document = {
        "command": command,
        "seed": settings.get("seed"),
        "steps": int(loaded.step or 0),
        "satool_version": __version__,
        "torch_version": torch.__version__,
        "training_corpus": corpus,
        "training_settings": settings,
        "checks_during_training": checks,
        "weights": weights.name,
        "weights_dtype": "float16",
        "bytes": weights.stat().st_size,
        "sha256": sha256(weights),
    }
    write_json(out_dir / PROVENANCE.name, document)
    return document


def record_measurements(measurements: dict[str, Any], out_dir: Path = REFERENCE_DIR) -> dict[str, Any]:
    """Add measured numbers (held-out checks on another corpus, probes, pruning) to the provenance."""
    path = out_dir / PROVENANCE.name
    document = json.loads(path.read_text())
    document["measurements"] = measurements
    write_json(path, document)
    return document
