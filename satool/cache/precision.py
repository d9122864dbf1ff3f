"""float16 as stored, float32 as computed: the one cast every reader of maps makes."""

from __future__ import annotations

import contextlib

import numpy as np


def to_float32(data: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """float16 (or any) maps -> float32, into ``out`` if given (same shape, C-contiguous).

    float16 goes through torch's vectorised cast (numpy's is ~25x slower), on
    the calling thread only: torch's OpenMP workers would otherwise wake up and
    keep spinning next to a metric thread's numpy work. The cast releases the
    GIL, so a reader thread overlaps with it.
    """
    if out is None:
        if data.dtype != np.float16:
            return np.asarray(data, dtype=np.float32)
        out = np.empty(data.shape, dtype=np.float32)
    if data.dtype != np.float16:
        np.copyto(out, data)
        return out
    import torch

    with torch_threads(1):
        torch.from_numpy(out).copy_(torch.from_numpy(np.ascontiguousarray(data)))
    return out


@contextlib.contextmanager
def torch_threads(n: int):
    """Run torch's CPU ops with ``n`` intra-op threads inside the block, then restore."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
