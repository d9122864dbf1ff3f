"""The reference models that ship with satool (M3, M6, M9: the same recipe, mask spans 3, 6, 9): their
provenance, their checksums, and that each learned (it beats linear interpolation and the nearest
unmasked frame on held-out speech of a corpus generated with another seed)."""

from __future__ import annotations

import pytest

from satool import reference

SHIPPED = reference.available()


def test_the_shipped_models_are_named_and_m3_is_there():
    assert SHIPPED[0] == "M3" and set(SHIPPED) <= set(reference.MODELS)


@pytest.mark.parametrize("name", SHIPPED)
def test_provenance_and_checksum(name):
    document = reference.provenance(name)
    for key in ("command", "seed", "steps", "satool_version", "sha256", "training_corpus", "measurements",
                "checks_during_training", "training_settings"):
        assert key in document, key
    assert document["command"].startswith("satool pretrain ")
    assert document["training_settings"]["mask_span"] == int(name[1:])  # only the mask span differs
    weights = reference.checkpoint(name)  # the checksum matches
    assert weights.stat().st_size < 6 * 2**20  # weights only, a few MB
    measured = document["measurements"]["heldout"]
    assert measured["heldout_l1"] < measured["interpolation_l1"]  # the target the issue set, as recorded


def test_the_models_differ_only_in_the_mask_span():
    settings = [dict(reference.provenance(name)["training_settings"]) for name in SHIPPED]
    for s in settings:
        s.pop("mask_span")
    assert all(s == settings[0] for s in settings)


def test_a_damaged_file_is_refused(tmp_path, monkeypatch):
    import shutil

    from satool.errors import InputError

    folder = tmp_path / "M3"
    shutil.copytree(reference.REFERENCE_DIR / "M3", folder)
    weights = folder / reference.provenance("M3")["weights"]
    damaged = bytearray(weights.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF  # one flipped byte inside the weights
    weights.write_bytes(bytes(damaged))
    monkeypatch.setattr(reference, "REFERENCE_DIR", tmp_path)
    with pytest.raises(InputError, match="checksum mismatch"):
        reference.checkpoint("M3")
    with pytest.raises(InputError, match="no reference model 'M4'"):
        reference.checkpoint("M4")


@pytest.mark.parametrize("name", SHIPPED)
def test_it_beats_interpolation_on_held_out_speech(tmp_path, name):
    pytest.importorskip("espeakng_loader", reason="the held-out corpus is synthesised")
    from satool.data.synth import synthesize_corpus
    from satool.training.heldout import evaluate_checkpoint

    synthesize_corpus(tmp_path / "heldout", speakers=4, utterances_per_speaker=10, seed=7)  # unseen voices
    check = evaluate_checkpoint(reference.checkpoint(name), tmp_path / "heldout", "test", seed=0)
    assert check.utterances >= 8
    assert check.model_l1 < check.baselines["interpolation"] < check.baselines["nearest"], (check.model_l1,
                                                                                             check.baselines)
    assert check.attention_off_l1 > check.model_l1  # and it uses its attention to get there


def test_the_demo_studies_them_by_default():
    from satool.stages.demo import DemoSettings

    assert DemoSettings().pretrain is False and DemoSettings().models == reference.MODELS
