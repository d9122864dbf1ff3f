"""Durable writes: what an atomic rename needs to survive a crash."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def fsync_directory(path: Path) -> None:
    """Flush a directory's entries (a rename into it) to disk; where the system cannot, do nothing."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
