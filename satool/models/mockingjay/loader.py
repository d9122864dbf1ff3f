"""The built-in loader of Mockingjay checkpoint files (torch imported only when loading)."""

from __future__ import annotations

from pathlib import Path


class MockingjayLoader:
    """Single-file torch checkpoints: s3prl's Mockingjay (current and paper-era layouts) and satool's."""

    name = "mockingjay"
    description = "Mockingjay checkpoint files: s3prl (current and paper-era layouts) and satool's own"

    def can_load(self, path: Path) -> bool:
        return path.is_file()  # the content is checked, safely, when loaded

    def load(self, path: Path, device: str = "cpu"):
        from satool.models.mockingjay.checkpoint import load_checkpoint
        from satool.models.mockingjay.model import MockingjayModel

        return MockingjayModel(load_checkpoint(path, device=device), device=device)
