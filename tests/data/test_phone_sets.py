"""Phone sets from the data: MFA's IPA (english_mfa) as well as ARPAbet, an IPA-to-ARPAbet folding,
spoken noise ignored, and the set recorded in the cache."""

from __future__ import annotations

import numpy as np

from satool import testing
from satool.data.corpus import open_corpus
from satool.data.phones import (
    ARPABET_SET,
    IPA_ARPABET_SET,
    IPA_SET,
    IPA_TO_ARPABET,
    choose,
    inventory,
)

# DEFAULT_PHONES as MFA's english_mfa would write them
IPA_PHONES = (("", 0.12), ("h", 0.08), ("ə", 0.1), ("ɫ", 0.07), ("ow", 0.15), ("spn", 0.1),
              ("w", 0.06), ("ɝ", 0.14), ("ɫ", 0.06), ("d", 0.05), ("", 0.12))


def _libri_with_ipa(root):
    """LibriSpeech split names, MFA IPA TextGrids in a separate folder (as MFA writes them)."""
    for split, speaker in (("train-clean-100", "19"), ("dev-clean", "26"), ("test-clean", "27")):
        testing.make_librispeech(root / "LibriSpeech", speakers=(speaker,), per_speaker=2, split=split, aligned=False)
    for audio in (root / "LibriSpeech").rglob("*.flac"):
        target = root / "mfa_ipa" / audio.parent.parent.name / f"{audio.stem}.TextGrid"
        target.parent.mkdir(parents=True, exist_ok=True)
        testing.write_textgrid(target, testing.intervals_from(IPA_PHONES))
    return root / "LibriSpeech", root / "mfa_ipa"


def test_ipa_folding_covers_the_arpabet_classes():
    assert set(IPA_TO_ARPABET.values()) == set(ARPABET_SET.names) - {"sil"}
    assert IPA_ARPABET_SET.fold("ɫ") == "L" and IPA_ARPABET_SET.fold("ow") == "OW" and IPA_ARPABET_SET.fold("") == "sil"
    assert IPA_SET.fold("ɫ") == "ɫ" and IPA_SET.fold("spn") is None and ARPABET_SET.fold("spn") is None
    # NFC: a decomposed 'n' + combining syllabic mark is the same phone as MFA's 'n̩'
    assert IPA_SET.fold("n\u0329") == "n\u0329"


def test_auto_chooses_by_the_labels():
    assert choose({"HH": 10, "AH0": 10, "": 5}) is ARPABET_SET
    assert choose({"h": 10, "ə": 10, "ɫ": 3, "sil": 5}) is IPA_SET
    assert choose({"HH": 100, "QQ1": 1}) is ARPABET_SET  # one bad label is its file's error, not a new set
    custom = choose({"ka": 3, "ki": 2, "sp": 1})
    assert custom.name == "data" and custom.names == ("ka", "ki", "sil")
    assert inventory(["b", "a", "spn", ""]).names == ("a", "b", "sil")


def test_a_librispeech_layout_with_ipa_alignments(tmp_path, satool_cli):
    corpus, mfa = _libri_with_ipa(tmp_path)
    opened = open_corpus(corpus, mfa)
    assert opened.phone_set is IPA_SET and len(opened.select("train")) == 2
    check = satool_cli("corpus", "check", corpus, "--alignments", mfa, "--require-alignment", cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert "6 good, 0 bad utterances (phone set ipa" in " ".join(check.stderr.split())
    forced = satool_cli("corpus", "check", corpus, "--alignments", mfa, "--phone-set", "arpabet", cwd=tmp_path)
    assert forced.returncode == 3 and "is not in the arpabet phone set" in forced.stderr
    loaded = open_corpus(corpus, mfa, phone_set="ipa-arpabet").load(opened.select("dev")[0])
    names = [IPA_ARPABET_SET.names[i] for i in loaded.frame_labels if i >= 0]
    assert {"HH", "AH", "L", "OW", "W", "ER", "D", "sil"} == set(names)
    assert (loaded.frame_labels == -1).sum() >= 9  # the spoken-noise frames are ignored, not silence


def test_the_cache_records_the_phone_set_and_relate_uses_it(tmp_path):
    from satool.analysis.relations import relate
    from satool.analysis.scoring import cache_stream
    from satool.cache import open_cache
    from satool.stages import extract as extract_stage

    corpus, mfa = _libri_with_ipa(tmp_path)
    extract_stage.run(extract_stage.Settings(checkpoint=testing.make_checkpoint(tmp_path / "m.ckpt"), corpus=corpus,
                                             out=tmp_path / "cache", split=["dev", "test"], alignments=mfa))
    cache = open_cache(tmp_path / "cache")
    assert cache.attrs["corpus"]["phone_set_name"] == "ipa" and "ɫ" in cache.phone_set
    relations = relate(cache_stream(cache), cache.layers, cache.heads, cache.phone_set)
    present = [cache.phone_set[i] for i in np.flatnonzero(np.diag(relations.p_uniform) > 0)]
    assert {"ɫ", "ow", "ə", "sil"} <= set(present)
