"""`satool extract --maps value-norm`, `satool metric` and `satool view` on every model family, through
the command line (issue 28: "metric --maps value-norm and view with norms work on every family")."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import json  # noqa: E402

import pytest  # noqa: E402

from satool import testing  # noqa: E402


def _model(family: str, root):
    if family == "mockingjay":
        return testing.make_checkpoint(root / "m.ckpt")
    if family in ("tera", "audio_albert"):
        tera = pytest.importorskip("test_tera_albert")
        if tera.S3PRL_MISSING:
            pytest.skip(tera.S3PRL_MISSING)
        return tera.s3prl_checkpoint(root / f"{family}.ckpt", **tera.CASES["tera-logmel" if family == "tera"
                                                                           else "albert"])[0]
    if family == "distiller":
        distiller = pytest.importorskip("test_distiller")
        if distiller.S3PRL_MISSING:
            pytest.skip(distiller.S3PRL_MISSING)
        return distiller.s3prl_checkpoint(root / "d.ckpt")
    pytest.importorskip("transformers")
    if family == "whisper":
        from test_whisper import build

        return build(root / "whisper")
    if family == "data2vec-audio":
        from test_data2vec_audio import build

        return build(root / "d2v")
    from test_hf_models import build

    return build(root, family)


FAMILIES = ["mockingjay", "tera", "audio_albert", "wav2vec2", "hubert", "wavlm", "data2vec-audio", "whisper",
            "distiller"]


@pytest.mark.parametrize("family", FAMILIES)
def test_value_norm_cache_metric_and_view(family, tmp_path, satool_cli):
    model = _model(family, tmp_path)
    ids = testing.make_librispeech(tmp_path / "LS", speakers=("1",), per_speaker=2)
    result = satool_cli("extract", model, tmp_path / "LS", "--out", tmp_path / "cache", "--maps", "value-norm",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "(value-norm maps)" in result.stderr + result.stdout
    result = satool_cli("metric", tmp_path / "cache", "--maps", "value-norm", "--out", tmp_path / "metrics",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "maps: value-norm" in result.stdout
    assert json.loads((tmp_path / "metrics" / "metrics.json").read_text())["source"]["maps"] == "value-norm"
    result = satool_cli("view", tmp_path / "cache", "--metrics", tmp_path / "metrics", "--export",
                        tmp_path / "view.html", "--utts", ids[0], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert '"maps": "value-norm"' in (tmp_path / "view.html").read_text()


def test_from_a_checkpoint_beside_raw_weights_and_a_wrong_kind(tmp_path, satool_cli):
    model = testing.make_checkpoint(tmp_path / "m.ckpt")
    testing.make_librispeech(tmp_path / "LS", speakers=("1",), per_speaker=2)
    result = satool_cli("metric", model, tmp_path / "LS", "--out", tmp_path / "raw", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    result = satool_cli("metric", model, tmp_path / "LS", "--maps", "value-norm", "--beside", tmp_path / "raw",
                        "--out", tmp_path / "norms", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "value-norm maps beside attention maps" in result.stdout and "change category" in result.stdout
    assert (tmp_path / "norms" / "maps_side_by_side.csv").is_file()
    result = satool_cli("extract", model, tmp_path / "LS", "--out", tmp_path / "cache", "--maps", "rollout",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    result = satool_cli("metric", tmp_path / "cache", "--maps", "value-norm", cwd=tmp_path)
    assert result.returncode == 2 and "holds rollout maps, not value-norm" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = satool_cli("view", tmp_path / "cache", "--maps", "value-norm", "--export", tmp_path / "v.html",
                        "--utts", "x", cwd=tmp_path)
    assert result.returncode == 2 and "holds rollout maps, not value-norm" in result.stderr
