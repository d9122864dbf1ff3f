"""The built-in loader of Mockingjay checkpoint files (torch imported only when loading)."""

from __future__ import annotations

from pathlib import Path


class MockingjayLoader:
    """Single-file torch checkpoints of s3prl's Mockingjay, TERA and Audio ALBERT (current and paper-era
    layouts) and satool's own; the model is named after its family (satool.models.tera)."""

    name = "mockingjay"
    description = ("Mockingjay, TERA and Audio ALBERT checkpoint files: s3prl (current and paper-era layouts) "
                   "and satool's own")

    def can_load(self, path: Path) -> bool:
        return path.is_file()  # the content is checked, safely, when loaded

    def load(self, path: Path, device: str = "cpu"):
        from satool.models.mockingjay.checkpoint import load_checkpoint
        from satool.models.tera.model import S3prlTransformerModel

        return S3prlTransformerModel(load_checkpoint(path, device=device), device=device)
