"""The notebook API (satool.api) gives plugins what the command line gives them: registered loaders and
readers, and typed utterance metadata for metrics."""

from __future__ import annotations

import numpy as np

import satool
from satool import testing
from satool.plugins import get_plugins
from satool.plugins.api import HeadMetric, UtteranceMeta, hookimpl


def test_score_of_a_run_gives_a_plugin_metric_the_utterance_metadata(tmp_path):
    testing.make_librispeech(tmp_path / "LS", speakers=("19",), per_speaker=1)
    audio = next((tmp_path / "LS").rglob("*.flac"))
    seen: list = []

    def labelled_share(attn, meta):
        """Share of the analysed frames that carry a phone label: reads the typed metadata."""
        seen.append(meta)
        labels = np.asarray(meta.frame_labels)[: meta.n_steps * meta.frames_per_step]
        return np.full(attn.shape[:2], float((labels >= 0).mean()))

    class Plugin:
        @staticmethod
        @hookimpl
        def register_metrics(register):
            register(HeadMetric("labelled-share", labelled_share, prune_first="lowest", needs_labels=True))

    get_plugins().add_plugin(Plugin, "test-plugin")
    model = satool.load_model(testing.make_checkpoint(tmp_path / "m.ckpt", num_heads=2))
    run = satool.run_with_cache(model, audio, alignment=audio.with_suffix(".TextGrid"))
    scores = satool.score(run, ["labelled-share"])
    meta = seen[0]
    assert isinstance(meta, UtteranceMeta) and meta.id == audio.stem
    assert meta.frames_per_step == model.frames_per_step and meta.n_steps == run.attentions.shape[-1]
    assert meta.phone_set and meta.n_frames >= meta.n_steps * meta.frames_per_step
    assert meta.boundaries is not None and len(meta.boundaries) > 0
    assert np.all(scores.values["labelled-share"] > 0.5)  # a needs_labels metric ran: the labels were there


def test_api_loads_with_plugin_loaders(tmp_path):
    class Loader:
        name, description = "never", "files ending in .never"

        def can_load(self, path):
            return path.suffix == ".never"

        def load(self, path, device="cpu"):
            raise RuntimeError("asked")

    class Plugin:
        @staticmethod
        @hookimpl
        def register_models(register):
            register(Loader())

    get_plugins().add_plugin(Plugin, "test-plugin")
    (tmp_path / "m.never").write_text("")
    try:
        satool.load_model(tmp_path / "m.never")
    except RuntimeError as exc:
        assert str(exc) == "asked"
    else:  # pragma: no cover
        raise AssertionError("the plugin's loader was not asked")
