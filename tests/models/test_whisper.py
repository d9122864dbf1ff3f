"""Whisper encoders through the whisper loader: satool's log-Mel front end and encoder against
transformers' WhisperFeatureExtractor and WhisperEncoder on random weights built here from small
configs. Nothing is downloaded."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import json  # noqa: E402
import shutil  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

transformers = pytest.importorskip("transformers")
import torch  # noqa: E402
from transformers import WhisperConfig, WhisperFeatureExtractor  # noqa: E402
from transformers import WhisperForConditionalGeneration as WhisperGeneration  # noqa: E402
from transformers import WhisperModel as HFWhisperModel  # noqa: E402

from satool import testing  # noqa: E402
from satool.errors import InputError, UnsafeFileError  # noqa: E402
from satool.models.loading import load_model  # noqa: E402
from satool.models.whisper.loader import WhisperLoader  # noqa: E402
from satool.models.whisper.model import WhisperModel  # noqa: E402

TOL = 1e-5
WINDOW = 75  # positions: a 1.5 s window, so the test utterance (1.06 s = 53 steps) fits


def small_config(n_mels=80, positions=WINDOW, **overrides):
    return WhisperConfig(d_model=32, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64,
                         decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=64, num_mel_bins=n_mels,
                         max_source_positions=positions, max_target_positions=16, vocab_size=100, pad_token_id=0,
                         bos_token_id=1, eos_token_id=2, decoder_start_token_id=3, suppress_tokens=[],
                         begin_suppress_tokens=[], attn_implementation="eager", **overrides)


def build(directory, cls=HFWhisperModel, seed=0, n_mels=80, **overrides):
    torch.manual_seed(seed)
    model = cls(small_config(n_mels, **overrides)).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # peaked maps and non-trivial norms
        for name, p in model.named_parameters():
            if "encoder" in name and name.endswith(("q_proj.weight", "k_proj.weight")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.6)
            elif "encoder" in name and "layer_norm" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    model.save_pretrained(directory)
    WhisperFeatureExtractor(feature_size=n_mels).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("whisper")
    return {"model": build(root / "whisper-model"),
            "generation-128": build(root / "whisper-generation", WhisperGeneration, seed=1, n_mels=128)}


@pytest.fixture(scope="module")
def wave():
    wave = testing.tone_audio(testing.DEFAULT_PHONES, seed=6)
    return wave[: len(wave) // 320 * 320]  # an even number of frames: transformers' encoder takes no other


def transformers_encoder(directory, positions: int):
    """transformers' encoder with a window of ``positions`` steps (the first rows of the stored table)."""
    source = HFWhisperModel.from_pretrained(directory, attn_implementation="eager").encoder
    config = small_config(source.config.num_mel_bins, positions)
    encoder = HFWhisperModel(config).encoder.eval()
    state = source.state_dict()
    state["embed_positions.weight"] = state["embed_positions.weight"][:positions]
    encoder.load_state_dict(state)
    return encoder


