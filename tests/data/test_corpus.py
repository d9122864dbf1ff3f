"""Corpus readers, detection, `satool corpus info`, bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile

from satool import testing
from satool.data.corpus import detect_layout, open_corpus
from satool.data.phones import ARPABET_SET, IGNORE, TIMIT39_SET
from satool.errors import InputError, UsageError


def test_phone_sets():
    assert len(TIMIT39_SET) == 39 and "sil" in TIMIT39_SET.names and "dx" in TIMIT39_SET.names
    assert len(ARPABET_SET) == 40
    assert TIMIT39_SET.fold("ao") == "aa" and TIMIT39_SET.fold("bcl") == "sil" and TIMIT39_SET.fold("zh") == "sh"
    assert TIMIT39_SET.index("q") == IGNORE
    assert ARPABET_SET.fold("OW1") == "OW" and ARPABET_SET.fold("") == "sil" and ARPABET_SET.fold("spn") is None  # spoken noise: ignored, not silence
    with pytest.raises(InputError, match=r"x.TextGrid: phone 'XX1' is not in the arpabet phone set"):
        ARPABET_SET.fold("XX1", source="x.TextGrid")


def test_librispeech_with_textgrids_beside(tmp_path):
    ids = testing.make_librispeech(tmp_path / "LibriSpeech", speakers=("19", "26"), per_speaker=2)
    layout, scores = detect_layout(tmp_path / "LibriSpeech")
    assert layout == "librispeech" and scores["audio-dir"] < scores["librispeech"]
    corpus = open_corpus(tmp_path / "LibriSpeech")
    assert [u.id for u in corpus.utterances] == ids
    assert corpus.splits == ["dev-clean"]
    utt = corpus.utterances[0]
    assert utt.speaker == "19" and utt.transcript == "HELLO WORLD"
    loaded = corpus.load(utt)
    assert loaded.n_frames == 1 + len(loaded.wave) // 160
    # labels at frame centres: frame 0 (t=0) is silence, frame 13 (t=0.13 s) is HH
    names = [corpus.phone_set.names[i] for i in loaded.frame_labels[[0, 13, 21]]]
    assert names == ["sil", "HH", "AH"]
    expected = np.cumsum([d for _, d in testing.DEFAULT_PHONES])[:-1]
    np.testing.assert_allclose(loaded.boundaries, expected, atol=1e-4)


def test_librispeech_single_split_and_alignment_dir(tmp_path):
    testing.make_librispeech(tmp_path / "LS", aligned=True)
    mfa = tmp_path / "mfa" / "19"
    mfa.mkdir(parents=True)
    # move one TextGrid to a separate alignment directory (MFA's speaker-folder output)
    grid = next((tmp_path / "LS").rglob("19-198-0000.TextGrid"))
    shutil.move(grid, mfa / grid.name)
    corpus = open_corpus(tmp_path / "LS" / "dev-clean", alignments=tmp_path / "mfa")
    assert corpus.splits == ["dev-clean"]
    by_id = {u.id: u for u in corpus.utterances}
    assert by_id["19-198-0000"].alignment == mfa / "19-198-0000.TextGrid"
    assert by_id["19-198-0001"].alignment.parent.name == "198"


@pytest.mark.parametrize("upper", [True, False])
def test_timit_sphere(tmp_path, upper):
    ids = testing.make_timit(tmp_path / "timit", upper=upper)
    assert detect_layout(tmp_path / "timit")[0] == "timit"
    corpus = open_corpus(tmp_path / "timit")
    assert sorted(u.id for u in corpus.utterances) == sorted(ids)
    assert corpus.splits == ["test", "train"]
    assert corpus.phone_set is TIMIT39_SET
    utt = next(u for u in corpus.utterances if u.split == "test")
    assert utt.transcript == "Hello world."
    loaded = corpus.load(utt)
    # the SPHERE samples read back as written (16-bit quantised)
    wave = testing.tone_audio(testing.TIMIT_PHONES, 2)
    np.testing.assert_allclose(loaded.wave, np.round(wave * 32767) / 32768, atol=1.5 / 32768)
    labels = [TIMIT39_SET.names[i] if i >= 0 else "-" for i in loaded.frame_labels]
    assert labels[0] == "sil" and "-" in labels  # q is ignored
    assert labels[int(0.5 / 0.01) + 1] == "-"  # q covers 0.50-0.53 s
    assert "ah" in labels  # ax folded to ah


def test_audio_dir_speakers_and_splits(tmp_path):
    root = tmp_path / "wavs"
    for rel in ("train/alice/a1.wav", "train/bob/b1.flac", "test/alice/a2.wav", "loose/123-4-0001.wav"):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(path, testing.tone_audio([("AA", 0.3)]), 16000)
    corpus = open_corpus(root)
    assert corpus.layout == "audio-dir"
    got = {(u.id, u.split, u.speaker) for u in corpus.utterances}
    assert got == {("a1", "train", "alice"), ("b1", "train", "bob"), ("a2", "test", "alice"),
                   ("123-4-0001", "all", "123")}
    with pytest.raises(UsageError, match="no split 'nope' \\(splits: all, test, train"):
        corpus.select("nope")


def test_not_a_corpus(tmp_path):
    with pytest.raises(InputError, match="corpus directory not found"):
        open_corpus(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no corpus layout recognised"):
        open_corpus(tmp_path / "empty")


def _corpus_with_bad_files(tmp_path):
    testing.make_librispeech(tmp_path / "LS", speakers=("19",), per_speaker=6)
    chapter = tmp_path / "LS" / "dev-clean" / "19" / "198"
    (chapter / "19-198-0000.flac").write_bytes(b"")  # zero-length
    (chapter / "19-198-0001.flac").write_text("this is not audio")
    data = (chapter / "19-198-0002.flac").read_bytes()
    (chapter / "19-198-0002.flac").write_bytes(data[: len(data) // 3])  # truncated FLAC
    grid = chapter / "19-198-0003.TextGrid"
    grid.write_text(grid.read_text().replace('"OW1"', '"QQ1"'))  # unknown phone
    long = testing.intervals_from(testing.DEFAULT_PHONES + (("", 0.2),))
    testing.write_textgrid(chapter / "19-198-0004.TextGrid", long)  # 200 ms longer than audio
    return open_corpus(tmp_path / "LS")


def test_bad_files_are_named_and_skipped(tmp_path):
    corpus = _corpus_with_bad_files(tmp_path)
    skipped = []
    good = list(corpus.iter_loaded(corpus.utterances, skipped))
    assert [g.utterance.id for g in good] == ["19-198-0005"]
    reasons = {s.utterance_id: s.reason for s in skipped}
    assert reasons["19-198-0000"].endswith("19-198-0000.flac: empty file (0 bytes)")
    assert "19-198-0001.flac: not readable audio" in reasons["19-198-0001"]
    assert "19-198-0002.flac: not readable audio" in reasons["19-198-0002"]
    assert reasons["19-198-0003"].endswith("19-198-0003.TextGrid: phone 'QQ1' is not in the arpabet phone set")
    assert "19-198-0004.TextGrid: alignment ends at" in reasons["19-198-0004"]
    assert "(more than 50 ms apart)" in reasons["19-198-0004"]
    with pytest.raises(InputError, match="empty file"):
        list(corpus.iter_loaded(corpus.utterances, [], strict=True))


def test_missing_alignment_when_required(tmp_path):
    testing.make_librispeech(tmp_path / "LS", speakers=("19",), per_speaker=1, aligned=False)
    corpus = open_corpus(tmp_path / "LS")
    assert corpus.load(corpus.utterances[0]).frame_labels is None
    with pytest.raises(InputError, match="19-198-0000.flac: no alignment found"):
        corpus.load(corpus.utterances[0], require_alignment=True)


def test_resample_and_stereo(tmp_path):
    from satool.data.audio import load_audio

    t = np.arange(44100) / 44100
    tone = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    soundfile.write(tmp_path / "stereo44.wav", np.stack([tone, -tone * 0], axis=1), 44100)
    wave = load_audio(tmp_path / "stereo44.wav")
    assert len(wave) == 16000  # 1 s at 16 kHz
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) - 440) <= 1  # still a 440 Hz tone (1 Hz bins)
    assert 0.45 < np.abs(wave).max() < 0.55  # channels averaged
    soundfile.write(tmp_path / "nan.wav", np.array([0.1, np.nan, 0.2], np.float32), 16000, subtype="FLOAT")
    with pytest.raises(InputError, match="nan.wav: audio contains NaN"):
        load_audio(tmp_path / "nan.wav")


def test_corpus_info_cli(tmp_path, satool_cli):
    testing.make_timit(tmp_path / "timit")
    result = satool_cli("corpus", "info", tmp_path / "timit", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["layout"] == "timit" and info["utterances"] == 3 and info["speakers"] == 3
    assert info["splits"]["train"]["utterances"] == 2 and info["aligned_utterances"] == 3
    total = sum(d for _, d in testing.TIMIT_PHONES) * 3 / 3600
    assert info["hours"] == pytest.approx(total, rel=1e-3)
    assert set(info["phone_inventory"]) == {"sil", "hh", "ah", "l", "ow", "w", "er", "d"}
    assert info["phone_inventory"]["sil"] == 4 * 3  # h#, pau, dcl, h# per utterance
    table = satool_cli("corpus", "info", tmp_path / "timit")
    assert "layout timit" in table.stdout and "3 utterances" in table.stdout
    missing = satool_cli("corpus", "info", tmp_path / "nope")
    assert missing.returncode == 3 and missing.stderr.strip().endswith("nope: corpus directory not found")
