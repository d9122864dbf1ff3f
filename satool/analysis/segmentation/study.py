"""`satool segment`: where the frame vectors come from, tuning on one split, testing on another.

Feature sources (``--features``):

- ``attn:L3.H7`` -- the rows of head 7 of layer 3 (1-based), up-sampled to the
  10 ms label rate (Kronecker x R, rows renormalised; docs/science.md §4);
- ``hidden:S`` -- hidden state S (0 = embedding output; needs ``extract --hidden``),
  each step repeated R times;
- ``mfcc`` -- 13 MFCCs + deltas + delta-deltas, CMVN (the paper's baseline);
- ``mel`` -- the model's log-Mel input (80 bins, CMVN).

MFCC and log-Mel are computed from the corpus recorded in the cache's
manifest (truncated like the cached utterance). Alpha and beta are tuned for
the best strict R-value on the tuning split (grid: :func:`default_alpha_grid`
x :data:`DEFAULT_BETAS`), then the test split is segmented once with them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from satool.analysis.segmentation import (
    DEFAULT_BETAS,
    DEFAULT_TOLERANCE_S,
    SegmentationWork,
    default_alpha_grid,
    evaluate_boundaries,
    evenly_spaced_boundaries,
    kernel_gram,
    pr_curve,
    tune,
    upsample_attention,
    upsample_frames,
)
from satool.errors import InputError, UsageError
from satool.heads import label as head_label
from satool.results.segment import SegmentationExample, SourceResult
from satool.timebase import FRAME_S, SAMPLE_RATE


@dataclass(frozen=True)
class FeatureSource:
    kind: str  # attn | hidden | mfcc | mel
    layer: int | None = None  # 1-based (attn) or hidden-state number (hidden)
    head: int | None = None  # 1-based (attn)

    @property
    def label(self) -> str:
        if self.kind == "attn":
            return f"attn:{head_label(self.layer, self.head)}"
        if self.kind == "hidden":
            return f"hidden:{self.layer}"
        return self.kind


def parse_sources(text: str) -> list[FeatureSource]:
    """'mfcc,attn:L1.H3,hidden:2' -> FeatureSources ('attn:1.3' is read too)."""
    from satool.heads import parse

    sources = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        kind, _, rest = part.partition(":")
        try:
            if kind == "attn":
                try:
                    layer, head = parse(rest)
                except UsageError:
                    raise ValueError from None
                sources.append(FeatureSource("attn", layer, head))
            elif kind == "hidden":
                sources.append(FeatureSource("hidden", int(rest)))
            elif kind in ("mfcc", "mel") and not rest:
                sources.append(FeatureSource(kind))
            else:
                raise ValueError
        except ValueError:
            raise UsageError(
                f"--features {part!r}: use attn:L3.H7 (layer 3, head 7, from 1), hidden:STATE, mfcc or mel"
            ) from None
    if not sources:
        raise UsageError("--features is empty")
    return sources


class FrameSource:
    """Frame vectors ``[frame, dim]`` at the 10 ms label rate for cached utterances."""

    def __init__(self, cache, readers=None):  # readers: the corpus readers (default: satool's own)
        self.cache, self.readers = cache, readers
        self.rate = cache.frames_per_step
        self._corpus = None
        self._utterances: dict[str, Any] = {}

    def _audio(self, utt_id: str) -> np.ndarray:
        if self._corpus is None:
            from satool.data.corpus import open_corpus

            info = self.cache.attrs.get("corpus", {})
            root = info.get("root")
            if not root or not Path(root).is_dir():
                raise InputError(f"the cache's corpus {root!r} is not available for mfcc/mel features",
                                 path=self.cache.path)
            self._corpus = open_corpus(root, info.get("alignments"), info.get("layout"), readers=self.readers)
            self._utterances = {u.id: u for u in self._corpus.utterances}
        meta = self.cache.meta(utt_id)
        utterance = self._utterances.get(utt_id)
        if utterance is None:
            raise InputError(f"the cache's corpus no longer has utterance {utt_id!r}; extract again",
                             path=self.cache.attrs.get("corpus", {}).get("root"))
        recorded = meta.get("audio_crc32")
        if recorded is not None:
            from satool.data.audio import audio_checksum

            if audio_checksum(utterance.audio) != recorded:
                raise InputError("this audio changed since the cache was made (regenerated or edited corpus): "
                                 "its features would not match the cached maps; extract again", path=utterance.audio)
        wave = self._corpus.load(utterance).wave
        if len(wave) < int(meta["n_samples"]):
            raise InputError(f"shorter than when the cache was made ({len(wave)} < {meta['n_samples']} samples)",
                             path=utterance.audio)
        return wave[: int(meta["n_samples"])]

    def check(self, sources: Sequence[FeatureSource]) -> None:
        """Everything that can be checked before any work: heads and hidden states stored in the
        cache, and the corpus the cache recorded, for MFCC and log-Mel."""
        from satool.heads import check

        for source in sources:
            if source.kind == "attn":
                check([(source.layer, source.head)], self.cache.layers, self.cache.heads)
            elif source.kind == "hidden" and source.layer not in self.cache.hidden_states:
                raise UsageError(f"{self.cache.path}: hidden state {source.layer} was not stored "
                                 f"(stored: {self.cache.hidden_states or 'none'}; extract with --hidden)")
            elif source.kind in ("mfcc", "mel"):
                root = self.cache.attrs.get("corpus", {}).get("root")
                if not root or not Path(root).is_dir():
                    raise InputError(f"the cache's corpus {root!r} is not available for {source.kind} features",
                                     path=self.cache.path)

    def frames(self, source: FeatureSource, utt_id: str) -> np.ndarray:
        if source.kind == "attn":
            i, j = self._position(self.cache.layers, source.layer, "layer"), \
                self._position(self.cache.heads, source.head, "head")
            return upsample_attention(self.cache.attention(utt_id, layer=i, head=j), self.rate)
        if source.kind == "hidden":
            states = self.cache.hidden_states
            if source.layer not in states:
                raise UsageError(
                    f"{self.cache.path}: hidden state {source.layer} was not stored "
                    f"(stored: {states or 'none'}; extract with --hidden)"
                )
            return upsample_frames(self.cache.hidden(utt_id, state=states.index(source.layer)), self.rate)
        return audio_frames(source.kind, self._audio(utt_id))

    def _position(self, stored: list[int], number: int, what: str) -> int:
        if number not in stored:
            raise UsageError(f"{self.cache.path}: {what} {number} is not in this cache (stored: {stored})")
        return stored.index(number)


def audio_frames(kind: str, wave: np.ndarray) -> np.ndarray:
    """``[frame, dim]`` MFCC (``kind="mfcc"``) or log-Mel (``"mel"``) frames of 16 kHz samples."""
    if kind == "mfcc":
        from satool.data.features import mfcc

        return mfcc(wave).numpy()
    from satool.data.features import FeatureConfig, FeatureExtractor

    return FeatureExtractor(FeatureConfig())(wave).numpy()


def aligned_ids(cache, split: str | None, *, option: str | None = None) -> list[str]:
    """Utterances of ``split`` (all if None) that have reference boundaries.

    With ``option`` (the command-line option that chose the split), an empty result is an error that
    says whether the split is missing from the cache (listing the ones it has) or has no alignments.
    """
    from satool.data.corpus.base import split_family

    metas = {utt: cache.meta(utt) for utt in cache.utterance_ids}
    splits = {str(m.get("split")) for m in metas.values()}
    # a split name, else a family (test = every test-* split)
    wanted = None if split is None else ({split} if split in splits else
                                         {s for s in splits if split_family(s) == split})
    ids = [u for u, m in metas.items()
           if (wanted is None or m.get("split") in wanted) and m.get("boundaries") is not None]
    if option is not None and not ids:
        if wanted is not None and not wanted:
            raise UsageError(f"{cache.path}: no split {split!r} in this cache (it has "
                             f"{', '.join(sorted(str(s) for s in splits))}); choose one with {option}")
        raise InputError(f"split {split!r} has no utterances with phone alignments (extract with --alignments)",
                         path=cache.path)
    return ids


def run_source(
    frames: FrameSource, source: FeatureSource, tune_ids: Sequence[str], test_ids: Sequence[str], *,
    tuned_on: str | None, alpha: float | None = None, beta: float | None = None,
    tolerance: float = DEFAULT_TOLERANCE_S, alphas: Sequence[float] | None = None,
    betas: Sequence[float] = tuple(DEFAULT_BETAS), curve: bool = True,
    progress: Callable[[int, int], Any] | None = None,
) -> SourceResult:
    """Tune (unless both alpha and beta are given) and evaluate one source."""
    def pairs(ids):
        return [(frames.frames(source, u), frames.cache.meta(u)["boundaries"]) for u in ids]

    test = pairs(test_ids)
    alpha, beta, tune_r = tune_source(pairs(tune_ids) if alpha is None or beta is None else [], alpha, beta,
                                      tolerance=tolerance, alphas=alphas, betas=betas, progress=progress,
                                      where=frames.cache.path)
    strict, lenient, per_utterance = _evaluate(test, alpha, beta, tolerance)
    sweep = pr_curve(test, alpha, betas, tolerance=tolerance) if curve else []
    return SourceResult(source.label, float(alpha), float(beta), tuned_on, len(tune_ids), len(test_ids),
                        strict, lenient, sweep, tune_r, per_utterance)


def tune_source(tuning: Sequence[tuple[np.ndarray, Any]], alpha: float | None, beta: float | None, *,
                tolerance: float, alphas: Sequence[float] | None = None, betas: Sequence[float] = tuple(DEFAULT_BETAS),
                progress: Callable[[int, int], Any] | None = None, where=None) -> tuple[float, float, float | None]:
    """``(alpha, beta, strict R-value on the tuning split)``: the given ones when both are given (R-value
    None), else the best on ``tuning`` (``(frames, boundaries)`` pairs) over ``alphas`` (default: the
    data-derived grid) and ``betas``, a given alpha or beta held fixed."""
    if alpha is not None and beta is not None:
        return alpha, beta, None
    if not tuning:
        raise InputError("no aligned utterances in the tuning split", path=where)
    grid = [alpha] if alpha is not None else list(alphas if alphas is not None else default_alpha_grid(tuning))
    beta_grid = [beta] if beta is not None else list(betas)
    best = tune(tuning, grid, beta_grid, tolerance=tolerance, progress=progress)
    return best.alpha, best.beta, float(best.metrics["r_value"])


def _evaluate(pairs, alpha: float, beta: float, tolerance: float) -> tuple[dict, dict, list[dict[str, int]]]:
    """Strict and lenient scores over ``pairs``, and the strict counts of each utterance (for bootstraps)."""
    predicted = [SegmentationWork(v, alpha).boundaries(beta) for v, _ in pairs]
    reference = [r for _, r in pairs]
    return (evaluate_boundaries(reference, predicted, tolerance, mode="strict"),
            evaluate_boundaries(reference, predicted, tolerance, mode="lenient"),
            strict_counts(reference, predicted, tolerance))


def strict_counts(reference, predicted, tolerance: float) -> list[dict[str, int]]:
    """Strict ``hits``, ``n_ref`` and ``n_pred`` of each utterance (what a bootstrap resamples)."""
    counts = []
    for r, p in zip(reference, predicted):
        m = evaluate_boundaries([r], [p], tolerance, mode="strict")
        counts.append({"hits": m["hits"], "n_ref": m["n_ref"], "n_pred": m["n_pred"]})
    return counts


def study(frames: FrameSource, sources: Sequence[FeatureSource], tune_ids: Sequence[str],
          test_ids: Sequence[str], *, tuned_on: str | None, alpha: float | None = None, beta: float | None = None,
          tolerance: float = DEFAULT_TOLERANCE_S, curve: Callable[[FeatureSource], bool] = lambda s: True,
          progress: Callable[[str, int, int], Any] | None = None) -> list[SourceResult]:
    """The evenly spaced baseline, then every source tuned on ``tune_ids`` and tested on ``test_ids``.

    ``progress(source_label, done, total)`` reports each source's tuning.
    """
    results = [evenly_spaced_result(frames.cache, tune_ids or test_ids, test_ids, tolerance)]
    for source in sources:
        report = None if progress is None else (lambda done, total, label=source.label: progress(label, done, total))
        results.append(run_source(frames, source, tune_ids, test_ids, tuned_on=tuned_on, alpha=alpha, beta=beta,
                                  tolerance=tolerance, curve=curve(source), progress=report))
    return results


def boundary_rate(metas) -> float:
    """Phone boundaries per second over these utterances (their metadata): the evenly spaced baseline's rate."""
    return sum(len(m["boundaries"]) for m in metas) / max(sum(m["duration_s"] for m in metas), 1e-9)


