"""Checkpoint reading (s3prl, paper-era, satool) and writing (s3prl-compatible, atomic)."""

from __future__ import annotations

import argparse
import hashlib
import pickle
import random
import signal
import subprocess
import sys
import textwrap
import types
from collections import OrderedDict

import numpy as np
import pytest
import torch

from satool.errors import EnvironmentProblem, InputError
from satool.models.mockingjay import (
    MockingjayConfig,
    MockingjayEncoder,
    SpecHead,
    position_encoding,
    stack_frames,
)
from satool.models.mockingjay.checkpoint import (
    LAYOUT_PAPER,
    LAYOUT_S3PRL,
    LAYOUT_SATOOL,
    capture_rng_state,
    default_audio_config,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from satool.models.safe_pickle import Placeholder

try:
    from s3prl.upstream.mockingjay.model import TransformerConfig, TransformerModel
except Exception as exc:  # pragma: no cover
    S3PRL_MISSING = f"s3prl==0.4.18 is not importable ({type(exc).__name__}: {exc})"
else:
    S3PRL_MISSING = ""
try:
    from s3prl.upstream.mockingjay.builder import PretrainedTransformer
    from s3prl.upstream.mockingjay.expert import UpstreamExpert
except Exception as exc:  # pragma: no cover
    EXPERT_MISSING = f"s3prl's upstream expert is not importable ({type(exc).__name__}: {exc})"
else:
    EXPERT_MISSING = ""


def needs_s3prl(test):
    return pytest.mark.s3prl(pytest.mark.skipif(bool(S3PRL_MISSING), reason=S3PRL_MISSING)(test))


def needs_expert(test):
    return pytest.mark.s3prl(pytest.mark.skipif(bool(EXPERT_MISSING), reason=EXPERT_MISSING)(test))


ATOL = 1e-5
S3PRL_OPTIONS = {"load_pretrain": "True", "no_grad": "True", "dropout": "default",
                 "spec_aug": "False", "spec_aug_prev": "True", "output_hidden_states": "True",
                 "select_layer": -1, "permute_input": "False"}


def _model(**overrides):
    config = MockingjayConfig.preset("tiny", **overrides)
    torch.manual_seed(0)
    return MockingjayEncoder(config), SpecHead(config)


def _max_diff(a, b) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


def _save_raw(states, path, legacy=False):
    torch.save(states, path, _use_new_zipfile_serialization=not legacy)
    return path


# -- satool's own checkpoints ---------------------------------------------------


def test_round_trip(tmp_path):
    encoder, head = _model(output_dim=201, max_input_length=1500, pre_layer_norm=True)
    optimizer = torch.optim.AdamW(list(encoder.parameters()) + list(head.parameters()))
    encoder(torch.randn(1, 4, 80)).last_hidden_state.sum().backward()
    optimizer.step()
    path = tmp_path / "states-7.ckpt"
    save_checkpoint(path, encoder, head, audio=default_audio_config(),
                    task={"mask_proportion": 0.15}, runner_config={"runner": {"total_steps": 9}},
                    optimizer_state=optimizer.state_dict(), step=7,
                    satool={"loss_history": [0.5, 0.25], "rng": capture_rng_state()})
    loaded = load_checkpoint(path, keep_training_state=True)
    assert loaded.layout == LAYOUT_SATOOL
    assert loaded.config == encoder.config
    assert loaded.step == 7 and loaded.max_input_length == 1500 and loaded.downsample_rate == 1
    assert loaded.audio == default_audio_config()
    assert loaded.task["mask_proportion"] == 0.15 and loaded.task["sequence_length"] == 1500
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.satool["loss_history"] == [0.5, 0.25]
    assert "state" in loaded.training_state["Optimizer"]
    for mine, theirs in ((encoder, loaded.encoder), (head, loaded.spec_head)):
        for (k, a), b in zip(mine.state_dict().items(), theirs.state_dict().values(),
                             strict=True):
            assert torch.equal(a, b), k
    assert not loaded.encoder.training
    # Only plain values: the stock safe loader accepts the file as is.
    plain = torch.load(path, weights_only=True)
    assert set(plain) == {"Transformer", "SpecHead", "Upstream_Config", "Config", "Optimizer",
                          "Step", "Satool"}
    assert "transformer" not in plain["Config"]


def test_downsampled_checkpoint_round_trip(tmp_path):
    encoder, head = _model(input_dim=40, output_dim=41, downsample_rate=3)
    path = tmp_path / "r3.ckpt"
    save_checkpoint(path, encoder, head)
    loaded = load_checkpoint(path)
    assert loaded.downsample_rate == 3 and loaded.config == encoder.config
    save_checkpoint(path, encoder)  # without the head, output_dim comes from 'Satool'
    assert load_checkpoint(path).config == encoder.config
    block = torch.load(path, weights_only=True)["Upstream_Config"]["transformer"]
    assert block["downsample_rate"] == 3
    frames = torch.randn(2, 20, 40)
    steps, lengths = loaded.stack(frames, torch.tensor([20, 11]))
    assert steps.shape == (2, 6, 120) and lengths.tolist() == [6, 3]
    with torch.no_grad():
        assert _max_diff(loaded.encode(steps, lengths).hidden_states,
                         encoder.eval()(steps, lengths).hidden_states) == 0


def test_rng_state_round_trip():
    state = capture_rng_state()
    first = (torch.rand(3), random.random(), np.random.rand())
    restore_rng_state(state)
    again = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(first[0], again[0]) and first[1:] == again[1:]


def test_save_refuses_non_plain_values(tmp_path):
    encoder, _ = _model()
    with pytest.raises(ValueError, match="plain Python"):
        save_checkpoint(tmp_path / "x.ckpt", encoder, satool={"args": argparse.Namespace()})
    with pytest.raises(ValueError, match="transformer"):
        save_checkpoint(tmp_path / "x.ckpt", encoder, runner_config={"transformer": {}})
    assert not list(tmp_path.iterdir())


def test_write_is_atomic_when_saving_fails(tmp_path, monkeypatch):
    encoder, _ = _model()
    path = tmp_path / "model.ckpt"
    save_checkpoint(path, encoder, step=1)
    before = path.read_bytes()

    def broken_save(obj, fh, *args, **kwargs):
        fh.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("satool.models.mockingjay.checkpoint.torch.save", broken_save)
    with pytest.raises(EnvironmentProblem, match="No space left"):
        save_checkpoint(path, encoder, step=2)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.ckpt"]


def test_killed_writer_never_leaves_a_partial_file(tmp_path):
    """SIGKILL in the middle of torch.save: the final name never holds half a file."""
    path = tmp_path / "model.ckpt"
    script = textwrap.dedent(f"""
        import sys, time, torch
        import satool.models.mockingjay.checkpoint as ck
        from satool.models.mockingjay import MockingjayConfig, MockingjayEncoder
        real_save = torch.save
        def slow_save(obj, fh, *a, **k):
            real_save(obj, fh, *a, **k)
            fh.flush()
            print("written", flush=True)
            time.sleep(60)
        ck.torch.save = slow_save
        enc = MockingjayEncoder(MockingjayConfig.preset("tiny"))
        ck.save_checkpoint({str(path)!r}, enc)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "written"
        temps = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        assert len(temps) == 1 and temps[0].stat().st_size > 0
        assert not path.exists()
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert not path.exists()


def test_missing_directory_and_file(tmp_path):
    encoder, _ = _model()
    with pytest.raises(InputError, match="does not exist"):
        save_checkpoint(tmp_path / "nope" / "x.ckpt", encoder)
    with pytest.raises(InputError, match="no such file") as info:
        load_checkpoint(tmp_path / "absent.ckpt")
    assert str(info.value).startswith(str(tmp_path / "absent.ckpt"))


# -- s3prl checkpoints ----------------------------------------------------------


def _s3prl_states(config: MockingjayConfig, *, legacy_config: bool = False):
    """What s3prl's pretrain runner writes (pretrain/runner.py + mockingjay expert)."""
    torch.manual_seed(1)
    transformer = TransformerModel(TransformerConfig(config.to_s3prl()), config.input_dim)
    head = SpecHead(config)
    params = list(transformer.parameters())
    optimizer = torch.optim.AdamW(params, lr=2e-4)
    transformer(torch.randn(1, 3, config.input_dim), position_encoding(3, config.hidden_size),
                torch.ones(1, 3))[-1].sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    upstream = {"transformer": dict(config.to_s3prl(), input_dim=-1),
                "task": {"loss": "L1", "sequence_length": 1500},
                "audio": default_audio_config()}
    runner = {"runner": {"total_steps": 1000}, "optimizer": {"name": "AdamW_with_schedule"}}
    states = {
        "Optimizer": optimizer.state_dict(),
        "Step": 1000,
        "Args": argparse.Namespace(upstream="mockingjay", expdir="result/pretrain/x", seed=1337),
        "Config": upstream if legacy_config else runner,
        "SpecHead": head.state_dict(),
        "Transformer": transformer.state_dict(),
        "Scheduler": scheduler.state_dict(),
    }
    if legacy_config:
        states["Runner"] = runner
    else:
        states["Upstream_Config"] = upstream
    return states, transformer.eval()


@needs_s3prl
@pytest.mark.parametrize("legacy_config", [False, True], ids=["Upstream_Config", "Config"])
def test_loads_s3prl_checkpoints(tmp_path, legacy_config):
    config = MockingjayConfig.preset("tiny", pre_layer_norm=not legacy_config)
    states, reference = _s3prl_states(config, legacy_config=legacy_config)
    path = _save_raw(states, tmp_path / "states-1000.ckpt")
    with pytest.raises(pickle.UnpicklingError, match="Namespace"):
        torch.load(path, weights_only=True)  # why satool needs its own allow-list
    loaded = load_checkpoint(path)
    assert loaded.layout == LAYOUT_S3PRL
    assert loaded.step == 1000 and loaded.max_input_length == 1500
    assert loaded.config.pre_layer_norm == config.pre_layer_norm
    assert loaded.audio["n_mels"] == 80
    x = torch.randn(2, 30, config.input_dim)
    with torch.no_grad():
        theirs = reference(x, position_encoding(30, config.hidden_size), torch.ones(2, 30))
        ours = loaded.encode(x)
    assert _max_diff(ours.hidden_states, theirs) < ATOL


@needs_expert
@pytest.mark.parametrize("max_len", [0, 40], ids=["whole", "chunked"])
def test_s3prl_upstream_expert_loads_satool_checkpoint(tmp_path, max_len):
    encoder, head = _model(output_dim=201, max_input_length=max_len)
    path = tmp_path / "satool.ckpt"
    save_checkpoint(path, encoder, head, audio=default_audio_config(), runner_config={})
    expert = UpstreamExpert(str(path)).eval()
    wavs = [torch.randn(16000), torch.randn(9000)]
    loaded = load_checkpoint(path)
    with torch.no_grad():
        theirs = expert(wavs)["hidden_states"]
        # s3prl's own feature pipeline, fed to satool's encoder.
        builder = expert.transformer
        scaled = [builder._normalize_wav_decibel(w) for w in wavs]
        padded = torch.nn.utils.rnn.pad_sequence(scaled, batch_first=True).unsqueeze(1)
        features = builder.extracter(padded, wavs_len=[len(w) for w in scaled])[0]
        lengths = (features.sum(-1) != 0).sum(-1)
        ours = loaded.encode(features, lengths)
    assert features.shape[1] == 101 and lengths.tolist() == [101, 57]
    assert len(theirs) == len(ours.hidden_states) == encoder.config.num_layers + 1
    assert _max_diff(ours.hidden_states, theirs) < ATOL


@needs_expert
def test_s3prl_cannot_use_downsampled_checkpoints(tmp_path):
    """Documented limitation: s3prl's current builder does not stack frames."""
    encoder, _ = _model(downsample_rate=3)
    path = tmp_path / "r3.ckpt"
    save_checkpoint(path, encoder)
    with pytest.raises(RuntimeError, match="NOT loaded"):
        PretrainedTransformer(dict(S3PRL_OPTIONS, ckpt_file=str(path)), inp_dim=80)


# -- paper-era checkpoints -----------------------------------------------------


@pytest.fixture
def paper_era_module(monkeypatch):
    """A stand-in for the paper-era repo's mockingjay/optimization.py."""
    module = types.ModuleType("mockingjay.optimization")
    package = types.ModuleType("mockingjay")

    class WarmupLinearSchedule:
        def __init__(self, warmup=0.07, t_total=500000):
            self.warmup, self.t_total = warmup, t_total

        def __setstate__(self, state):  # would run on an unrestricted load
            raise AssertionError("the real class must never be used")

    WarmupLinearSchedule.__module__ = "mockingjay.optimization"
    WarmupLinearSchedule.__qualname__ = "WarmupLinearSchedule"
    module.WarmupLinearSchedule = WarmupLinearSchedule
    package.optimization = module
    monkeypatch.setitem(sys.modules, "mockingjay", package)
    monkeypatch.setitem(sys.modules, "mockingjay.optimization", module)
    return module


def _paper_era_states(config: MockingjayConfig, schedule, block_key="mockingjay",
                      weights_key="Mockingjay"):
    torch.manual_seed(2)
    encoder = MockingjayEncoder(config)
    head = SpecHead(config)
    state = OrderedDict()
    for key, value in encoder.state_dict().items():  # pre-2019 LayerNorm names
        if "LayerNorm" in key:
            key = key.replace(".weight", ".gamma").replace(".bias", ".beta")
        state[key] = value
    block = dict(config.to_s3prl(), layer_norm_eps="1e-12", prune_headids="None",
                 max_input_length=0)
    for key in ("pre_layer_norm", "share_layer"):  # not in paper-era configs
        block.pop(key)
    group = {"lr": 4e-4, "warmup": 0.07, "t_total": 500000, "schedule": schedule,
             "weight_decay": 0.01, "params": [0, 1]}
    states = {
        "SpecHead": head.state_dict(),
        weights_key: state,
        "Optimizer": {"state": {}, "param_groups": [group]},
        "Global_step": 500000,
        "Settings": {
            "Config": {block_key: block, "optimizer": {"learning_rate": "4e-4"},
                       "dataloader": {"max_timestep": 3000}},
            "Paras": argparse.Namespace(config="config/mockingjay_libri.yaml", seed=1337,
                                        name=None, gpu=True),
        },
    }
    return states, encoder.eval()


@pytest.mark.parametrize("keys", [("mockingjay", "Mockingjay"), ("transformer", "Transformer")])
def test_loads_paper_era_checkpoints(tmp_path, paper_era_module, monkeypatch, keys):
    config = MockingjayConfig.preset("tiny", input_dim=40, output_dim=67, downsample_rate=3,
                                     embedding_in_hidden_states=False)
    schedule = paper_era_module.WarmupLinearSchedule()
    states, reference = _paper_era_states(config, schedule, *keys)
    path = _save_raw(states, tmp_path / "mockingjay-500000.ckpt", legacy=True)  # torch < 1.6
    monkeypatch.delitem(sys.modules, "mockingjay.optimization")
    monkeypatch.delitem(sys.modules, "mockingjay")

    loaded = load_checkpoint(path, keep_training_state=True)
    assert "mockingjay" not in sys.modules  # the placeholder never imported it
    assert loaded.layout == LAYOUT_PAPER
    assert loaded.step == 500000 and loaded.downsample_rate == 3
    assert (loaded.config.input_dim, loaded.config.output_dim) == (40, 67)
    assert loaded.config.embedding_in_hidden_states is False
    placeholder = loaded.training_state["Optimizer"]["param_groups"][0]["schedule"]
    assert isinstance(placeholder, Placeholder)
    assert placeholder.qualified_name == "mockingjay.optimization.WarmupLinearSchedule"
    assert placeholder.state == {"warmup": 0.07, "t_total": 500000}

    frames = torch.randn(2, 32, 40)
    steps, lengths = loaded.stack(frames, torch.tensor([32, 20]))
    with torch.no_grad():
        ours = loaded.encode(steps, lengths)
        theirs = reference(steps, lengths)
    assert len(ours.hidden_states) == config.num_layers  # no embedding output
    assert _max_diff(ours.hidden_states, theirs.hidden_states) == 0


@needs_s3prl
def test_paper_era_outputs_match_s3prl_model(tmp_path, paper_era_module):
    """Paper-era = s3prl's model on stacked frames, minus the embedding output."""
    config = MockingjayConfig.preset("tiny", input_dim=40, downsample_rate=3,
                                     embedding_in_hidden_states=False)
    states, _ = _paper_era_states(config, paper_era_module.WarmupLinearSchedule())
    path = _save_raw(states, tmp_path / "paper.ckpt", legacy=True)
    loaded = load_checkpoint(path)
    s3prl = TransformerModel(TransformerConfig(config.to_s3prl()), 120).eval()
    s3prl.load_state_dict(loaded.encoder.state_dict())
    steps = stack_frames(torch.randn(1, 61, 40), 3)
    with torch.no_grad():
        theirs = s3prl(steps, position_encoding(20, 32), torch.ones(1, 20))
        ours = loaded.encode(steps)
    assert _max_diff(ours.hidden_states, theirs[1:]) < ATOL


# -- one-line errors -------------------------------------------------------------


def _satool_states(**overrides):
    encoder, head = _model(**overrides)
    states = {"Transformer": dict(encoder.state_dict()), "SpecHead": dict(head.state_dict()),
              "Upstream_Config": {"transformer": encoder.config.to_s3prl(),
                                  "task": {"sequence_length": 0}},
              "Config": {}, "Step": 3}
    return states


def _error(tmp_path, states, name="bad.ckpt") -> str:
    path = _save_raw(states, tmp_path / name)
    with pytest.raises(InputError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path) + ": ")
    return message[len(str(path)) + 2:]


def test_wrong_shape_names_the_key(tmp_path):
    states = _satool_states()
    states["Transformer"]["encoder.layer.1.attention.self.query.weight"] = torch.zeros(64, 32)
    assert _error(tmp_path, states) == (
        "encoder.layer.1.attention.self.query.weight has shape [64, 32], expected [32, 32]")


def test_config_disagreeing_with_weights(tmp_path):
    states = _satool_states()
    states["Upstream_Config"]["transformer"]["hidden_size"] = 64
    assert _error(tmp_path, states) == "the config's hidden_size 64 does not match the weights' 32"
    states = _satool_states()
    states["Upstream_Config"]["transformer"]["num_hidden_layers"] = 1
    assert _error(tmp_path, states) == "the config describes 1 layers but the weights hold layers 2 (0..1)"
    # a config asking for 100,000 layers is refused before any layer is built (it used to allocate
    # for a minute, then fail with a traceback)
    import time

    states = _satool_states()
    states["Upstream_Config"]["transformer"]["num_hidden_layers"] = 100_000
    began = time.perf_counter()
    assert "describes 100000 layers" in _error(tmp_path, states)
    assert time.perf_counter() - began < 10
    states = _satool_states()
    states["Upstream_Config"]["transformer"]["intermediate_size"] = 10**7
    assert "intermediate_size 10000000 does not match" in _error(tmp_path, states)
    states = _satool_states()
    weight = states["Transformer"]["encoder.layer.0.attention.self.query.weight"]
    weight[0, 0] = float("nan")
    assert _error(tmp_path, states) == ("encoder.layer.0.attention.self.query.weight holds 1 NaN or infinite "
                                        "value(s): such a model gives no usable attention maps")
    states = _satool_states()
    states["Upstream_Config"]["transformer"]["num_attention_heads"] = 3
    assert "not a multiple of num_heads 3" in _error(tmp_path, states)


def test_missing_pieces(tmp_path):
    states = _satool_states()
    del states["Transformer"]["encoder.layer.0.output.dense.bias"]
    assert _error(tmp_path, states) == "missing weight encoder.layer.0.output.dense.bias"
    states = _satool_states()
    del states["SpecHead"]["output.weight"]
    assert _error(tmp_path, states) == "missing weight SpecHead.output.weight"
    states = _satool_states()
    del states["Upstream_Config"]["transformer"]["intermediate_size"]
    assert _error(tmp_path, states) == "the model config has no 'intermediate_size'"
    states = _satool_states()
    del states["Upstream_Config"]
    assert "has a 'transformer' block" in _error(tmp_path, states)
    assert "not a Mockingjay checkpoint" in _error(tmp_path, {"model": {}})
    assert "expected a checkpoint dictionary" in _error(tmp_path, [1, 2])
    states = _satool_states()
    states["Transformer"]["encoder.layer.0.output.dense.bias"] = "zeros"
    assert _error(tmp_path, states) == (
        "encoder.layer.0.output.dense.bias is a str, expected a tensor")


def test_shared_layers_must_agree(tmp_path):
    states = _satool_states(share_layer=True)
    states["Upstream_Config"]["transformer"]["share_layer"] = True
    loaded = load_checkpoint(_save_raw(states, tmp_path / "ok.ckpt"))
    assert loaded.encoder.encoder.layer[0] is loaded.encoder.encoder.layer[1]
    states["Transformer"]["encoder.layer.1.intermediate.dense.bias"] = torch.ones(64)
    assert "differs from" in _error(tmp_path, states)


@pytest.mark.parametrize("change, message", [
    ({"hop_ms": 0}, "audio block: hop_ms = 0 is outside 1..25"),
    ({"sample_rate": 0}, "audio block: sample_rate = 0 is outside 1..1e+06"),
    ({"sample_rate": 8000}, "audio block: sample_rate 8000 Hz; satool reads audio at 16000 Hz"),
    ({"win_ms": "wide"}, "audio block: win_ms = 'wide' is not a int"),
    ({"target_level": 1e30}, "audio block: target_level = 1e+30 is outside -120..0"),
    ({"target_level": float("nan")}, "audio block: target_level = nan is outside -120..0"),
    ({"n_mels": 40}, "the audio block makes 40 input features per frame but the model reads 80"),
    ({"input": {"feat_type": "mel", "log": "maybe"}}, "audio block: log = 'maybe' is not true or false"),
    ({"input": {"feat_type": "wavelet"}}, "audio block: feat_type = 'wavelet' (satool knows mel, linear, mfcc)"),
    ({"n_freq": 3}, "audio block: a 25 ms window does not fit the FFT of n_freq 3"),
])
def test_bad_audio_blocks_are_one_line_errors(tmp_path, change, message):
    from satool.models.mockingjay.checkpoint import default_audio_config

    states = _satool_states()
    states["Upstream_Config"]["audio"] = {**default_audio_config(), **change}
    assert _error(tmp_path, states) == message


def test_audio_block_booleans_written_as_text(tmp_path):
    from satool.data.features import FeatureConfig
    from satool.models.mockingjay.checkpoint import default_audio_config

    block = default_audio_config()
    block["input"] = {**block["input"], "cmvn": "false", "log": "True"}
    features = FeatureConfig.from_s3prl(block)
    assert features.input.cmvn is False and features.input.log is True  # bool("false") would be True
