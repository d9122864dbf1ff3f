"""DistilHuBERT (s3prl's distiller) checkpoints: read safely, config checked against the weights, and
satool's own network equal to s3prl 0.4.18's DistillerModel (hidden states) and its attention modules
(per-head maps) on random weights."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from satool import testing
from satool.errors import InputError, UnsafeFileError
from satool.models.distiller.checkpoint import parse_conv_layers
from satool.models.distiller.loader import DistillerLoader
from satool.models.distiller.model import DistillerModel
from satool.models.loading import load_model

try:
    from s3prl.upstream.distiller.expert import UpstreamExpert
    from s3prl.upstream.distiller.model import DistillerConfig as S3prlConfig
    from s3prl.upstream.distiller.model import DistillerModel as S3prlDistiller
except Exception as exc:  # pragma: no cover - depends on the environment
    S3PRL_MISSING = f"s3prl==0.4.18 is not importable ({type(exc).__name__}: {exc})"
else:
    S3PRL_MISSING = ""

needs_s3prl = pytest.mark.skipif(bool(S3PRL_MISSING), reason=S3PRL_MISSING or "s3prl")
TOL = 1e-5
BLOCK = {  # DistilHuBERT's config, narrow
    "extractor_mode": "default", "extractor_conv_feature_layers": "[(16,10,5)] + [(16,3,2)] * 4 + [(16,2,2)] * 2",
    "extractor_dropout": 0.0, "feature_grad_mult": 0.1, "conv_pos": 16, "conv_pos_groups": 4,
    "encoder_layers": 2, "encoder_embed_dim": 32, "encoder_ffn_embed_dim": 64, "encoder_attention_heads": 4,
    "activation_fn": "gelu", "layer_norm_first": False, "attention_type": "original", "dropout": 0.1,
    "attention_dropout": 0.1, "activation_dropout": 0.1, "encoder_layerdrop": 0.0, "final_dim": 8,
    "out_layer_type": "expand-last", "n_tasks": 3, "task_emb_type": "expand-last", "pred_layer_id": [4, 8, 12],
}


def s3prl_checkpoint(path, seed=0, **overrides):
    """What s3prl's distiller pre-training writes (the keys upstream/distiller/builder.py reads)."""
    block = {**BLOCK, **overrides}
    torch.manual_seed(seed)
    model = S3prlDistiller(S3prlConfig(block))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # peaked maps, non-trivial norms
        for name, p in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.6)
            elif "layer_norm" in name or name.endswith("2.weight"):
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    states = {"Distiller": model.state_dict(), "Config": {"distiller": block, "runner": {"total_steps": 10}},
              "Optimizer": {"state": {}, "param_groups": []}, "Step": 10,
              "Args": argparse.Namespace(upstream="distiller", seed=1337)}
    torch.save(states, path)
    return path


class _Maps:
    """Per-head maps of s3prl's attention modules: their inputs captured, then the same
    F.multi_head_attention_forward call the module makes, with per-head weights."""

    def __init__(self, model):
        self.inputs = []
        self.modules = [layer.self_attn for layer in model.encoder.layers]
        for m in self.modules:
            m.register_forward_hook(lambda mod, args, kwargs, out: self.inputs.append((mod, kwargs["query"])),
                                    with_kwargs=True)

    def maps(self):
        out = []
        for mod, x in self.inputs:
            _, weights = torch.nn.functional.multi_head_attention_forward(
                x, x, x, mod.embed_dim, mod.num_heads, torch.empty([0]),
                torch.cat((mod.q_proj.bias, mod.k_proj.bias, mod.v_proj.bias)), None, None, False, 0.0,
                mod.out_proj.weight, mod.out_proj.bias, False, None, True, None, use_separate_proj_weight=True,
                q_proj_weight=mod.q_proj.weight, k_proj_weight=mod.k_proj.weight, v_proj_weight=mod.v_proj.weight,
                average_attn_weights=False)
            out.append(weights[0])
        return torch.stack(out)


@pytest.fixture(scope="module")
def wave():
    return testing.tone_audio(testing.DEFAULT_PHONES, seed=7)


