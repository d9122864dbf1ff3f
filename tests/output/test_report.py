"""The report's sentences computed from results: what pre-training added over the input features."""

from __future__ import annotations

from satool.output.report import pretraining_added


def test_pretraining_added_compares_the_model_with_its_best_input_feature():
    rows = [
        {"task": "phone", "representation": "model", "score": 0.723, "score_name": "accuracy"},
        {"task": "phone", "representation": "log-Mel", "score": 0.737, "score_name": "accuracy"},
        {"task": "phone", "representation": "MFCC", "score": 0.864, "score_name": "accuracy"},
        {"task": "speaker-utt", "representation": "model", "score": 0.60, "score_name": "accuracy"},
        {"task": "speaker-utt", "representation": "MFCC", "score": 0.45, "score_name": "accuracy"},
        {"task": "reconstruction", "representation": "model", "score": 0.32, "score_name": "L1"},  # no input row
        {"task": "boundary", "representation": "model", "score": 0.5, "score_name": "accuracy"},  # no input row
    ]
    assert pretraining_added(rows) == ["phone 72.3 % vs MFCC 86.4 % (-14.1 pts)",
                                       "speaker-utt 60.0 % vs MFCC 45.0 % (+15.0 pts)"]
    assert pretraining_added([]) == []
