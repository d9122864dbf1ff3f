"""Pre-training: masking policy, schedule, determinism, resume, s3prl loading, DDP."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from satool import testing
from satool.training.masking import MaskPolicy, choose_steps, mask_batch
from satool.training.pretrain import PretrainSettings, learning_rate_at, pretrain


def test_choose_steps_spans_and_proportion():
    rng = np.random.default_rng(0)
    for n in (1, 5, 40, 333):
        chosen = choose_steps(n, MaskPolicy(span=3), rng)
        assert chosen.sum() >= max(1, round(0.15 * n))
        assert chosen.sum() <= max(1, round(0.15 * n)) + 2  # stops as soon as the goal is reached
        # every run of chosen steps is made of whole spans (length >= 3 unless n < 3)
        runs = np.diff(np.flatnonzero(np.diff(np.r_[0, chosen.astype(int), 0])))[::2]
        assert all(r >= min(3, n) for r in runs)


def test_mask_batch_80_10_10_and_padding():
    rng = np.random.default_rng(1)
    inputs = torch.arange(1, 2 * 60 * 4 + 1, dtype=torch.float32).reshape(2, 60, 4)
    lengths = torch.tensor([60, 40])
    outcomes = {"zero": 0, "random": 0, "same": 0}
    for _ in range(2000):
        masked, chosen = mask_batch(inputs, lengths, MaskPolicy(span=3), rng)
        assert not chosen[1, 40:].any()  # padding is never chosen
        assert torch.equal(masked[~chosen], inputs[~chosen])  # untouched outside chosen steps
        picked = masked[0][chosen[0]]
        if (picked == 0).all():
            outcomes["zero"] += 1
        elif torch.equal(picked, inputs[0][chosen[0]]):
            outcomes["same"] += 1
        else:
            outcomes["random"] += 1
    assert abs(outcomes["zero"] / 2000 - 0.8) < 0.03
    assert abs(outcomes["random"] / 2000 - 0.1) < 0.025
    assert abs(outcomes["same"] / 2000 - 0.1) < 0.025


def test_learning_rate_schedule():
    s = PretrainSettings(steps=100, learning_rate=1.0, warmup=0.1)
    rates = [learning_rate_at(i, s) for i in range(100)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(rates[9:], rates[10:]))
    assert rates[-1] == pytest.approx(0.1 / 0.9 * 1.0 / 10, rel=0.2) and rates[-1] > 0


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus") / "LS"
    testing.make_librispeech(root, speakers=("19", "26", "27"), per_speaker=4, split="train")
    return root


TINY = PretrainSettings(preset="tiny", steps=12, batch_size=4, save_every=6, max_steps_per_utterance=40,
                        heldout_split=None)


def _weights(path):
    states = torch.load(path, weights_only=True)  # satool checkpoints hold plain data only
    return {**states["Transformer"], **{f"head.{k}": v for k, v in states["SpecHead"].items()}}


def test_deterministic_and_resume_is_identical(corpus, tmp_path):
    from satool.stages import pretrain as stage

    a = stage.run(stage.Settings(corpus=corpus, out=tmp_path / "a.ckpt", training=TINY))  # the stage also writes the curves
    b = pretrain(corpus, tmp_path / "b.ckpt", TINY)
    wa, wb = _weights(a.checkpoint), _weights(b.checkpoint)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)

    class Interrupt(Exception):
        pass

    def stop_after_save(step, loss):
        if step == 8:  # after the checkpoint at step 6 was written
            raise Interrupt

    with pytest.raises(Interrupt):
        pretrain(corpus, tmp_path / "c.ckpt", TINY, progress=stop_after_save)
    assert torch.load(tmp_path / "c.ckpt", weights_only=True)["Step"] == 6
    logs = []
    pretrain(corpus, tmp_path / "c.ckpt", TINY, log=logs.append)
    assert logs == [f"resuming {tmp_path / 'c.ckpt'} at step 6"]
    wc = _weights(tmp_path / "c.ckpt")
    assert all(torch.equal(wa[k], wc[k]) for k in wa)
    history = torch.load(tmp_path / "c.ckpt", weights_only=True)["Satool"]["history"]
    assert [h["step"] for h in history] == list(range(1, 13))
    lines = (tmp_path / "a.ckpt.loss.csv").read_text().splitlines()
    assert lines[0] == "step,loss,lr" and len(lines) == 13
    assert (tmp_path / "a.ckpt.loss.png").stat().st_size > 1000


def test_other_settings_refuse_to_resume(corpus, tmp_path):
    from satool.errors import UsageError

    pretrain(corpus, tmp_path / "a.ckpt", replace(TINY, steps=2))
    with pytest.raises(UsageError, match="trained with other settings"):
        pretrain(corpus, tmp_path / "a.ckpt", replace(TINY, steps=2, seed=5))


def test_checkpoint_loads_in_satool_and_s3prl(corpus, tmp_path):
    result = pretrain(corpus, tmp_path / "r1.ckpt", replace(TINY, steps=2, downsample=1))
    from satool.models.loading import load_model

    model = load_model(result.checkpoint)
    wave = testing.tone_audio(testing.DEFAULT_PHONES)
    ours = model.encode([model.input_features(wave)], want_hidden=True)[0].hidden_states
    expert_module = pytest.importorskip("s3prl.upstream.mockingjay.expert", reason="s3prl not installed")
    expert = expert_module.UpstreamExpert(str(result.checkpoint))
    expert.eval()
    with torch.no_grad():
        theirs = expert([torch.from_numpy(wave)])["hidden_states"]
    assert len(theirs) == ours.shape[0]
    for i, state in enumerate(theirs):
        assert (state[0] - ours[i]).abs().max().item() < 1e-5  # same features, same weights


def test_torchrun_two_processes(corpus, tmp_path):
    out = tmp_path / "ddp.ckpt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
         "-m", "satool", "pretrain", str(corpus), "--out", str(out), "--preset", "tiny", "--steps", "6",
         "--batch-size", "4", "--max-steps-per-utterance", "40", "--device", "cpu"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    states = torch.load(out, weights_only=True)
    assert states["Step"] == 6 and len(states["Satool"]["history"]) == 6
    assert all(np.isfinite(h["loss"]) for h in states["Satool"]["history"])
