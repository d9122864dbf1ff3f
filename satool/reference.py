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
