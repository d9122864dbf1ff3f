"""TextGrid and PHN readers: conventions and bad input (plus fuzzing)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from satool import testing
from satool.data.alignment import read_phn, read_textgrid
from satool.data.phones import ARPABET_SET, IGNORE
from satool.errors import InputError


def test_frame_label_at_frame_centre(tmp_path):
    path = tmp_path / "a.TextGrid"
    testing.write_textgrid(path, [(0.0, 0.015, ""), (0.015, 0.03, "AA1"), (0.03, 0.05, "B")])
    labels = read_textgrid(path).frame_labels(7, ARPABET_SET)
    # centres 0, .01, .02, .03, .04, .05 (end: nothing), .06 (past the end)
    names = [ARPABET_SET.names[i] if i != IGNORE else "-" for i in labels]
    assert names == ["sil", "sil", "AA", "B", "B", "-", "-"]


def test_gap_is_unlabelled_and_boundaries_include_gap_edges(tmp_path):
    path = tmp_path / "gap.TextGrid"
    testing.write_textgrid(path, [(0.0, 0.1, "AA1"), (0.2, 0.3, "B")])
    alignment = read_textgrid(path)
    labels = alignment.frame_labels(30, ARPABET_SET)
    assert (labels[11:20] == IGNORE).all() and labels[5] == ARPABET_SET.names.index("AA")
    np.testing.assert_allclose(alignment.boundaries(), [0.1, 0.2])


def test_overlap_is_an_error(tmp_path):
    path = tmp_path / "overlap.TextGrid"
    testing.write_textgrid(path, [(0.0, 0.2, "AA1"), (0.1, 0.3, "B")])
    with pytest.raises(InputError, match=r"overlap.TextGrid: overlapping phone intervals: 'AA1' ends at 0.200 s after 'B' starts at 0.100 s"):
        read_textgrid(path)


def test_missing_tier_and_empty(tmp_path):
    path = tmp_path / "x.TextGrid"
    path.write_text(
        'File type = "ooTextFile"\nObject class = "TextGrid"\n\nxmin = 0\nxmax = 1\n'
        'tiers? <exists>\nsize = 1\nitem []:\n    item [1]:\n        class = "IntervalTier"\n'
        '        name = "words"\n        xmin = 0\n        xmax = 1\n        intervals: size = 1\n'
        '        intervals [1]:\n            xmin = 0\n            xmax = 1\n            text = ""\n'
    )
    with pytest.raises(InputError, match=r"x.TextGrid: no 'phones' tier \(tiers: words\)"):
        read_textgrid(path)
    (tmp_path / "garbage.TextGrid").write_text("not a textgrid at all")
    with pytest.raises(InputError, match="garbage.TextGrid: not a readable TextGrid"):
        read_textgrid(tmp_path / "garbage.TextGrid")


def test_phn_non_monotonic_and_malformed(tmp_path):
    (tmp_path / "a.PHN").write_text("0 1600 h#\n3200 4800 aa\n1600 3200 b\n")
    with pytest.raises(InputError, match="a.PHN: phone times are not monotonic"):
        read_phn(tmp_path / "a.PHN")
    (tmp_path / "b.PHN").write_text("0 1600\n")
    with pytest.raises(InputError, match="b.PHN: line 1: expected 'start end label'"):
        read_phn(tmp_path / "b.PHN")
    (tmp_path / "c.PHN").write_text("")
    with pytest.raises(InputError, match="c.PHN: no phone intervals"):
        read_phn(tmp_path / "c.PHN")
    (tmp_path / "d.PHN").write_text("0 1600 h#\n1600 800 aa\n")
    with pytest.raises(InputError, match="d.PHN: phone interval 'aa' has bad times"):
        read_phn(tmp_path / "d.PHN")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=st.sampled_from(list("0123456789 -\nhaxq#.e+")), max_size=200))
def test_fuzz_phn_reader_only_raises_input_error(tmp_path, text):
    path = tmp_path / "fuzz.PHN"
    path.write_text(text)
    try:
        alignment = read_phn(path)
    except InputError:
        return
    starts = [p.start for p in alignment.phones]
    assert starts == sorted(starts) and all(p.end >= p.start for p in alignment.phones)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_textgrid_reader_only_raises_input_error(tmp_path, data):
    path = tmp_path / "valid.TextGrid"
    testing.write_textgrid(path, [(0.0, 0.1, ""), (0.1, 0.25, "AA1"), (0.25, 0.4, "B")])
    raw = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(1, 6))):
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] = data.draw(st.sampled_from(list(b'0123456789."= \n-xabz[]')))
    path.write_bytes(bytes(raw))
    try:
        alignment = read_textgrid(path)
    except InputError:
        return
    try:
        alignment.check_phones(ARPABET_SET)
    except InputError:
        return
    labels = alignment.frame_labels(50, ARPABET_SET)
    assert labels.min() >= IGNORE and labels.max() < len(ARPABET_SET)


def _short_format(intervals, name="phones"):
    xmax = intervals[-1][1]
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "0", str(xmax), "<exists>", "1",
             '"IntervalTier"', f'"{name}"', "0", str(xmax), str(len(intervals))]
    for start, end, label in intervals:
        lines += [str(start), str(end), '"' + label.replace('"', '""') + '"']
    return "\n".join(lines) + "\n"


def test_textgrid_reader_agrees_with_the_textgrid_library(tmp_path):
    """Independent check: the textgrid package reads the same valid files to the same intervals."""
    import textgrid

    phones = [(0.0, 0.12, ""), (0.12, 0.2, "HH"), (0.2, 0.31, 'AH0 "x"'), (0.31, 0.5, "sil")]
    files = {"long": tmp_path / "long.TextGrid", "short": tmp_path / "short.TextGrid",
             "utf16": tmp_path / "utf16.TextGrid"}
    testing.write_textgrid(files["long"], phones[:2] + [(0.2, 0.31, "AH0")] + phones[3:])
    files["short"].write_text(_short_format(phones))
    files["utf16"].write_bytes(_short_format(phones).encode("utf-16"))
    for kind, path in files.items():
        ours = read_textgrid(path).phones
        theirs = textgrid.TextGrid.fromFile(str(path)).getFirst("phones")
        assert [(p.start, p.end, p.label) for p in ours] == [
            (float(iv.minTime), float(iv.maxTime), iv.mark) for iv in theirs], kind


@pytest.mark.parametrize("intervals, message", [
    ([(0.0, 0.1, "AA1"), (0.1, float("nan"), "B")], "bad times 0.1..nan"),
    ([(0.0, 0.1, "AA1"), (0.3, 0.2, "B")], "bad times 0.3..0.2"),
    ([(0.0, 0.1, "AA1"), (0.1, float("inf"), "B")], "bad times 0.1..inf"),
])
def test_intervals_a_library_would_drop_are_reported(tmp_path, intervals, message):
    path = tmp_path / "bad.TextGrid"
    path.write_text(_short_format(intervals))
    with pytest.raises(InputError, match=message):
        read_textgrid(path)


def test_tiny_intervals_are_kept(tmp_path):
    path = tmp_path / "tiny.TextGrid"
    path.write_text(_short_format([(0.0, 0.1, "AA1"), (0.1, 0.1001, "T"), (0.1001, 0.3, "B")]))
    assert [p.label for p in read_textgrid(path).phones] == ["AA1", "T", "B"]


def test_broken_textgrids_are_one_line_errors(tmp_path):
    path = tmp_path / "x.TextGrid"
    for content, message in (
        (b"ooBinaryFile\x00", "a binary TextGrid"),
        (b'File type = "ooTextFile"\nObject class = "Sound"\n', "not a TextGrid"),
        (_short_format([(0.0, 0.1, "A")]).encode()[:-8], "expected an interval"),
        (b"\xff\x00\xfe", "not UTF-8 or UTF-16"),
        (_short_format([(0.0, 0.1, "A")]).replace('"1"', "").replace("\n1\n", "\n1.5\n").encode(),
         "the number of tiers = 1.5"),
    ):
        path.write_bytes(content)
        with pytest.raises(InputError, match=message) as info:
            read_textgrid(path)
        assert "\n" not in str(info.value)
