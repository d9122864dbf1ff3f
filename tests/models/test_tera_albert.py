"""TERA and Audio ALBERT checkpoints (s3prl 0.4.18 builds both with Mockingjay's code): the family is
recognised, the Kaldi-style front end of TERA's fbank models is computed as s3prl does, and hidden
states and attention maps equal s3prl's upstream on random weights."""

from __future__ import annotations

import argparse
import copy

import numpy as np
import pytest
import torch

from satool import testing
from satool.errors import InputError
from satool.models.loading import load_model
from satool.models.mockingjay import MockingjayConfig, position_encoding
from satool.models.mockingjay.checkpoint import default_audio_config, load_checkpoint
from satool.models.tera.family import detect_family
from satool.models.tera.kaldi import KaldiExtractor, KaldiFeatureConfig

try:
    from s3prl.upstream.audio_albert.expert import UpstreamExpert as AlbertExpert
    from s3prl.upstream.baseline.extracter import get_extracter
    from s3prl.upstream.mockingjay.model import (
        TransformerConfig,
        TransformerModel,
        TransformerSpecPredictionHead,
    )
    from s3prl.upstream.tera.expert import UpstreamExpert as TeraExpert
except Exception as exc:  # pragma: no cover - depends on the environment
    S3PRL_MISSING = f"s3prl==0.4.18 is not importable ({type(exc).__name__}: {exc})"
else:
    S3PRL_MISSING = ""

needs_s3prl = pytest.mark.skipif(bool(S3PRL_MISSING), reason=S3PRL_MISSING or "s3prl")
ATOL = 1e-5

KALDI_FBANK = {  # s3prl's upstream/baseline/fbank.yaml: 80 log Mel + deltas + delta-deltas = 240
    "kaldi": {"feat_type": "fbank", "fbank": {"num_mel_bins": 80, "frame_length": 25.0, "frame_shift": 10.0,
                                              "use_log_fbank": True}},
    "delta": {"order": 2, "win_length": 5},
    "cmvn": {"use_cmvn": True},
}
TERA_TASK = {"loss": "L1", "sequence_length": 1500, "position_encoding_size": 32, "mask_proportion": 0.15,
             "mask_consecutive_min": 7, "mask_consecutive_max": 7, "mask_allow_overlap": True,
             "mask_bucket_ratio": 1.5, "mask_frequency": 0.2, "noise_proportion": 0.1}
MOCKINGJAY_TASK = dict(TERA_TASK, mask_frequency=0, noise_proportion=0.0)


def _tera_audio(delta: int = 1) -> dict:
    audio = default_audio_config()  # TERA's logMel models: 80 log Mel in, 201 log linear out
    audio["input"]["delta"] = delta
    return audio


def s3prl_checkpoint(path, *, upstream: str | None, audio: dict, task: dict, share_layer=False,
                     pre_layer_norm=False, seed=0, layers=3):
    """What s3prl's run_pretrain.py writes for -u tera / audio_albert (pretrain/runner.py)."""
    if KaldiFeatureConfig.is_kaldi(audio):
        _, input_dim, _ = get_extracter(audio)
        output_dim = input_dim
    else:
        from satool.data.features import FeatureConfig

        features = FeatureConfig.from_s3prl(audio)
        input_dim, output_dim = features.input_dim, features.target_dim
    config = MockingjayConfig.preset("tiny", input_dim=input_dim, output_dim=output_dim, num_layers=layers,
                                     share_layer=share_layer, pre_layer_norm=pre_layer_norm)
    block = dict(config.to_s3prl(), input_dim=-1)
    torch.manual_seed(seed)
    transformer = TransformerModel(TransformerConfig(block), input_dim)
    head = TransformerSpecPredictionHead(TransformerConfig(block), output_dim)
    with torch.no_grad():  # non-trivial LayerNorms and peaked maps
        for name, p in transformer.named_parameters():
            if "LayerNorm" in name:
                p.add_(0.1 * torch.randn_like(p))
            elif name.endswith(("query.weight", "key.weight")):
                p.copy_(0.5 * torch.randn_like(p))
    states = {
        "SpecHead": head.state_dict(), "Transformer": transformer.state_dict(),
        "Upstream_Config": {"transformer": block, "task": copy.deepcopy(task), "audio": copy.deepcopy(audio)},
        "Config": {"runner": {"total_steps": 1000}}, "Step": 1000,
        "Args": argparse.Namespace(upstream=upstream, expdir="result/pretrain/x", seed=1337) if upstream
        else argparse.Namespace(expdir="result/pretrain/x"),
    }
    torch.save(states, path)
    return path, config