def evenly_spaced_result(cache, tune_ids: Sequence[str], test_ids: Sequence[str], tolerance: float) -> SourceResult:
    """The trivial baseline: boundaries every 1/rate s, rate = the tuning split's phone boundary rate."""
    rate = boundary_rate([cache.meta(u) for u in tune_ids])
    metas = [cache.meta(u) for u in test_ids]
    predicted = [evenly_spaced_boundaries(m["n_samples"] / SAMPLE_RATE, rate) for m in metas]
    reference = [m["boundaries"] for m in metas]
    return SourceResult(
        f"evenly spaced ({rate:.1f}/s)", float("nan"), float("nan"), None, len(tune_ids), len(test_ids),
        evaluate_boundaries(reference, predicted, tolerance, "strict"),
        evaluate_boundaries(reference, predicted, tolerance, "lenient"),
        per_utterance=strict_counts(reference, predicted, tolerance),
    )


def example(frames: FrameSource, source: FeatureSource, utt_id: str, alpha: float, beta: float
            ) -> SegmentationExample:
    """What paper Fig. 2 shows for one utterance: the frames, the Gram matrix, the score curve and the
    predicted and reference boundaries."""
    v = frames.frames(source, utt_id)
    work = SegmentationWork(v, alpha)
    return SegmentationExample(utt_id, source.label, source.kind, v, kernel_gram(v, alpha), work.score(beta),
                               np.asarray(work.boundary_frames(beta)),
                               np.asarray(frames.cache.meta(utt_id)["boundaries"]) / FRAME_S, alpha, beta)


