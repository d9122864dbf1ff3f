"""`satool extract`: content, options, crash safety (SIGKILL), locking, sharding, torchrun."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from satool import testing
from satool.cache import open_cache
from satool.errors import EXIT_BUSY
from satool.stages import extract as extract_stage


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("extract")
    testing.make_librispeech(root / "LS", speakers=("19", "26", "27"), per_speaker=4, split="dev-clean")
    testing.make_librispeech(root / "LS", speakers=("19", "26"), per_speaker=2, split="test-clean", seed=7,
                             chapter_id="200")
    ckpt = testing.make_checkpoint(root / "ckpt.pt")
    return root, ckpt


def _same_cache(a, b):
    ca, cb = open_cache(a), open_cache(b)
    assert ca.utterance_ids == cb.utterance_ids and ca.complete and cb.complete
    for utt in ca.utterance_ids:
        np.testing.assert_array_equal(ca.attention(utt), cb.attention(utt))
        ma, mb = ca.meta(utt), cb.meta(utt)
        assert ma["n_steps"] == mb["n_steps"] and ma["speaker"] == mb["speaker"]
        np.testing.assert_array_equal(ma["frame_labels"], mb["frame_labels"])


def test_cache_content_matches_the_model(setup, tmp_path):
    root, ckpt = setup
    summary = extract_stage.run(extract_stage.Settings(checkpoint=ckpt, corpus=root / "LS", out=tmp_path / "c",
                                                       hidden_states=[0, 2]))
    assert summary.written == 16 and not summary.skipped
    cache = open_cache(tmp_path / "c")
    assert cache.complete and len(cache.utterance_ids) == 16
    assert cache.attrs["model"]["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert cache.attrs["frames_per_step"] == 3 and cache.attrs["axes"]["attention"] == "[layer, head, query, key]"
    assert cache.attrs["model"]["features"]["n_mels"] == 80
    from satool.data.corpus import open_corpus
    from satool.models.loading import load_model

    model, corpus = load_model(ckpt), open_corpus(root / "LS")
    utt = corpus.utterances[5]
    loaded = corpus.load(utt)
    encoded = model.encode([model.input_features(loaded.wave)], want_hidden=True)[0]
    np.testing.assert_allclose(cache.attention(utt.id), encoded.attentions.numpy(), atol=1e-3)
    np.testing.assert_allclose(cache.hidden(utt.id), encoded.hidden_states[[0, 2]].numpy(), atol=2e-2, rtol=1e-2)
    meta = cache.meta(utt.id)
    assert meta["n_steps"] == loaded.n_frames // 3 == encoded.n_steps
    assert meta["speaker"] == utt.speaker and meta["split"] == utt.split
    np.testing.assert_array_equal(meta["frame_labels"], loaded.frame_labels)
    np.testing.assert_allclose(meta["boundaries"], loaded.boundaries)
    rows = cache.attention(utt.id).sum(-1)
    np.testing.assert_allclose(rows, 1, atol=2e-3)


def test_selection_options(setup, tmp_path):
    root, ckpt = setup
    extract_stage.run(extract_stage.Settings(checkpoint=ckpt, corpus=root / "LS", out=tmp_path / "c", layers=[2],
                                             heads=[2], split="test-clean", max_utts=3, max_frames=40))
    cache = open_cache(tmp_path / "c")
    assert cache.layers == [2] and cache.heads == [2] and len(cache.utterance_ids) == 3
    for utt in cache.utterance_ids:
        meta = cache.meta(utt)
        assert meta["split"] == "test-clean" and meta["n_frames"] == 40 and meta["n_steps"] == 13
        assert cache.attention(utt).shape == (1, 1, 13, 13)
        assert len(meta["frame_labels"]) == 40 and (meta["boundaries"] < 0.4).all()


def test_cli_exactly_ckpt_and_corpus(setup, tmp_path, satool_cli):
    root, ckpt = setup
    result = satool_cli("extract", ckpt, root / "LS", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert open_cache(tmp_path / "attention-cache").complete
    assert 'cache = "attention-cache"' in (tmp_path / "satool.toml").read_text()
    again = satool_cli("extract", ckpt, root / "LS", cwd=tmp_path)
    assert "0 utterances written, 16 already there" in " ".join(again.stderr.split())


def test_bad_utterances_are_skipped_and_listed(setup, tmp_path, satool_cli):
    import shutil

    root, ckpt = setup
    corpus = tmp_path / "LS"
    shutil.copytree(root / "LS", corpus)
    bad = next(corpus.rglob("26-198-0001.flac"))
    bad.write_bytes(b"not audio")
    result = satool_cli("extract", ckpt, corpus, "--out", tmp_path / "c", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "skipped 26-198-0001:" in result.stderr and "not readable audio" in result.stderr
    cache = open_cache(tmp_path / "c")
    assert cache.complete and "26-198-0001" in cache.skipped and len(cache.utterance_ids) == 15
    strict = satool_cli("extract", ckpt, corpus, "--out", tmp_path / "c2", "--strict", cwd=tmp_path)
    assert strict.returncode == 3 and "26-198-0001.flac: not readable audio" in strict.stderr


def _slow_corpus(root, n=24):
    testing.make_librispeech(root, speakers=tuple(str(100 + i) for i in range(n // 4)), per_speaker=4,
                             split="dev-clean")
    return root


def _extract_cmd(ckpt, corpus, out, *extra):
    return [sys.executable, "-m", "satool", "extract", str(ckpt), str(corpus), "--out", str(out),
            "--flush-every", "0", "--device", "cpu", *extra]


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_equals_uninterrupted(tmp_path):
    corpus = _slow_corpus(tmp_path / "LS")
    ckpt = testing.make_checkpoint(tmp_path / "ckpt.pt", preset="demo")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    began = time.perf_counter()
    reference = subprocess.run(_extract_cmd(ckpt, corpus, tmp_path / "ref"), env=env, cwd=tmp_path, capture_output=True,
                               text=True, timeout=600)
    duration = time.perf_counter() - began
    assert reference.returncode == 0, reference.stderr

    def whole_utterances_only():  # after every kill the cache is readable and holds only whole utterances
        if (tmp_path / "c" / "manifest.json").exists():
            partial = open_cache(tmp_path / "c")
            for utt in partial.utterance_ids:
                assert partial.attention(utt).shape[-1] == partial.meta(utt)["n_steps"]

    kills = testing.kill_at_random_moments(_extract_cmd(ckpt, corpus, tmp_path / "c"), duration, seed=0,
                                           window=(0.4, 0.9), after_kill=whole_utterances_only, env=env,
                                           cwd=tmp_path)
    assert kills >= 2, "extraction finished too fast to be interrupted"
    final = subprocess.run(_extract_cmd(ckpt, corpus, tmp_path / "c"), env=env, cwd=tmp_path, capture_output=True,
                           text=True, timeout=600)
    assert final.returncode == 0, final.stderr
    _same_cache(tmp_path / "ref", tmp_path / "c")
    assert not list((tmp_path / "c").glob("*.partial"))


SLOW_WRITER = """
import sys, time
from satool.stages import extract as extract_stage
class Slow:
    def total(self, total, done=None):
        print("progress", done, flush=True)
        time.sleep(0.4)   # a slow extraction: the test has time to start a second writer