def s3prl_maps(path, config, features):
    """s3prl's TransformerModel(output_attentions=True) with the checkpoint's weights: (maps, hidden)."""
    states = torch.load(path, weights_only=False)
    block = states["Upstream_Config"]["transformer"]
    model = TransformerModel(TransformerConfig(block), config.input_dim, output_attentions=True).eval()
    model.load_state_dict(states["Transformer"])
    steps = features.shape[0]
    with torch.no_grad():
        maps, hidden = model(features[None], position_encoding(steps, config.hidden_size), torch.ones(1, steps))
    return torch.stack([m[0] for m in maps]), torch.stack([h[0] for h in hidden])


def _diff(a, b) -> float:
    return float((a - b).abs().max())


@pytest.fixture(scope="module")
def wave():
    return testing.tone_audio(testing.DEFAULT_PHONES, seed=5)


CASES = {
    "tera-logmel": dict(upstream="tera", audio=_tera_audio(1), task=TERA_TASK),
    "tera-fbank": dict(upstream="tera", audio=KALDI_FBANK, task=TERA_TASK),
    "albert": dict(upstream="audio_albert", audio=_tera_audio(0), task=MOCKINGJAY_TASK, share_layer=True),
    "albert-preln": dict(upstream=None, audio=_tera_audio(0), task=MOCKINGJAY_TASK, share_layer=True,
                         pre_layer_norm=True),
    "tera-no-args": dict(upstream=None, audio=KALDI_FBANK, task=TERA_TASK),
}
FAMILY = {"tera-logmel": "tera", "tera-fbank": "tera", "albert": "audio_albert", "albert-preln": "audio_albert",
          "tera-no-args": "tera"}


@needs_s3prl
@pytest.mark.parametrize("case", list(CASES))
def test_hidden_states_and_maps_match_s3prl(tmp_path, wave, case):
    path, config = s3prl_checkpoint(tmp_path / f"{case}.ckpt", **CASES[case])
    model = load_model(path)
    assert model.name == FAMILY[case] and model.provenance()["type"] == FAMILY[case]
    expert = (AlbertExpert if "albert" in case else TeraExpert)(str(path)).eval()
    builder = expert.transformer
    with torch.no_grad():
        theirs = torch.stack([h[0] for h in expert([torch.from_numpy(wave)])["hidden_states"]])
        if KaldiFeatureConfig.is_kaldi(CASES[case]["audio"]):
            their_features = builder.extracter(torch.from_numpy(wave))
        else:
            scaled = builder._normalize_wav_decibel(torch.from_numpy(wave))
            their_features = builder.extracter(scaled[None, None], wavs_len=[len(wave)])[0][0]
    features = model.input_features(wave)
    assert features.shape == their_features.shape
    if KaldiFeatureConfig.is_kaldi(CASES[case]["audio"]):
        assert torch.equal(features, their_features)  # the same torchaudio calls
    assert _diff(features, their_features) < 1e-4  # online front end: 0 here
    (encoded,) = model.encode([their_features], want_attentions=True, want_hidden=True)
    maps, hidden = s3prl_maps(path, config, their_features)
    assert encoded.hidden_states.shape == theirs.shape == hidden.shape
    hidden_diff = max(_diff(encoded.hidden_states, theirs), _diff(encoded.hidden_states, hidden))
    attn_diff = _diff(encoded.attentions, maps)
    print(f"{case}: attention {attn_diff:.2e}, hidden {hidden_diff:.2e}, features {_diff(features, their_features):.2e}")
    assert hidden_diff < ATOL and attn_diff < ATOL
    assert maps.amax(-1).mean() > 0.3  # peaked maps, so the comparison means something


