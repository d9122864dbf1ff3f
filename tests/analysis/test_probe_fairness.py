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

    lines = left_out_warnings([{"task": "speaker", "representation": "model", **frame.details}])
    assert lines == ["task speaker (model): 1 test utterance(s) left out because their speaker is not in the "
                     "training split"]


def test_convergence_rule():
    steps = np.arange(1000)
    assert converged(2.0 * np.exp(-steps / 100) + 1.0)["converged"] is True  # levelled off
    still = converged(2.0 - steps / 1000)
    assert still["converged"] is False and still["loss_change"] < -0.02
    assert converged(np.ones(20))["converged"] is None  # too short to judge


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
    kinds = [(r["representation"], r["task"]) for r in rows]
    assert kinds == [("model", "phone"), ("model", "speaker-utt"), ("model", "reconstruction"),
                     ("log-Mel", "phone"), ("log-Mel", "speaker-utt"), ("MFCC", "phone"), ("MFCC", "speaker-utt")]
    assert all("converged" in r for r in rows if r["task"] != "reconstruction")