extract_stage.run(extract_stage.Settings(checkpoint=sys.argv[1], corpus=sys.argv[2], out=sys.argv[3], flush_every=0),
                  Slow())
"""


def test_second_writer_is_refused_while_first_runs(setup, tmp_path):
    root, ckpt = setup
    first = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(ckpt), str(root / "LS"), str(tmp_path / "c")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert first.stdout.readline().startswith("progress")  # it holds the lock now
    second = subprocess.run(_extract_cmd(ckpt, root / "LS", tmp_path / "c"), capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    first_still_running = first.poll() is None
    out, err = first.communicate(timeout=600)
    assert first_still_running, "the first extraction ended before the second started"
    assert second.returncode == EXIT_BUSY
    assert second.stderr.strip().splitlines()[-1] == (
        f"satool: error: {tmp_path / 'c'}: another satool process is writing this cache (lock held); "
        "wait for it or use another --out"
    )
    assert first.returncode == 0, err
    assert open_cache(tmp_path / "c").complete  # the refused writer corrupted nothing
    assert len(open_cache(tmp_path / "c").utterance_ids) == 16


def test_shards_i_of_n_make_the_same_cache(setup, tmp_path):
    root, ckpt = setup
    extract_stage.run(extract_stage.Settings(checkpoint=ckpt, corpus=root / "LS", out=tmp_path / "one"))
    for i in range(2):
        extract_stage.run(extract_stage.Settings(checkpoint=ckpt, corpus=root / "LS", out=tmp_path / "two",
                                                 shard=(i, 2)))
    _same_cache(tmp_path / "one", tmp_path / "two")
    names = sorted(p.name[:10] for p in (tmp_path / "two").glob("shard-*.h5"))
    assert names[0] == "shard-r000" and names[-1] == "shard-r001"


@pytest.mark.slow
def test_torchrun_two_processes_make_the_same_cache(setup, tmp_path):
    root, ckpt = setup
    extract_stage.run(extract_stage.Settings(checkpoint=ckpt, corpus=root / "LS", out=tmp_path / "one"))
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29519",
         "-m", "satool", "extract", str(ckpt), str(root / "LS"), "--out", str(tmp_path / "two"),
         "--device", "cpu"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    _same_cache(tmp_path / "one", tmp_path / "two")