@needs_s3prl
def test_shared_layers_are_stored_once_or_per_layer(tmp_path, wave):
    path, _ = s3prl_checkpoint(tmp_path / "albert.ckpt", **CASES["albert"])
    states = torch.load(path, weights_only=False)
    once = {k: v for k, v in states["Transformer"].items() if not k.startswith("encoder.layer.") or
            k.startswith("encoder.layer.0.")}
    assert len(once) < len(states["Transformer"])
    states["Transformer"] = once  # the config shares them: names may be given once
    torch.save(states, tmp_path / "once.ckpt")
    # ... but then the weights hold one layer while the config asks for three
    with pytest.raises(InputError, match="describes 3 layers but the weights hold layers 1"):
        load_checkpoint(tmp_path / "once.ckpt")


def test_family_rules():
    assert detect_family(upstream="tera").name == "tera"
    assert detect_family(upstream="npc", share_layer=True).name == "audio_albert"
    assert detect_family(satool={"family": "tera"}).name == "tera"
    assert detect_family(task={"mask_proportion": 0.15, "mask_frequency": 0.2}).source == \
        "task: time + channel alteration"
    assert detect_family(model_block={"noise_proportion": "0.1"}).name == "tera"  # paper-era, YAML text
    assert detect_family(task={"mask_proportion": 0.15, "mask_frequency": 0}).name == "mockingjay"


def test_paper_era_tera_is_recognised_from_its_model_block(tmp_path):
    config = MockingjayConfig.preset("tiny", input_dim=40, downsample_rate=1, embedding_in_hidden_states=False)
    from satool.models.mockingjay import MockingjayEncoder

    encoder = MockingjayEncoder(config)
    block = dict(config.to_s3prl(), mask_proportion=0.15, mask_frequency=8, noise_proportion=0.15,
                 max_input_length=0)
    torch.save({"Transformer": encoder.state_dict(), "Global_step": 10,
                "Settings": {"Config": {"transformer": block}, "Paras": argparse.Namespace(seed=1)}},
               tmp_path / "tera-paper.ckpt")
    model = load_model(tmp_path / "tera-paper.ckpt")
    family = model.provenance()["family"]
    assert model.name == "tera" and family["alterations"] == ["time", "channel", "magnitude"]
    assert family["source"] == "model block: time + channel + magnitude alteration"


def test_satool_checkpoints_stay_mockingjay(tmp_path):
    path = testing.make_checkpoint(tmp_path / "m.ckpt", downsample=1)
    model = load_model(path)
    assert model.name == "mockingjay" and model.provenance()["front_end"] == "online"


def test_kaldi_front_end_matches_s3prl_extracter(wave):
    if S3PRL_MISSING:
        pytest.skip(S3PRL_MISSING)
    for audio in (KALDI_FBANK,
                  {"kaldi": {"feat_type": "mfcc", "mfcc": {"num_ceps": 13}}, "cmvn": {"use_cmvn": False}},
                  {"kaldi": {"feat_type": "spectrogram", "spectrogram": {"snip_edges": False}},
                   "delta": {"order": 0}, "cmvn": {"use_cmvn": "True"}}):
        config = KaldiFeatureConfig.from_s3prl(audio)
        extracter, dim, _ = get_extracter(copy.deepcopy(audio))
        theirs = extracter(torch.from_numpy(wave))
        ours = KaldiExtractor(config)(wave)
        assert config.input_dim == dim == ours.shape[1]
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize("change, message", [
    (lambda a: a["kaldi"].update(feat_type="plp"), "kaldi.feat_type = 'plp'"),
    (lambda a: a["kaldi"].update(feat_type="__import__('os').system('x')"), "kaldi.feat_type"),
    (lambda a: a["kaldi"]["fbank"].update(num_mel_bins=10**9), "num_mel_bins = 1000000000 is outside 1..512"),
    (lambda a: a["kaldi"]["fbank"].update(frame_shift=12.5), "only a 10 ms shift"),
    (lambda a: a["kaldi"]["fbank"].update(dither=1.0), "dithering adds random noise"),
    (lambda a: a["kaldi"]["fbank"].update(evil=1), "kaldi.fbank.evil is not an option"),
    (lambda a: a["kaldi"]["fbank"].update(use_log_fbank="maybe"), "use_log_fbank = 'maybe' is not true or false"),
    (lambda a: a["kaldi"]["fbank"].update(window_type="povey; rm"), "window_type"),
    (lambda a: a.pop("cmvn"), "without 'cmvn'"),
    (lambda a: a["delta"].update(order=7), "delta.order = 7 is outside 0..3"),
    (lambda a: a["delta"].update(win_length=float("nan")), "delta.win_length"),
    (lambda a: a["kaldi"].pop("fbank"), "kaldi.fbank is missing"),
])
def test_bad_kaldi_blocks_are_one_line_errors(tmp_path, change, message):
    audio = copy.deepcopy(KALDI_FBANK)
    change(audio)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        KaldiFeatureConfig.from_s3prl(audio)
    assert "\n" not in str(info.value)


