"""Map kinds: what the analyses read as a head's T x T "map" (docs/science.md §10, docs/maps.md).

- ``attention``: the softmax weights ``A`` a layer multiplied its values by (the default).
- ``value-norm`` (Kobayashi et al., EMNLP 2020, "Attention is not only a weight"): the size of what
  each key actually adds to the query's output, ``N[q, k] = A[q, k] * ||f_h(x_k)||`` with
  ``f_h(x) = (x W_V^h + b_V^h) W_O^h`` (key k's value vector through head h's columns of the
  attention output projection; the output bias is left out, as in the paper). Stored with every row
  divided by its sum, so each row is a distribution and every metric (entropies need one) applies;
  a row whose keys all have zero norm keeps its raw weights.
- ``rollout`` (Abnar & Zuidema, ACL 2020, "Quantifying attention flow in transformers"): how much
  of each input step has been mixed into each position after layer l, residual included:
  ``Ã_l = 0.5 * mean_h A_l + 0.5 * I`` (rows renormalised), ``R_1 = Ã_1``, ``R_l = Ã_l R_{l-1}``.
  One map per layer: a rollout cache stores it as head 1 of each layer (``L3.H1`` = the rollout
  through layer 3); analyses that need real heads (pruning orders) refuse it.

Only torch is needed, imported when a map is computed (``import satool.maps`` stays light).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

ATTENTION, VALUE_NORM, ROLLOUT = "attention", "value-norm", "rollout"
MAP_KINDS = (ATTENTION, VALUE_NORM, ROLLOUT)
DEFAULT_MAPS = ATTENTION
PER_LAYER = (ROLLOUT,)  # kinds with one map per layer (stored as head 1), not one per head
DESCRIPTIONS = {
    ATTENTION: "raw attention weights A (softmax output)",
    VALUE_NORM: "value-weighted norms A[q,k]*||f_h(x_k)|| (Kobayashi et al. 2020), rows normalised to sum to 1",
    ROLLOUT: "attention rollout through layers 1..l with the residual (Abnar & Zuidema 2020), one map per layer",
}
HELP = ("What a map is: attention (raw weights), value-norm (weights times the size of each key's transformed "
        "value, rows normalised; Kobayashi et al. 2020) or rollout (mixing through the layers with the residual, "
        "one map per layer; Abnar & Zuidema 2020); docs/maps.md.")
NORM_KEYS_BYTES = 64 * 2**20  # value norms are computed over keys in chunks of at most this many float32 bytes


def check_kind(kind: str) -> str:
    """``kind`` if it is a map kind, else a UsageError listing them."""
    if kind not in MAP_KINDS:
        from satool.errors import UsageError

        raise UsageError(f"--maps {kind!r}: choose one of {', '.join(MAP_KINDS)}")
    return kind


def kind_of(manifest_or_source: dict | None) -> str:
    """The map kind a cache manifest or a result's ``source`` records (``attention`` when it records none:
    caches and results written before map kinds existed hold raw weights)."""
    return str((manifest_or_source or {}).get("maps") or ATTENTION)


def head_value_norms(values: torch.Tensor, out_weight: torch.Tensor) -> torch.Tensor:
    """``||f_h(x_k)||`` for every head and key: ``values[..., head, key, d]`` (each head's value vectors,
    bias included) and the attention output projection's weight ``out_weight[hidden, head * d]`` (as
    ``nn.Linear`` stores it: ``y = x W^T``) -> ``[..., head, key]``. Head h's columns of ``W`` are
    ``h * d .. (h + 1) * d - 1``, the order in which the heads' contexts are concatenated."""
    import torch

    heads, keys, d = values.shape[-3:]
    w = out_weight.reshape(out_weight.shape[0], heads, d).permute(1, 2, 0).to(values.dtype)  # [head, d, hidden]
    per_key = max(1, values.numel() // max(1, keys * d)) * out_weight.shape[0] * 4  # bytes of f for one key
    step = max(1, NORM_KEYS_BYTES // per_key)
    parts = [torch.linalg.vector_norm(torch.matmul(values[..., first:first + step, :], w), dim=-1)
             for first in range(0, keys, step)]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


def value_weighted(probs: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    """Value-norm maps from weights ``probs[..., head, query, key]`` and norms ``norms[..., head, key]``:
    ``A[q, k] * norm[k]``, each row divided by its sum (a row whose sum is 0 keeps ``probs``)."""
    import torch

    weighted = probs * norms.unsqueeze(-2)
    sums = weighted.sum(dim=-1, keepdim=True)
    return torch.where(sums > 0, weighted / torch.where(sums > 0, sums, torch.ones_like(sums)), probs)


def rollout_step(previous: torch.Tensor | None, layer_maps: torch.Tensor) -> torch.Tensor:
    """``R_l`` from ``R_{l-1}`` (None before layer 1) and layer l's maps ``[head, T, T]``."""
    import torch

    steps = layer_maps.shape[-1]
    mixed = 0.5 * layer_maps.mean(dim=0) + 0.5 * torch.eye(steps, dtype=layer_maps.dtype, device=layer_maps.device)
    mixed = mixed / mixed.sum(dim=-1, keepdim=True)
    return mixed if previous is None else torch.matmul(mixed, previous)


def rollout(maps: torch.Tensor) -> torch.Tensor:
    """Rollout of every layer from the maps of layers 1..L ``[layer, head, T, T]`` -> ``[layer, 1, T, T]``."""
    import torch

    out, current = [], None
    for layer_maps in maps:
        current = rollout_step(current, layer_maps)
        out.append(current)
    return torch.stack(out)[:, None]


def heads_of(kind: str, num_heads: int) -> list[int]:
    """The head numbers a map kind stores for a model with ``num_heads`` heads per layer."""
    return [1] if kind in PER_LAYER else list(range(1, num_heads + 1))
