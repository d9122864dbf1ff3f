"""Pre-training a Mockingjay model by masked acoustic modelling (docs/science.md §1).

Input: log-Mel features stacked by R; target: the 201-bin log-linear
spectrogram stacked the same way; loss: L1 on the chosen (masked) steps only.
Optimiser: AdamW, linear warm-up over 7 % of the steps then linear decay to
0, weight decay 0.01, gradient-norm clipping at 5. The default recipe (pre-LN,
learning rate 1e-3, no hidden dropout, batches of similar length) was chosen
by measurement, see docs/pretraining.md; s3prl's (post-LN, 2e-4, dropout
0.1) is one set of options away.

Determinism and resumption: everything random in step ``s`` (which
utterances, which crops, which spans, the 80/10/10 dice, dropout) is drawn
from generators seeded with ``(seed, s, rank)``. A checkpoint therefore only
needs the weights, the optimiser state and the step: a run resumed from it
continues exactly as the uninterrupted run would have.

Data parallel: under ``torchrun --nproc-per-node N -m satool pretrain ...``
each of the N processes (gloo backend on CPU) takes every N-th utterance of
each global batch; DDP averages the gradients; rank 0 writes checkpoints.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from satool.errors import InputError, UsageError
from satool.results.files import json_ready
from satool.results.training import TrainingCurves
from satool.timebase import FRAME_S
from satool.training.heldout import HealthCheck, health_check, health_warnings, make_heldout
from satool.training.masking import MaskPolicy, mask_batch
from satool.training.settings import PretrainSettings


@dataclass
class PretrainResult:
    checkpoint: Path
    steps: int
    final_loss: float
    health: HealthCheck | None  # the last held-out check (None without a held-out split)
    seconds: float
    frames_per_second: float
    warnings: list[str] = field(default_factory=list)
    curves: TrainingCurves | None = None  # loss, held-out checks, per-head locality by step (rank 0 only)

    @property
    def heldout_l1(self) -> float | None:
        return None if self.health is None else self.health.model_l1


def learning_rate_at(step: int, settings: PretrainSettings) -> float:
    """Linear warm-up for ``warmup * steps`` steps, then linear decay to zero."""
    warm = max(1, int(round(settings.warmup * settings.steps)))
    if step < warm:
        return settings.learning_rate * (step + 1) / warm
    remaining = max(1, settings.steps - warm)
    return settings.learning_rate * max(0.0, (settings.steps - step) / remaining)


def _seed_for(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


class _Data:
    """Utterances of a split; features computed on first use and kept while they fit ``budget_bytes``."""

    def __init__(self, corpus, utterances, extractor, rate: int, budget_bytes: int = 4 << 30):
        self.corpus = corpus
        self.utterances = utterances
        self.extractor = extractor
        self.rate = rate
        self.budget = budget_bytes
        self._kept: dict[int, tuple] = {}
        self._bytes = 0

    def features(self, index: int):
        """(input ``[step, R*80]``, target ``[step, R*201]``) of utterance ``index``."""
        from satool.models.mockingjay import stack_frames

        if index in self._kept:
            return self._kept[index]
        loaded = self.corpus.load(self.utterances[index])
        inp, tgt = self.extractor.input_and_target(loaded.wave)
        pair = stack_frames(inp[None], self.rate)[0], stack_frames(tgt[None], self.rate)[0]
        size = (pair[0].numel() + pair[1].numel()) * 4
        if self._bytes + size <= self.budget:
            self._kept[index] = pair
            self._bytes += size
        return pair


def _estimated_steps(utterance, rate: int) -> int:
    """Model steps of an utterance from its audio header (no decoding; 0 if unreadable)."""
    from satool.data.audio import SAMPLE_RATE, audio_info
    from satool.data.corpus.base import HOP_SAMPLES

    try:
        info = audio_info(utterance.audio)
    except InputError:
        return 0
    return (1 + int(info.frames * SAMPLE_RATE / info.sample_rate) // HOP_SAMPLES) // rate


def length_buckets(lengths: np.ndarray, buckets: int) -> list[np.ndarray]:
    """Utterance indices sorted by length and cut into ``buckets`` groups of (nearly) equal size."""
    order = np.argsort(lengths, kind="stable")
    return [b for b in np.array_split(order, max(1, min(buckets, len(order)))) if len(b)]


def draw_batch(groups: list[np.ndarray], size: int, rng: np.random.Generator) -> np.ndarray:
    """One batch: an utterance drawn uniformly picks its group, the rest come from that group.

    Every utterance is equally likely to be in a batch (the groups have equal sizes), while the
    batch's lengths are similar, so little of the step is spent on padding.
    """
    sizes = np.array([len(g) for g in groups])
    anchor = int(rng.integers(sizes.sum()))
    group = groups[int(np.searchsorted(np.cumsum(sizes), anchor, side="right"))]
    return rng.choice(group, size=size, replace=len(group) < size)


def _collate(pairs, max_steps: int, rng: np.random.Generator):
    crops = []
    for inp, tgt in pairs:
        n = inp.shape[0]
        start = int(rng.integers(0, n - max_steps + 1)) if n > max_steps else 0
        crops.append((inp[start:start + max_steps], tgt[start:start + max_steps]))
    lengths = torch.tensor([c[0].shape[0] for c in crops])
    width = int(lengths.max())
    inputs = torch.zeros(len(crops), width, crops[0][0].shape[1])
    targets = torch.zeros(len(crops), width, crops[0][1].shape[1])
    for b, (inp, tgt) in enumerate(crops):
        inputs[b, : len(inp)] = inp
        targets[b, : len(tgt)] = tgt
    return inputs, targets, lengths


def torchrun_world() -> tuple[int, int]:
    """(rank, world size) of this process under torchrun (0, 1 otherwise)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def pretrain(
    corpus_path: str | Path,
    out: str | Path,
    settings: PretrainSettings,
    *,
    alignments: str | Path | None = None,
    readers: Sequence[Any] | None = None,
    device: str = "cpu",
    progress: Callable[[int, float], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> PretrainResult:
    """Pre-train (or resume) and write the checkpoint ``out``; the curves come back in the result.

    ``readers``: the corpus readers to open ``corpus_path`` with (default: satool's own).

    ``progress(step, loss)`` is called after every step (rank 0 only).
    """
    from satool.data.corpus import open_corpus
    from satool.data.features import FeatureConfig, FeatureExtractor
    from satool.models.mockingjay import MockingjayConfig, MockingjayEncoder, SpecHead
    from satool.models.mockingjay.checkpoint import (
        load_checkpoint,
        remove_stale_temporaries,
        save_checkpoint,
    )

    out = Path(out)
    rank, world = torchrun_world()
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo")
    if settings.batch_size < world:
        raise UsageError(f"--batch-size {settings.batch_size} is smaller than the number of processes {world}")

    corpus = open_corpus(corpus_path, alignments, readers=readers)
    train_split = training_splits(corpus, settings.split)
    utterances = corpus.select(train_split, settings.max_utts)
    if not utterances:
        raise InputError("no training utterances", path=corpus_path)
    features = FeatureConfig()
    extractor = FeatureExtractor(features)
    data = _Data(corpus, utterances, extractor, settings.downsample)

    try:
        config = MockingjayConfig.preset(
            settings.preset, input_dim=features.input_dim, output_dim=features.target_dim,
            downsample_rate=settings.downsample, pre_layer_norm=settings.pre_layer_norm, **settings.overrides,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    torch.manual_seed(settings.seed)
    model = MaskedAcousticModel(MockingjayEncoder(config), SpecHead(config)).to(device)
    encoder, head = model.Transformer, model.SpecHead
    decay = [p for n, p in model.named_parameters() if not n.endswith("bias") and "LayerNorm" not in n]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=settings.learning_rate,
    )
    history: list[dict[str, float]] = []
    checks: list[dict[str, float]] = []
    head_checks: list[dict[str, object]] = []  # every head's locality and favourite offset per check
    start_step = 0
    if rank == 0:
        remove_stale_temporaries(out)  # left by a run killed while saving
    training = {"settings": asdict(settings), "corpus": str(corpus_path), "split": sorted(train_split)}
    if out.exists():
        saved = load_checkpoint(out, keep_training_state=True)
        recorded = (saved.satool or {}).get("training", {})
        if recorded.get("settings") != json_ready(asdict(settings)) or saved.spec_head is None:
            raise UsageError(
                f"{out}: exists and was trained with other settings; choose another --out to start over"
            )
        encoder.load_state_dict(saved.encoder.state_dict())
        head.load_state_dict(saved.spec_head.state_dict())
        if (saved.training_state or {}).get("Optimizer"):
            optimizer.load_state_dict(saved.training_state["Optimizer"])
        start_step = int(saved.step or 0)
        history = list((saved.satool or {}).get("history", []))
        checks = list((saved.satool or {}).get("checks", []))
        head_checks = list((saved.satool or {}).get("head_checks", []))
        if log and rank == 0:
            log(f"resuming {out} at step {start_step}")
    train_model = model
    if world > 1:
        # pre-LN models also normalise the states of inner layers for reporting: unused by the loss
        train_model = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=config.pre_layer_norm)

    policy = MaskPolicy(span=settings.mask_span, proportion=settings.mask_proportion)
    heldout = None
    heldout_splits = None
    if settings.heldout_split and settings.heldout_utts > 0:
        try:
            heldout_splits = corpus.resolve_splits(settings.heldout_split)
        except UsageError:
            if log and rank == 0:
                log(f"warning: no {settings.heldout_split!r} split in {corpus_path}: no held-out checks "
                    "(choose one with --heldout-split)")
    if rank == 0 and heldout_splits:
        held = corpus.select(heldout_splits, settings.heldout_utts)
        held_data = _Data(corpus, held, extractor, settings.downsample)
        heldout = make_heldout([tuple(t.numpy() for t in held_data.features(i)) for i in range(len(held))],
                               settings.mask_span, settings.mask_proportion, settings.seed)
    every = settings.eval_every or max(1, settings.steps // 10)
    baselines: dict[str, float] | None = None
    last_check: HealthCheck | None = None

    def check(step: int) -> None:
        nonlocal baselines, last_check
        last_check = health_check(encoder, head, heldout, settings.downsample, step=step, baselines=baselines,
                                  device=device)
        baselines = last_check.baselines
        checks[:] = [c for c in checks if c["step"] != step] + [last_check.row()]
        head_checks[:] = [c for c in head_checks if c["step"] != step] + [last_check.heads()]

    groups = length_buckets(np.array([min(_estimated_steps(u, settings.downsample), settings.max_steps_per_utterance)
                                      for u in utterances]), settings.length_buckets)
    began = time.perf_counter()
    frames_seen = 0

    def save(step: int) -> None:
        if rank != 0:
            return
        save_checkpoint(
            out, encoder, head, audio=features.to_s3prl(), optimizer_state=optimizer.state_dict(), step=step,
            task={"mask_consecutive_min": settings.mask_span, "mask_consecutive_max": settings.mask_span,
                  "mask_proportion": settings.mask_proportion, "mask_allow_overlap": True},
            runner_config={"optimizer": {"name": "AdamW", "lr": settings.learning_rate,
                                         "warmup_proportion": settings.warmup,
                                         "weight_decay": settings.weight_decay,
                                         "gradient_clipping": settings.clip_norm},
                           "total_steps": settings.steps},
            satool={"training": {**training, "settings": json_ready(asdict(settings))}, "history": history,
                    "checks": checks, "head_checks": head_checks},
        )

    model.train()
    for step in range(start_step, settings.steps):
        rng = np.random.default_rng(_seed_for(settings.seed, step))
        batch = draw_batch(groups, settings.batch_size, rng)
        mine = batch[rank::world]
        local_rng = np.random.default_rng(_seed_for(settings.seed, step, rank))
        inputs, targets, lengths = _collate([data.features(int(i)) for i in mine],
                                            settings.max_steps_per_utterance, local_rng)
        masked, chosen = mask_batch(inputs, lengths, policy, local_rng)
        torch.manual_seed(_seed_for(settings.seed, step, rank, 1))
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, settings)
        prediction = train_model(masked.to(device), lengths.to(device))
        loss = (prediction - targets.to(device)).abs()[chosen.to(device)].mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip_norm)
        optimizer.step()
        frames_seen += int(lengths.sum()) * settings.downsample
        history.append({"step": step + 1, "loss": float(loss.detach()), "lr": learning_rate_at(step, settings)})
        if progress is not None and rank == 0:
            progress(step + 1, float(loss.detach()))
        if heldout is not None and (step + 1) % every == 0 and step + 1 < settings.steps:
            check(step + 1)
            model.train()
        if (step + 1) % settings.save_every == 0 and step + 1 < settings.steps:
            save(step + 1)
    seconds = time.perf_counter() - began
    model.eval()
    warnings: list[str] = []
    if rank == 0:
        rise = loss_rise(history, warmup_steps(settings))
        if rise:
            warnings.append(rise)
        if heldout is not None:
            check(settings.steps)
            training["heldout"] = {
                "split": settings.heldout_split, "utterances": len(heldout), **last_check.row(),
                "locality": last_check.locality.round(4).tolist(),
                "favourite_offset": last_check.favourite_offset.tolist(),
            }
            warnings += health_warnings(last_check)
    save(settings.steps)
    if rank == 0:
        if log:
            for line in warnings:
                log(f"warning: {line}")
    if world > 1:
        torch.distributed.barrier()
    final = history[-1]["loss"] if history else float("nan")
    return PretrainResult(out, settings.steps, final, last_check, seconds,
                          frames_seen * world / max(seconds, 1e-9), warnings,
                          TrainingCurves(history, checks, head_checks, 1000 * settings.downsample * FRAME_S)
                          if rank == 0 else None)