def rank_heads(frames: FrameSource, tune_ids: Sequence[str], test_ids: Sequence[str], *, tolerance: float,
               alphas_per_head: int = 5, betas: Sequence[float] | None = None, max_tune: int = 40,
               progress: Callable[[int], Any] | None = None, workers: int = 1) -> list[dict[str, Any]]:
    """Tune (a coarser grid) and test every stored head; rows sorted by strict R-value, best first.

    ``workers`` > 1 ranks the heads in that many processes (each reopens the cache read-only); the
    rows are the same as from one process, since every head is tuned on its own."""
    from satool.analysis.segmentation import ALPHA_MULTIPLIERS

    betas = list(betas if betas is not None else DEFAULT_BETAS[::2])
    tune_subset = list(tune_ids)[:max_tune]
    multipliers = ALPHA_MULTIPLIERS[np.linspace(0, len(ALPHA_MULTIPLIERS) - 1, alphas_per_head).round().astype(int)]
    heads = [(layer, head) for layer in frames.cache.layers for head in frames.cache.heads]
    job = (tune_subset, list(test_ids), tolerance, multipliers, betas)
    rows = []
    if workers <= 1 or len(heads) < 2:
        for layer, head in heads:
            rows.append(_rank_head(frames, layer, head, *job))
            if progress is not None:
                progress(1)
    else:
        rows = _rank_in_processes(frames.cache.path, heads, job, workers, progress)
    rows.sort(key=lambda r: -(r["strict_r_value"] if r["strict_r_value"] == r["strict_r_value"] else -1e9))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows


