"""Phoneme segmentation with kernel-Gram matrices, and boundary evaluation (docs/science.md §4-5).

The segmentation method is the kernel-Gram-matrix segmentation of Bhati et al.
("Unsupervised segmentation of speech signals using kernel-Gram matrices",
NCVPRIPG 2017) as used by Yang, Liu & Lee (Interspeech 2020, sec. 5 and
supplementary sec. 2) on attention maps, MFCCs, log-Mel and hidden states:

1. ``K[i, j] = exp(-||v_i - v_j||_2 / alpha)``                    (:func:`kernel_gram`)
2. ``eps_i = beta * mean_j K[i, j]``
3. ``Kf[i, j] = 1`` iff ``K[i, k] > eps_i`` for every k between i and j
   inclusive                                                      (:func:`filtered_matrix`)
4. ``S[t] = sum_k Kf[t - k, t + k]`` over every integer k (negative, zero and
   positive) with both indices in ``0..T-1``, i.e. the sum of the whole
   anti-diagonal ``i + j = 2t`` of ``Kf``                         (:func:`score_curve`)
5. boundaries = local minima of S                                 (:func:`local_minima`)

Readings of the points the paper leaves open (see docs/segmentation.md):

- step 3 is strict (``>``); ``K[i, i] = 1`` belongs to the range, so a row
  whose threshold is ``>= 1`` is all zero (no run at all);
- step 4 sums the full anti-diagonal (both triangles; k = 0 counted once),
  because the definition (docs/science.md §5) says "over all k with both indices inside 0..T-1";
- step 5: a local minimum is a maximal run of equal values (length >= 1)
  whose left and right neighbours are both strictly larger; the boundary is
  the run's centre frame ``(first + last) // 2`` (the earlier of the two
  middle frames for even runs). Runs touching frame 0 or frame T-1 are never
  boundaries (the utterance's own start and end are not boundaries).

Everything is vectorised: one utterance costs a T x T Gram matrix (computed on
the distinct rows only, so the R-fold repeated rows of up-sampled inputs cost
nothing extra), a few T x T passes and O(T) work for the score curve, which is
built from the run extents of the rows without materialising ``Kf``.
:class:`SegmentationWork` keeps what depends only on (frames, alpha) so that
many beta values cost one comparison pass each.

Evaluation (:func:`evaluate_boundaries`) follows Räsänen et al. (2009) with
strict one-to-one hits (maximum matching) or the lenient counting of public
code (Kreuk et al. 2020); :func:`tune` and :func:`pr_curve` are the grid search
and the precision-recall sweep of the paper.

Modules: :mod:`~satool.analysis.segmentation.algorithm` (steps 1-5),
:mod:`~satool.analysis.segmentation.evaluation` (hits, R-value),
:mod:`~satool.analysis.segmentation.tuning` (alpha and beta on a validation split) and
:mod:`~satool.analysis.segmentation.study` (feature sources from a cache, `satool segment`'s study).
The public names are re-exported here.
"""

from satool.analysis.segmentation.algorithm import (
    SegmentationWork,
    filtered_matrix,
    kernel_gram,
    local_minima,
    score_curve,
    segment,
    upsample_attention,
    upsample_frames,
)
from satool.analysis.segmentation.checks import (
    ALPHA_MULTIPLIERS,
    DEFAULT_BETAS,
    DEFAULT_TOLERANCE_S,
    TOLERANCE_SLACK_S,
)
from satool.analysis.segmentation.evaluation import (
    evaluate_boundaries,
    evenly_spaced_boundaries,
    r_value_from_counts,
)
from satool.analysis.segmentation.tuning import TuneResult, default_alpha_grid, pr_curve, tune

__all__ = [
    "ALPHA_MULTIPLIERS", "DEFAULT_BETAS", "DEFAULT_TOLERANCE_S", "TOLERANCE_SLACK_S", "SegmentationWork",
    "TuneResult", "default_alpha_grid", "evaluate_boundaries", "evenly_spaced_boundaries", "filtered_matrix",
    "kernel_gram", "local_minima", "pr_curve", "r_value_from_counts", "score_curve", "segment", "tune",
    "upsample_attention", "upsample_frames",
]
