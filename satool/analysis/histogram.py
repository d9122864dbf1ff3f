"""How a head's attention weights are spread: counts per power of two (the viewer and `satool metric`).

A histogram of weights with linear bins says little (almost every weight of a T-step row is near 0);
one with a bin per octave shows at once whether a head spreads its mass (weights near 1/T) or puts it
on a few keys (weights near 1). Bin 0 counts weights that are exactly 0 (pruned heads, masked keys);
bin k = 1..25 counts weights in ``[2^(k-25), 2^(k-24))``, so bin 25 holds the weights equal to 1 and
bin 1 every weight below 2^-23 (2^-24 is the smallest float16 a cache or a stream keeps; float32
values below 2^-126, which neither keeps, would count as 0). Counts are
sums over queries and utterances, so they add up block by block, utterance by utterance and shard by
shard: a stream and a cache give the same counts.
"""

from __future__ import annotations

import numpy as np

from satool.results.metrics import HISTOGRAM_BINS as BINS
from satool.results.metrics import HISTOGRAM_LOWER_EDGES as LOWER_EDGES  # noqa: F401  (each bin's smallest weight)
from satool.results.metrics import histogram_shares as fractions  # noqa: F401  (counts as shares per head)

# float32's biased exponent E (weights in [2^(E-127), 2^(E-126))) -> bin: 0 for E = 0 (exactly 0, or
# below float32's normal range), E - 102 clipped to 1..25 otherwise
_BIN_OF_EXPONENT = np.array([0] + [min(max(e - 102, 1), BINS - 1) for e in range(1, 256)])


def weight_histogram(probs: np.ndarray) -> np.ndarray:
    """float64 counts ``[..., bin]`` of the weights of ``probs[..., query, key]`` (float32; the leading
    axes, e.g. layer and head, are kept), one head at a time so memory stays a few times one head's.
    Read from the float's exponent bits: 256 exponent counts, then folded into the bins."""
    probs = np.asarray(probs, dtype=np.float32)
    lead = probs.shape[:-2]
    heads = probs.reshape(-1, probs.shape[-2] * probs.shape[-1])
    counts = np.zeros((len(heads), BINS))
    for h, weights in enumerate(heads):
        exponent = (np.ascontiguousarray(weights).view(np.uint32) >> 23).astype(np.uint8)  # sign bit dropped
        counts[h] = np.bincount(_BIN_OF_EXPONENT, weights=np.bincount(exponent, minlength=256), minlength=BINS)
    return counts.reshape(*lead, BINS)


def weight_histogram_tensor(probs) -> np.ndarray:
    """:func:`weight_histogram` of a torch tensor ``probs[head, query, key]`` (float32), counted where it
    lies (e.g. on the GPU): float64 counts ``[head, bin]`` on the host. Memory: one int64 per weight."""
    import torch

    heads = probs.shape[0]
    exponent = (probs.reshape(heads, -1).view(torch.int32) >> 23) & 0xFF  # sign bit dropped
    table = torch.as_tensor(_BIN_OF_EXPONENT, device=probs.device)
    bins = table[exponent] + BINS * torch.arange(heads, device=probs.device)[:, None]
    counts = torch.bincount(bins.reshape(-1), minlength=heads * BINS)
    return counts.reshape(heads, BINS).cpu().to(torch.float64).numpy()
