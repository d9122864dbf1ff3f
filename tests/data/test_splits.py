"""Splits as researchers have them: LibriSpeech names, families, no silent fall-back to every split,
and no test split in pre-training unless named."""

from __future__ import annotations

import pytest

from satool import testing
from satool.data.corpus import open_corpus
from satool.data.corpus.base import split_family
from satool.errors import UsageError
from satool.training.pretrain import training_splits


@pytest.fixture(scope="module")
def libri(tmp_path_factory):
    root = tmp_path_factory.mktemp("libri") / "LibriSpeech"
    for split, speakers in (("train-clean-100", ("19",)), ("train-other-500", ("26",)), ("dev-clean", ("27",)),
                            ("dev-other", ("32",)), ("test-clean", ("40",))):
        testing.make_librispeech(root, speakers=speakers, per_speaker=2, split=split, aligned=False)
    return open_corpus(root)


def test_families():
    assert [split_family(s) for s in ("train-clean-100", "dev-other", "test-clean", "TRAIN", "valid", "eval_92",
                                      "test-unseen", "all", "trainer")] == [
        "train", "dev", "test", "train", "dev", "test", "test", "all", "trainer"]


def test_names_and_families_resolve(libri):
    assert libri.resolve_splits("train") == {"train-clean-100", "train-other-500"}
    assert libri.resolve_splits("dev") == {"dev-clean", "dev-other"}
    assert libri.resolve_splits("dev-clean") == {"dev-clean"}
    assert {u.split for u in libri.select("test")} == {"test-clean"}
    with pytest.raises(UsageError, match=r"no split 'valid-x' \(splits: dev-clean, dev-other, test-clean, "
                                         r"train-clean-100, train-other-500; families: dev, test, train\)"):
        libri.select("valid-x")


def test_pretraining_never_reads_a_test_split_unless_named(libri):
    assert training_splits(libri, "train") == {"train-clean-100", "train-other-500"}
    assert training_splits(libri, "all") == {"train-clean-100", "train-other-500", "dev-clean", "dev-other"}
    assert training_splits(libri, "train,test-clean") == {"train-clean-100", "train-other-500", "test-clean"}
    with pytest.raises(UsageError, match="no split 'training'"):
        training_splits(libri, "training")  # never a silent fall-back to every split


def test_pretrain_cli_on_librispeech_names(libri, tmp_path, satool_cli):
    result = satool_cli("pretrain", libri.root, "--out", tmp_path / "m.ckpt", "--preset", "tiny", "--steps", "2",
                        "--batch-size", "2", "--heldout-utts", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    import torch

    training = torch.load(tmp_path / "m.ckpt", weights_only=True)["Satool"]["training"]
    assert training["split"] == ["train-clean-100", "train-other-500"]
    assert training["heldout"]["utterances"] == 2
    missing = satool_cli("pretrain", libri.root, "--out", tmp_path / "n.ckpt", "--split", "training", cwd=tmp_path)
    assert missing.returncode == 2 and "no split 'training'" in missing.stderr


def test_split_files_speaker_and_utterance_disjoint(libri, tmp_path, satool_cli):
    from satool.data.corpus.splitfile import divide, read

    utts = libri.select("train") + libri.select("dev")  # 4 speakers x 2 utterances
    by_speaker = divide(utts, "speaker", [0.5, 0.5], ["a", "b"], seed=0)
    speakers = {name: {u.speaker for u in utts if by_speaker[u.id] == name} for name in ("a", "b")}
    assert speakers["a"] and speakers["b"] and not speakers["a"] & speakers["b"]  # no shared speaker
    within = divide(utts, "utterance", [0.5, 0.5], ["a", "b"], seed=0)
    for speaker in {u.speaker for u in utts}:  # every speaker in both parts
        assert {within[u.id] for u in utts if u.speaker == speaker} == {"a", "b"}
    result = satool_cli("corpus", "split", libri.root, "--from", "train,dev", "--by", "utterance",
                        "--fractions", "0.5,0.5", "--out", tmp_path / "s.tsv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    written = read(tmp_path / "s.tsv")
    assert set(written) == {u.id for u in utts} and set(written.values()) == {"probe-train", "probe-test"}
    opened = open_corpus(libri.root, splits=tmp_path / "s.tsv")
    assert opened.splits == ["probe-test", "probe-train"] and len(opened.utterances) == 8
    assert any("left out" in note for note in opened.notes)  # the test-clean utterances


def test_bad_split_files(libri, tmp_path):
    from satool.errors import InputError

    path = tmp_path / "bad.tsv"
    for content, message in (("x y\n", "expected 'UTTERANCE<TAB>SPLIT'"), ("nope\ttrain\n", "not in"),
                             ("# only a comment\n", "no utterances listed")):
        path.write_text(content)
        with pytest.raises(InputError, match=message):
            open_corpus(libri.root, splits=path)
