"""Has a masked acoustic model learned? Held-out checks against simple baselines.

Every number here is measured on held-out utterances with one fixed draw of
masks (the pre-training policy's spans, always zeroed, so nothing of a chosen
step is visible) and compared with what needs no model at all:

- ``zeros``: predict 0 for every masked value (targets are normalised per
  utterance, so this is the utterance's mean frame);
- ``median``: the per-utterance median of the *unmasked* target frames;
- ``nearest``: copy the nearest unmasked frame (10 ms frames; ties take the
  earlier one);
- ``interpolation``: linear interpolation, frame by frame, between the
  unmasked frames on either side of a masked run (the nearest one at an
  edge).

Two properties of the model itself:

- ``attention_off``: the same model with every head restricted to its own
  step (``attention_window=0``: no context at all). A model whose attention
  does something useful is clearly worse without it.
- every head's *locality* (on unmasked input, as the analysis sees it): the
  weight its favourite relative offset carries, in units of what uniform
  attention would put there (:mod:`satool.analysis.locality`): 1 means no preference,
  5 means five times the uniform weight.

All L1 values are means over every masked target value of every utterance
(pooled, as the pre-training loss is).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from satool.results.health import BASELINES, HealthCheck
from satool.results.metrics import locality


@dataclass
class HeldoutUtterance:
    """One held-out utterance with its fixed mask.

    ``inputs[step, R * input_dim]`` and ``targets[step, R * output_dim]``
    (float32, stacked as the model reads them), ``chosen[step]`` bool.
    """

    inputs: np.ndarray
    targets: np.ndarray
    chosen: np.ndarray


def make_heldout(pairs: Sequence[tuple[np.ndarray, np.ndarray]], span: int, proportion: float,
                 seed: int) -> list[HeldoutUtterance]:
    """Fix one mask per ``(inputs, targets)`` pair (same seed, same masks, whatever the model)."""
    from satool.training.masking import MaskPolicy, choose_steps

    policy = MaskPolicy(span=span, proportion=proportion)
    out = []
    for i, (inputs, targets) in enumerate(pairs):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 10**6 + i]))
        chosen = choose_steps(len(inputs), policy, rng)
        out.append(HeldoutUtterance(np.asarray(inputs, np.float32), np.asarray(targets, np.float32), chosen))
    return out


def baseline_predictions(targets: np.ndarray, chosen_frames: np.ndarray) -> dict[str, np.ndarray]:
    """Each baseline's prediction ``[frame, dim]`` of ``targets[frame, dim]`` from its unmasked frames.

    Only the rows where ``chosen_frames`` is True are meaningful.
    """
    n, dim = targets.shape
    visible = np.flatnonzero(~chosen_frames)
    out = {"zeros": np.zeros_like(targets)}
    if len(visible) == 0:  # nothing to copy from: every baseline falls back to zeros
        return {name: out["zeros"] for name in BASELINES}
    out["median"] = np.broadcast_to(np.median(targets[visible], axis=0), targets.shape)
    frames = np.arange(n)
    # index of the last visible frame at or before f, and the first at or after f
    position = np.searchsorted(visible, frames, side="right") - 1
    left = visible[np.clip(position, 0, None)]
    has_left = position >= 0
    right_pos = np.searchsorted(visible, frames, side="left")
    right = visible[np.clip(right_pos, None, len(visible) - 1)]
    has_right = right_pos < len(visible)
    left = np.where(has_left, left, right)
    right = np.where(has_right, right, left)
    nearest = np.where(frames - left <= right - frames, left, right)
    out["nearest"] = targets[nearest]
    gap = (right - left).astype(np.float32)
    weight = np.where(gap > 0, (frames - left) / np.maximum(gap, 1), 0.0).astype(np.float32)[:, None]
    out["interpolation"] = (1 - weight) * targets[left] + weight * targets[right]
    return out


def baseline_l1(heldout: Sequence[HeldoutUtterance], rate: int) -> dict[str, float]:
    """Masked L1 of every baseline, pooled over ``heldout`` (frames are unstacked by ``rate``)."""
    totals = dict.fromkeys(BASELINES, 0.0)
    count = 0
    for utt in heldout:
        steps = len(utt.targets)
        frames = utt.targets.reshape(steps * rate, -1)
        chosen = np.repeat(utt.chosen, rate)
        for name, guess in baseline_predictions(frames, chosen).items():
            totals[name] += float(np.abs(guess[chosen] - frames[chosen]).sum(dtype=np.float64))
        count += int(chosen.sum()) * frames.shape[1]
    return {name: total / max(count, 1) for name, total in totals.items()}


def _batches(heldout: Sequence[HeldoutUtterance], batch_size: int):
    order = sorted(range(len(heldout)), key=lambda i: len(heldout[i].inputs))
    for start in range(0, len(order), batch_size):
        yield [heldout[i] for i in order[start:start + batch_size]]


def _padded(items, attribute: str):
    import torch

    arrays = [getattr(u, attribute) for u in items]
    width = max(len(a) for a in arrays)
    out = torch.zeros(len(arrays), width, arrays[0].shape[-1])
    for b, a in enumerate(arrays):
        out[b, : len(a)] = torch.from_numpy(np.ascontiguousarray(a))
    return out


def model_l1(encoder, head, heldout: Sequence[HeldoutUtterance], *, attention_window: int | None = None,
             batch_size: int = 16, device: str = "cpu") -> float:
    """Masked L1 of the model's prediction (chosen steps zeroed in the input), pooled."""
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for items in _batches(heldout, batch_size):
            inputs, targets = _padded(items, "inputs"), _padded(items, "targets")
            chosen = torch.zeros(inputs.shape[:2], dtype=torch.bool)
            for b, u in enumerate(items):
                chosen[b, : len(u.chosen)] = torch.from_numpy(u.chosen)
            inputs[chosen] = 0.0
            lengths = torch.tensor([len(u.inputs) for u in items])
            hidden = encoder(inputs.to(device), lengths.to(device), output_attentions=False,
                             attention_window=attention_window).last_hidden_state
            error = (head(hidden).cpu() - targets).abs()[chosen]
            total += float(error.sum(dtype=torch.float64))
            count += error.numel()
    return total / max(count, 1)


