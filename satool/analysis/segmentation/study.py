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
from dataclasses import dataclass, field
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
from satool.output.tables import write_csv, write_json
from satool.timebase import FRAME_S, SAMPLE_RATE

BOUNDARY_CONVENTION = (
    "reference boundaries = phone interval edges strictly inside the utterance (its own start and end "
    "excluded); strict = one-to-one maximum matching within the tolerance (inclusive); lenient = a "
    "prediction within the tolerance of any reference is a hit (as in widely used public code)"
)


@dataclass(frozen=True)
class FeatureSource:
    kind: str  # attn | hidden | mfcc | mel
    layer: int | None = None  # 1-based (attn) or hidden-state number (hidden)
    head: int | None = None  # 1-based (attn)

    @property
    def label(self) -> str:
        if self.kind == "attn":
            return f"attn:L{self.layer}.H{self.head}"
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

    def __init__(self, cache):
        self.cache = cache
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
            self._corpus = open_corpus(root, info.get("alignments"), info.get("layout"))
            self._utterances = {u.id: u for u in self._corpus.utterances}
        meta = self.cache.meta(utt_id)
        utterance = self._utterances.get(utt_id)
        if utterance is None:
            raise InputError(f"the cache's corpus no longer has utterance {utt_id!r}; extract again",
                             path=self.cache.attrs.get("corpus", {}).get("root"))
        recorded = meta.get("audio_crc32")
        if recorded is not None:
            from satool.extract import audio_checksum

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
        wave = self._audio(utt_id)
        if source.kind == "mfcc":
            from satool.data.features import mfcc

            return mfcc(wave).numpy()
        from satool.data.features import FeatureConfig, FeatureExtractor

        return FeatureExtractor(FeatureConfig())(wave).numpy()

    def _position(self, stored: list[int], number: int, what: str) -> int:
        if number not in stored:
            raise UsageError(f"{self.cache.path}: {what} {number} is not in this cache (stored: {stored})")
        return stored.index(number)


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


@dataclass
class SourceResult:
    """Tuned parameters and test-split scores of one feature source."""

    source: str
    alpha: float
    beta: float
    tuned_on: str | None
    n_tune: int
    n_test: int
    strict: dict[str, Any]
    lenient: dict[str, Any]
    curve: list[dict[str, Any]] = field(default_factory=list)
    tune_r_value: float | None = None  # strict R-value on the tuning split at the chosen parameters
    per_utterance: list[dict[str, int]] = field(default_factory=list)  # strict hits, n_ref, n_pred per test utt

    def row(self) -> dict[str, Any]:
        row: dict[str, Any] = {"source": self.source, "alpha": self.alpha, "beta": self.beta,
                               "tuned_on": self.tuned_on, "n_tune": self.n_tune, "n_test": self.n_test,
                               "tune_r_value": self.tune_r_value}
        for mode, m in (("strict", self.strict), ("lenient", self.lenient)):
            for key in ("precision", "recall", "f1", "os", "r_value", "hits", "n_ref", "n_pred"):
                row[f"{mode}_{key}"] = m.get(key)
        return row


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
    tune_r = None
    if alpha is None or beta is None:
        tuning = pairs(tune_ids)
        if not tuning:
            raise InputError("no aligned utterances in the tuning split", path=frames.cache.path)
        grid = [alpha] if alpha is not None else list(alphas if alphas is not None else default_alpha_grid(tuning))
        beta_grid = [beta] if beta is not None else list(betas)
        best = tune(tuning, grid, beta_grid, tolerance=tolerance, progress=progress)
        alpha, beta, tune_r = best.alpha, best.beta, float(best.metrics["r_value"])
    strict, lenient, per_utterance = _evaluate(test, alpha, beta, tolerance)
    sweep = pr_curve(test, alpha, betas, tolerance=tolerance) if curve else []
    return SourceResult(source.label, float(alpha), float(beta), tuned_on, len(tune_ids), len(test_ids),
                        strict, lenient, sweep, tune_r, per_utterance)


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


