"""satool from Python: attention maps and hidden states of a waveform, with times and phone labels.

In the spirit of TransformerLens's ``run_with_cache`` and transformers' ``output_attentions``::

    import satool
    model = satool.load_model("satool-demo/model.ckpt")          # any registered loader
    run = satool.run_with_cache(model, "utt.flac", alignment="utt.TextGrid")
    run.attentions.shape      # [layer, head, query, key], float32
    run.head("L3.H7")         # one map [query, key]
    run.step_times            # [step] seconds, the start of every step
    run.step_phones           # [step] the phone under each step (None without an alignment)

See docs/api.md for caches, scores and DataFrames. ``load_model`` and ``open_corpus`` here ask every
registered loader and reader (plugins' included), as the command line does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from satool.utterance import UtteranceMeta


def load_model(path: str | Path, device: str = "cpu"):
    """The model at ``path`` (a checkpoint or a model directory), loaded by the first registered loader
    that accepts it (plugins' first, satool's own last); see :func:`satool.models.loading.load_model`."""
    from satool.models import loading
    from satool.plugins import get_plugins

    return loading.load_model(path, device, loaders=get_plugins().models.objects())


def open_corpus(path: str | Path, alignments: str | Path | None = None, layout: str | None = None, *,
                splits: str | Path | None = None, phone_set: str = "auto"):
    """The corpus at ``path``, read by the registered reader named ``layout`` or the one that recognises
    it (plugins' readers included); see :func:`satool.data.corpus.open_corpus`."""
    from satool.data import corpus
    from satool.plugins import get_plugins

    return corpus.open_corpus(path, alignments, layout, readers=get_plugins().corpora.objects(), splits=splits,
                              phone_set=phone_set)


@dataclass
class Run:
    """One waveform through a model.

    Attributes:
        attentions: float32 ``[layer, head, query, key]`` (softmax output, rows sum to 1).
        hidden_states: float32 ``[state, step, hidden]``; ``state_names`` says which is which.
        state_names: e.g. ``["embedding", "layer 1", ...]``.
        step_s: seconds per model step (R x 10 ms for Mockingjay, 20 ms for wav2vec 2.0).
        step_times: float ``[step]``, the start of each step in seconds.
        step_phones: the phone under the middle of each step, or None (no alignment).
        phone_set: the phone set the labels come from.
        meta: the utterance's metadata, the record metrics read (frame labels at 10 ms, phone set,
            boundaries, step and frame counts), as for an utterance of a cache.
        maps: the map kind of ``attentions`` (``run_with_cache(maps=...)``; docs/maps.md).
    """

    attentions: np.ndarray
    hidden_states: np.ndarray
    state_names: list[str]
    step_s: float
    step_times: np.ndarray
    step_phones: list[str | None] | None
    phone_set: str | None
    meta: UtteranceMeta
    maps: str = "attention"  # the map kind of ``attentions`` (satool.maps)

    def head(self, label: str) -> np.ndarray:
        """The map ``[query, key]`` of the head named ``"L3.H7"`` (layer 3, head 7, from 1)."""
        from satool.heads import check, parse

        layer, head = parse(label)
        check([(layer, head)], range(1, self.attentions.shape[0] + 1), range(1, self.attentions.shape[1] + 1))
        return self.attentions[layer - 1, head - 1]

    def hidden(self, name: str | int = -1) -> np.ndarray:
        """Hidden state ``[step, hidden]`` by name (``"layer 3"``) or index (-1 = last)."""
        index = self.state_names.index(name) if isinstance(name, str) else name
        return self.hidden_states[index]


def run_with_cache(model, audio: str | Path | np.ndarray, *, alignment: str | Path | None = None,
                   phone_set: str = "arpabet", maps: str = "attention") -> Run:
    """Encode one waveform (a file, or float samples at 16 kHz) and keep every map and hidden state.

    ``maps``: the map kind kept (satool.maps, docs/maps.md): ``attention`` (raw weights),
    ``value-norm`` (weights times each key's transformed value norm, rows normalised) or ``rollout``
    (one map per layer, as head 1).

    ``alignment``: a TextGrid or TIMIT .PHN file; each step then carries the phone under its middle,
    folded into ``phone_set`` (see docs/corpora.md). Utterances too short for the model, or whose
    maps would exceed the attention budget, raise :class:`~satool.errors.InputError`.
    """
    from satool.data.audio import load_audio
    from satool.timebase import HOP_SAMPLES, SAMPLE_RATE
    from satool.utterance import UtteranceMeta

    wave = load_audio(audio) if isinstance(audio, (str, Path)) else np.asarray(audio, dtype=np.float32)
    features = model.input_features(wave)
    model.check_attention_size(features)
    encoded = model.encode_maps(features, maps=maps, want_hidden=True)
    steps = encoded.n_steps
    times = np.arange(steps) * model.step_s
    n_frames, duration = 1 + len(wave) // HOP_SAMPLES, len(wave) / SAMPLE_RATE
    phones = labels = bounds = None
    names: list[str] = []
    if alignment is not None:
        from satool.data.alignment import read_alignment
        from satool.data.phones import PHONE_SETS

        folding = PHONE_SETS[phone_set]
        aligned = read_alignment(alignment)
        middles = times + model.step_s / 2
        phones = []
        for t in middles:
            hit = next((p for p in aligned.phones if p.start <= t < p.end), None)
            phones.append(None if hit is None else folding.fold(hit.label, source=str(alignment)))
        names = list(folding.names)
        labels = aligned.frame_labels(n_frames, folding)
        bounds = aligned.boundaries(duration)
    name = Path(audio).stem if isinstance(audio, (str, Path)) else "utterance"
    meta = UtteranceMeta(id=name, speaker="", split="", n_frames=n_frames, n_steps=steps,
                         frames_per_step=model.frames_per_step, phone_set=names, frame_labels=labels,
                         boundaries=bounds, n_samples=len(wave), duration_s=duration)
    return Run(attentions=encoded.attentions.float().cpu().numpy(),
               hidden_states=encoded.hidden_states.float().cpu().numpy(), state_names=list(model.hidden_state_names),
               step_s=model.step_s, step_times=times, step_phones=phones,
               phone_set=phone_set if alignment else None, meta=meta, maps=maps)


def score(source, metrics: list[str] | None = None):
    """Head metrics of a cache (:func:`satool.open_cache`) or of a :class:`Run`, as
    :class:`~satool.results.metrics.HeadScores` (``.to_frame()`` gives a pandas DataFrame).

    ``metrics``: names of registered metrics (default: every one, plugins' included).
    """
    from satool.analysis.scoring import score_cache, score_heads
    from satool.plugins import get_plugins

    registry = get_plugins().metrics
    chosen = [registry.get(name) for name in (metrics or registry.names())]
    if isinstance(source, Run):
        layers = list(range(1, source.attentions.shape[0] + 1))
        heads = list(range(1, source.attentions.shape[1] + 1))
        return score_heads([(source.attentions, source.meta)], chosen, layers, heads)
    return score_cache(source, chosen)
