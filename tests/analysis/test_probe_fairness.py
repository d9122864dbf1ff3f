"""Fair probes: speaker-balanced subsets, unseen speakers left out alike in frame and utterance tasks,
input-feature rows, and the convergence check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from satool import testing
from satool.analysis.probing.tasks import (
    BUILTIN_TASKS,
    ProbeSettings,
    ProbeSplit,
    ProbeUtterance,
    converged,
)
from satool.data.corpus.base import Utterance, speaker_balanced


def _utts(counts: dict[str, int]) -> list[Utterance]:
    return [Utterance(f"{s}-{i}", "train", s, Path(f"{s}-{i}.flac")) for s, n in counts.items() for i in range(n)]


def test_speaker_balanced_takes_every_speaker_round_robin():
    utts = _utts({"a": 5, "b": 2, "c": 1, "d": 4})
    picked = speaker_balanced(utts, 6)
    assert {u.speaker for u in picked} == {"a", "b", "c", "d"}
    assert [u.id for u in picked] == ["a-0", "a-1", "b-0", "b-1", "c-0", "d-0"]  # input order kept
    assert [u.id for u in speaker_balanced(utts, 100)] == [u.id for u in utts]
    # the first-N rule it replaces would have seen one speaker only
    assert {u.speaker for u in utts[:5]} == {"a"}


def _split(speakers: list[str], frames: int = 30) -> ProbeSplit:
    rng = np.random.default_rng(len(speakers))
    utts = []
    for i, s in enumerate(speakers):
        hidden = rng.normal(size=(frames, 4)).astype(np.float32) + 3 * int(s[1:])
        utts.append(ProbeUtterance(f"{s}-{i}", s, hidden, 1, np.zeros(frames, np.int64)))
    return ProbeSplit(utts, ["x"])


def test_unseen_test_speakers_are_left_out_of_both_speaker_tasks():
    tasks = {t.name: t for t in BUILTIN_TASKS}
    train = _split(["s1", "s2", "s1", "s2"])
    test = _split(["s1", "s2", "s3"])  # s3 never seen in training
    settings = ProbeSettings(steps=60, batch_size=32)
    frame = tasks["speaker"].evaluate(train, test, settings=settings)
    utterance = tasks["speaker-utt"].evaluate(train, test, settings=settings)
    assert frame.details["test_utterances_left_out"] == 1 == utterance.details["test_utterances_left_out"]
    assert frame.n_test == 2 * 30 and utterance.n_test == 2  # only s1 and s2 are scored, in both tasks
    assert frame.details["classes"] == 2  # no class was made up for the unseen speaker
    from satool.analysis.probing.study import left_out_warnings
    from satool.results.probe import ProbeRow

    lines = left_out_warnings([ProbeRow("model", frame)])
    assert lines == ["task speaker (model): 1 test utterance(s) left out because their speaker is not in the "
                     "training split"]


def test_convergence_rule():
    falling_then_flat = np.r_[np.linspace(0.5, 0.2, 10), np.full(8, 0.2)]
    rising = np.linspace(1.0, 2.0, 18)  # the held-out loss of an over-confident probe
    assert converged(falling_then_flat, rising, patience=8)["converged"] is True  # 8 measurements, nothing better
    assert converged(falling_then_flat[:-1], rising[:-1], patience=8)["converged"] is False  # 7: not yet
    still = converged(np.linspace(0.5, 0.2, 20), rising[:1].repeat(20), patience=8)
    assert still["converged"] is False and still["loss_change"] < 0  # the error still falls
    stuck_error = np.full(20, 0.5)  # a slow probe: error at chance, loss still falling
    assert converged(stuck_error, np.linspace(0.7, 0.6, 20), patience=8)["converged"] is False
    tiny = np.r_[0.3, np.full(8, 0.2999)]  # 0.03 % is no improvement
    assert converged(tiny, tiny, patience=8)["converged"] is True
    assert converged(np.full(5, 0.2), np.full(5, 0.2), patience=8)["converged"] is None  # too short to judge


def test_validation_holds_out_whole_utterances():
    from satool.analysis.probing.tasks import validation_split

    groups = np.repeat(np.arange(20), 30)  # 20 utterances of 30 frames
    fit, held = validation_split(len(groups), groups, 0.1, seed=0)
    assert len(np.unique(groups[held])) == 2 and not set(groups[held]) & set(groups[fit])
    assert sorted(np.r_[fit, held]) == list(range(len(groups)))
    assert len(validation_split(100, None, 0.1, seed=0)[1]) == 10  # no groups: rows
    assert len(validation_split(10, None, 0.1, seed=0)[1]) == 0  # too few to hold any out


def test_probes_stop_early_and_say_whether_they_converged():
    from satool.analysis.probing.tasks import train_and_score_classifier

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 20)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    noise = rng.integers(0, 2, size=2000)  # labels a probe can only memorise
    groups = np.repeat(np.arange(100), 20)
    settings = ProbeSettings(steps=8000, batch_size=64, hidden_units=256)
    report: dict = {}
    accuracy, _ = train_and_score_classifier(x, noise, x[:500], noise[:500], 2, kind="mlp", seed=0,
                                             settings=settings, report=report, groups=groups)
    assert report["converged"] is True and report["steps_run"] < 8000  # stopped: held-out error never improved
    assert report["steps_run"] == report["best_step"] + settings.patience * settings.eval_every
    report = {}
    accuracy, _ = train_and_score_classifier(x, y, x[:500], y[:500], 2, kind="linear", seed=0,
                                             settings=ProbeSettings(steps=1000, learning_rate=1e-5, batch_size=64, patience=3),
                                             report=report, groups=groups)
    assert report["converged"] is False and report["steps_run"] == 1000  # still improving when the steps ran out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("fair") / "LS"
    testing.make_librispeech(root, speakers=("19", "26"), per_speaker=2, split="train")
    from satool.data.corpus import open_corpus

    return open_corpus(root)


def test_input_feature_splits(corpus):
    from satool.analysis.probing.passes import input_feature_split

    utts = corpus.select("train")
    mel = input_feature_split(corpus, utts, "log-Mel")
    mfcc = input_feature_split(corpus, utts, "MFCC")
    for split, dim in ((mel, 80), (mfcc, 39)):
        assert len(split.utterances) == len(utts)
        for u in split.utterances:
            assert u.hidden.shape[1] == dim and u.downsample == 1
            assert len(u.frame_labels) == len(u.hidden)  # 10 ms frames, one label each
    # CMVN: every coefficient has zero mean over the utterance
    assert np.abs(mel.utterances[0].hidden.mean(axis=0)).max() < 1e-3
    # so the utterance-level vector is the mean and std of the features before CMVN
    from satool.data.features import mfcc as mfcc_features

    wave = corpus.load(utts[0]).wave
    raw = np.asarray(mfcc_features(wave, cmvn=False), np.float64)
    expected = np.concatenate([raw.mean(axis=0), raw.std(axis=0)])
    np.testing.assert_allclose(mfcc.utterances[0].pooled(), expected, rtol=1e-5, atol=1e-5)
    assert mel.utterances[0].pooled().shape == (160,)
    assert np.ptp([u.pooled()[:80].mean() for u in mel.utterances]) > 0.1  # utterances differ
    with pytest.raises(ValueError):
        input_feature_split(corpus, utts, "wav2vec")


def test_probe_rows_have_model_and_input_feature_rows(corpus):
    from satool.analysis.probing.study import probe_rows
    from satool.models.loading import load_model
    from satool.training.pretrain import PretrainSettings, pretrain

    tmp = Path(corpus.root).parent
    ckpt = pretrain(corpus.root, tmp / "m.ckpt", PretrainSettings(preset="tiny", steps=2, batch_size=2,
                                                                 heldout_split=None, max_steps_per_utterance=40)
                    ).checkpoint
    model = load_model(ckpt)
    tasks = [t for t in BUILTIN_TASKS if t.name in ("phone", "speaker-utt", "reconstruction")]
    rows, skipped = probe_rows(model, corpus, corpus.select("train"), corpus.select("train"), tasks,
                               settings=ProbeSettings(steps=20))
    assert skipped == []
    kinds = [(r.representation, r.task) for r in rows]
    assert kinds == [("model", "phone"), ("model", "speaker-utt"), ("model", "reconstruction"),
                     ("log-Mel", "phone"), ("log-Mel", "speaker-utt"), ("MFCC", "phone"), ("MFCC", "speaker-utt")]
    assert all("converged" in r.score.details for r in rows if r.task != "reconstruction")


def test_utterance_level_input_features_carry_the_speaker(tmp_path):
    """Per-utterance CMVN makes every utterance's mean frame zero; the input-feature rows of the
    utterance task must pool the features before it, or they sit at chance by construction."""
    import soundfile

    from satool.analysis.probing.passes import input_feature_split
    from satool.data.corpus import open_corpus

    rng = np.random.default_rng(0)
    for split, first, count in (("train-clean-100", 0, 6), ("test-clean", 100, 3)):
        for speaker, smoothing in (("19", 1), ("26", 8)):  # white vs low-passed noise: two "voices"
            chapter = tmp_path / "LS" / split / speaker / "198"
            chapter.mkdir(parents=True)
            lines = []
            for n in range(first, first + count):
                noise = np.convolve(rng.normal(size=8000), np.ones(smoothing) / smoothing, mode="same")
                soundfile.write(chapter / f"{speaker}-198-{n:04d}.flac", 0.1 * noise / noise.std(), 16000)
                lines.append(f"{speaker}-198-{n:04d} NOISE")
            (chapter / f"{speaker}-198.trans.txt").write_text("\n".join(lines) + "\n")
    corpus = open_corpus(tmp_path / "LS")
    task = next(t for t in BUILTIN_TASKS if t.name == "speaker-utt")
    settings = ProbeSettings(steps=200, batch_size=16)
    for kind in ("log-Mel", "MFCC"):
        train, test = (input_feature_split(corpus, corpus.select(s), kind) for s in ("train", "test"))
        score = task.evaluate(train, test, settings=settings)
        assert (score.n_train, score.n_test, score.chance) == (12, 6, 0.5)
        assert score.score == 1.0, kind
