"""Attention weights per power of two, against hand-worked counts, and the same counts from a cache,
block by block and from results read back."""

from __future__ import annotations

import json

import numpy as np
import pytest

from satool.analysis.histogram import BINS, LOWER_EDGES, fractions, weight_histogram
from satool.analysis.metrics import BUILTIN_METRICS
from satool.analysis.scoring import ScoreSums
from satool.errors import InputError
from satool.results.metrics import HeadScores


def test_each_weight_falls_in_its_octave():
    # one head, one row of 8 weights: 0 | 2^-30 and 2^-24 (the smallest bin) | 0.25, 0.49 | 0.5 | 1
    row = np.array([0, 2.0 ** -30, 2.0 ** -24, 0.25, 0.49, 0.5, 1.0, 0], np.float32)
    counts = weight_histogram(row[None, None, None, :])
    expected = np.zeros(BINS)
    expected[0], expected[1], expected[23], expected[24], expected[25] = 2, 2, 2, 1, 1
    np.testing.assert_array_equal(counts[0, 0], expected)
    assert LOWER_EDGES[23] == 0.25 and LOWER_EDGES[24] == 0.5 and LOWER_EDGES[25] == 1.0
    assert LOWER_EDGES[1] == 2.0 ** -24 and LOWER_EDGES[0] == 0
    # uniform attention over 8 keys: every weight is 1/8 = 2^-3, bin 22
    uniform = weight_histogram(np.full((2, 3, 8, 8), 1 / 8, np.float32))
    assert uniform.shape == (2, 3, BINS) and (uniform[..., 22] == 64).all() and uniform.sum() == 6 * 64
    np.testing.assert_allclose(fractions(uniform)[..., 22], 1.0)
    assert np.isnan(fractions(np.zeros((1, BINS)))).all()


def test_blocks_add_up_to_the_whole_map_and_results_read_back(tmp_path):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 40, 40)) * 3
    attn = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    attn = attn.astype(np.float16).astype(np.float32)
    whole = weight_histogram(attn)
    blocks = sum(weight_histogram(attn[:, :, first:first + 7]) for first in range(0, 40, 7))
    np.testing.assert_array_equal(whole, blocks)
    assert (whole.sum(-1) == 40 * 40).all()
    sums = ScoreSums(BUILTIN_METRICS, [1, 2], [1, 2, 3], replicates=0)
    sums.add_maps(attn, {"id": "a"})
    sums.add_maps(attn[..., :20, :20] / attn[..., :20, :20].sum(-1, keepdims=True), {"id": "b"})
    scores = sums.scores()
    assert scores.weight_histogram.sum() == 6 * (1600 + 400)
    scores.save(tmp_path)
    np.testing.assert_array_equal(HeadScores.load(tmp_path).weight_histogram, scores.weight_histogram)


@pytest.mark.parametrize("change, message", [
    (lambda h: h["counts"][0][0].__setitem__(3, -1), "whole numbers >= 0"),
    (lambda h: h["counts"][0][0].__setitem__(3, 0.5), "whole numbers >= 0"),
    (lambda h: h.update(lower_edges=h["lower_edges"][:-1]), "power-of-two bins"),
    (lambda h: h["counts"][0].pop(), "counts"),
])
def test_a_crafted_histogram_is_refused(tmp_path, change, message):
    sums = ScoreSums(BUILTIN_METRICS, [1], [1, 2], replicates=0)
    sums.add_maps(np.full((1, 2, 4, 4), 0.25, np.float32), {"id": "a"})
    sums.scores().save(tmp_path)
    doc = json.loads((tmp_path / "metrics.json").read_text())
    change(doc["weight_histogram"])
    (tmp_path / "metrics.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match=message) as caught:
        HeadScores.load(tmp_path)
    assert caught.value.exit_code == 3