def training_splits(corpus, split: str | None) -> set[str]:
    """The splits pre-training reads: ``split`` by name or family (``train`` = every ``train-*``), or
    ``all`` = every split that is not a test split. A test split is read only when named; a missing
    split is a UsageError listing the corpus's splits (never a silent fall-back to all of them)."""
    from satool.data.corpus.base import split_family

    if split in (None, "all"):
        chosen = {s for s in corpus.splits if split_family(s) != "test"}
        if not chosen:
            raise UsageError(f"{corpus.root}: every split is a test split ({', '.join(corpus.splits)}); name the "
                             "one to pre-train on with --split")
        return chosen
    return corpus.resolve_splits([part.strip() for part in split.split(",") if part.strip()])


def warmup_steps(settings: PretrainSettings) -> int:
    return max(1, int(round(settings.warmup * settings.steps)))


def loss_rise(history: list[dict[str, float]], warmup: int, *, threshold: float = 0.05) -> str | None:
    """A one-line warning when the training loss rises for a sustained window after warm-up, else None.

    The loss is averaged over blocks of ``max(50, steps / 20)`` steps; the rule fires when two
    consecutive blocks that end after warm-up both lie more than ``threshold`` (5 %) above the
    lowest earlier block (a single noisy block does not count).
    """
    losses = np.array([h["loss"] for h in history], dtype=np.float64)
    width = max(50, len(losses) // 20)
    blocks = [losses[i:i + width].mean() for i in range(0, len(losses) - width + 1, width)]
    ends = [i + width for i in range(0, len(losses) - width + 1, width)]
    for b in range(2, len(blocks)):
        lowest = min(blocks[:b - 1])
        if ends[b - 1] > warmup and blocks[b - 1] > (1 + threshold) * lowest and blocks[b] > (1 + threshold) * lowest:
            return (f"training loss rose after warm-up: mean {blocks[b]:.3f} over steps {ends[b] - width + 1}-{ends[b]} "
                    f"against {lowest:.3f} earlier (more than {100 * threshold:.0f} % higher for two blocks of "
                    f"{width} steps); try a lower --lr or --pre-ln")
    return None


class MaskedAcousticModel(torch.nn.Module):
    """Encoder + prediction head as one module (what DDP wraps): ``(inputs, lengths) -> prediction``."""

    def __init__(self, encoder, head):
        super().__init__()
        self.Transformer = encoder
        self.SpecHead = head

    def forward(self, inputs, lengths):
        hidden = self.Transformer(inputs, lengths, output_attentions=False)
        return self.SpecHead(hidden.last_hidden_state)