def offset_profile(encoder, heldout: Sequence[HeldoutUtterance], *, batch_size: int = 16,
                   device: str = "cpu") -> np.ndarray:
    """Every head's offset profile ``[layer, head, offset]`` (see :mod:`satool.analysis.locality`) on the
    unmasked inputs of ``heldout``."""
    return offset_profiles(encoder, heldout, batch_size=batch_size, device=device)["clean"]


def offset_profiles(encoder, heldout: Sequence[HeldoutUtterance], *, masked: bool = False, batch_size: int = 16,
                    device: str = "cpu") -> dict[str, np.ndarray]:
    """Offset profiles ``[layer, head, offset]`` of every head: ``clean`` on the unmasked inputs (as the
    analysis reads the model) and, with ``masked``, on the inputs as pre-training shows them (the chosen
    steps zeroed), pooled separately over the queries that are masked (``masked_queries``: their own
    step carries nothing) and over the others (``unmasked_queries``). Whether a head's favourite offset
    moves off the main diagonal for masked queries is what explains a shift that grows with the mask
    span, or its absence."""
    import torch

    from satool.analysis.locality import offset_sums, profile

    kinds = ("clean", "masked_queries", "unmasked_queries") if masked else ("clean",)
    sums = dict.fromkeys(kinds, 0.0)
    queries = dict.fromkeys(kinds, 0.0)
    with torch.no_grad():
        for items in _batches(heldout, batch_size):
            clean = _padded(items, "inputs")
            lengths = torch.tensor([len(u.inputs) for u in items])
            runs = [("clean", clean)]
            if masked:
                hidden = clean.clone()
                for b, u in enumerate(items):
                    hidden[b, : len(u.chosen)][torch.from_numpy(u.chosen)] = 0.0
                runs.append(("masked", hidden))
            for kind, inputs in runs:
                maps = encoder(inputs.to(device), lengths.to(device), output_attentions=True,
                               output_hidden_states=False).attentions
                attn = torch.stack(maps, dim=1).float().cpu().numpy()  # [batch, layer, head, query, key]
                for b, n in enumerate(int(x) for x in lengths):
                    one = attn[b, :, :, :n, :n]
                    groups = [("clean", None)] if kind == "clean" else [
                        ("masked_queries", items[b].chosen), ("unmasked_queries", ~items[b].chosen)]
                    for name, rows in groups:
                        one_sums, one_queries = offset_sums(one, rows=rows)
                        sums[name], queries[name] = sums[name] + one_sums, queries[name] + one_queries
    return {name: profile(sums[name], queries[name]) for name in kinds}


