"""Tests of satool.data.synth: the eSpeak NG synthetic corpus.

One module-scoped corpus (40 speakers x 6 utterances + 2 held-out speakers,
~15 minutes of audio, a few seconds to make) serves most tests.
"""

from __future__ import annotations

import filecmp
import json
import re
import sys
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from satool.data.synth import phones as ph
from satool.errors import EnvironmentProblem

SR = 16000
N_SPK, N_UTT, N_HELDOUT = 40, 6, 2


def _make(out: Path, **kw):
    pytest.importorskip("espeakng_loader")
    from satool.data.synth import synthesize_corpus

    return synthesize_corpus(out, **kw)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth40")
    manifest = _make(out, speakers=N_SPK, utterances_per_speaker=N_UTT, seed=0, heldout_speakers=N_HELDOUT)
    return out, manifest


def _read_phn(path: Path) -> list[tuple[int, int, str]]:
    rows = []
    for line in path.read_text().splitlines():
        s, e, lab = line.split()
        rows.append((int(s), int(e), lab))
    return rows


def _utterances(root: Path):
    """(flac path, audio[sample] float, textgrid.TextGrid, PHN rows) per utterance."""
    import soundfile as sf
    import textgrid

    for flac in sorted(root.glob("*/*/*/*.flac")):
        audio, rate = sf.read(flac, dtype="float64")
        assert rate == SR
        tg = textgrid.TextGrid()
        tg.read(str(flac.with_suffix(".TextGrid")), round_digits=10)  # default rounds to 10 us
        yield flac, audio, tg, _read_phn(flac.with_suffix(".PHN"))


def _tier(tg, name):
    return next(t for t in tg.tiers if t.name == name)


def _frame_power_db(x: np.ndarray) -> float:
    return 10 * np.log10(np.mean(x**2) + 1e-20)


# 1. durations, contiguity, inventory -----------------------------------------------------------

def test_phone_durations_add_up_to_audio_length(corpus):
    root, _ = corpus
    n = 0
    for flac, audio, tg, phn in _utterances(root):
        n += 1
        dur = len(audio) / SR
        assert 1.5 <= dur <= 5.0, flac
        assert [t.name for t in tg.tiers] == ["words", "phones"]
        for tier in tg.tiers:
            iv = list(tier)
            assert iv[0].minTime == 0 and abs(iv[-1].maxTime - dur) < 1e-9, flac
            for a, b in pairwise(iv):
                assert a.maxTime == b.minTime and a.maxTime > a.minTime, flac
            # boundaries sit on samples
            for x in iv:
                assert abs(x.maxTime * SR - round(x.maxTime * SR)) < 1e-6
        for x in _tier(tg, "phones"):
            base, stress = re.fullmatch(r"([A-Z]*)([012]?)", x.mark).groups()
            assert x.mark == "" or base in ph.ARPABET, x.mark
            assert bool(stress) == (base in ph.ARPABET_VOWELS), x.mark
        assert phn[0][0] == 0 and phn[-1][1] == len(audio), flac
        assert all(a[1] == b[0] and a[0] < a[1] for a, b in pairwise(phn)), flac
        assert phn[0][2] == "h#" and phn[-1][2] == "h#"
        for _, _, lab in phn:
            assert ph.fold_timit(lab) in ph.FOLDED_39, lab
    assert n == (N_SPK + N_HELDOUT) * N_UTT


def test_stop_closure_belongs_to_stop(corpus):
    """A PHN closure is followed by its stop, and both lie inside one TextGrid stop interval."""
    root, _ = corpus
    n_closures = 0
    for _, _, tg, phn in _utterances(root):
        starts = {round(x.minTime * SR): x for x in _tier(tg, "phones")}
        for (s, _, lab), (_, e2, nxt) in pairwise(phn):
            if lab.endswith("cl"):
                n_closures += 1
                assert lab == ph.CLOSURES[nxt.upper()]
                iv = starts[s]  # the stop interval starts where the closure starts
                assert iv.mark == nxt.upper() and round(iv.maxTime * SR) == e2
    assert n_closures > 100


# 2. silence falls on low-energy audio ----------------------------------------------------------

