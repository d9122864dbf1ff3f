"""The per-utterance record: the extractor, the cache and the checkpoint path of the metric pass agree."""

from __future__ import annotations

import numpy as np
import pytest

from satool import testing
from satool.utterance import UtteranceMeta


def test_cache_and_checkpoint_paths_give_the_same_record(tmp_path):
    from satool.analysis.scoring import model_stream
    from satool.cache import open_cache
    from satool.data.corpus import open_corpus
    from satool.models.loading import load_model
    from satool.stages import extract as extract_stage

    testing.make_librispeech(tmp_path / "corpus", speakers=("1001",), per_speaker=3, split="dev")
    testing.make_checkpoint(tmp_path / "model.ckpt", num_heads=2)
    extract_stage.run(extract_stage.Settings(checkpoint=tmp_path / "model.ckpt", corpus=tmp_path / "corpus",
                                             out=tmp_path / "cache"))
    corpus = open_corpus(tmp_path / "corpus")
    model = load_model(tmp_path / "model.ckpt")
    direct = {meta.id: meta for _, meta in model_stream(model, corpus, corpus.utterances)}
    with open_cache(tmp_path / "cache") as cache:
        assert sorted(direct) == sorted(cache.utterance_ids)
        for utt in cache.utterance_ids:
            stored, built = cache.meta(utt), direct[utt]
            assert isinstance(stored, UtteranceMeta)
            for key in ("id", "speaker", "split", "n_frames", "n_steps", "frames_per_step", "phone_set",
                        "n_samples", "duration_s", "transcript"):
                assert stored[key] == built[key], key
            np.testing.assert_array_equal(stored.frame_labels, built.frame_labels)
            np.testing.assert_allclose(stored.boundaries, built.boundaries)
            assert stored.order is not None and stored.audio_crc32 is not None  # only the cache records these
            assert built.order is None and built.audio_crc32 is None


def test_record_reads_as_a_mapping():
    meta = UtteranceMeta(id="u", speaker="s", split="dev", n_frames=9, n_steps=3, frames_per_step=3,
                         frame_labels=np.zeros(9, dtype=np.int16))
    assert meta.frames_per_step == 3 and meta.get("boundaries") is None and "frame_labels" in meta
    assert "downsample" not in meta and not hasattr(meta, "downsample")  # one name: frames_per_step
    assert meta.get("nope", 5) == 5 and "nope" not in meta
    with pytest.raises(KeyError):
        meta["nope"]
    assert set(meta.stored()) == {"speaker", "split", "n_frames", "n_steps", "frame_labels"}
    restored = UtteranceMeta.of_stored("u", meta.stored(), frames_per_step=3, phone_set=[])
    assert restored.n_steps == 3 and restored.boundaries is None
