"""The plugin's own tests (run by satool's suite too)."""

import numpy as np
from satool_phonetics import boundary_labels, f1_score, silence_focus

from satool.analysis.probing.tasks import ProbeUtterance


def test_silence_focus_hand_worked():
    # 2 steps, R = 1: step 0 is silence. A head that always looks at step 0
    # puts all its mass on silence: 1 / 0.5 - 1 = 1. Uniform attention: 0.
    meta = {"frame_labels": np.array([0, 1]), "phone_set": ["sil", "aa"], "downsample": 1, "n_steps": 2}
    attn = np.array([[[[1.0, 0.0], [1.0, 0.0]], [[0.5, 0.5], [0.5, 0.5]]]], dtype=np.float32)
    np.testing.assert_allclose(silence_focus(attn, meta), [[1.0, 0.0]])


def test_silence_focus_without_silence_is_nan():
    meta = {"frame_labels": np.array([1, 1]), "phone_set": ["sil", "aa"], "downsample": 1, "n_steps": 2}
    assert np.isnan(silence_focus(np.full((1, 1, 2, 2), 0.5, np.float32), meta)).all()


def test_boundary_labels_mark_both_sides():
    utt = ProbeUtterance("u", "s", np.zeros((3, 2), np.float32), 2, np.array([0, 0, 0, 1, 1, 1]))
    assert boundary_labels(utt, {}).tolist() == [0, 0, 1, 1, 0, 0]


def test_f1():
    assert f1_score(np.array([1, 0, 1, 0]), np.array([1, 1, 0, 0])) == 0.5
