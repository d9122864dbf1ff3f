"""Pre-training a Mockingjay model by masked acoustic modelling (SPEC section 1).

Input: log-Mel features stacked by R; target: the 201-bin log-linear
spectrogram stacked the same way; loss: L1 on the chosen (masked) steps only.
Optimiser: AdamW, linear warm-up over 7 % of the steps then linear decay to
0, learning rate 2e-4, weight decay 0.01, gradient-norm clipping at 5.

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

import csv
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from satool.errors import InputError, UsageError
from satool.masking import MaskPolicy, mask_batch


@dataclass
class PretrainSettings:
    preset: str = "demo"
    mask_span: int = 3  # Cnum (M3, M6, M9 in the paper)
    mask_proportion: float = 0.15
    downsample: int = 3  # R
    pre_layer_norm: bool = False
    steps: int = 3000
    batch_size: int = 8  # utterances per step (over all processes)
    max_steps_per_utterance: int = 250  # random crop length, in model steps
    learning_rate: float = 2e-4
    warmup: float = 0.07
    weight_decay: float = 0.01
    clip_norm: float = 5.0
    seed: int = 0
    save_every: int = 200
    split: str | None = "train"
    heldout_split: str | None = "dev"
    max_utts: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)  # MockingjayConfig overrides


@dataclass
class PretrainResult:
    checkpoint: Path
    steps: int
    final_loss: float
    heldout_l1: float | None
    heldout_mean_frame_l1: float | None
    seconds: float
    frames_per_second: float


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

    def __init__(self, corpus, utterances, extractor, rate: int, budget_bytes: int = 1 << 30):
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


def _world() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def pretrain(
    corpus_path: str | Path,
    out: str | Path,
    settings: PretrainSettings,
    *,
    alignments: str | Path | None = None,
    device: str = "cpu",
    progress: Callable[[int, float], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> PretrainResult:
    """Pre-train (or resume) and write the checkpoint ``out`` plus ``out``.loss.csv/.png.

    ``progress(step, loss)`` is called after every step (rank 0 only).
    """
    from satool.corpus import open_corpus
    from satool.features import FeatureConfig, FeatureExtractor
    from satool.models.checkpoint import load_checkpoint, remove_stale_temporaries, save_checkpoint
    from satool.models.mockingjay import MockingjayConfig, MockingjayEncoder, SpecHead

    out = Path(out)
    rank, world = _world()
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo")
    if settings.batch_size < world:
        raise UsageError(f"--batch-size {settings.batch_size} is smaller than the number of processes {world}")

    corpus = open_corpus(corpus_path, alignments)
    splits = corpus.splits
    train_split = settings.split if settings.split in splits else None
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
    start_step = 0
    if rank == 0:
        remove_stale_temporaries(out)  # left by a run killed while saving
    training = {"settings": asdict(settings), "corpus": str(corpus_path), "split": train_split}
    if out.exists():
        saved = load_checkpoint(out, keep_training_state=True)
        recorded = (saved.satool or {}).get("training", {})
        if recorded.get("settings") != json_safe(asdict(settings)) or saved.spec_head is None:
            raise UsageError(
                f"{out}: exists and was trained with other settings; choose another --out to start over"
            )
        encoder.load_state_dict(saved.encoder.state_dict())
        head.load_state_dict(saved.spec_head.state_dict())
        if (saved.training_state or {}).get("Optimizer"):
            optimizer.load_state_dict(saved.training_state["Optimizer"])
        start_step = int(saved.step or 0)
        history = list((saved.satool or {}).get("history", []))
        if log and rank == 0:
            log(f"resuming {out} at step {start_step}")
    train_model = model
    if world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(model)

    policy = MaskPolicy(span=settings.mask_span, proportion=settings.mask_proportion)
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
            satool={"training": {**training, "settings": json_safe(asdict(settings))}, "history": history},
        )

    model.train()
    for step in range(start_step, settings.steps):
        rng = np.random.default_rng(_seed_for(settings.seed, step))
        batch = rng.choice(len(utterances), size=settings.batch_size, replace=len(utterances) < settings.batch_size)
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
        if (step + 1) % settings.save_every == 0 and step + 1 < settings.steps:
            save(step + 1)
    seconds = time.perf_counter() - began
    model.eval()
    heldout = None
    if rank == 0 and settings.heldout_split in splits:
        held = corpus.select(settings.heldout_split)
        heldout = masked_l1(encoder, head, _Data(corpus, held, extractor, settings.downsample), policy,
                            seed=settings.seed, device=device)
        training["heldout"] = {"split": settings.heldout_split, "masked_l1": heldout[0],
                               "mean_frame_l1": heldout[1], "utterances": len(held)}
    save(settings.steps)
    if rank == 0:
        write_loss_curve(out, history)
    if world > 1:
        torch.distributed.barrier()
    final = history[-1]["loss"] if history else float("nan")
    return PretrainResult(out, settings.steps, final, heldout[0] if heldout else None,
                          heldout[1] if heldout else None, seconds, frames_seen * world / max(seconds, 1e-9))


class MaskedAcousticModel(torch.nn.Module):
    """Encoder + prediction head as one module (what DDP wraps): ``(inputs, lengths) -> prediction``."""

    def __init__(self, encoder, head):
        super().__init__()
        self.Transformer = encoder
        self.SpecHead = head

    def forward(self, inputs, lengths):
        hidden = self.Transformer(inputs, lengths, output_attentions=False)
        return self.SpecHead(hidden.last_hidden_state)


def masked_l1(encoder, head, data: _Data, policy: MaskPolicy, *, seed: int, device: str = "cpu"
              ) -> tuple[float, float]:
    """(model L1, mean-frame L1) on masked steps of ``data`` with a fixed masking draw.

    The baseline predicts, for every chosen step, the utterance's mean target
    frame: a model that learned nothing about context does no better.
    """
    total = baseline = 0.0
    count = 0
    with torch.no_grad():
        for i in range(len(data.utterances)):
            inp, tgt = data.features(i)
            rng = np.random.default_rng(_seed_for(seed, 10**6 + i))
            lengths = torch.tensor([inp.shape[0]])
            masked, chosen = mask_batch(inp[None], lengths, policy, rng)
            prediction = head(encoder(masked.to(device), lengths, output_attentions=False).last_hidden_state)
            error = (prediction[0].cpu() - tgt).abs()[chosen[0].cpu()]
            base = (tgt - tgt.mean(dim=0, keepdim=True)).abs()[chosen[0].cpu()]
            total += float(error.sum())
            baseline += float(base.sum())
            count += error.numel()
    return total / max(count, 1), baseline / max(count, 1)


def write_loss_curve(out: Path, history: list[dict[str, float]]) -> None:
    """``out``.loss.csv (step, loss, lr) and ``out``.loss.png."""
    csv_path = out.with_name(out.name + ".loss.csv")
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["step", "loss", "lr"])
        writer.writeheader()
        writer.writerows(history)
    if not history:
        return
    from satool.plotting import figure

    with figure(out.with_name(out.name + ".loss.png"), size=(6, 3.5)) as (fig, ax):
        steps = [h["step"] for h in history]
        losses = [h["loss"] for h in history]
        ax.plot(steps, losses, lw=0.6, alpha=0.5, label="loss per step")
        window = max(1, len(losses) // 50)
        if window > 1:
            smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
            ax.plot(steps[window - 1:], smooth, lw=1.5, label=f"mean of {window}")
        ax.set_xlabel("step")
        ax.set_ylabel("masked L1")
        ax.set_title("Masked acoustic model pre-training")
        ax.legend()


def json_safe(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))