def test_silence_labels_are_low_energy_and_speech_is_not(corpus):
    root, _ = corpus
    for flac, audio, tg, phn in _utterances(root):
        sil, vow = [], []
        for x in _tier(tg, "phones"):
            seg = audio[round(x.minTime * SR): round(x.maxTime * SR)]
            if x.mark == "":
                sil.append(seg)
            elif x.mark[:-1] in ph.ARPABET_VOWELS:
                vow.append(seg)
        sil_db = _frame_power_db(np.concatenate(sil))
        vow_db = _frame_power_db(np.concatenate(vow))
        assert vow_db - sil_db > 35, (flac, vow_db, sil_db)
        # closures are as quiet as silence
        cl = [audio[s:e] for s, e, lab in phn if lab.endswith("cl")]
        if cl:
            assert vow_db - _frame_power_db(np.concatenate(cl)) > 30, flac
        # every speech phone has audible 10 ms frames
        for s, e, lab in phn:
            if lab in ("h#", "pau") or lab.endswith("cl"):
                continue
            seg = audio[s:e]
            frames = seg[: len(seg) // 160 * 160].reshape(-1, 160) if len(seg) >= 160 else seg[None]
            loudest = max(_frame_power_db(f) for f in frames)
            assert loudest - sil_db > 15, (flac, s, e, lab)


# 3. speakers are distinguishable ---------------------------------------------------------------

def _mfcc_stats(root: Path, split: str):
    import soundfile as sf
    import torch
    import torchaudio

    mfcc = torchaudio.transforms.MFCC(SR, n_mfcc=20, melkwargs={"n_fft": 400, "hop_length": 160, "n_mels": 40})
    feats, spk = [], []
    for flac in sorted((root / split).glob("*/*/*.flac")):
        audio, _ = sf.read(flac, dtype="float32")
        m = mfcc(torch.from_numpy(audio))  # [coefficient, frame]
        feats.append(torch.cat([m.mean(1), m.std(1)]))
        spk.append(flac.parent.parent.name)
    return torch.stack(feats), spk


@pytest.fixture
def one_torch_thread():
    """Small tensors: one thread avoids oversubscription on a busy 2-core machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_speaker_classifier_on_heldout_utterances(corpus, one_torch_thread):
    import torch

    root, _ = corpus
    x_tr, s_tr = _mfcc_stats(root, "train")
    x_dev, s_dev = _mfcc_stats(root, "dev")
    x_te, s_te = _mfcc_stats(root, "test")
    x_ev, s_ev = torch.cat([x_dev, x_te]), s_dev + s_te
    names = sorted(set(s_tr))
    assert len(names) == N_SPK and set(s_ev) == set(names)
    y_tr = torch.tensor([names.index(s) for s in s_tr])
    y_ev = torch.tensor([names.index(s) for s in s_ev])
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-6
    x_tr, x_ev = (x_tr - mu) / sd, (x_ev - mu) / sd
    # multinomial logistic regression, L2-regularised, full-batch L-BFGS
    w = torch.zeros(x_tr.shape[1], len(names), requires_grad=True)
    b = torch.zeros(len(names), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x_tr @ w + b, y_tr) + 1e-3 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    acc = ((x_ev @ w + b).argmax(1) == y_ev).float().mean().item()
    assert acc >= 0.90, acc


# 4. phone coverage -----------------------------------------------------------------------------

def test_every_folded_phone_occurs(corpus):
    root, manifest = corpus
    folded, arpa = set(), set()
    for flac in root.glob("*/*/*/*.PHN"):
        folded |= {ph.fold_timit(lab) for _, _, lab in _read_phn(flac)}
    for _, _, tg, _ in _utterances(root):
        arpa |= {x.mark.rstrip("012") for x in _tier(tg, "phones") if x.mark}
    assert folded == set(ph.FOLDED_39) and len(folded) == 39
    assert arpa == set(ph.ARPABET)  # all 39 CMU phones, AO and ZH included
    assert manifest["phone_inventory"]["missing_folded_39"] == []


# layout, splits, manifest ----------------------------------------------------------------------

def test_layout_splits_and_manifest(corpus):
    root, manifest = corpus
    on_disk = json.loads((root / "manifest.json").read_text())
    assert on_disk == manifest
    splits = manifest["splits"]
    assert set(splits) == {"train", "dev", "test", "test-unseen"}
    assert splits["train"]["speakers"] == splits["dev"]["speakers"] == splits["test"]["speakers"]
    assert not set(splits["test-unseen"]["speakers"]) & set(splits["train"]["speakers"])
    assert manifest["speaker_disjoint_splits"] == ["test-unseen"]
    assert [splits[s]["utterances"] for s in ("train", "dev", "test", "test-unseen")] == [160, 40, 40, 12]
    assert manifest["generator"]["espeak_ng_version"]
    assert len(manifest["voices"]) == N_SPK + N_HELDOUT
    assert manifest["counts"]["phones_without_audio"] == 0
    ids = set()
    for trans in root.glob("*/*/*/*.trans.txt"):
        spk, chap = trans.name.split(".")[0].split("-")
        assert trans.parent.name == chap and trans.parent.parent.name == spk
        for line in trans.read_text().splitlines():
            uid, text = line.split(" ", 1)
            assert re.fullmatch(rf"{spk}-{chap}-\d{{4}}", uid) and re.fullmatch(r"[A-Z' ]+", text)
            assert (trans.parent / f"{uid}.flac").exists() and uid not in ids
            ids.add(uid)
    assert len(ids) == (N_SPK + N_HELDOUT) * N_UTT


def test_words_tier_matches_transcript(corpus):
    root, _ = corpus
    for trans in (root / "test").glob("*/*/*.trans.txt"):
        for line in trans.read_text().splitlines():
            uid, text = line.split(" ", 1)
            import textgrid

            tg = textgrid.TextGrid.fromFile(str(trans.parent / f"{uid}.TextGrid"))
            words = " ".join(x.mark for x in _tier(tg, "words") if x.mark)
            assert words.upper() == text


# 5. determinism --------------------------------------------------------------------------------

def test_same_seed_same_bytes_and_other_seed_differs(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    calls = []
    for out, seed in ((a, 3), (b, 3), (c, 4)):
        _make(out, speakers=2, utterances_per_speaker=3, seed=seed, heldout_speakers=1,
              progress=lambda done, total: calls.append((done, total)))
    assert calls[:9] == [(i, 9) for i in range(1, 10)]
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert len([f for f in files if f.suffix == ".flac"]) == 9
    for rel in files:
        assert filecmp.cmp(a / rel, b / rel, shallow=False), rel
    flacs = [p.relative_to(a) for p in a.rglob("*.flac")]
    assert all(not filecmp.cmp(a / r, c / r, shallow=False) for r in flacs)


def test_refuses_non_empty_output(tmp_path):
    from satool.errors import UsageError

    (tmp_path / "x.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        _make(tmp_path, speakers=1, utterances_per_speaker=1)


# voices, phones --------------------------------------------------------------------------------

def test_more_than_100_voices_load_and_differ():
    pytest.importorskip("espeakng_loader")
    from satool.data.synth import get_engine, make_voices

    voices = make_voices(120, seed=0)
    assert len({v.variant_text() for v in voices}) == 120
    assert make_voices(40, seed=0) == voices[:40]  # more speakers keep the first ones
    engine = get_engine()
    lengths = set()
    for v in voices:
        syn = engine.synthesize("A cat.", engine.select_variant(v.variant_text()), seed=1)
        assert syn.phonemes[-1].sample == len(syn.audio) > 0
        lengths.add(len(syn.audio))
    assert len(lengths) > 30


def test_unknown_espeak_phoneme_is_named():
    with pytest.raises(ph.UnknownPhonemeError, match="'Q~'"):
        ph.to_arpabet("Q~")
    assert ph.split_stress("'aI@") == ("aI@", "1") and ph.split_stress(",oU") == ("oU", "2")
    assert ph.fold_timit("zh") == "sh" and ph.fold_timit("ao") == "aa" and ph.fold_timit("q") is None


# 6. missing optional dependency ----------------------------------------------------------------

def test_clear_error_without_espeakng_loader(monkeypatch, tmp_path):
    from satool.data.synth import engine, synthesize_corpus

    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # import now raises ImportError
    monkeypatch.setattr(engine, "_ENGINE", None)
    with pytest.raises(EnvironmentProblem, match=re.escape("pip install 'satool[synth]'")):
        synthesize_corpus(tmp_path / "out", speakers=1, utterances_per_speaker=1)