def write_study(frames: FrameSource, results: Sequence[SourceResult], out: Path, *, tolerance: float,
                example_id: str, examples: Sequence[FeatureSource], extra: dict[str, Any] | None = None
                ) -> dict[str, Path]:
    """Results and PR curve (:func:`write_results`) plus a Fig. 2 example for each of ``examples``."""
    paths = write_results(results, out, tolerance=tolerance, extra=extra)
    by_label = {r.source: r for r in results}
    for source in examples:
        result = by_label[source.label]
        name = source.label.replace(":", "_")
        paths[f"example {source.label}"] = example_figure(frames, source, example_id, result.alpha, result.beta,
                                                          out / f"example_{name}.png")
    return paths


def evenly_spaced_result(cache, tune_ids: Sequence[str], test_ids: Sequence[str], tolerance: float) -> SourceResult:
    """The trivial baseline: boundaries every 1/rate s, rate = the tuning split's phone boundary rate."""
    metas_tune = [cache.meta(u) for u in tune_ids]
    rate = sum(len(m["boundaries"]) for m in metas_tune) / max(sum(m["duration_s"] for m in metas_tune), 1e-9)
    metas = [cache.meta(u) for u in test_ids]
    predicted = [evenly_spaced_boundaries(m["n_samples"] / SAMPLE_RATE, rate) for m in metas]
    reference = [m["boundaries"] for m in metas]
    return SourceResult(
        f"evenly spaced ({rate:.1f}/s)", float("nan"), float("nan"), None, len(tune_ids), len(test_ids),
        evaluate_boundaries(reference, predicted, tolerance, "strict"),
        evaluate_boundaries(reference, predicted, tolerance, "lenient"),
        per_utterance=strict_counts(reference, predicted, tolerance),
    )