def health_check(encoder, head, heldout: Sequence[HeldoutUtterance], rate: int, *, step: int = 0,
                 baselines: dict[str, float] | None = None, masked_profiles: bool = False,
                 device: str = "cpu") -> HealthCheck:
    """Every held-out number for the model as it is now (``baselines`` are reused when given; with
    ``masked_profiles``, the offset profiles of masked and unmasked queries too)."""
    was_training = encoder.training
    encoder.eval()
    head.eval()
    try:
        full = model_l1(encoder, head, heldout, device=device)
        off = model_l1(encoder, head, heldout, attention_window=0, device=device)
        profiles = offset_profiles(encoder, heldout, masked=masked_profiles, device=device)
        best, where = locality(profiles["clean"])
    finally:
        encoder.train(was_training)
        head.train(was_training)
    return HealthCheck(step, full, off, baselines or baseline_l1(heldout, rate), best, where, len(heldout),
                       profiles=profiles if masked_profiles else {})


def health_warnings(check: HealthCheck) -> list[str]:
    """One line per problem ``satool pretrain`` warns about at the end of a run (none: no line)."""
    nearest = check.baselines["nearest"]
    if check.model_l1 >= nearest:
        return [f"held-out masked L1 {check.model_l1:.3f} is no better than copying the nearest unmasked "
                f"frame ({nearest:.3f}): the model has not learned to use context"]
    return []


def evaluate_checkpoint(checkpoint, corpus_path, split: str, *, max_utts: int | None = None, seed: int = 0,
                        alignments=None, readers=None, device: str = "cpu",
                        progress=None) -> HealthCheck:
    """The held-out checks for a Mockingjay checkpoint on a corpus split (masks drawn as the model was
    trained: its recorded span, 15 %). Needs the pre-training head. ``readers``: the corpus readers
    (default: satool's own)."""
    from satool.data.corpus import open_corpus
    from satool.data.features import FeatureConfig, FeatureExtractor
    from satool.errors import InputError, UsageError
    from satool.models.mockingjay import stack_frames
    from satool.models.mockingjay.checkpoint import load_checkpoint

    loaded = load_checkpoint(checkpoint)
    if loaded.spec_head is None:
        raise UsageError(f"{checkpoint}: no pre-training head (SpecHead), so held-out reconstruction cannot be "
                         "measured")
    corpus = open_corpus(corpus_path, alignments, readers=readers)
    utterances = corpus.select(split, max_utts)
    features = FeatureConfig.from_s3prl(loaded.audio) if loaded.audio else FeatureConfig()
    extractor = FeatureExtractor(features)
    rate = loaded.config.downsample_rate
    pairs = []
    for utt in utterances:
        try:
            inputs, targets = extractor.input_and_target(corpus.load(utt).wave)
        except InputError:
            continue
        finally:
            if progress is not None:
                progress(1)
        if targets.shape[-1] * rate != loaded.config.step_output_dim:
            raise UsageError(f"{checkpoint}: its head predicts {loaded.config.step_output_dim} values per step, "
                             f"but these features give {targets.shape[-1] * rate}")
        pairs.append((stack_frames(inputs[None], rate)[0].numpy(), stack_frames(targets[None], rate)[0].numpy()))
    pairs = [p for p in pairs if len(p[0])]
    if not pairs:
        raise InputError(f"no readable utterances in split {split!r}", path=corpus_path)
    task = loaded.task or {}
    span = int(task.get("mask_consecutive_min", 3) or 3)
    proportion = float(task.get("mask_proportion", 0.15) or 0.15)
    heldout = make_heldout(pairs, span, proportion, seed)
    encoder, head = loaded.encoder.to(device), loaded.spec_head.to(device)
    return health_check(encoder, head, heldout, rate, step=int(loaded.step or 0), masked_profiles=True,
                        device=device)