@needs_s3prl
@pytest.mark.parametrize("variant", ["default", "layer_norm+pre-LN"])
def test_hidden_states_and_maps_match_s3prl(tmp_path, wave, variant):
    overrides = {} if variant == "default" else {"extractor_mode": "layer_norm", "layer_norm_first": True}
    path = s3prl_checkpoint(tmp_path / "distiller.ckpt", **overrides)
    assert DistillerLoader().can_load(path)
    model = load_model(path)
    assert isinstance(model, DistillerModel) and model.frames_per_step == 2
    expert = UpstreamExpert(str(path)).eval()
    recorder = _Maps(expert.model.model)
    with torch.no_grad():
        out = expert([torch.from_numpy(wave)])
        maps = recorder.maps()
    theirs = torch.stack([h[0] for h in out["hidden_states"][: model.num_layers + 1]])
    features = model.input_features(wave)
    encoded = model.encode([features], want_hidden=True)[0]
    assert encoded.n_steps == maps.shape[-1] == model.n_steps(len(wave)) == theirs.shape[1]
    assert encoded.attentions.shape == maps.shape == (2, 4, encoded.n_steps, encoded.n_steps)
    assert encoded.attentions.max() > 0.3
    attn_diff = (encoded.attentions - maps).abs().max().item()
    hidden_diff = (encoded.hidden_states[: model.num_layers + 1] - theirs).abs().max().item()
    print(f"distiller {variant}: attention {attn_diff:.2e}, hidden {hidden_diff:.2e}")
    assert attn_diff <= TOL and hidden_diff <= TOL
    assert torch.equal(out["paper"][0], out["hidden_states"][model.num_layers][0])  # the paper's state: layer L
    if variant != "default":
        assert model.hidden_state_names[-1] == "final layer norm"
        final = expert.model.model.encoder.layer_norm(out["hidden_states"][model.num_layers])[0]
        assert (encoded.hidden_states[-1] - final).abs().max() <= TOL


@needs_s3prl
def test_parametrized_weight_norm_loads_too(tmp_path, wave):
    """A state dict saved with torch's newer weight-norm parametrization (original0/original1)."""
    path = s3prl_checkpoint(tmp_path / "old.ckpt")
    states = torch.load(path, weights_only=False)
    sd = states["Distiller"]
    sd["encoder.pos_conv.0.parametrizations.weight.original0"] = sd.pop("encoder.pos_conv.0.weight_g")
    sd["encoder.pos_conv.0.parametrizations.weight.original1"] = sd.pop("encoder.pos_conv.0.weight_v")
    torch.save(states, tmp_path / "new.ckpt")
    a, b = load_model(path), load_model(tmp_path / "new.ckpt")
    f = a.input_features(wave)
    assert torch.equal(a.encode([f])[0].attentions, b.encode([f])[0].attentions)


@needs_s3prl
def test_head_mask_span_layers_and_probing(tmp_path, wave):
    model = load_model(s3prl_checkpoint(tmp_path / "d.ckpt"))
    f = model.input_features(wave)
    full = model.encode([f], want_hidden=True)[0]
    mask = torch.ones(2, 4)
    mask[1, 3] = 0
    masked = model.encode([f], head_mask=mask, attention_span=1)[0].attentions
    assert masked[1, 3].abs().max() == 0
    t = masked.shape[-1]
    assert masked[..., (torch.arange(t)[:, None] - torch.arange(t)[None, :]).abs() > 1].abs().max() == 0
    assert torch.equal(model.encode([f], layers=[0])[0].attentions, full.attentions[:1])
    rep = model.represent([model.probe_input(wave)], state=-1)[0]
    np.testing.assert_allclose(rep.hidden, full.hidden_states[-1].numpy(), atol=1e-6)
    prov = model.provenance()
    assert prov["type"] == "distiller" and prov["prediction_heads"] == "present, not built"


