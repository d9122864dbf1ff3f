"""`satool segment` end to end: feature sources, tuning on dev, testing on test, outputs, errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from satool import testing
from satool.stages import extract as extract_stage


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg")
    testing.make_librispeech(root / "LS", speakers=("1", "2"), per_speaker=3, split="dev", chapter_id="10")
    testing.make_librispeech(root / "LS", speakers=("1", "2"), per_speaker=3, split="test", chapter_id="20",
                             seed=5)
    ckpt = testing.make_checkpoint(root / "m.ckpt")
    extract_stage.run(extract_stage.Settings(checkpoint=ckpt, corpus=root / "LS", out=root / "cache",
                                             hidden_states=[0, 2]))
    return root / "cache"


def test_segment_sources_tuned_and_tested(cache, tmp_path, satool_cli):
    result = satool_cli("segment", cache, "--features", "mfcc,mel,attn:L1.H2,hidden:2", "--out", tmp_path / "seg",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "seg" / "segment_results.json").read_text())
    rows = {r["source"]: r for r in data["results"]}
    assert set(rows) >= {"mfcc", "mel", "attn:L1.H2", "hidden:2"}
    assert data["tolerance_s"] == 0.02 and "strictly inside the utterance" in data["boundary_convention"]
    for name in ("mfcc", "attn:L1.H2"):
        r = rows[name]
        assert r["tuned_on"] == "dev" and r["n_tune"] == 6 and r["n_test"] == 6 and r["alpha"] > 0
        assert 0 <= r["strict_r_value"] <= 1 and r["lenient_f1"] >= r["strict_f1"] - 1e-12
    baseline = next(r for name, r in rows.items() if name.startswith("evenly spaced"))
    # tones change abruptly at every phone: MFCC finds them far better than evenly spaced guesses
    assert rows["mfcc"]["strict_r_value"] > baseline["strict_r_value"] + 0.15
    for name in ("segment_results.csv", "pr_curve.csv", "pr_curve.png", "example_mfcc.png",
                 "example_attn_L1.H2.png", "example_hidden_2.png"):
        assert (tmp_path / "seg" / name).stat().st_size > 0
    curve = list(csv.DictReader(open(tmp_path / "seg" / "pr_curve.csv")))
    assert {r["mode"] for r in curve} == {"strict", "lenient"} and len(curve) == 4 * 24 * 2
    assert "R-value" in result.stdout and "lenient" in result.stdout


def test_fixed_parameters_and_all_heads(cache, tmp_path, satool_cli):
    result = satool_cli("segment", cache, "--features", "attn:2.1", "--alpha", "0.5", "--beta", "1.0",
                        "--all-heads", "--out", tmp_path / "seg", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    row = next(r for r in json.loads((tmp_path / "seg" / "segment_results.json").read_text())["results"]
               if r["source"] == "attn:L2.H1")  # the older 2.1 is read, heads are written L2.H1
    assert row["alpha"] == 0.5 and row["beta"] == 1.0 and row["tuned_on"] is None
    heads = list(csv.DictReader(open(tmp_path / "seg" / "heads_by_r_value.csv")))
    assert [r["rank"] for r in heads] == ["1", "2", "3", "4"]
    values = [float(r["strict_r_value"]) for r in heads]
    assert values == sorted(values, reverse=True)
    # two processes rank the heads exactly as one does
    result = satool_cli("segment", cache, "--features", "attn:2.1", "--alpha", "0.5", "--beta", "1.0",
                        "--all-heads", "--workers", "2", "--out", tmp_path / "seg2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "seg2" / "heads_by_r_value.csv").read_bytes() == \
        (tmp_path / "seg" / "heads_by_r_value.csv").read_bytes()


def test_errors(cache, tmp_path, satool_cli):
    bad = satool_cli("segment", cache, "--features", "hidden:1", "--out", tmp_path / "s", cwd=tmp_path)
    assert bad.returncode == 2 and "hidden state 1 was not stored (stored: [0, 2]" in bad.stderr
    bad = satool_cli("segment", cache, "--features", "attn:x", "--out", tmp_path / "s", cwd=tmp_path)
    assert bad.returncode == 2 and "use attn:L3.H7" in bad.stderr
    bad = satool_cli("segment", cache, "--tune-on", "train", "--out", tmp_path / "s", cwd=tmp_path)
    assert bad.returncode == 2 and "no split 'train' in this cache (it has dev, test); choose one with --tune-on" \
        in " ".join(bad.stderr.split())
    # every source is checked before any work: a missing hidden state after mfcc fails at once
    bad = satool_cli("segment", cache, "--features", "mfcc,hidden:11", "--out", tmp_path / "s", cwd=tmp_path)
    assert bad.returncode == 2 and "hidden state 11 was not stored" in bad.stderr and "segmenting" not in bad.stderr
    bad = satool_cli("segment", cache, "--features", "attn:L9.H1", "--out", tmp_path / "s", cwd=tmp_path)
    assert bad.returncode == 2 and "L9.H1 is not available: layers 1..2, heads 1..2" in bad.stderr


@pytest.mark.slow
def test_mfcc_beats_evenly_spaced_on_the_synthetic_corpus(tmp_path, satool_cli):
    pytest.importorskip("espeakng_loader", reason="the synthetic corpus needs satool[synth]")
    from satool.data.synth import synthesize_corpus

    synthesize_corpus(tmp_path / "synth", speakers=6, utterances_per_speaker=10, seed=1)
    extract_stage.run(extract_stage.Settings(checkpoint=testing.make_checkpoint(tmp_path / "m.ckpt"),
                                             corpus=tmp_path / "synth", out=tmp_path / "cache", split=["dev",
                                             "test"]))
    result = satool_cli("segment", tmp_path / "cache", "--features", "mfcc", "--out", tmp_path / "seg",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "seg" / "segment_results.json").read_text())["results"]
    mfcc = next(r for r in rows if r["source"] == "mfcc")
    baseline = next(r for r in rows if r["source"].startswith("evenly spaced"))
    assert mfcc["strict_r_value"] > baseline["strict_r_value"] + 0.15, (mfcc, baseline)
    assert np.isfinite(mfcc["strict_f1"]) and mfcc["n_test"] >= 12


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_nan_row_in_one_head_is_one_line_and_exit_3(cache, tmp_path, satool_cli, workers):
    """A head read on its own is checked row by row (a whole-utterance read samples every 4th row), in
    the ranking's worker processes too: a NaN in an unsampled row of one head stops the run."""
    import shutil

    import h5py

    from satool.cache import open_cache

    broken = tmp_path / "cache"
    shutil.copytree(cache, broken)
    first = open_cache(broken).utterance_ids[0]
    for shard in broken.glob("shard-*.h5"):
        with h5py.File(shard, "r+") as f:
            if f"utterances/{first}" in f:
                maps = f[f"utterances/{first}/attention"]
                values = maps[()]
                values[1, 0, 1, :] = np.nan  # L2.H1, query row 1: not among the rows a whole read samples
                maps[...] = values
    result = satool_cli("segment", broken, "--features", "attn:best", "--workers", workers, "--out",
                        tmp_path / "s", cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert result.stderr.strip().endswith(f"utterance {first!r}: attention has negative, NaN or infinite weights")
    assert len(result.stderr.strip().splitlines()) == 1