def _rank_head(frames: FrameSource, layer: int, head: int, tune_ids, test_ids, tolerance, multipliers,
               betas) -> dict[str, Any]:
    """One row of :func:`rank_heads`: the head tuned on ``tune_ids`` (alpha grid scaled by
    ``multipliers``) and scored on ``test_ids``."""
    source = FeatureSource("attn", layer, head)
    tuning = [(frames.frames(source, u), frames.cache.meta(u)["boundaries"]) for u in tune_ids]
    grid = default_alpha_grid(tuning, multipliers=multipliers)
    result = run_source(frames, source, tune_ids, test_ids, tuned_on="tune", tolerance=tolerance,
                        alphas=grid, betas=betas, curve=False)
    return {"layer": layer, "head": head, **result.row()}


_WORKER_FRAMES: dict[str, FrameSource] = {}  # per worker process: the cache it opened


def _rank_head_in_worker(cache_path: str, layer: int, head: int, job: tuple) -> dict[str, Any]:
    if cache_path not in _WORKER_FRAMES:
        from satool.cache import open_cache

        _WORKER_FRAMES[cache_path] = FrameSource(open_cache(cache_path))
    return _rank_head(_WORKER_FRAMES[cache_path], layer, head, *job)


def _rank_in_processes(cache_path, heads, job, workers: int, progress) -> list[dict[str, Any]]:
    """:func:`_rank_head` of every head in ``workers`` fresh processes ("spawn": nothing of this
    process's open files or threads is inherited), rows in the order of ``heads``. Each process's
    numpy runs on one thread, so the processes do not compete for the cores."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed

    single = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    saved = {name: os.environ.get(name) for name in single}
    os.environ.update(single)  # read by the workers' numpy when they start
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(_rank_head_in_worker, str(cache_path), layer, head, job): i
                       for i, (layer, head) in enumerate(heads)}
            rows: list[dict[str, Any] | None] = [None] * len(heads)
            try:
                for future in as_completed(futures):
                    rows[futures[future]] = future.result()
                    if progress is not None:
                        progress(1)
            except BaseException:  # a head failed (e.g. a corrupt map) or Ctrl-C: the rest is not started
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return rows  # type: ignore[return-value]
