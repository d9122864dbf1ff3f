"""The reference model that ships with satool: its provenance, its checksum, and that it learned
(it beats copying the nearest unmasked frame on held-out speech of a corpus generated with another seed)."""

from __future__ import annotations

import pytest

from satool import reference


def test_provenance_and_checksum():
    document = reference.provenance()
    for key in ("command", "seed", "steps", "satool_version", "sha256", "training_corpus", "measurements",
                "checks_during_training"):
        assert key in document, key
    assert document["command"].startswith("satool pretrain ")
    assert reference.checkpoint() == reference.WEIGHTS  # the checksum matches
    assert reference.WEIGHTS.stat().st_size < 6 * 2**20  # weights only, a few MB
    measured = document["measurements"]["heldout"]
    assert measured["heldout_l1"] < measured["interpolation_l1"]  # the target the issue set, as recorded


def test_a_damaged_file_is_refused(tmp_path, monkeypatch):
    from satool.errors import InputError

    copy = tmp_path / reference.WEIGHTS.name
    damaged = bytearray(reference.WEIGHTS.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF  # one flipped byte inside the weights
    copy.write_bytes(bytes(damaged))
    monkeypatch.setattr(reference, "WEIGHTS", copy)
    with pytest.raises(InputError, match="checksum mismatch"):
        reference.checkpoint()


def test_it_beats_the_nearest_frame_on_held_out_speech(tmp_path):
    pytest.importorskip("espeakng_loader", reason="the held-out corpus is synthesised")
    from satool.data.synth import synthesize_corpus
    from satool.training.heldout import evaluate_checkpoint

    synthesize_corpus(tmp_path / "heldout", speakers=4, utterances_per_speaker=10, seed=7)  # unseen voices
    check = evaluate_checkpoint(reference.checkpoint(), tmp_path / "heldout", "test", seed=0)
    assert check.utterances >= 8
    assert check.model_l1 < check.baselines["nearest"], (check.model_l1, check.baselines)
    assert check.attention_off_l1 > check.model_l1  # and it uses its attention to get there


def test_the_demo_analyses_it_by_default():
    from satool.stages.demo import DemoSettings

    assert DemoSettings().pretrain is False and DemoSettings.quick().pretrain is True
