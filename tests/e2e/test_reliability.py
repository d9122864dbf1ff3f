"""Faults, bad input and untrusted files, end to end through the command line (docs/reliability.md).

Complements the unit-level tests in test_cache.py, test_extract.py, test_corpus.py,
test_alignment.py, test_safe_pickle.py, test_checkpoint.py and test_plugins.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile
import torch

from satool import testing
from satool.errors import EXIT_ENVIRONMENT, EXIT_INPUT, EXIT_INTERRUPTED, EXIT_UNSAFE


def _cmd(*args):
    return [sys.executable, "-m", "satool", *map(str, args)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("rel") / "LS"
    speakers = tuple(str(10 + i) for i in range(6))
    testing.make_librispeech(root, speakers=speakers, per_speaker=4, split="train")
    return root


# --------------------------------------------------------------------------- interruption

PRETRAIN = ("pretrain", "--preset", "tiny", "--steps", "80", "--save-every", "5", "--batch-size", "4",
            "--max-steps-per-utterance", "40", "--device", "cpu")


@pytest.mark.slow
def test_pretrain_sigkill_at_random_moments_then_resume_is_identical(corpus, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    began = time.perf_counter()
    reference = subprocess.run(_cmd(*PRETRAIN, corpus, "--out", tmp_path / "ref.ckpt"), env=env, cwd=tmp_path,
                               capture_output=True, text=True, timeout=600)
    duration = time.perf_counter() - began  # start-up included: kills land anywhere from start-up to the end
    assert reference.returncode == 0, reference.stderr

    def whole_checkpoint_only():  # always a whole, loadable checkpoint
        if (tmp_path / "run.ckpt").exists():
            torch.load(tmp_path / "run.ckpt", weights_only=True)

    kills = testing.kill_at_random_moments(_cmd(*PRETRAIN, corpus, "--out", tmp_path / "run.ckpt"), duration,
                                           seed=1, window=(0.3, 0.9), after_kill=whole_checkpoint_only,
                                           env=env, cwd=tmp_path)
    assert kills >= 2, "pre-training finished too fast to be interrupted"
    final = subprocess.run(_cmd(*PRETRAIN, corpus, "--out", tmp_path / "run.ckpt"), env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr
    a = torch.load(tmp_path / "ref.ckpt", weights_only=True)
    b = torch.load(tmp_path / "run.ckpt", weights_only=True)
    for part in ("Transformer", "SpecHead"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), key
    assert not list(tmp_path.glob(".run.ckpt.*.tmp"))


def _interrupt(args, cwd, ready, timeout: float = 180):
    """Start a satool command, send SIGINT once ``ready()`` is true, return (exit code, stderr).

    The child gets the default SIGINT disposition: a test run started in the background by a shell
    without job control inherits SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    proc = subprocess.Popen(_cmd(*args), cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "200"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + timeout
    while not ready() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the command ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


@pytest.mark.slow
def test_ctrl_c_exits_130_with_a_message_and_the_rerun_resumes(corpus, tmp_path):
    args = ("pretrain", "--preset", "tiny", "--steps", "4000", "--save-every", "10", "--batch-size", "4",
            corpus, "--out", tmp_path / "m.ckpt")
    code, err = _interrupt(args, tmp_path, lambda: (tmp_path / "m.ckpt").exists())
    assert code == EXIT_INTERRUPTED, err[-2000:]
    assert err.strip().splitlines()[-1] == "satool: error: interrupted; finished work is kept and a rerun resumes"
    assert torch.load(tmp_path / "m.ckpt", weights_only=True)["Step"] >= 10
    ckpt = testing.make_checkpoint(tmp_path / "x.ckpt", preset="demo")
    big = tmp_path / "big"
    testing.make_librispeech(big, speakers=tuple(str(i) for i in range(1, 51)), per_speaker=6)
    code, err = _interrupt(("extract", ckpt, big, "--out", tmp_path / "cache", "--flush-every", "0"), tmp_path,
                           lambda: len(list((tmp_path / "cache").glob("shard-*.h5"))) >= 2)
    assert code == EXIT_INTERRUPTED, err[-2000:]
    assert err.strip().splitlines()[-1] == "satool: error: interrupted; finished work is kept and a rerun resumes"
    from satool.cache import open_cache

    partial = open_cache(tmp_path / "cache")
    assert 0 < len(partial.utterance_ids) < 300 and not list((tmp_path / "cache").glob("*.partial"))
    done = subprocess.run(_cmd("extract", ckpt, big, "--out", tmp_path / "cache"), cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and open_cache(tmp_path / "cache").complete


# --------------------------------------------------------------------------- disk errors


@contextlib.contextmanager
def tmpfs(path, size: str, readonly: bool = False):
    """A real tiny (or read-only) file system, where the machine lets us mount one."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if readonly else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root); simulated disk errors are tested in test_cache.py")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_full_disk_while_extracting_keeps_finished_work(corpus, tmp_path):
    ckpt = testing.make_checkpoint(tmp_path / "m.ckpt", preset="demo")
    with tmpfs(tmp_path / "small", "10m") as small:
        result = subprocess.run(_cmd("extract", ckpt, corpus, "--out", small / "c", "--compression", "none",
                                     "--flush-every", "0"), capture_output=True, text=True, timeout=600)
        assert result.returncode == EXIT_ENVIRONMENT, result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith(f"satool: error: {small / 'c'}: not enough free disk space for the cache")
        from satool.cache import open_cache

        cache = open_cache(small / "c")
        assert cache.utterance_ids and not cache.complete  # whole utterances only
        for utt in cache.utterance_ids:
            cache.attention(utt)
        assert not list((small / "c").glob("*.partial"))


def test_full_disk_while_saving_a_checkpoint_keeps_the_old_one(corpus, tmp_path):
    with tmpfs(tmp_path / "small", "1m") as small:
        from satool.errors import EnvironmentProblem
        from satool.models.mockingjay.checkpoint import atomic_save

        atomic_save({"x": torch.arange(10)}, small / "m.ckpt")
        with pytest.raises(EnvironmentProblem, match=r"m.ckpt: cannot write checkpoint: the write failed .* "
                                                     r"\(disk full\?\)"):
            atomic_save({"x": torch.zeros(2_000_000)}, small / "m.ckpt")
        assert torch.equal(torch.load(small / "m.ckpt", weights_only=True)["x"], torch.arange(10))
        assert os.listdir(small) == ["m.ckpt"]


def test_read_only_output(corpus, tmp_path):
    ckpt = testing.make_checkpoint(tmp_path / "m.ckpt")
    with tmpfs(tmp_path / "ro", "1m", readonly=True) as ro:
        result = subprocess.run(_cmd("extract", ckpt, corpus, "--out", ro / "c"), capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == EXIT_ENVIRONMENT
        assert result.stderr.strip().splitlines()[-1] == \
            f"satool: error: {ro / 'c'}: cannot write the cache (Read-only file system)"
        result = subprocess.run(_cmd(*PRETRAIN, corpus, "--out", ro / "m.ckpt"), capture_output=True, text=True,
                                timeout=300, cwd=tmp_path)
        assert result.returncode == EXIT_ENVIRONMENT
        assert "m.ckpt: cannot write checkpoint: Read-only file system" in result.stderr


# --------------------------------------------------------------------------- bad audio, long audio


def test_a_60_second_utterance_is_truncated_and_memory_stays_bounded(tmp_path, satool_cli):
    root = tmp_path / "long"
    (root / "spk").mkdir(parents=True)
    rng = np.random.default_rng(0)
    soundfile.write(root / "spk" / "long.flac", (rng.normal(0, 0.1, 60 * 16000)).astype(np.float32), 16000)
    ckpt = testing.make_checkpoint(tmp_path / "m.ckpt")
    script = (
        "import resource, sys\n"
        "from satool.stages import extract as extract_stage\n"
        "extract_stage.run(extract_stage.Settings(checkpoint=sys.argv[1], corpus=sys.argv[2], out=sys.argv[3],\n"
        "                                         max_frames=int(sys.argv[4])))\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    peaks = {}
    for frames in (300, 3000):
        out = subprocess.run([sys.executable, "-c", script, str(ckpt), str(root), str(tmp_path / f"c{frames}"),
                              str(frames)], capture_output=True, text=True, check=True)
        peaks[frames] = int(out.stdout.split()[-1]) / 1024
        from satool.cache import open_cache

        cache = open_cache(tmp_path / f"c{frames}")
        meta = cache.meta("long")
        assert meta["n_frames"] == frames and meta["n_steps"] == frames // 3
    assert peaks[3000] < peaks[300] + 200, peaks  # MB: grows with --max-frames, not with the 60 s file


def test_eight_and_44k_audio_are_resampled_and_stereo_mixed(tmp_path, satool_cli):
    root = tmp_path / "rates"
    (root / "a").mkdir(parents=True)
    t8, t44 = np.arange(8000) / 8000, np.arange(44100) / 44100
    soundfile.write(root / "a" / "x8k.wav", (0.3 * np.sin(2 * np.pi * 300 * t8)).astype(np.float32), 8000)
    stereo = np.stack([np.sin(2 * np.pi * 300 * t44)] * 2, axis=1) * 0.3
    soundfile.write(root / "a" / "x44k.wav", stereo.astype(np.float32), 44100)
    result = satool_cli("corpus", "check", root, "--json")
    assert result.returncode == 0 and '"good": 2' in result.stdout


# --------------------------------------------------------------------------- untrusted checkpoints


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_checkpoint_through_the_cli_runs_nothing(corpus, tmp_path, satool_cli):
    marker = tmp_path / "PWNED"
    torch.save({"Transformer": {"w": torch.zeros(2)}, "Config": {"nested": [Evil(marker)]}}, tmp_path / "evil.ckpt")
    for stage in (("extract", tmp_path / "evil.ckpt", corpus, "--out", tmp_path / "c"),
                  ("probe", tmp_path / "evil.ckpt", corpus, "--train-split", "train", "--test-split", "train"),
                  ("metric", tmp_path / "evil.ckpt", corpus)):
        result = satool_cli(*stage, cwd=tmp_path)
        assert result.returncode == EXIT_UNSAFE, result.stderr
        assert "refused to load: the file asks to call os.system" in result.stderr
        assert len(result.stderr.strip().splitlines()) <= 2  # (a progress line at most) + one error line
    assert not marker.exists()


def test_truncated_and_wrong_shape_checkpoints(corpus, tmp_path, satool_cli):
    good = testing.make_checkpoint(tmp_path / "good.ckpt")
    data = good.read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    result = satool_cli("extract", tmp_path / "cut.ckpt", corpus, "--out", tmp_path / "c1")
    assert result.returncode == EXIT_INPUT and "cut.ckpt" in result.stderr
    states = torch.load(good, weights_only=True)
    key = "encoder.layer.1.attention.self.query.weight"
    states["Transformer"][key] = torch.zeros(5, 7)
    torch.save(states, tmp_path / "shape.ckpt")
    result = satool_cli("extract", tmp_path / "shape.ckpt", corpus, "--out", tmp_path / "c2")
    assert result.returncode == EXIT_INPUT and key in result.stderr and "[5, 7]" in result.stderr


# --------------------------------------------------------------------------- partial caches


@pytest.mark.parametrize("stage", [("relate",), ("segment", "--test-on", "train"), ("metric",)])
def test_partial_cache_is_never_used_silently(tmp_path, satool_cli, stage):
    from satool.cache import CacheWriter

    manifest = {"model": {}, "layers": [1], "heads": [1], "hidden_states": [], "settings": {},
                "planned": ["a", "b", "c"], "frames_per_step": 1, "corpus": {"phone_set": ["sil", "AA"]}}
    with CacheWriter(tmp_path / "c", manifest) as writer:
        writer.add("a", attention=np.full((1, 1, 3, 3), 1 / 3, np.float32),
                   meta={"n_steps": 3, "split": "train", "frame_labels": np.array([0, 1, 1], np.int16),
                         "boundaries": np.array([0.01])})
    result = satool_cli(stage[0], tmp_path / "c", *stage[1:], "--out", tmp_path / "r", cwd=tmp_path)
    assert result.returncode == EXIT_INPUT
    assert "2 of 3 planned utterances are missing (extraction unfinished? e.g. b, c)" in result.stderr
