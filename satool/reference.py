"""The reference models that ship with satool: demo-size Mockingjay models pre-trained on the built-in
corpus with the same recipe and only the mask span Cnum changed, as in the paper (M3, M6, M9).

``satool demo`` studies them side by side (pre-training a model that learns takes hours on two CPU
cores; the demo's budget is minutes). Each was trained by ``satool pretrain`` with one documented
command, recorded in its provenance file (``data/reference/<name>/provenance.json``) together with
the seed, the steps, the satool version, the held-out numbers it reached and the SHA-256 of the
weights (see docs/pretraining.md).

A weights file is an ordinary satool checkpoint without optimiser state, loaded like any other (and
checked against its recorded SHA-256 first).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from satool.errors import InputError
from satool.results.files import write_json

REFERENCE_DIR = Path(__file__).parent / "data" / "reference"
MODELS = ("M3", "M6", "M9")  # mask spans 3, 6 and 9, as in the paper
DEFAULT = "M3"
PROVENANCE = "provenance.json"


def available() -> list[str]:
    """The reference models this installation ships (of :data:`MODELS`, in that order)."""
    return [name for name in MODELS if (REFERENCE_DIR / name / PROVENANCE).is_file()]


def provenance(name: str = DEFAULT) -> dict[str, Any]:
    """The recorded provenance of the shipped reference model ``name``."""
    if name not in MODELS:
        raise InputError(f"no reference model {name!r} (satool ships {', '.join(MODELS)})")
    path = REFERENCE_DIR / name / PROVENANCE
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"the reference model {name}'s provenance is missing from this installation",
                         path=path) from None
    except ValueError as exc:
        raise InputError(f"not valid JSON ({exc})", path=path) from None
    if not isinstance(document, dict) or not isinstance(document.get("weights"), str) \
            or Path(document["weights"]).name != document["weights"]:
        raise InputError("must name its weights file (a plain file name)", path=path)
    return document


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint(name: str = DEFAULT) -> Path:
    """Path of the shipped weights of ``name``, after checking them against the recorded checksum."""
    document = provenance(name)
    weights = REFERENCE_DIR / name / document["weights"]
    if not weights.is_file():
        raise InputError(f"the reference model {name} is missing from this installation", path=weights)
    actual, recorded = sha256(weights), document.get("sha256")
    if actual != recorded:
        raise InputError(f"checksum mismatch (sha256 {actual[:12]}..., recorded {str(recorded)[:12]}...): the file "
                         "was changed or damaged; reinstall satool", path=weights)
    return weights


def export(training_checkpoint: str | Path, *, name: str, command: str, corpus: dict[str, Any],
           out_dir: Path | None = None) -> dict[str, Any]:
    """Write the shipped weights of reference model ``name`` from a finished ``satool pretrain``
    checkpoint (maintainers).

    Keeps the encoder and the prediction head as float16 (half the size; every number in the
    provenance is measured on the shipped, rounded weights), the feature and masking settings, the
    training settings, the held-out checks made during training and every head's locality and
    favourite offset at each check (the curves of docs/pretraining.md); drops the optimiser state and
    the per-step loss history. Writes the weights and a provenance file (without measurements: add
    them with :func:`record_measurements`) and returns the provenance.
    """
    import torch

    from satool import __version__
    from satool.models.mockingjay.checkpoint import load_checkpoint, save_checkpoint

    out_dir = out_dir or REFERENCE_DIR / name
    loaded = load_checkpoint(training_checkpoint)
    training = dict((loaded.satool or {}).get("training", {}))
    checks = list((loaded.satool or {}).get("checks", []))
    head_checks = list((loaded.satool or {}).get("head_checks", []))
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / "model.ckpt"
    encoder, head = loaded.encoder.half(), loaded.spec_head.half()
    save_checkpoint(weights, encoder, head, audio=loaded.audio, task=loaded.task, step=int(loaded.step or 0),
                    satool={"training": training, "checks": checks, "head_checks": head_checks,
                            "reference": {"command": command, "name": name}})
    encoder.float(), head.float()
    settings = training.get("settings", {})
    document = {
        "name": name,
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
    write_json(out_dir / PROVENANCE, document)
    return document


def record_measurements(measurements: dict[str, Any], name: str = DEFAULT, out_dir: Path | None = None
                        ) -> dict[str, Any]:
    """Add measured numbers (held-out checks on another corpus, probes, pruning) to the provenance."""
    path = (out_dir or REFERENCE_DIR / name) / PROVENANCE
    document = json.loads(path.read_text())
    document["measurements"] = measurements
    write_json(path, document)
    return document
