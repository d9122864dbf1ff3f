"""The built-in ``distiller`` loader: s3prl distiller checkpoints (DistilHuBERT).

``can_load`` must be cheap and run nothing from the file: it opens torch's zip container, reads the
pickle's opcode stream (at most 16 MB, never unpickled) and accepts the file when a top-level string
``'Distiller'`` is there next to ``'Config'``. Files in torch's legacy (pre-1.6) format are not
recognised here; every s3prl distiller checkpoint was written by a later torch.
"""

from __future__ import annotations

from pathlib import Path

MAX_PICKLE_BYTES = 16 << 20


def looks_like_distiller(path: Path) -> bool:
    import pickletools
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            member = next((i for i in archive.infolist() if i.filename.endswith("/data.pkl")
                           or i.filename == "data.pkl"), None)
            if member is None or member.file_size > MAX_PICKLE_BYTES:
                return False
            data = archive.read(member)
        strings = set()
        for opcode, arg, _ in pickletools.genops(data):
            if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE") and arg in ("Distiller", "Config"):
                strings.add(arg)
                if len(strings) == 2:
                    return True
    except Exception:  # not a zip, damaged, not a pickle: not ours (the next loader reports the problem)
        return False
    return False


class DistillerLoader:
    name = "distiller"
    description = "s3prl distiller checkpoint files (DistilHuBERT: 'Distiller' + Config['distiller'])"

    def can_load(self, path: Path) -> bool:
        return Path(path).is_file() and looks_like_distiller(Path(path))

    def load(self, path: Path, device: str = "cpu"):
        from satool.models.distiller.model import DistillerModel

        return DistillerModel.from_file(path, device=device)
