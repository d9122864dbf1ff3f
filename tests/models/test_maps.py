"""Map kinds (satool.maps) of every family against a slow direct computation.

value-norm: the inputs of each layer's value projection are captured while satool computes the raw
maps; then, in float64 with explicit loops over heads and keys, key k's value vector through head h
is ``W_V[h rows] x_k + b_V[h rows]``, its transformed vector ``W_O[:, h columns] v``, and
``N[q, k] = A[q, k] ||W_O^h v||`` with rows divided by their sums. rollout: the layers' raw maps in
float64, ``0.5 * mean_h A + 0.5 * I`` renormalised, multiplied layer by layer. Both are compared
with satool's whole-map path (``encode_maps``) and its streaming blocks (``map_blocks``)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from satool import maps as kinds  # noqa: E402
from satool import testing  # noqa: E402
from satool.errors import UsageError  # noqa: E402
from satool.models.loading import load_model  # noqa: E402

TOL = 2e-5  # float32 model arithmetic against float64 loops


def _value_modules(model):
    """(value projection, output projection) modules of each layer, in layer order."""
    name = type(model).__name__
    if name in ("MockingjayModel", "S3prlTransformerModel"):
        return [(layer.attention.self.value, layer.attention.output.dense) for layer in model.encoder.encoder.layer]
    if name == "HFSpeechModel":
        return [(layer.attention.v_proj, layer.attention.out_proj) for layer in model.layers]
    if name == "WhisperModel":
        return [(layer.self_attn.v_proj, layer.self_attn.out_proj) for layer in model.network.layers]
    if name == "DistillerModel":
        return [(layer.self_attn.v_proj, layer.self_attn.out_proj) for layer in model.network.encoder.layers]
    raise AssertionError(name)


def raw_maps_and_value_inputs(model, features):
    """satool's raw maps ``[layer, head, T, T]`` and the input ``[T, hidden]`` of every layer's value
    projection, captured by hooks during the same forward pass (shared layers: in call order)."""
    captured = []
    handles = [v.register_forward_hook(lambda mod, args, out: captured.append(args[0].detach()))
               for v in {id(v): v for v, _ in _value_modules(model)}.values()]
    try:
        maps = model.encode([features])[0].attentions
    finally:
        for h in handles:
            h.remove()
    assert len(captured) == model.num_layers
    return maps.double().numpy(), [c.reshape(-1, c.shape[-1]).double().numpy() for c in captured]


def slow_value_norm(maps, inputs, model):
    """float64, explicit loops: ``[layer, head, T, T]`` value-norm maps and ``[layer, head, key]`` norms."""
    layers, heads, steps, _ = maps.shape
    out, norms = np.zeros_like(maps), np.zeros((layers, heads, steps))
    for layer, ((value, output), x) in enumerate(zip(_value_modules(model), inputs)):
        state_v, state_o = value.state_dict(), output.state_dict()
        w_v, b_v = state_v["weight"].double().numpy(), state_v["bias"].double().numpy()
        w_o = state_o["weight"].double().numpy()
        d = w_v.shape[0] // heads
        for h in range(heads):
            rows = slice(h * d, (h + 1) * d)
            for k in range(steps):
                v = w_v[rows] @ x[k] + b_v[rows]
                norms[layer, h, k] = np.sqrt(np.sum((w_o[:, rows] @ v) ** 2))
                out[layer, h, :, k] = maps[layer, h, :, k] * norms[layer, h, k]
            out[layer, h] /= out[layer, h].sum(axis=-1, keepdims=True)
    return out, norms


def slow_rollout(maps):
    layers, _, steps, _ = maps.shape
    out, current = np.zeros((layers, 1, steps, steps)), np.eye(steps)
    for layer in range(layers):
        mixed = 0.5 * maps[layer].mean(axis=0) + 0.5 * np.eye(steps)
        mixed /= mixed.sum(axis=-1, keepdims=True)
        current = mixed @ current
        out[layer, 0] = current
    return out


def blocks(model, features, layers, kind, block_bytes, heads=None):
    got = {}
    for layer, first, probs in model.map_blocks(features, layers, maps=kind, block_bytes=block_bytes, heads=heads):
        got.setdefault(layer, []).append((first, probs.clone()))
    return {layer: torch.cat([b for _, b in sorted(parts, key=lambda p: p[0])], dim=1).double().numpy()
            for layer, parts in got.items()}


def check_family(model, features, report: dict | None = None):
    maps, inputs = raw_maps_and_value_inputs(model, features)
    slow, slow_norms = slow_value_norm(maps, inputs, model)
    encoded = model.encode([features], want_value_norms=True)[0]
    norm_error = float(np.max(np.abs(encoded.value_norms.double().numpy() - slow_norms) / slow_norms.max()))
    fast = model.encode_maps(features, maps="value-norm").attentions.double().numpy()
    value_error = float(np.abs(fast - slow).max())
    assert fast.shape == maps.shape and norm_error < TOL and value_error < TOL, (norm_error, value_error)
    assert np.abs(fast.sum(-1) - 1).max() < 1e-5
    assert np.abs(fast - maps).max() > 1e-3  # the norms do change the maps
    rolled = model.encode_maps(features, maps="rollout").attentions.double().numpy()
    rollout_error = float(np.abs(rolled - slow_rollout(maps)).max())
    assert rolled.shape == (model.num_layers, 1, *maps.shape[-2:]) and rollout_error < TOL
    last = model.encode_maps(features, maps="rollout", layers=[model.num_layers - 1]).attentions
    assert np.abs(last.double().numpy() - rolled[-1:]).max() < TOL  # later layers need the earlier ones
    every = list(range(model.num_layers))
    for budget in (10**9, model.num_heads * maps.shape[-1] * 4 * 5, 1):
        got = blocks(model, features, every, "value-norm", budget)
        assert max(np.abs(got[i] - slow[i]).max() for i in every) < TOL
        got = blocks(model, features, [model.num_layers - 1], "rollout", budget)
        assert list(got) == [model.num_layers - 1] and np.abs(got[model.num_layers - 1] - rolled[-1]).max() < TOL
        # only some heads' weights asked for: their value-norm maps, the others' context from fused attention
        chosen = {i: [model.num_heads - 1 - i % model.num_heads, 0] for i in every}
        got = blocks(model, features, every, "value-norm", budget, heads=chosen)
        assert max(np.abs(got[i] - slow[i][sorted(set(chosen[i]))]).max() for i in every) < TOL
    with pytest.raises(ValueError, match="every head"):
        next(model.map_blocks(features, [0], maps="rollout", heads={0: [0]}))
    if report is not None:
        report.update(norms=norm_error, value_norm=value_error, rollout=rollout_error)
    return slow, maps


def test_mockingjay_value_norm_and_rollout_match_the_slow_computation(tmp_path):
    for preset_overrides in ({}, {"pre_layer_norm": True}):
        model = load_model(testing.make_checkpoint(tmp_path / f"m{len(preset_overrides)}.ckpt", seed=4,
                                                   **preset_overrides))
        assert model.gives_value_norms
        features = model.input_features(testing.tone_audio(testing.DEFAULT_PHONES, seed=1))
        check_family(model, features)


def test_mockingjay_long_inputs_take_each_keys_norm_from_its_own_chunk(tmp_path):
    model = load_model(testing.make_checkpoint(tmp_path / "m.ckpt", seed=2, max_input_length=20))
    features = model.input_features(testing.tone_audio(testing.DEFAULT_PHONES, seed=1))
    assert features.shape[0] > 20
    encoded = model.encode([features], want_value_norms=True)[0]
    assert encoded.value_norms.shape == (model.num_layers, model.num_heads, features.shape[0])
    maps = model.encode_maps(features, maps="value-norm").attentions
    assert torch.allclose(maps.sum(-1), torch.ones(()), atol=1e-5)
    raw = model.encode([features])[0].attentions
    assert float(raw[..., 0, -1].abs().max()) == 0 and torch.equal(maps == 0, raw == 0)  # block-diagonal like the raw maps


def test_tera_and_audio_albert_through_mockingjay(tmp_path):
    tera = pytest.importorskip("test_tera_albert")
    if tera.S3PRL_MISSING:
        pytest.skip(tera.S3PRL_MISSING)
    wave = testing.tone_audio(testing.DEFAULT_PHONES, seed=5)
    for case in ("tera-logmel", "albert"):
        path, _ = tera.s3prl_checkpoint(tmp_path / f"{case}.ckpt", **tera.CASES[case])
        model = load_model(path)
        check_family(model, model.input_features(wave))


def test_hf_speech_families(tmp_path):
    pytest.importorskip("transformers")
    from test_hf_models import VARIANTS, build

    wave = testing.tone_audio(testing.DEFAULT_PHONES, seed=3)
    for i, (model_type, stable) in enumerate(VARIANTS):
        model = load_model(build(tmp_path, model_type, stable, seed=i))
        check_family(model, model.input_features(wave))


def test_data2vec_audio(tmp_path):
    pytest.importorskip("transformers")
    from test_data2vec_audio import build

    model = load_model(build(tmp_path / "d2v"))
    check_family(model, model.input_features(testing.tone_audio(testing.DEFAULT_PHONES, seed=4)))


def test_whisper(tmp_path):
    pytest.importorskip("transformers")
    from test_whisper import build

    model = load_model(build(tmp_path / "whisper"))
    wave = testing.tone_audio(testing.DEFAULT_PHONES, seed=6)
    check_family(model, model.input_features(wave[: len(wave) // 320 * 320]))


def test_distilhubert(tmp_path):
    distiller = pytest.importorskip("test_distiller")
    if distiller.S3PRL_MISSING:
        pytest.skip(distiller.S3PRL_MISSING)
    for i, overrides in enumerate(({}, {"layer_norm_first": True, "extractor_mode": "layer_norm"})):
        model = load_model(distiller.s3prl_checkpoint(tmp_path / f"d{i}.ckpt", seed=i, **overrides))
        check_family(model, model.input_features(testing.tone_audio(testing.DEFAULT_PHONES, seed=7)))


def test_a_model_without_value_vectors_is_refused_in_one_line(tmp_path):
    model = load_model(testing.make_checkpoint(tmp_path / "m.ckpt"))
    model.gives_value_norms = False
    with pytest.raises(UsageError, match="does not give its value vectors"):
        model.require_maps("value-norm")
    with pytest.raises(UsageError, match="choose one of attention, value-norm, rollout"):
        model.require_maps("norms")
    features = model.input_features(testing.tone_audio(testing.DEFAULT_PHONES, seed=1))
    assert model.encode_maps(features, maps="rollout").attentions.shape[1] == 1  # needs raw weights only


def test_value_weighted_keeps_rows_without_norm():
    probs = torch.tensor([[[0.5, 0.5], [0.0, 0.0]]])
    out = kinds.value_weighted(probs, torch.tensor([[0.0, 0.0]]))
    assert torch.equal(out, probs)  # nothing to weight: the raw row stays (a pruned head stays all zeros)
    out = kinds.value_weighted(probs, torch.tensor([[1.0, 3.0]]))
    assert torch.allclose(out[0, 0], torch.tensor([0.25, 0.75]))