def reference(directory, mel: torch.Tensor):
    """(maps [layer, head, q, k], hidden states, last_hidden_state, layer L's raw output) for ``mel`` [frame, mel]."""
    encoder = transformers_encoder(directory, (mel.shape[0] + 1) // 2)
    captured = {}
    encoder.layers[-1].register_forward_hook(lambda m, i, o: captured.setdefault("last", o[0] if isinstance(
        o, tuple) else o))
    with torch.no_grad():
        out = encoder(mel.T[None], output_attentions=True, output_hidden_states=True)
    return (torch.stack([a[0] for a in out.attentions]), torch.stack([h[0] for h in out.hidden_states]),
            out.last_hidden_state[0], captured["last"][0])


@pytest.mark.parametrize("name", ["model", "generation-128"])
def test_features_maps_and_hidden_states_match_transformers(dirs, wave, name):
    directory = dirs[name]
    model = load_model(directory)
    assert isinstance(model, WhisperModel) and model.name == "whisper" and model.frames_per_step == 2
    n_mels = 128 if name.endswith("128") else 80
    extractor = WhisperFeatureExtractor.from_pretrained(directory)
    theirs = extractor(wave, sampling_rate=16000, padding="longest", return_tensors="pt").input_features[0].T
    mel = model.input_features(wave)
    assert mel.shape == theirs.shape == (len(wave) // 160, n_mels)
    feature_diff = (mel - theirs).abs().max().item()
    encoded = model.encode([mel], want_hidden=True)[0]
    maps, hidden, last, raw_last = reference(directory, mel)
    assert encoded.n_steps == model.steps(mel) == maps.shape[-1] == 52
    assert encoded.attentions.shape == (2, 4, 52, 52) and encoded.attentions.max() > 0.3
    attn_diff = (encoded.attentions - maps).abs().max().item()
    ours = encoded.hidden_states
    assert model.hidden_state_names == ["embedding", "layer 1", "layer 2", "final layer norm"]
    # transformers' tuple: the inputs of layers 1..L, then last_hidden_state (layer L's raw output is not in it)
    hidden_diff = max((ours[:2] - hidden[:2]).abs().max().item(), (ours[2] - raw_last).abs().max().item(),
                      (ours[3] - last).abs().max().item())
    print(f"whisper {name}: features {feature_diff:.2e}, attention {attn_diff:.2e}, hidden {hidden_diff:.2e}")
    assert feature_diff <= TOL and attn_diff <= TOL and hidden_diff <= TOL


def test_a_full_window_equals_transformers_unchanged(dirs):
    """An input of exactly the window's length: transformers' own encoder, no truncated table."""
    directory = dirs["model"]
    model = load_model(directory)
    rng = np.random.default_rng(0)
    wave = (rng.standard_normal(2 * WINDOW * 160) * 0.1).astype(np.float32)
    extractor = WhisperFeatureExtractor.from_pretrained(directory)
    padded = extractor(wave, sampling_rate=16000, max_length=2 * WINDOW * 160, return_tensors="pt").input_features
    encoder = HFWhisperModel.from_pretrained(directory, attn_implementation="eager").encoder.eval()
    with torch.no_grad():
        out = encoder(padded, output_attentions=True)
    mel = model.input_features(wave)
    assert torch.equal(mel, padded[0].T)
    encoded = model.encode([mel], want_hidden=True)[0]
    assert (encoded.attentions - torch.stack([a[0] for a in out.attentions])).abs().max() <= TOL
    assert (encoded.hidden_states[-1] - out.last_hidden_state[0]).abs().max() <= TOL


def test_head_mask_span_and_layers(dirs, wave):
    model = load_model(dirs["model"])
    mel = model.input_features(wave)
    full = model.encode([mel], want_hidden=True)[0]
    mask = torch.ones(2, 4)
    mask[0, 1] = 0
    masked = model.encode([mel], head_mask=mask, attention_span=2, want_hidden=True)[0]
    assert masked.attentions[0, 1].abs().max() == 0
    t = masked.n_steps
    far = (torch.arange(t)[:, None] - torch.arange(t)[None, :]).abs() > 2
    assert masked.attentions[..., far].abs().max() == 0
    assert torch.equal(masked.hidden_states[0], full.hidden_states[0])  # the embedding does not change
    assert (masked.hidden_states[1] - full.hidden_states[1]).abs().max() > 1e-3
    only = model.encode([mel], layers=[0])[0]
    assert only.hidden_states is None and torch.equal(only.attentions, full.attentions[:1])
    rep = model.represent([model.probe_input(wave)], state=-1)[0]
    np.testing.assert_allclose(rep.hidden, full.hidden_states[-1].numpy(), atol=1e-6)


def test_longer_than_the_window_is_skipped_with_the_reason(dirs):
    model = load_model(dirs["model"])
    with pytest.raises(InputError, match=r"longer than this Whisper encoder's window: 76 steps .* --max-frames 150"):
        model.input_features(np.zeros(152 * 160, np.float32))
    assert model.input_features(np.zeros(150 * 160, np.float32)).shape == (150, 80)


def test_provenance(dirs):
    prov = load_model(dirs["generation-128"]).provenance()
    assert prov["type"] == "whisper" and prov["encoder"]["num_mel_bins"] == 128
    assert prov["features"]["padding"].startswith("none")
    json.dumps(prov)


def _copy(dirs, tmp_path, name="copy"):
    target = tmp_path / name
    shutil.copytree(dirs["model"], target)
    return target


def _edit(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("changes, message", [
    ({"encoder_layers": 3}, "config.json asks for 3 encoder layers but the weights hold 2"),
    ({"encoder_layers": 10**6}, r"encoder_layers = 1000000 is not an integer in 1\.\.128"),
    ({"d_model": 30}, "d_model 30 is not a multiple of encoder_attention_heads 4"),
    ({"encoder_ffn_dim": 48}, r"encoder weight layers.0.fc1.weight has shape \[64, 32\], config.json implies"),
    ({"num_mel_bins": 40}, "feature_size = 80, expected 40"),
    ({"activation_function": "os.system"}, "activation_function 'os.system'"),
    ({"max_source_positions": "1500"}, "max_source_positions = '1500' is not an integer"),
])
def test_config_is_checked_against_the_weights(dirs, tmp_path, changes, message):
    target = _copy(dirs, tmp_path)
    _edit(target / "config.json", **changes)
    with pytest.raises(InputError, match=message) as info:
        load_model(target)
    assert "\n" not in str(info.value)


def test_preprocessor_settings_satool_cannot_compute(dirs, tmp_path):
    target = _copy(dirs, tmp_path)
    _edit(target / "preprocessor_config.json", hop_length=320)
    with pytest.raises(InputError, match="hop_length = 320, expected 160"):
        load_model(target)
    _edit(target / "preprocessor_config.json", hop_length=160, dither=0.5)
    with pytest.raises(InputError, match="dither"):
        load_model(target)
    (target / "preprocessor_config.json").unlink()  # WhisperFeatureExtractor's defaults
    assert load_model(target).provenance()["features"]["source"].startswith("defaults")


def test_missing_and_decoder_only_weights(dirs, tmp_path):
    from safetensors.torch import load_file, save_file

    target = _copy(dirs, tmp_path)
    state = load_file(target / "model.safetensors")
    save_file({k: v for k, v in state.items() if k != "encoder.layers.1.fc2.bias"}, target / "model.safetensors")
    with pytest.raises(InputError, match="missing encoder weight layers.1.fc2.bias"):
        load_model(target)
    save_file({k: v for k, v in state.items() if not k.startswith("encoder.")}, target / "model.safetensors")
    with pytest.raises(InputError, match="the weights hold no Whisper encoder"):
        load_model(target)
    nan = dict(state)
    nan["encoder.conv1.bias"] = torch.full_like(state["encoder.conv1.bias"], float("nan"))
    save_file(nan, target / "model.safetensors")
    with pytest.raises(InputError, match="conv1.bias holds NaN"):
        load_model(target)


def test_bin_weights_load_safely_and_code_is_refused(dirs, tmp_path, wave):
    from safetensors.torch import load_file

    target = _copy(dirs, tmp_path)
    state = load_file(target / "model.safetensors")
    (target / "model.safetensors").unlink()
    torch.save(state, target / "pytorch_model.bin")
    model = load_model(target)
    reference_model = load_model(dirs["model"])
    mel = model.input_features(wave)
    assert torch.equal(model.encode([mel])[0].attentions, reference_model.encode([mel])[0].attentions)

    class Evil:
        def __reduce__(self):
            return os.system, ("touch " + str(tmp_path / "PWNED"),)

    torch.save({**state, "x": Evil()}, target / "pytorch_model.bin")
    with pytest.raises(UnsafeFileError, match="asks to call os.system"):
        load_model(target)
    assert not (tmp_path / "PWNED").exists()


def test_loader_recognises_only_whisper_directories(dirs, tmp_path):
    assert WhisperLoader().can_load(dirs["model"]) and not WhisperLoader().can_load(dirs["model"] / "config.json")
    other = tmp_path / "w2v"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "wav2vec2"}))
    assert not WhisperLoader().can_load(other)


