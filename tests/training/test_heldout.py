"""Held-out checks of pre-training: the four baselines by hand, attention off, the loss-rise rule,
and what `satool pretrain` records."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from satool import testing
from satool.results.health import HealthCheck
from satool.training.heldout import (
    HeldoutUtterance,
    baseline_l1,
    baseline_predictions,
    health_warnings,
    model_l1,
)
from satool.training.pretrain import PretrainSettings, loss_rise, pretrain


def test_baselines_by_hand():
    targets = np.arange(6, dtype=np.float32)[:, None]  # one dimension: 0 1 2 3 4 5
    chosen = np.array([0, 0, 1, 1, 0, 0], bool)
    guess = baseline_predictions(targets, chosen)
    assert guess["zeros"][chosen, 0].tolist() == [0, 0]
    assert guess["median"][chosen, 0].tolist() == [2.5, 2.5]  # median of 0 1 4 5
    assert guess["nearest"][chosen, 0].tolist() == [1, 4]  # frame 2 is nearer frame 1, frame 3 frame 4
    assert guess["interpolation"][chosen, 0].tolist() == pytest.approx([2, 3])  # a line is recovered
    # masked run at the start: both copy the first visible frame; a tie goes to the earlier frame
    edge = baseline_predictions(targets, np.array([1, 1, 0, 1, 0, 0], bool))
    assert edge["nearest"][[0, 1, 3], 0].tolist() == [2, 2, 2]
    assert edge["interpolation"][[0, 1, 3], 0].tolist() == pytest.approx([2, 2, 3])
    # nothing visible: every baseline predicts zeros
    blind = baseline_predictions(targets, np.ones(6, bool))
    assert all(np.all(g == 0) for g in blind.values())


def test_baseline_l1_pools_frames_of_stacked_steps():
    # 3 steps of R = 2 frames, 1 dimension: frames 0..5; step 1 (frames 2, 3) is masked
    utt = HeldoutUtterance(np.zeros((3, 2), np.float32), np.arange(6, dtype=np.float32).reshape(3, 2),
                           np.array([False, True, False]))
    l1 = baseline_l1([utt, utt], rate=2)
    assert l1 == pytest.approx({"zeros": 2.5, "median": 0.5, "nearest": 1.0, "interpolation": 0.0})


def _tiny_model():
    from satool.models.mockingjay import MockingjayConfig, MockingjayEncoder, SpecHead

    torch.manual_seed(0)
    config = MockingjayConfig.preset("tiny", input_dim=4, output_dim=3, downsample_rate=1)
    return MockingjayEncoder(config).eval(), SpecHead(config).eval()


def test_attention_window_zero_is_the_identity_map_and_changes_l1():
    encoder, head = _tiny_model()
    x = torch.randn(2, 7, 4)
    lengths = torch.tensor([7, 5])
    maps = encoder(x, lengths, attention_window=0).attentions
    for layer in maps:
        assert torch.allclose(layer[0], torch.eye(7).expand(2, 7, 7), atol=1e-6)
        assert torch.allclose(layer[1, :, :5, :5], torch.eye(5).expand(2, 5, 5), atol=1e-6)
    # window 1: nothing beyond the neighbours, rows still sum to 1
    near = encoder(x, lengths, attention_window=1).attentions[0][0]
    assert torch.allclose(near.sum(-1), torch.ones(2, 7), atol=1e-6)
    assert near[:, 0, 2:].abs().max() < 1e-6
    rng = np.random.default_rng(0)
    heldout = [HeldoutUtterance(rng.normal(size=(9, 4)).astype(np.float32),
                                rng.normal(size=(9, 3)).astype(np.float32), np.arange(9) % 3 == 1)
               for _ in range(3)]
    with torch.no_grad():  # sharpen attention so that context visibly matters
        for layer in encoder.encoder.layer:
            layer.attention.self.query.weight.mul_(30)
            layer.attention.self.key.weight.mul_(30)
            layer.attention.self.value.weight.mul_(30)
    full, off = model_l1(encoder, head, heldout), model_l1(encoder, head, heldout, attention_window=0)
    # a slow reference for the full model: one utterance at a time, masked steps zeroed
    total = count = 0.0
    with torch.no_grad():
        for u in heldout:
            inputs = torch.from_numpy(u.inputs.copy())
            inputs[torch.from_numpy(u.chosen)] = 0
            error = (head(encoder(inputs[None]).last_hidden_state)[0] - torch.from_numpy(u.targets)).abs()
            total += float(error[torch.from_numpy(u.chosen)].sum())
            count += error[torch.from_numpy(u.chosen)].numel()
    assert full == pytest.approx(total / count, rel=1e-5)
    assert abs(off - full) > 1e-3


def test_loss_rise_rule_on_constructed_curves():
    rng = np.random.default_rng(0)
    steps = 1000

    def history(curve):
        return [{"step": i + 1, "loss": float(v)} for i, v in enumerate(curve)]

    falling = 0.8 * np.exp(-np.arange(steps) / 300) + 0.6 + rng.normal(0, 0.03, steps)
    assert loss_rise(history(falling), warmup=70) is None
    # falls during warm-up to 0.72, climbs to 0.78 once the rate peaks and stays (the failure seen)
    diverging = np.r_[np.linspace(0.9, 0.72, 150), np.linspace(0.72, 0.78, 100), np.full(750, 0.78)]
    message = loss_rise(history(diverging + rng.normal(0, 0.03, steps)), warmup=70)
    assert message is not None and "rose after warm-up" in message
    # one noisy block is not a sustained rise
    spike = falling.copy()
    spike[500:550] += 0.2
    assert loss_rise(history(spike), warmup=70) is None


def test_health_warnings_rule():
    baselines = {"zeros": 0.8, "median": 0.78, "nearest": 0.70, "interpolation": 0.64}
    locality = np.ones((2, 2))

    def check(l1):
        return HealthCheck(100, l1, 0.79, baselines, locality, np.zeros((2, 2), int), 10)

    assert health_warnings(check(0.62)) == []
    assert health_warnings(check(0.69)) == []  # beats nearest but not interpolation: no warning
    warned = health_warnings(check(0.777))
    assert len(warned) == 1 and "no better than copying the nearest unmasked frame (0.700)" in warned[0]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus") / "LS"
    testing.make_librispeech(root, speakers=("19", "26"), per_speaker=4, split="train")
    testing.make_librispeech(root, speakers=("19",), per_speaker=3, split="dev")
    return root


def test_pretrain_records_heldout_checks_and_warns(corpus, tmp_path):
    settings = PretrainSettings(preset="tiny", steps=8, batch_size=4, save_every=4, eval_every=4,
                                max_steps_per_utterance=40, heldout_utts=3)
    logs: list[str] = []
    from satool.stages import pretrain as stage

    result = stage.run(stage.Settings(corpus=corpus, out=tmp_path / "m.ckpt", training=settings),
                       log=lambda text, label="": logs.append(text))
    rows = (tmp_path / "m.ckpt.heldout.csv").read_text().splitlines()
    header = rows[0].split(",")
    for column in ("step", "heldout_l1", "attention_off_l1", "zeros_l1", "median_l1", "nearest_l1",
                   "interpolation_l1", "max_locality", "heads_ge_5x"):
        assert column in header
    assert [r.split(",")[0] for r in rows[1:]] == ["4", "8"]
    assert (tmp_path / "m.ckpt.heldout.png").stat().st_size > 1000
    health = result.health
    assert health.utterances == 3 and health.locality.shape == (2, 2)
    expected = health_warnings(health)
    assert result.warnings[len(result.warnings) - len(expected):] == expected
    assert [f"warning: {w}" for w in result.warnings] == [line for line in logs if line.startswith("warning:")]
    saved = torch.load(tmp_path / "m.ckpt", weights_only=True)["Satool"]
    assert [c["step"] for c in saved["checks"]] == [4, 8]
    assert saved["training"]["heldout"]["utterances"] == 3
    # every head's locality and signed favourite offset at every check, for the offsets-vs-steps curves
    assert [c["step"] for c in saved["head_checks"]] == [4, 8]
    assert np.array(saved["head_checks"][-1]["locality"]) == pytest.approx(health.locality, abs=1e-4)
    assert np.array_equal(saved["head_checks"][-1]["favourite_offset"], health.favourite_offset)
    heads = (tmp_path / "m.ckpt.heads.csv").read_text().splitlines()
    assert heads[0] == "step,label,locality,favourite_offset,favourite_offset_ms" and len(heads) == 1 + 2 * 4
    assert heads[-1].startswith("8,L2.H2,")
    assert int(heads[-1].split(",")[3]) * 30 == float(heads[-1].split(",")[4])  # R = 3 steps of 10 ms
    assert (tmp_path / "m.ckpt.offsets.png").stat().st_size > 1000
    # a resumed run keeps the checks made before the interruption
    more = replace(settings, steps=8)
    again = pretrain(corpus, tmp_path / "m.ckpt", more)
    assert [c["step"] for c in torch.load(tmp_path / "m.ckpt", weights_only=True)["Satool"]["checks"]] == [4, 8]
    assert again.health.model_l1 == pytest.approx(health.model_l1)


def test_health_command_writes_what_the_report_reads(corpus, tmp_path, satool_cli):
    import json

    settings = PretrainSettings(preset="tiny", steps=4, batch_size=4, max_steps_per_utterance=40, heldout_split=None)
    pretrain(corpus, tmp_path / "m.ckpt", settings)
    result = satool_cli("health", tmp_path / "m.ckpt", corpus, "--split", "dev", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["utterances"] == 3 and document["split"] == "dev"
    for key in ("heldout_l1", "attention_off_l1", "zeros_l1", "median_l1", "nearest_l1", "interpolation_l1",
                "max_locality", "locality"):
        assert key in document
    assert json.loads((tmp_path / "results" / "health" / "health.json").read_text()) == document
    from satool.analysis import verdicts
    from satool.results.health import HealthCheck

    loaded = HealthCheck.load(tmp_path / "results" / "health")
    # offset profiles on clean input and, under pre-training masks, of masked and unmasked queries
    assert set(loaded.profiles) == {"clean", "masked_queries", "unmasked_queries"}
    assert loaded.profiles["masked_queries"].shape == loaded.profiles["clean"].shape == (2, 2, 21)
    np.testing.assert_allclose(loaded.profiles["clean"].max(axis=-1), loaded.locality, atol=1e-4)
    checks = {c.name: c for c in verdicts.health(loaded, None, None).checks}
    best = min(document[f"{name}_l1"] for name in ("zeros", "median", "nearest", "interpolation"))
    assert checks["learned"].passed is (document["heldout_l1"] < best)
    missing = satool_cli("health", tmp_path / "m.ckpt", corpus, "--split", "nope", cwd=tmp_path)
    assert missing.returncode == 2 and "no split 'nope'" in missing.stderr
