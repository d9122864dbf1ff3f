"""Bad contents through the command line: the documented exit code, one line, and nothing written."""

from __future__ import annotations

import json

import numpy as np
import torch
from cachefiles import write

from satool import testing


def _one_line_error(result) -> str:
    errors = [line for line in result.stderr.splitlines() if line.startswith("satool: error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_config_asking_for_more_layers_than_the_weights(tmp_path, satool_cli):
    ckpt = testing.make_checkpoint(tmp_path / "m.ckpt")
    states = torch.load(ckpt, weights_only=True)
    states["Upstream_Config"]["transformer"]["num_hidden_layers"] = 100_000
    torch.save(states, ckpt)
    corpus = tmp_path / "LS"
    testing.make_librispeech(corpus, speakers=("19",), per_speaker=1)
    result = satool_cli("extract", ckpt, corpus, "--out", tmp_path / "cache", cwd=tmp_path, timeout=120)
    assert result.returncode == 3
    assert "describes 100000 layers" in _one_line_error(result)
    assert not (tmp_path / "cache").exists()


def test_metric_on_an_edited_cache_writes_nothing(tmp_path, satool_cli):
    write(tmp_path / "cache", ["a", "b"], np.random.default_rng(0))
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    manifest["frames_per_step"] = 1
    (tmp_path / "cache" / "manifest.json").write_text(json.dumps(manifest))
    result = satool_cli("metric", tmp_path / "cache", cwd=tmp_path)
    assert result.returncode == 3 and "another frame rate" in _one_line_error(result)
    assert not (tmp_path / "results").exists()


def test_nan_model_stops_extract_and_keeps_finished_work(tmp_path, satool_cli):
    from satool.models.mockingjay.checkpoint import load_checkpoint, save_checkpoint

    ckpt = testing.make_checkpoint(tmp_path / "m.ckpt", downsample=1)
    loaded = load_checkpoint(ckpt)
    with torch.no_grad():
        loaded.encoder.encoder.layer[0].attention.self.query.weight.fill_(1e30)
        loaded.encoder.encoder.layer[0].attention.self.key.weight.fill_(1e30)
    save_checkpoint(ckpt, loaded.encoder, audio=loaded.audio)
    corpus = tmp_path / "LS"
    testing.make_librispeech(corpus, speakers=("19",), per_speaker=2)
    result = satool_cli("extract", ckpt, corpus, "--out", tmp_path / "cache", cwd=tmp_path)
    assert result.returncode == 3 and "produced NaN or infinite attention weights" in _one_line_error(result)
    assert not list((tmp_path / "cache").glob("*.partial"))  # nothing half-written is left