def test_conv_layer_strings_are_parsed_not_evaluated():
    assert parse_conv_layers("[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2") == \
        [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
    for bad in ("__import__('os').system('touch x')", "[(1,2,3)] * 10**9", "[(1,2)]", "[(1,2,3)] * 40",
                "[(1.5,2,3)]", "[(0,2,3)]", "", "[" * 500 + "]" * 500):
        with pytest.raises(InputError, match="extractor_conv_feature_layers"):
            parse_conv_layers(bad)


@needs_s3prl
@pytest.mark.parametrize("change, message", [
    (lambda s: s["Config"]["distiller"].update(encoder_layers=3), "describes 3 encoder layers but the weights hold 2"),
    (lambda s: s["Config"]["distiller"].update(encoder_layers=10**6), r"encoder_layers = 1000000 is not an integer"),
    (lambda s: s["Config"]["distiller"].update(encoder_ffn_embed_dim=48),
     r"encoder.layers.0.fc1.weight has shape \[64, 32\], the config implies \[48, 32\]"),
    (lambda s: s["Config"]["distiller"].update(attention_type="dynamic"), "only 'original'"),
    (lambda s: s["Config"]["distiller"].update(task_emb_type="add"), "a task embedding enters the encoder"),
    (lambda s: s["Config"]["distiller"].update(extractor_conv_feature_layers="exec('x')"), "not evaluated|only lists"),
    (lambda s: s["Distiller"].pop("encoder.layers.1.fc2.bias"), "missing weight Distiller.encoder.layers.1.fc2.bias"),
    (lambda s: s["Distiller"].update({"encoder.extra.weight": torch.zeros(2)}), "unexpected weight"),
    (lambda s: s["Distiller"]["encoder.layer_norm.bias"].fill_(float("nan")), "holds NaN"),
    (lambda s: s.pop("Config"), "Config has no 'distiller' block"),
])
def test_bad_checkpoints_are_one_line_errors(tmp_path, change, message):
    path = s3prl_checkpoint(tmp_path / "d.ckpt")
    states = torch.load(path, weights_only=False)
    change(states)
    torch.save(states, path)
    with pytest.raises(InputError, match=message) as info:
        DistillerModel.from_file(path)
    assert "\n" not in str(info.value) and str(info.value).startswith(str(path))


@needs_s3prl
def test_code_in_the_file_is_refused_before_anything_runs(tmp_path, satool_cli):
    import os

    class Evil:
        def __reduce__(self):
            return os.system, ("touch " + str(tmp_path / "PWNED"),)

    path = s3prl_checkpoint(tmp_path / "d.ckpt")
    states = torch.load(path, weights_only=False)
    states["Optimizer"] = Evil()
    torch.save(states, path)
    assert DistillerLoader().can_load(path)  # the peek reads opcodes only
    with pytest.raises(UnsafeFileError, match="os.system"):
        load_model(path)
    result = satool_cli("extract", path, tmp_path, "--out", tmp_path / "c", cwd=tmp_path)
    assert result.returncode == 4 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "PWNED").exists()


def test_loader_peek_ignores_other_files(tmp_path):
    testing.make_checkpoint(tmp_path / "m.ckpt", downsample=1)
    assert not DistillerLoader().can_load(tmp_path / "m.ckpt")
    (tmp_path / "junk").write_bytes(b"PK\x03\x04" + b"\x00" * 50)
    assert not DistillerLoader().can_load(tmp_path / "junk") and not DistillerLoader().can_load(tmp_path)
    torch.save({"Distiller": {}, "Config": {}}, tmp_path / "legacy.ckpt", _use_new_zipfile_serialization=False)
    assert not DistillerLoader().can_load(tmp_path / "legacy.ckpt")  # legacy format: left to the next loader


@needs_s3prl
def test_extract_and_metric_through_the_cli(tmp_path, satool_cli):
    path = s3prl_checkpoint(tmp_path / "distilhubert.ckpt")
    testing.make_librispeech(tmp_path / "LS", per_speaker=1)
    result = satool_cli("extract", path, tmp_path / "LS", "--out", tmp_path / "cache", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    result = satool_cli("metric", tmp_path / "cache", "--out", tmp_path / "metrics", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    result = satool_cli("metric", path, tmp_path / "LS", "--out", tmp_path / "direct", cwd=tmp_path)
    assert result.returncode == 0, result.stderr  # no cache: maps reduced as they are made
    from satool.cache import open_cache

    cache = open_cache(tmp_path / "cache")
    assert cache.complete and cache.attrs["model"]["type"] == "distiller" and cache.attrs["frames_per_step"] == 2
    assert (tmp_path / "metrics" / "metrics.csv").is_file()