@needs_s3prl
def test_kaldi_block_must_fit_the_weights(tmp_path):
    path, _ = s3prl_checkpoint(tmp_path / "t.ckpt", **CASES["tera-fbank"])
    states = torch.load(path, weights_only=False)
    states["Upstream_Config"]["audio"]["delta"]["order"] = 1  # 160 features, the model reads 240
    torch.save(states, path)
    with pytest.raises(InputError, match="makes 160 input features per frame but the model reads 240"):
        load_model(path)


@needs_s3prl
def test_too_short_for_the_kaldi_front_end(tmp_path):
    path, _ = s3prl_checkpoint(tmp_path / "t.ckpt", **CASES["tera-fbank"])
    with pytest.raises(InputError, match="too short: 500 samples"):
        load_model(path).input_features(np.zeros(500, np.float32))


@needs_s3prl
@pytest.mark.parametrize("case", ["tera-fbank", "albert"])
def test_extract_and_metric_through_the_cli(tmp_path, satool_cli, case):
    path, config = s3prl_checkpoint(tmp_path / f"{case}.ckpt", **CASES[case])
    testing.make_librispeech(tmp_path / "LS", per_speaker=1)
    result = satool_cli("extract", path, tmp_path / "LS", "--out", tmp_path / "cache", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    result = satool_cli("metric", tmp_path / "cache", "--out", tmp_path / "metrics", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    result = satool_cli("metric", path, tmp_path / "LS", "--out", tmp_path / "direct", cwd=tmp_path)
    assert result.returncode == 0, result.stderr  # no cache: maps reduced as they are made
    from satool.cache import open_cache

    cache = open_cache(tmp_path / "cache")
    assert cache.attrs["model"]["type"] == FAMILY[case] and cache.complete
    assert (tmp_path / "metrics").exists()


@needs_s3prl
def test_bad_kaldi_block_through_the_cli_is_one_line(tmp_path, satool_cli):
    path, _ = s3prl_checkpoint(tmp_path / "t.ckpt", **CASES["tera-fbank"])
    states = torch.load(path, weights_only=False)
    states["Upstream_Config"]["audio"]["kaldi"]["feat_type"] = "__import__('os').system('touch PWNED')"
    torch.save(states, path)
    result = satool_cli("extract", path, tmp_path, "--out", tmp_path / "c", cwd=tmp_path)
    assert result.returncode == 3 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "kaldi.feat_type" in result.stderr and not (tmp_path / "PWNED").exists()


@needs_s3prl
def test_tera_without_its_audio_block_is_refused(tmp_path, satool_cli):
    """A TERA checkpoint trained on pre-extracted features (fMLLR) has no 'audio' block: satool refuses
    it rather than feeding it log-Mel."""
    path, _ = s3prl_checkpoint(tmp_path / "fmllr.ckpt", **CASES["tera-logmel"])
    states = torch.load(path, weights_only=False)
    del states["Upstream_Config"]["audio"]
    torch.save(states, path)
    testing.make_librispeech(tmp_path / "LS", per_speaker=1)
    result = satool_cli("extract", path, tmp_path / "LS", "--out", tmp_path / "cache", cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert "a tera checkpoint without its 'audio' block" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
