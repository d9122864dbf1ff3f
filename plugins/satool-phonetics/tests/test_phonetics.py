"""The plugin's own tests (run by satool's suite too)."""

import numpy as np
from satool_phonetics import boundary_labels, f1_score, silence_focus

from satool.plugins.api import ProbeUtterance, UtteranceMeta


def _meta(labels):
    return UtteranceMeta(id="u", speaker="s", split="test", n_frames=len(labels), n_steps=2, frames_per_step=1,
                         phone_set=["sil", "aa"], frame_labels=np.array(labels))


def test_silence_focus_hand_worked():
    # 2 steps, R = 1: step 0 is silence. A head that always looks at step 0
    # puts all its mass on silence: 1 / 0.5 - 1 = 1. Uniform attention: 0.
    meta = _meta([0, 1])
    attn = np.array([[[[1.0, 0.0], [1.0, 0.0]], [[0.5, 0.5], [0.5, 0.5]]]], dtype=np.float32)
    np.testing.assert_allclose(silence_focus(attn, meta), [[1.0, 0.0]])


def test_silence_focus_without_silence_is_nan():
    meta = _meta([1, 1])
    assert np.isnan(silence_focus(np.full((1, 1, 2, 2), 0.5, np.float32), meta)).all()


def test_boundary_labels_mark_both_sides():
    utt = ProbeUtterance("u", "s", np.zeros((3, 2), np.float32), 2, np.array([0, 0, 0, 1, 1, 1]))
    assert boundary_labels(utt, {}).tolist() == [0, 0, 1, 1, 0, 0]


def test_f1():
    assert f1_score(np.array([1, 0, 1, 0]), np.array([1, 1, 0, 0])) == 0.5


def test_imports_only_the_plugin_api():
    import ast
    from pathlib import Path

    import satool_phonetics

    tree = ast.parse(Path(satool_phonetics.__file__).read_text())
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    modules |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    assert {m for m in modules if m and m.startswith("satool")} == {"satool.plugins.api"}
