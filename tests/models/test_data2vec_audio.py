"""data2vec-audio through the hf-speech loader: wav2vec 2.0's layers after a stack of position
convolutions (transformers' Data2VecAudioModel), compared with transformers' eager forward on random
weights built here. Nothing is downloaded."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import json  # noqa: E402

import pytest  # noqa: E402

transformers = pytest.importorskip("transformers")
import torch  # noqa: E402
from transformers import Data2VecAudioConfig, Data2VecAudioModel, Wav2Vec2FeatureExtractor  # noqa: E402

from satool import testing  # noqa: E402
from satool.errors import InputError  # noqa: E402
from satool.models.hf.model import HFSpeechModel  # noqa: E402
from satool.models.loading import load_model  # noqa: E402

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, conv_dim=(8,) * 7,
             num_conv_pos_embeddings=3, conv_pos_kernel_size=7, num_conv_pos_embedding_groups=4)
TOL = 1e-5


def build(directory, seed=0, **overrides):
    torch.manual_seed(seed)
    model = Data2VecAudioModel(Data2VecAudioConfig(**{**SMALL, **overrides})).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # peaked maps
        for name, p in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.6)
    model.save_pretrained(directory)
    Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def directory(tmp_path_factory):
    return build(tmp_path_factory.mktemp("d2v") / "data2vec-audio")


@pytest.fixture(scope="module")
def wave():
    return testing.tone_audio(testing.DEFAULT_PHONES, seed=4)


def test_maps_and_hidden_states_match_transformers(directory, wave):
    model = load_model(directory)
    assert isinstance(model, HFSpeechModel) and model.name == "data2vec-audio"
    assert model.hidden_state_names == ["embedding", "layer 1", "layer 2"] and model.frames_per_step == 2
    inputs = Wav2Vec2FeatureExtractor.from_pretrained(directory)(wave, sampling_rate=16000,
                                                                 return_tensors="pt").input_values
    features = model.input_features(wave)
    assert torch.equal(features[:, 0], inputs[0])
    reference = Data2VecAudioModel.from_pretrained(directory, attn_implementation="eager").eval()
    with torch.no_grad():
        out = reference(inputs, output_attentions=True, output_hidden_states=True)
    maps = torch.stack([a[0] for a in out.attentions])
    hidden = torch.stack([h[0] for h in out.hidden_states])
    encoded = model.encode([features], want_hidden=True)[0]
    assert encoded.attentions.shape == maps.shape == (2, 4, 52, 52) and encoded.attentions.max() > 0.3
    attn_diff = (encoded.attentions - maps).abs().max().item()
    hidden_diff = (encoded.hidden_states - hidden).abs().max().item()
    print(f"data2vec-audio: max |attention diff| {attn_diff:.2e}, hidden {hidden_diff:.2e}")
    assert attn_diff <= TOL and hidden_diff <= TOL
    assert (encoded.hidden_states[-1] - out.last_hidden_state[0]).abs().max().item() <= TOL
    assert model.provenance()["type"] == "data2vec-audio"


def test_head_mask_and_span(directory, wave):
    model = load_model(directory)
    features = model.input_features(wave)
    mask = torch.ones(2, 4)
    mask[1, 2] = 0
    masked = model.encode([features], head_mask=mask, attention_span=3)[0].attentions
    assert masked[1, 2].abs().max() == 0 and masked[0, 0].sum(-1).min() < 1 - 1e-3  # not renormalised
    t = masked.shape[-1]
    far = (torch.arange(t)[:, None] - torch.arange(t)[None, :]).abs() > 3
    assert masked[..., far].abs().max() == 0


def test_weights_must_cover_the_config(directory, tmp_path):
    import shutil

    target = tmp_path / "more-layers"
    shutil.copytree(directory, target)
    config = json.loads((target / "config.json").read_text())
    config["num_hidden_layers"] = 3
    (target / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="config.json asks for 3 layers but the weights hold 2"):
        load_model(target)


def test_extract_and_metric_through_the_cli(directory, tmp_path, satool_cli):
    testing.make_librispeech(tmp_path / "LS", per_speaker=1)
    result = satool_cli("extract", directory, tmp_path / "LS", "--out", tmp_path / "cache", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    result = satool_cli("metric", tmp_path / "cache", "--out", tmp_path / "metrics", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    result = satool_cli("metric", directory, tmp_path / "LS", "--out", tmp_path / "direct", cwd=tmp_path)
    assert result.returncode == 0, result.stderr  # no cache: maps reduced as they are made
    assert (tmp_path / "metrics" / "metrics.csv").is_file()