def write_results(results: Sequence[SourceResult], out: Path, *, tolerance: float,
                  extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """segment_results.csv/json, pr_curve.csv and pr_curve.png."""
    from satool.output.figures import figure

    out.mkdir(parents=True, exist_ok=True)
    rows = [r.row() for r in results]
    write_csv(out / "segment_results.csv", rows)
    write_json(out / "segment_results.json", {"tolerance_s": tolerance, "boundary_convention": BOUNDARY_CONVENTION,
                                              "results": rows, **(extra or {}),
                                              "strict_per_utterance": {r.source: r.per_utterance for r in results}})
    curve_rows = []
    for r in results:
        for point in r.curve:
            for mode in ("strict", "lenient"):
                m = point[mode]
                curve_rows.append({"source": r.source, "alpha": r.alpha, "beta": point["beta"], "mode": mode,
                                   "precision": m["precision"], "recall": m["recall"], "f1": m["f1"],
                                   "os": m["os"], "r_value": m["r_value"], "n_pred": m["n_pred"]})
    paths = {"csv": out / "segment_results.csv", "json": out / "segment_results.json"}
    if curve_rows:
        write_csv(out / "pr_curve.csv", curve_rows)
        with figure(out / "pr_curve.png", size=(5.5, 4.5)) as (fig, ax):
            for r in results:
                if not r.curve:
                    continue
                # points, not a line: the number of boundaries is not monotonic in beta
                dots = ax.scatter([p["strict"]["recall"] for p in r.curve], [p["strict"]["precision"] for p in r.curve],
                                  s=12, label=f"{r.source} (R = {100 * r.strict['r_value']:.1f})")
                ax.scatter([r.strict["recall"]], [r.strict["precision"]], marker="*", s=160,
                           color=dots.get_facecolor()[0], edgecolor="black", linewidth=0.6)
            ax.set_xlabel("recall (hit rate)")
            ax.set_ylabel("precision")
            ax.set_title(f"Precision and recall over beta (star: tuned), strict, {tolerance * 1000:.0f} ms",
                         fontsize=9)
            ax.legend(fontsize=7)
        paths["pr_csv"] = out / "pr_curve.csv"
        paths["pr_png"] = out / "pr_curve.png"
    return paths


def example_figure(frames: FrameSource, source: FeatureSource, utt_id: str, alpha: float, beta: float,
                   path: Path) -> Path:
    """Paper Fig. 2 for one utterance: the frames, the Gram matrix, the score curve and the boundaries."""
    from satool.output.figures import figure

    v = frames.frames(source, utt_id)
    work = SegmentationWork(v, alpha)
    score = work.score(beta)
    predicted = work.boundary_frames(beta)
    reference = np.asarray(frames.cache.meta(utt_id)["boundaries"]) / FRAME_S
    seconds = len(v) * FRAME_S
    with figure(path, size=(14, 4.4), ncols=3) as (fig, axes):
        if source.kind == "attn":  # rows of the up-sampled map: query down, key across, weights from 0
            image = axes[0].imshow(v, aspect="auto", cmap="magma", interpolation="nearest", vmin=0,
                                   extent=(0, seconds, seconds, 0))
            axes[0].set_ylabel("query (s)")
            axes[0].set_xlabel("key (s)")
            fig.colorbar(image, ax=axes[0], label="attention weight (from 0)")
        else:
            image = axes[0].imshow(v.T, aspect="auto", cmap="magma", interpolation="nearest", origin="lower",
                                   extent=(0, seconds, 0, v.shape[1]))
            axes[0].set_ylabel("coefficient")
            axes[0].set_xlabel("time (s)")
            fig.colorbar(image, ax=axes[0], label="value (normalised per utterance)")
        axes[0].set_title(f"{source.label} ({'up-sampled map' if source.kind == 'attn' else 'features'})")
        gram = axes[1].imshow(kernel_gram(v, alpha), cmap="viridis", interpolation="nearest", vmin=0, vmax=1,
                              extent=(0, seconds, seconds, 0))
        fig.colorbar(gram, ax=axes[1], label="K (0..1)")
        axes[1].set_title(f"kernel-Gram matrix (alpha = {alpha:.3g})")
        axes[1].set_xlabel("time (s)")
        time_axis = np.arange(len(score)) * FRAME_S
        axes[2].plot(time_axis, score, lw=1, color="black", label="score S")
        for i, t in enumerate(reference):
            axes[2].axvline(t * FRAME_S, color="tab:green", lw=0.8, alpha=0.7, label="true" if i == 0 else None)
        for i, t in enumerate(predicted):
            axes[2].axvline(t * FRAME_S, color="tab:red", lw=0.8, ls="--", alpha=0.8,
                            label="predicted" if i == 0 else None)
        axes[2].set_title(f"score curve (beta = {beta:.3g}): minima = boundaries")
        axes[2].set_xlabel("time (s)")
        axes[2].legend(fontsize=7, loc="upper right")
        fig.suptitle(f"Phoneme segmentation of {utt_id}", fontsize=10)
    return path


def rank_heads(frames: FrameSource, tune_ids: Sequence[str], test_ids: Sequence[str], *, tolerance: float,
               alphas_per_head: int = 5, betas: Sequence[float] | None = None, max_tune: int = 40,
               progress: Callable[[int], Any] | None = None) -> list[dict[str, Any]]:
    """Tune (a coarser grid) and test every stored head; rows sorted by strict R-value, best first."""
    from satool.analysis.segmentation import ALPHA_MULTIPLIERS

    betas = list(betas if betas is not None else DEFAULT_BETAS[::2])
    tune_subset = list(tune_ids)[:max_tune]
    multipliers = ALPHA_MULTIPLIERS[np.linspace(0, len(ALPHA_MULTIPLIERS) - 1, alphas_per_head).round().astype(int)]
    rows = []
    for layer in frames.cache.layers:
        for head in frames.cache.heads:
            source = FeatureSource("attn", layer, head)
            tuning = [(frames.frames(source, u), frames.cache.meta(u)["boundaries"]) for u in tune_subset]
            grid = default_alpha_grid(tuning, multipliers=multipliers)
            result = run_source(frames, source, tune_subset, test_ids, tuned_on="tune", tolerance=tolerance,
                                alphas=grid, betas=betas, curve=False)
            rows.append({"layer": layer, "head": head, **result.row()})
            if progress is not None:
                progress(1)
    rows.sort(key=lambda r: -(r["strict_r_value"] if r["strict_r_value"] == r["strict_r_value"] else -1e9))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows
