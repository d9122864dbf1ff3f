"""Segmentation scores accumulated utterance by utterance (`satool segment CHECKPOINT CORPUS`).

Every score of ``satool segment`` is a ratio of counts summed over the test utterances
(:func:`~satool.analysis.segmentation.evaluation.evaluate_boundaries`), so a pass over a corpus
needs to keep only counts: for each source, ``[hits, hits_ref, n_ref, n_pred]`` strict and lenient
at its tuned (alpha, beta), the same for every beta of its precision-recall sweep at its alpha,
and each test utterance's strict counts (what the bootstrap resamples) at the utterance's position
in the test selection. All of them add up, so the shards of a run merge into exactly what one
process would have counted (:class:`SegmentSums`, ``satool merge``), and the results are those of
the same sources, parameters and utterances read from a cache (tests/stages/test_streaming.py).

Tuning is not streamed: alpha and beta are chosen on the tuning utterances held in memory (the
stage bounds their number) before the test split is streamed; every shard tunes on the same
utterances and so chooses the same parameters, which the partial sums record and the merge checks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from satool.analysis.segmentation.algorithm import SegmentationWork
from satool.analysis.segmentation.evaluation import (
    boundary_counts,
    evenly_spaced_boundaries,
    scores_of_counts,
)
from satool.analysis.segmentation.tuning import pr_curve_counts
from satool.errors import InputError
from satool.results.segment import SourceResult
from satool.timebase import SAMPLE_RATE

EVENLY = "evenly"  # a source entry of this kind is the evenly spaced baseline (``rate`` boundaries per second)
MODES = ("strict", "lenient")
MAX_TEST_UTTERANCES = 5_000_000


class SegmentSums:
    """Counts of every source over the test utterances seen so far.

    ``sources``: one dict per source, in the results' order: ``label``, ``kind`` (``attn``, ``hidden``,
    ``mfcc``, ``mel`` or :data:`EVENLY`), ``alpha``, ``beta``, ``tune_r_value``, ``n_tune``, ``curve``
    (sweep beta too), ``layer`` and ``head`` (1-based, ``attn`` only), ``state`` (``hidden`` only) and
    ``rate`` (boundaries per second, the baseline only). ``test_ids``: the test
    selection (the per-utterance counts' order). Arrays: ``point [source, mode, 4]``,
    ``curve [source, beta, mode, 4]``, ``per_utterance [source, utterance, 3]`` (strict hits, n_ref,
    n_pred), ``seen [utterance]``.
    """

    def __init__(self, sources: Sequence[dict[str, Any]], test_ids: Sequence[str], betas: Sequence[float],
                 tolerance: float, tuned_on: str | None):
        self.sources = [_checked_source(s) for s in sources]  # ValueError or TypeError if malformed
        self.test_ids = list(test_ids)
        self.betas = [float(b) for b in betas]
        self.tolerance = float(tolerance)
        self.tuned_on = tuned_on
        self.position = {u: i for i, u in enumerate(self.test_ids)}
        n_sources, n_test = len(self.sources), len(self.test_ids)
        self.point = np.zeros((n_sources, 2, 4))
        self.curve = np.zeros((n_sources, len(self.betas), 2, 4))
        self.per_utterance = np.zeros((n_sources, n_test, 3))
        self.seen = np.zeros(n_test)

    def heads(self) -> list[tuple[int, int]]:
        """The (layer, head) of the attention sources, 1-based, in layer order."""
        return sorted({(s["layer"], s["head"]) for s in self.sources if s["kind"] == "attn"})

    def layers(self) -> list[int]:
        """The layers whose maps a stream must compute, 1-based, sorted."""
        return sorted({layer for layer, _ in self.heads()})

    def hidden_states(self) -> list[int]:
        """The hidden states of the ``hidden`` sources (0 = embedding output), sorted."""
        return sorted({s["state"] for s in self.sources if s["kind"] == "hidden"})

    def add_utterance(self, meta, wave: np.ndarray | None, head_maps: dict[tuple[int, int], np.ndarray],
                      hidden: dict[int, np.ndarray]) -> None:
        """Count one streamed test utterance (``meta``: its UtteranceMeta; ``head_maps``: ``[step, step]``
        float32 maps of :meth:`heads`; ``hidden``: ``[step, dim]`` states of :meth:`hidden_states`). An
        utterance without alignment is not a test utterance: skipped."""
        if meta.boundaries is None:
            return
        self.add(meta.id, meta.boundaries, int(meta.n_samples), lambda source: source_frames(
            source["kind"], meta, wave, head_maps.get((source.get("layer"), source.get("head"))),
            hidden.get(source.get("state"))))

    def add(self, utt_id: str, reference: np.ndarray, n_samples: int,
            frames: Callable[[dict[str, Any]], np.ndarray]) -> None:
        """Count one test utterance: ``reference`` boundary times (s), ``n_samples`` analysed samples,
        ``frames(source)`` its ``[frame, dim]`` features of a source (not called for the baseline)."""
        i = self.position.get(utt_id)
        if i is None:
            raise ValueError(f"{utt_id} is not one of the test utterances")
        for s, source in enumerate(self.sources):
            if source["kind"] == EVENLY:
                predicted = evenly_spaced_boundaries(n_samples / SAMPLE_RATE, source["rate"])
            else:
                work = SegmentationWork(frames(source), source["alpha"])  # K once, for the point and the curve
                predicted = work.boundaries(source["beta"])
                if source["curve"]:
                    self.curve[s] += pr_curve_counts(work, reference, self.betas, tolerance=self.tolerance)
            counts = [boundary_counts(reference, predicted, self.tolerance, mode) for mode in MODES]
            self.point[s] += counts
            hits, _, n_ref, n_pred = counts[0]
            self.per_utterance[s, i] = hits, n_ref, n_pred
        self.seen[i] = 1

    # -- partial sums -------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {"sources": self.sources, "test_ids": self.test_ids, "betas": self.betas, "tolerance": self.tolerance,
                "tuned_on": self.tuned_on}

    def arrays(self) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        arrays = {"segment/point": self.point, "segment/curve": self.curve,
                  "segment/per_utterance": self.per_utterance, "segment/seen": self.seen}
        return arrays, {k: "sum" for k in arrays}

    @classmethod
    def from_arrays(cls, described: dict[str, Any], arrays: dict[str, np.ndarray], *, where=None) -> SegmentSums:
        """Rebuild from a partial-sums file's settings and arrays (both untrusted: checked)."""
        def fail(message: str):
            raise InputError(message, path=where)

        try:
            sources, test_ids = list(described["sources"]), [str(u) for u in described["test_ids"]]
            betas, tolerance = [float(b) for b in described["betas"]], float(described["tolerance"])
            tuned_on = None if described["tuned_on"] is None else str(described["tuned_on"])
            if not sources or len(sources) > 1000 or len(betas) > 1000 or len(test_ids) > MAX_TEST_UTTERANCES \
                    or len(set(test_ids)) != len(test_ids) or not np.isfinite(tolerance) or tolerance < 0:
                raise ValueError("sizes")
            sums = cls(sources, test_ids, betas, tolerance, tuned_on)
        except (KeyError, TypeError, ValueError):
            fail("the segmentation settings are incomplete or malformed")
        expected, _ = sums.arrays()
        for name, empty in expected.items():
            value = arrays.get(name)
            if value is None or value.shape != empty.shape:
                fail(f"{name} is missing or has the wrong shape")
            if (value < 0).any() or (value != np.round(value)).any():
                fail(f"{name} must hold whole counts >= 0")
        sums.point, sums.curve = arrays["segment/point"].copy(), arrays["segment/curve"].copy()
        sums.per_utterance, sums.seen = arrays["segment/per_utterance"].copy(), arrays["segment/seen"].copy()
        if (sums.seen > 1).any():
            fail("a test utterance was counted twice (overlapping shards)")
        return sums

    # -- results --------------------------------------------------------------------------------

    def scored_ids(self) -> list[str]:
        """The test utterances counted, in the selection's order."""
        return [u for u, seen in zip(self.test_ids, self.seen) if seen]

    def results(self) -> list[SourceResult]:
        """One :class:`SourceResult` per source, as the cache path computes them."""
        kept = self.seen.astype(bool)
        n = int(kept.sum())
        out = []
        for s, source in enumerate(self.sources):
            strict, lenient = (scores_of_counts(self.point[s, m], self.tolerance, mode, n)
                               for m, mode in enumerate(MODES))
            curve = [] if not source["curve"] else [
                {"beta": beta, **{mode: scores_of_counts(self.curve[s, b, m], self.tolerance, mode, n)
                                  for m, mode in enumerate(MODES)}}
                for b, beta in enumerate(self.betas)]
            per_utterance = [{"hits": int(h), "n_ref": int(r), "n_pred": int(p)}
                             for h, r, p in self.per_utterance[s][kept]]
            baseline = source["kind"] == EVENLY
            out.append(SourceResult(source["label"], float(source["alpha"]), float(source["beta"]),
                                    None if baseline else self.tuned_on, int(source["n_tune"]), n, strict, lenient,
                                    curve, source["tune_r_value"], per_utterance))
        return out


def source_frames(kind: str, meta, wave: np.ndarray | None, head_map: np.ndarray | None,
                  hidden: np.ndarray | None = None) -> np.ndarray:
    """A streamed utterance's ``[frame, dim]`` frames of one source at the 10 ms label rate: the head's
    map ``[step, step]`` up-sampled (``attn``), the hidden state ``[step, dim]`` repeated (``hidden``),
    or MFCC / log-Mel of its samples, as a cache gives them."""
    from satool.analysis.segmentation.algorithm import upsample_attention, upsample_frames
    from satool.analysis.segmentation.study import audio_frames

    if kind == "attn":
        return upsample_attention(head_map, meta.frames_per_step)
    if kind == "hidden":
        return upsample_frames(hidden, meta.frames_per_step)
    return audio_frames(kind, wave)


def _checked_source(source: Any) -> dict[str, Any]:
    if not isinstance(source, dict):
        raise TypeError
    kind = str(source["kind"])
    if kind not in (EVENLY, "attn", "hidden", "mfcc", "mel"):
        raise ValueError(kind)
    if kind == EVENLY:  # no parameters (NaN, written as null)
        alpha = beta = float("nan")
    else:
        alpha, beta = float(source["alpha"]), float(source["beta"])
        if not (np.isfinite(alpha) and alpha > 0 and np.isfinite(beta)):
            raise ValueError("alpha and beta")
    where = {}
    if kind == "attn":
        where = {"layer": int(source["layer"]), "head": int(source["head"])}
        if not (1 <= where["layer"] <= 10_000 and 1 <= where["head"] <= 10_000):
            raise ValueError("layer and head")
    elif kind == "hidden":
        where = {"state": int(source["state"])}
        if not 0 <= where["state"] <= 10_000:
            raise ValueError("state")
    rate = float(source.get("rate", 1.0))
    if kind == EVENLY and not (np.isfinite(rate) and rate > 0):
        raise ValueError("rate")
    tune_r = source["tune_r_value"]
    return {"label": str(source["label"]), "kind": kind, "alpha": alpha, "beta": beta,
            "tune_r_value": None if tune_r is None else float(tune_r), "n_tune": int(source["n_tune"]),
            "curve": bool(source["curve"]), **where, **({"rate": rate} if kind == EVENLY else {})}
