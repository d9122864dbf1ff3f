"""Masked acoustic modelling inputs (docs/science.md §1; Mockingjay pre-training).

Per utterance: spans of ``span`` consecutive steps are chosen at random starts
until about ``proportion`` (15 %) of its valid steps are chosen; then, with
probability 0.8 all chosen steps are set to zero, with 0.1 they are replaced
by other random steps of the same utterance, and with 0.1 they are left
unchanged. The loss is computed on the chosen steps only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MaskPolicy:
    span: int = 3  # Cnum, in model steps
    proportion: float = 0.15
    p_zero: float = 0.8
    p_random: float = 0.1  # the rest (0.1) leaves the chosen steps unchanged


def choose_steps(n_steps: int, policy: MaskPolicy, rng: np.random.Generator) -> np.ndarray:
    """bool ``[step]``: spans of ``policy.span`` steps until >= round(proportion * n_steps) are chosen."""
    chosen = np.zeros(n_steps, dtype=bool)
    goal = max(1, round(policy.proportion * n_steps)) if n_steps > 0 else 0
    span = min(policy.span, n_steps)
    starts = rng.permutation(max(n_steps - span + 1, 0))
    count = 0
    for start in starts:
        if count >= goal:
            break
        window = chosen[start:start + span]
        count += int(span - window.sum())
        window[:] = True
    return chosen


def mask_batch(inputs, lengths, policy: MaskPolicy, rng: np.random.Generator):
    """Apply the masking policy to ``inputs[batch, step, dim]`` (a torch tensor, not modified).

    Returns ``(masked_inputs, chosen[batch, step] bool tensor)``; padding steps
    (``>= lengths[b]``) are never chosen.
    """
    import torch

    masked = inputs.clone()
    chosen = torch.zeros(inputs.shape[:2], dtype=torch.bool)
    for b, n in enumerate(int(x) for x in lengths):
        pick = choose_steps(n, policy, rng)
        index = np.flatnonzero(pick)
        chosen[b, : len(pick)] = torch.from_numpy(pick)
        dice = rng.random()
        if dice < policy.p_zero:
            masked[b, index] = 0
        elif dice < policy.p_zero + policy.p_random:
            source = rng.integers(0, n, size=len(index))
            masked[b, index] = inputs[b, source]
    return masked, chosen.to(inputs.device)
