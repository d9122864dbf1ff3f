"""Audio files are untrusted too: their headers are checked before decoding, files too short for the
model are skipped with the reason, long ones stay within a memory budget, odd names are left out."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from satool import testing
from satool.data.audio import load_audio
from satool.errors import InputError


def test_header_claims_are_checked_before_decoding(tmp_path):
    path = tmp_path / "one-hertz.wav"
    soundfile.write(path, np.zeros(400, np.int16), 1, subtype="PCM_16")  # a 1 KB file claiming 400 s at 1 Hz
    with pytest.raises(InputError, match="the header claims 1 Hz"):
        load_audio(path)
    long = tmp_path / "long.wav"
    soundfile.write(long, np.zeros(8000, np.float32), 8000)  # 1 s
    import satool.data.audio as audio

    limit = audio.MAX_SECONDS
    audio.MAX_SECONDS = 0.5
    try:
        with pytest.raises(InputError, match=r"1 s long, more than the 0 s satool reads whole"):
            load_audio(long)
        assert len(load_audio(long, max_seconds=0.25)) == 4000  # a start can still be read
    finally:
        audio.MAX_SECONDS = limit
    with pytest.raises(InputError, match="not a regular file"):
        load_audio(tmp_path)


def test_short_files_are_skipped_with_the_reason_and_the_cache_still_works(tmp_path):
    from satool.analysis.metrics import BUILTIN_METRICS
    from satool.analysis.scoring import score_cache
    from satool.cache import open_cache
    from satool.stages import extract as extract_stage

    corpus = tmp_path / "audio"
    corpus.mkdir()
    soundfile.write(corpus / "good.wav", testing.tone_audio(testing.DEFAULT_PHONES), 16000)
    soundfile.write(corpus / "tiny.wav", np.zeros(100, np.float32), 16000)  # shorter than one window
    soundfile.write(corpus / "short.wav", np.full(250, 0.1, np.float32), 16000)  # 2 frames: no step at R = 3
    soundfile.write(corpus / "..wav", testing.tone_audio(testing.DEFAULT_PHONES), 16000, format="WAV")  # id "."
    ckpt = testing.make_checkpoint(tmp_path / "m.ckpt", downsample=3)
    summary = extract_stage.run(extract_stage.Settings(checkpoint=ckpt, corpus=corpus, out=tmp_path / "cache"))
    reasons = dict(summary.skipped)
    assert "too short: 100 samples" in reasons["tiny"]
    assert "too short for this model: 2 frame(s)" in reasons["short"]
    cache = open_cache(tmp_path / "cache")
    assert cache.utterance_ids == ["good"] and cache.complete
    assert score_cache(cache, list(BUILTIN_METRICS)).utterances == 1  # no 0-step map breaks the metrics


def test_attention_budget_skips_long_utterances(tmp_path, monkeypatch):
    from satool.stages import extract as extract_stage

    corpus = tmp_path / "audio"
    corpus.mkdir()
    soundfile.write(corpus / "long.wav", np.tile(testing.tone_audio(testing.DEFAULT_PHONES), 4), 16000)
    ckpt = testing.make_checkpoint(tmp_path / "m.ckpt", downsample=1)
    monkeypatch.setenv("SATOOL_MAX_ATTENTION_GB", "0.0001")
    summary = extract_stage.run(extract_stage.Settings(checkpoint=ckpt, corpus=corpus, out=tmp_path / "cache"))
    assert len(summary.skipped) == 1
    assert "too long for the attention budget" in summary.skipped[0][1]
    assert "SATOOL_MAX_ATTENTION_GB" in summary.skipped[0][1]


def test_corpus_leaves_out_ids_a_cache_cannot_hold(tmp_path):
    from satool.data.corpus import id_problem, open_corpus

    corpus = tmp_path / "audio"
    corpus.mkdir()
    soundfile.write(corpus / "ok.wav", np.zeros(1600, np.float32), 16000)
    soundfile.write(corpus / "..wav", np.zeros(1600, np.float32), 16000, format="WAV")
    opened = open_corpus(corpus)
    assert [u.id for u in opened.utterances] == ["ok"]
    assert any("utterance id '.' is empty or a dot name" in note for note in opened.notes)
    assert id_problem("a/b") == "contains a path separator" and id_problem("a\nb") == "contains control characters"


def test_corpus_check_fails_on_files_stages_would_skip(tmp_path, satool_cli):
    plain = tmp_path / "plain"
    testing.make_librispeech(plain, speakers=("19",), per_speaker=2, aligned=False)
    good = satool_cli("corpus", "check", plain)
    assert good.returncode == 0, good.stderr
    soundfile.write(next(plain.rglob("*.flac")), np.zeros(100, np.float32), 16000)
    result = satool_cli("corpus", "check", plain)
    assert result.returncode == 3 and "too short: 100 samples" in result.stderr, result.stderr
    corpus = tmp_path / "LS"
    testing.make_librispeech(corpus, speakers=("19",), per_speaker=2)
    grid = next(corpus.rglob("*.TextGrid"))
    grid.write_text(grid.read_text().replace("xmax = 0.3", "xmax = nan", 1))
    again = satool_cli("corpus", "check", corpus, "--json")
    assert again.returncode == 3 and '"bad"' in again.stdout


def test_a_corpus_changed_under_its_cache_is_noticed(tmp_path):
    from satool.analysis.segmentation.study import FeatureSource, FrameSource
    from satool.cache import open_cache
    from satool.stages import extract as extract_stage

    corpus = tmp_path / "LS"
    testing.make_librispeech(corpus, speakers=("19",), per_speaker=2)
    extract_stage.run(extract_stage.Settings(checkpoint=testing.make_checkpoint(tmp_path / "m.ckpt"), corpus=corpus,
                                             out=tmp_path / "cache"))
    cache = open_cache(tmp_path / "cache")
    frames = FrameSource(cache)
    first = cache.utterance_ids[0]
    assert frames.frames(FeatureSource("mfcc"), first).shape[1] == 39
    audio = next(corpus.rglob(f"{first}.flac"))
    wave, rate = soundfile.read(audio)
    soundfile.write(audio, wave[::-1].copy(), rate)  # same name and length, other sound
    with pytest.raises(InputError, match="this audio changed since the cache was made"):
        FrameSource(cache).frames(FeatureSource("mfcc"), first)