def test_damaged_safetensors_is_one_line(dirs, tmp_path, satool_cli):
    target = _copy(dirs, tmp_path)
    data = (target / "model.safetensors").read_bytes()
    (target / "model.safetensors").write_bytes(data[: len(data) // 2])
    result = satool_cli("extract", target, tmp_path, "--out", tmp_path / "c", cwd=tmp_path)
    assert result.returncode == 3 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "outside the file" in result.stderr or "does not fit" in result.stderr


def test_extract_and_metric_through_the_cli(dirs, tmp_path, satool_cli):
    testing.make_librispeech(tmp_path / "LS", per_speaker=1)
    result = satool_cli("extract", dirs["model"], tmp_path / "LS", "--out", tmp_path / "cache", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    result = satool_cli("metric", tmp_path / "cache", "--out", tmp_path / "metrics", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    result = satool_cli("metric", dirs["model"], tmp_path / "LS", "--out", tmp_path / "direct", cwd=tmp_path)
    assert result.returncode == 0, result.stderr  # no cache: maps reduced as they are made
    from satool.cache import open_cache

    cache = open_cache(tmp_path / "cache")
    assert cache.complete and cache.attrs["model"]["type"] == "whisper" and cache.attrs["frames_per_step"] == 2
    assert (tmp_path / "metrics" / "metrics.csv").is_file()
