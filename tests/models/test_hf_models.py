"""wav2vec 2.0, HuBERT and WavLM through the hf-speech loader (local transformers checkpoints).

Tiny randomly initialised models are built from configs and saved into tmp
dirs; satool's maps and hidden states are compared with transformers' own
eager forward (``output_attentions=True``). Nothing may be downloaded.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers / huggingface_hub read them
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import hashlib  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

transformers = pytest.importorskip("transformers")
import torch  # noqa: E402
from transformers import (  # noqa: E402
    HubertConfig,
    HubertModel,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Model,
    WavLMConfig,
    WavLMModel,
)

from satool import testing  # noqa: E402
from satool.errors import EnvironmentProblem, InputError, UnsafeFileError  # noqa: E402
from satool.models.hf.loader import HFLoader  # noqa: E402
from satool.models.hf.model import HFSpeechModel  # noqa: E402
from satool.models.loading import load_model  # noqa: E402

CLASSES = {
    "wav2vec2": (Wav2Vec2Config, Wav2Vec2Model),
    "hubert": (HubertConfig, HubertModel),
    "wavlm": (WavLMConfig, WavLMModel),
}
# The usual 7-layer conv stack (kernels 10,3,3,3,3,2,2; strides 5,2,2,2,2,2,2: 320 samples), narrow.
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             conv_dim=(8,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
TOL = 1e-5
TRANSFORMERS_5 = int(transformers.__version__.split(".")[0]) >= 5
VARIANTS = [(t, s) for t in CLASSES for s in (False, True)]  # s: do_stable_layer_norm (pre-LN "large" layout)


def _sharpen(model: torch.nn.Module, seed: int) -> None:
    """Random init gives near-uniform maps; make them peaked (and WavLM's gates/bias non-trivial)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.6)
            elif "rel_attn_embed" in name or "gru_rel_pos" in name:
                p.copy_(torch.randn(p.shape, generator=g))


def build(root, model_type: str, stable: bool = False, name: str | None = None, normalize: bool | None = True,
          seed: int = 0, **overrides):
    config_cls, model_cls = CLASSES[model_type]
    torch.manual_seed(seed)
    config = config_cls(do_stable_layer_norm=stable, feat_extract_norm="layer" if stable else "group",
                        **{**SMALL, **overrides})
    model = model_cls(config).eval()
    _sharpen(model, seed)
    directory = root / (name or f"{model_type}-{'stable' if stable else 'base'}")
    model.save_pretrained(directory)
    if normalize is not None:
        Wav2Vec2FeatureExtractor(do_normalize=normalize).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {(t, s): build(root, t, s, seed=i) for i, (t, s) in enumerate(VARIANTS)}


@pytest.fixture(scope="module")
def wave():
    return testing.tone_audio(testing.DEFAULT_PHONES, seed=3)  # 1.06 s of chords and silences


class _PerHeadF:
    """torch.nn.functional for transformers' WavLM, returning per-head weights instead of their average."""

    def __getattr__(self, name):
        return getattr(torch.nn.functional, name)

    @staticmethod
    def multi_head_attention_forward(*args, **kwargs):
        return torch.nn.functional.multi_head_attention_forward(*args, **kwargs, average_attn_weights=False)


def reference(directory, model_type, inputs, monkeypatch=None, model=None):
    """transformers' eager forward: (maps [layer, head, q, k], hidden states, last_hidden_state).

    WavLM's eager maps are the head average broadcast to every head; with ``monkeypatch`` they are per head.
    """
    model = model or CLASSES[model_type][1].from_pretrained(directory, attn_implementation="eager").eval()
    if model_type == "wavlm" and monkeypatch is not None:
        from transformers.models.wavlm import modeling_wavlm

        monkeypatch.setattr(modeling_wavlm, "F", _PerHeadF())
    with torch.no_grad():
        out = model(inputs, output_attentions=True, output_hidden_states=True)
    maps = [a[0, 0] if a.dim() == 5 else a[0] for a in out.attentions]  # WavLM: [b, head(bcast), head, q, k]
    return torch.stack(maps), torch.stack([h[0] for h in out.hidden_states]), out.last_hidden_state[0]


@pytest.mark.parametrize("model_type,stable", VARIANTS)
def test_maps_and_hidden_states_match_transformers(dirs, wave, model_type, stable, monkeypatch):
    directory = dirs[model_type, stable]
    model = load_model(directory)
    assert isinstance(model, HFSpeechModel) and model.name == model_type
    assert (model.num_layers, model.num_heads, model.hidden_size) == (2, 4, 32)
    assert model.frames_per_step == 2 and model.step_s == pytest.approx(0.02)
    inputs = Wav2Vec2FeatureExtractor.from_pretrained(directory)(
        wave, sampling_rate=16000, return_tensors="pt").input_values
    features = model.input_features(wave)
    assert features.shape == (len(wave), 1) and torch.equal(features[:, 0], inputs[0])

    encoded = model.encode([features], want_hidden=True)[0]
    maps, hidden, last = reference(directory, model_type, inputs, monkeypatch)
    assert encoded.n_steps == maps.shape[-1] == last.shape[0] == model.n_steps(len(wave)) == 52
    assert encoded.attentions.dtype == torch.float32 and encoded.attentions.shape == (2, 4, 52, 52)
    assert encoded.attentions.max() > 0.3  # peaked maps: the comparison means something
    attn_diff = (encoded.attentions - maps).abs().max().item()
    ours = encoded.hidden_states
    if stable and not TRANSFORMERS_5:  # transformers 4 returned the layer-normed output as its last state
        ours = torch.cat([ours[:-2], ours[-1:]])
    assert len(hidden) == model.num_layers + 1
    hidden_diff = (ours[: len(hidden)] - hidden).abs().max().item()
    print(f"{model_type} stable={stable}: max |attention diff| {attn_diff:.2e}, hidden {hidden_diff:.2e}")
    assert attn_diff <= TOL and hidden_diff <= TOL

    names = ["embedding", "layer 1", "layer 2"] + (["final layer norm"] if stable else [])
    assert model.hidden_state_names == names and encoded.hidden_states.shape == (len(names), 52, 32)
    assert (encoded.hidden_states[-1] - last).abs().max().item() <= TOL  # -1 = the encoder's output
    if model_type == "wavlm":  # what transformers itself reports: the average over heads
        monkeypatch.undo()
        averaged, _, _ = reference(directory, model_type, inputs)
        assert (encoded.attentions.mean(1) - averaged[:, 0]).abs().max().item() <= TOL

    only = model.encode([features], layers=[1])[0]
    assert only.hidden_states is None and torch.equal(only.attentions, encoded.attentions[1:2])
    rep = model.represent([model.probe_input(wave)], state=-1)[0]
    np.testing.assert_allclose(rep.hidden, last.numpy(), atol=TOL)


@pytest.mark.parametrize("model_type", list(CLASSES))
def test_head_mask_silences_exactly_the_masked_heads(dirs, wave, model_type, monkeypatch):
    directory = dirs[model_type, False]
    model = load_model(directory)
    features = model.input_features(wave)
    full = model.encode([features], want_hidden=True)[0]
    mask = torch.ones(2, 4)
    mask[0, 1] = 0
    mask[1, 3] = 0
    masked = model.encode([features], head_mask=mask, want_hidden=True)[0]
    assert masked.attentions[0, 1].abs().max() == 0 and masked.attentions[1, 3].abs().max() == 0
    torch.testing.assert_close(masked.attentions[0, [0, 2, 3]], full.attentions[0, [0, 2, 3]], rtol=0, atol=0)
    assert (masked.attentions[1] - full.attentions[1]).abs().max() > 1e-3  # layer 2 sees a changed input
    assert (masked.hidden_states[1] - full.hidden_states[1]).abs().max() > 1e-3

    # Reference: a head that contributes nothing before the output projection = zero value vectors.
    ref_model = CLASSES[model_type][1].from_pretrained(directory, attn_implementation="eager").eval()
    d = 32 // 4
    with torch.no_grad():
        for layer, head in ((0, 1), (1, 3)):
            v = ref_model.encoder.layers[layer].attention.v_proj
            v.weight[head * d:(head + 1) * d] = 0
            v.bias[head * d:(head + 1) * d] = 0
    maps, hidden, _ = reference(directory, model_type, features[:, 0][None], monkeypatch, model=ref_model)
    assert (masked.hidden_states - hidden).abs().max().item() <= TOL
    keep = mask.bool()
    assert (masked.attentions[keep] - maps[keep]).abs().max().item() <= TOL


@pytest.mark.parametrize("model_type", list(CLASSES))
def test_attention_span_zeroes_far_weights_without_renormalising(dirs, wave, model_type):
    model = load_model(dirs[model_type, False])
    features = model.input_features(wave)
    full = model.encode([features])[0].attentions
    spanned = model.encode([features], attention_span=2)[0].attentions
    t = spanned.shape[-1]
    pos = torch.arange(t)
    band = ((pos[:, None] - pos[None, :]).abs() <= 2).float()
    assert spanned[..., band == 0].abs().max() == 0
    torch.testing.assert_close(spanned[0], full[0] * band, rtol=0, atol=0)  # layer 1: same input
    sums = spanned[0].sum(-1)
    assert sums.min() < 1 - 1e-3 and sums.max() <= 1 + 1e-6  # not renormalised
    assert (spanned[1] - full[1] * band).abs().max() > 1e-4  # layer 2's input changed


def test_attention_span_matches_a_masked_transformers_forward(dirs, wave, monkeypatch):
    from transformers.models.wav2vec2 import modeling_wav2vec2

    if not hasattr(modeling_wav2vec2, "eager_attention_forward"):
        pytest.skip("this transformers release has no pluggable eager attention function")
    directory = dirs["wav2vec2", False]
    model = load_model(directory)
    features = model.input_features(wave)
    ours = model.encode([features], attention_span=3, want_hidden=True)[0]

    def spanned_eager(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        weights = torch.softmax(torch.matmul(query, key.transpose(2, 3)) * scaling, dim=-1)
        pos = torch.arange(weights.shape[-1])
        weights = weights * ((pos[:, None] - pos[None, :]).abs() <= 3)
        return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights

    monkeypatch.setattr(modeling_wav2vec2, "eager_attention_forward", spanned_eager)
    maps, hidden, _ = reference(directory, "wav2vec2", features[:, 0][None])
    assert (ours.attentions - maps).abs().max().item() <= TOL
    assert (ours.hidden_states - hidden).abs().max().item() <= TOL


def test_waveform_normalisation_follows_the_preprocessor_config(dirs, wave, tmp_path):
    base = dirs["wav2vec2", False]
    raw = tmp_path / "raw"
    shutil.copytree(base, raw)
    (raw / "preprocessor_config.json").write_text(json.dumps({**json.loads(
        (base / "preprocessor_config.json").read_text()), "do_normalize": False}))
    model = load_model(raw)
    assert model.features["do_normalize"] is False
    expected = Wav2Vec2FeatureExtractor.from_pretrained(raw)(wave, sampling_rate=16000).input_values[0]
    np.testing.assert_array_equal(model.input_features(wave)[:, 0].numpy(), wave)
    np.testing.assert_array_equal(expected, wave)

    normed = load_model(base).input_features(wave)[:, 0]
    assert abs(float(normed.mean())) < 1e-5 and abs(float(normed.std()) - 1) < 1e-3

    bare = tmp_path / "bare"  # no preprocessor_config.json: Wav2Vec2FeatureExtractor's defaults
    shutil.copytree(base, bare)
    (bare / "preprocessor_config.json").unlink()
    model = load_model(bare)
    assert model.features["do_normalize"] is True and "defaults" in model.features["source"]
    torch.testing.assert_close(model.input_features(wave)[:, 0], normed, rtol=0, atol=0)

    (bare / "preprocessor_config.json").write_text(json.dumps({"sampling_rate": 8000}))
    with pytest.raises(InputError, match="sampling_rate 8000 Hz"):
        load_model(bare)


def test_frame_rate_must_be_whole_label_frames(tmp_path):
    directory = build(tmp_path, "wav2vec2", name="stride256", conv_stride=(4, 2, 2, 2, 2, 2, 2))
    with pytest.raises(InputError, match="total stride is 256 samples") as info:
        load_model(directory)
    assert info.value.path == directory


def test_too_short_utterance_is_a_clear_error(dirs):
    model = load_model(dirs["hubert", False])
    assert model.receptive_field() == 400 and model.n_steps(400) == 1 and model.n_steps(399) == 0
    with pytest.raises(InputError, match="at least 400"):
        model.input_features(np.zeros(300, np.float32))


def test_directories_no_loader_accepts(tmp_path, dirs):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=r"not a model directory: no config\.json \(expected a local "
                                         r"transformers checkpoint of type wav2vec2, hubert, wavlm, data2vec-audio or whisper"):
        load_model(empty)
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(InputError, match="config.json has model_type 'bert'"):
        load_model(bert)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_model(broken)
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    shutil.copy(dirs["wavlm", False] / "config.json", no_weights)
    assert HFLoader().can_load(no_weights) and not HFLoader().can_load(no_weights / "config.json")
    with pytest.raises(InputError, match="no weights: expected model.safetensors or pytorch_model.bin"):
        load_model(no_weights)
    (no_weights / "tf_model.h5").write_bytes(b"")
    with pytest.raises(InputError, match="found only tf_model.h5"):
        HFLoader().load(no_weights)


def test_without_transformers_says_what_to_install(dirs, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    with pytest.raises(EnvironmentProblem, match=r"pip install 'satool\[hf\]'"):
        load_model(dirs["wav2vec2", False])


def test_bin_weights_load_safely(dirs, wave, tmp_path):
    import argparse

    base = dirs["hubert", True]
    legacy = tmp_path / "bin"
    shutil.copytree(base, legacy)
    state = load_model(base).model.state_dict()
    (legacy / "model.safetensors").unlink()
    torch.save(state, legacy / "pytorch_model.bin")
    model = load_model(legacy)
    assert model.provenance()["weights_format"].startswith("pytorch .bin")
    features = model.input_features(wave)
    torch.testing.assert_close(model.encode([features])[0].attentions,
                               load_model(base).encode([features])[0].attentions, rtol=0, atol=0)
    partial = {k: v for k, v in state.items() if k != "encoder.layers.1.attention.q_proj.weight"}
    torch.save(partial, legacy / "pytorch_model.bin")
    with pytest.raises(InputError, match=r"do not fit config.json: 1 missing .*layers\.1\.attention\.q_proj"):
        load_model(legacy)  # never a partly random model
    torch.save({**state, "extra": argparse.Namespace(x=1)}, legacy / "pytorch_model.bin")
    with pytest.raises(UnsafeFileError, match="refused to load: not a weights-only pickle"):
        load_model(legacy)


def test_provenance_and_nothing_is_downloaded(dirs, tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("satool tried to open a network connection")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    directory = dirs["wavlm", True]
    model = load_model(directory)
    model.encode([model.input_features(np.zeros(3200, np.float32))])
    prov = model.provenance()
    digest = hashlib.sha256((directory / "model.safetensors").read_bytes()).hexdigest()
    assert prov["type"] == "wavlm" and prov["loader"] == "hf-speech" and prov["directory"] == str(directory)
    assert prov["sha256"] == digest and prov["weights"] == {"model.safetensors": digest}
    assert prov["config"] == json.loads((directory / "config.json").read_text())
    assert prov["frames_per_step"] == 2 and prov["step_s"] == pytest.approx(0.02)
    assert prov["features"]["do_normalize"] is True and prov["features"]["sampling_rate"] == 16000
    json.dumps(prov)  # goes into the cache manifest

    sharded = tmp_path / "sharded"  # several weight files: one digest per shard
    CLASSES["wavlm"][1].from_pretrained(directory).save_pretrained(sharded, max_shard_size="20KB")
    shards = sorted(p.name for p in sharded.glob("*.safetensors"))
    assert len(shards) > 1
    assert sorted(load_model(sharded).provenance()["weights"]) == shards


def test_extract_metrics_and_relations_on_a_tone_corpus(dirs, tmp_path):
    from satool.analysis.metrics import BUILTIN_METRICS
    from satool.analysis.relations import relate
    from satool.analysis.scoring import cache_stream, score_cache
    from satool.cache import open_cache
    from satool.stages import extract as extract_stage

    testing.make_librispeech(tmp_path / "LS", speakers=("19", "26"), per_speaker=1)
    directory = dirs["wav2vec2", False]
    summary = extract_stage.run(extract_stage.Settings(checkpoint=directory, corpus=tmp_path / "LS",
                                                       out=tmp_path / "cache", hidden_states=[0, 2]))
    assert summary.written == 2 and not summary.skipped
    cache = open_cache(tmp_path / "cache")
    assert cache.complete and cache.attrs["frames_per_step"] == 2
    assert cache.attrs["step_s"] == pytest.approx(0.02) and cache.attrs["model"]["type"] == "wav2vec2"
    assert cache.attrs["hidden_state_names"] == ["embedding", "layer 2"]
    model = load_model(directory)
    for utt in cache.utterance_ids:
        meta = cache.meta(utt)
        assert meta["n_steps"] == model.n_steps(meta["n_samples"]) == 52
        assert 2 * meta["n_steps"] <= meta["n_frames"] == len(meta["frame_labels"])
        assert cache.attention(utt).shape == (2, 4, 52, 52)
        assert cache.hidden(utt).shape == (2, 52, 32)

    scores = score_cache(cache, BUILTIN_METRICS)
    for name in ("globalness", "verticality", "diagonality", "weight"):
        assert scores.values[name].shape == (2, 4) and np.isfinite(scores.values[name]).all()
    relations = relate(cache_stream(cache), cache.layers, cache.heads, cache.phone_set)
    assert relations.utterances == 2
    # P' sums to 1 per head (every step's frames carry labels in the tone corpus, up to silence)
    totals = relations.p_prime.sum(axis=(1, 2))
    assert np.all(totals > 0.9) and np.all(totals <= 1 + 1e-6)


def test_cli_names_what_the_directory_lacks(tmp_path, satool_cli):
    empty = tmp_path / "model"
    empty.mkdir()
    result = satool_cli("extract", empty, tmp_path, "--out", tmp_path / "c", cwd=tmp_path)
    assert result.returncode == 3
    assert "not a model directory: no config.json" in result.stderr


def _copy(dirs, tmp_path, name):
    target = tmp_path / name
    shutil.copytree(dirs["wav2vec2", False], target)
    return target


def _edit_config(directory, **changes):
    config = json.loads((directory / "config.json").read_text())
    config.update(changes)
    (directory / "config.json").write_text(json.dumps(config))


def test_code_in_bin_weights_is_refused_with_exit_4(dirs, tmp_path, satool_cli):
    import os

    class Evil:
        def __reduce__(self):
            return os.system, ("touch " + str(tmp_path / "PWNED"),)

    target = _copy(dirs, tmp_path, "evil")
    state = load_model(target).model.state_dict()
    (target / "model.safetensors").unlink()
    torch.save({**state, "x": Evil()}, target / "pytorch_model.bin")
    with pytest.raises(UnsafeFileError, match="asks to call os.system"):
        load_model(target)
    result = satool_cli("extract", target, tmp_path / "nowhere", "--out", tmp_path / "cache", cwd=tmp_path)
    assert result.returncode == 4 and "weights_only=False" not in result.stderr, result.stderr
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("damage, message", [
    (lambda b: b"", "shorter than its 8-byte header length"),
    (lambda b: b[: len(b) // 2], "data offsets .* outside the file|does not fit"),
    (lambda b: (10**12).to_bytes(8, "little") + b[8:], "header of 1000000000000 bytes does not fit"),
    (lambda b: b[:8] + b"\xff" + b[9:], "header is not valid JSON"),
])
def test_damaged_safetensors_are_one_line_errors(dirs, tmp_path, damage, message):
    target = _copy(dirs, tmp_path, "damaged")
    weights = target / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    with pytest.raises(InputError, match=message) as info:
        load_model(target)
    assert "\n" not in str(info.value) and str(weights) in str(info.value)


def test_safetensors_offsets_outside_the_data_are_refused(dirs, tmp_path):
    import struct

    target = _copy(dirs, tmp_path, "offsets")
    weights = target / "model.safetensors"
    data = weights.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    name = next(k for k in header if k != "__metadata__")
    header[name]["data_offsets"] = [0, 10**9]
    text = json.dumps(header).encode()
    weights.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + length:])
    with pytest.raises(InputError, match=f"entry '{name}' has data offsets"):
        load_model(target)


@pytest.mark.parametrize("changes, message", [
    ({"num_attention_heads": 0}, "num_attention_heads = 0 is not an integer in 1..256"),
    ({"num_attention_heads": 5}, "hidden_size 32 is not a multiple of num_attention_heads 5"),
    ({"conv_kernel": [10, 3, 3]}, "the convolution lists disagree"),
    ({"num_hidden_layers": 20000}, "num_hidden_layers = 20000 is not an integer in 1..128"),
    ({"num_hidden_layers": 3}, "config.json asks for 3 layers but the weights hold 2"),
    ({"layer_norm_eps": "tiny"}, "layer_norm_eps = 'tiny' is not a finite non-negative number"),
])
def test_config_numbers_are_checked_before_building(dirs, tmp_path, changes, message):
    import time

    target = _copy(dirs, tmp_path, "config")
    _edit_config(target, **changes)
    began = time.perf_counter()
    with pytest.raises(InputError, match=message):
        load_model(target)
    assert time.perf_counter() - began < 30


def test_do_normalize_written_as_text(dirs, tmp_path):
    target = _copy(dirs, tmp_path, "normalize")
    pre = json.loads((target / "preprocessor_config.json").read_text())
    (target / "preprocessor_config.json").write_text(json.dumps({**pre, "do_normalize": "false"}))
    assert load_model(target).features["do_normalize"] is False  # bool("false") would be True
    (target / "preprocessor_config.json").write_text(json.dumps({**pre, "do_normalize": "maybe"}))
    with pytest.raises(InputError, match="do_normalize = 'maybe' is not true or false"):
        load_model(target)
