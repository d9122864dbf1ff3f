"""Probe results' questions: what pre-training added over the input features, and which layer is best."""

from __future__ import annotations

from satool.results.probe import ProbeResults, ProbeRow, ProbeScore


def _row(task, representation, score, name="accuracy", layer=-1):
    return ProbeRow(representation, ProbeScore(task, score, 0.1, name, name == "accuracy", 1, 1), layer=layer)


def test_pretraining_added_compares_the_model_with_its_best_input_feature():
    rows = ProbeResults([
        _row("phone", "model", 0.723), _row("phone", "log-Mel", 0.737), _row("phone", "MFCC", 0.864),
        _row("speaker-utt", "model", 0.60), _row("speaker-utt", "MFCC", 0.45),
        _row("reconstruction", "model", 0.32, "L1"),  # no input row
        _row("boundary", "model", 0.5),  # no input row
    ])
    assert rows.pretraining_added() == ["phone 72.3 % vs MFCC 86.4 % (-14.1 pts)",
                                        "speaker-utt 60.0 % vs MFCC 45.0 % (+15.0 pts)"]
    assert ProbeResults([]).pretraining_added() == []


def test_best_layer_of_each_task():
    rows = ProbeResults([_row("phone", "model", s, layer=layer) for layer, s in ((0, 0.5), (1, 0.7), (2, 0.6))]
                        + [_row("phone", "MFCC", 0.8)])
    assert rows.layers == [0, 1, 2] and rows.default_layer == 2
    best = rows.best_layers()
    assert best == [{"task": "phone", "best_layer": 1, "score": 0.7, "best_input": "MFCC", "input_score": 0.8,
                     "layers": {0: 0.5, 1: 0.7, 2: 0.6}}]
    assert [r.layer for r in rows.model_rows()] == [2]  # single-layer questions read the highest layer probed
