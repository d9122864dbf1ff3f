"""What a pre-training run is asked to do (:func:`satool.training.pretrain.pretrain`); no torch here, so
the command line reads its defaults without loading it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class PretrainSettings:
    preset: str = "demo"
    mask_span: int = 3  # Cnum (M3, M6, M9 in the paper)
    mask_proportion: float = 0.15
    downsample: int = 3  # R
    pre_layer_norm: bool = True  # the recipe chosen by measurement (docs/pretraining.md); s3prl: post-LN
    steps: int = 3000
    batch_size: int = 8  # utterances per step (over all processes)
    length_buckets: int = 8  # draw each batch from one of N groups of similar length (1 = any lengths)
    max_steps_per_utterance: int = 250  # random crop length, in model steps
    learning_rate: float = 1e-3  # s3prl: 2e-4
    warmup: float = 0.07
    weight_decay: float = 0.01
    clip_norm: float = 5.0
    seed: int = 0
    save_every: int = 200
    split: str | None = "train"
    heldout_split: str | None = "dev"
    heldout_utts: int = 200  # held-out utterances checked at intervals (first N of heldout_split)
    eval_every: int = 0  # steps between held-out checks (0: ten checks over the run)
    max_utts: int | None = None
    # MockingjayConfig overrides; the recipe turns hidden dropout off (s3prl: 0.1)
    overrides: dict[str, Any] = field(default_factory=lambda: {"hidden_dropout": 0.0})
