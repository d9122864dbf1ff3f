"""One way to name a head: L3.H7 (1-based) in every option, every output and the Python API."""

from __future__ import annotations

import numpy as np
import pytest
from cachefiles import write

from satool.errors import UsageError
from satool.heads import check, label, parse, parse_list


def test_round_trip_and_the_older_form():
    for layer, head in ((1, 1), (3, 7), (12, 12)):
        assert parse(label(layer, head)) == (layer, head)
    assert parse("l3.h7") == parse(" 3.7 ") == (3, 7)
    assert parse_list("L1.H3, L2.H7") == [(1, 3), (2, 7)] and parse_list(None) == []
    for bad in ("3", "L3H7", "attn:1.3", "L0.H1", "L1.H-2", ""):
        with pytest.raises(UsageError, match="L3.H7"):
            parse(bad)


def test_out_of_range_names_the_valid_range():
    with pytest.raises(UsageError, match=r"L5.H2 is not available: layers 1..4, heads 1..12"):
        check([(5, 2)], range(1, 5), range(1, 13))
    check([(4, 12)], range(1, 5), range(1, 13))


def test_cache_accepts_labels_and_positions_alike(tmp_path):
    write(tmp_path / "c", ["a"], np.random.default_rng(0))  # layers 1, 2; heads 1, 2, 3
    from satool.cache import open_cache

    cache = open_cache(tmp_path / "c")
    np.testing.assert_array_equal(cache.attention("a", head="L2.H3"), cache.attention("a", layer=1, head=2))
    assert cache.position("L1.H1") == (0, 0)
    with pytest.raises(UsageError, match=r"L3.H1 is not available: layers 1..2, heads 1..3"):
        cache.attention("a", head="L3.H1")
    with pytest.raises(UsageError, match="a head label"):
        cache.attention("a", layer=0, head="L1.H1")


def test_every_written_head_name_has_one_form(tmp_path):
    from satool.analysis.metrics import BUILTIN_METRICS
    from satool.analysis.scoring import score_cache
    from satool.analysis.segmentation.study import FeatureSource, parse_sources

    write(tmp_path / "c", ["a"], np.random.default_rng(0))
    from satool.cache import open_cache

    rows = score_cache(open_cache(tmp_path / "c"), list(BUILTIN_METRICS)).records()
    assert [r["label"] for r in rows][:2] == ["L1.H1", "L1.H2"]
    assert FeatureSource("attn", 1, 3).label == "attn:L1.H3"
    assert parse_sources("attn:L1.H3,attn:2.1") == [FeatureSource("attn", 1, 3), FeatureSource("attn", 2, 1)]


def test_a_hub_id_gets_a_hint_on_fetching_a_local_copy(tmp_path, monkeypatch):
    from satool.errors import InputError
    from satool.models.loading import load_model

    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=r"reads local files only .*huggingface-cli download facebook/wav2vec2-base "
                                         r"--local-dir wav2vec2-base"):
        load_model("facebook/wav2vec2-base")
    with pytest.raises(InputError, match="checkpoint not found$"):
        load_model("missing.ckpt")


def test_extract_says_how_many_utterances_have_labels_before_the_work(tmp_path, satool_cli):
    from satool import testing

    corpus = tmp_path / "LS"
    testing.make_librispeech(corpus, speakers=("19",), per_speaker=2, aligned=False)
    ckpt = testing.make_checkpoint(tmp_path / "m.ckpt")
    result = satool_cli("extract", ckpt, corpus, "--out", tmp_path / "cache", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stderr.split())
    assert "2 utterances, 0 with phone alignments" in text
    assert "warning: no utterance has phone labels: relate, segment and the phone probe need them" in text
    bad = satool_cli("extract", ckpt, corpus, "--out", tmp_path / "c2", "--hidden", "0-12", cwd=tmp_path)
    assert bad.returncode == 2 and "--hidden" in bad.stderr and "utterances" not in bad.stderr
