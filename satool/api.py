"""satool from Python: attention maps and hidden states of a waveform, with times and phone labels.

In the spirit of TransformerLens's ``run_with_cache`` and transformers' ``output_attentions``::

    import satool
    model = satool.load_model("satool-demo/model.ckpt")          # any registered loader
    run = satool.run_with_cache(model, "utt.flac", alignment="utt.TextGrid")
    run.attentions.shape      # [layer, head, query, key], float32
    run.head("L3.H7")         # one map [query, key]
    run.step_times            # [step] seconds, the start of every step
    run.step_phones           # [step] the phone under each step (None without an alignment)

See docs/api.md for caches, scores and DataFrames.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


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
    """

    attentions: np.ndarray
    hidden_states: np.ndarray
    state_names: list[str]
    step_s: float
    step_times: np.ndarray
    step_phones: list[str | None] | None
    phone_set: str | None

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
                   phone_set: str = "arpabet") -> Run:
    """Encode one waveform (a file, or float samples at 16 kHz) and keep every map and hidden state.

    ``alignment``: a TextGrid or TIMIT .PHN file; each step then carries the phone under its middle,
    folded into ``phone_set`` (see docs/corpora.md). Utterances too short for the model, or whose
    maps would exceed the attention budget, raise :class:`~satool.errors.InputError`.
    """
    from satool.data.audio import load_audio

    wave = load_audio(audio) if isinstance(audio, (str, Path)) else np.asarray(audio, dtype=np.float32)
    features = model.input_features(wave)
    model.check_attention_size(features)
    encoded = model.encode([features], want_attentions=True, want_hidden=True)[0]
    steps = encoded.n_steps
    times = np.arange(steps) * model.step_s
    phones = None
    if alignment is not None:
        from satool.data.alignment import read_alignment
        from satool.data.phones import PHONE_SETS

        folding = PHONE_SETS[phone_set]
        intervals = read_alignment(alignment).phones
        middles = times + model.step_s / 2
        phones = []
        for t in middles:
            hit = next((p for p in intervals if p.start <= t < p.end), None)
            phones.append(None if hit is None else folding.fold(hit.label, source=str(alignment)))
    return Run(encoded.attentions.float().cpu().numpy(), encoded.hidden_states.float().cpu().numpy(),
               list(model.hidden_state_names), model.step_s, times, phones, phone_set if alignment else None)


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
        return score_heads([(source.attentions, {})], chosen, layers, heads)
    return score_cache(source, chosen)
