"""Streaming passes straight from a checkpoint: the same numbers as the cache path, shards that merge
into what one process writes, shards that resume, partial-sums files read as untrusted, a job array
through submitit's local executor, and a 60 s utterance on a 24 x 16 model within a block budget."""

from __future__ import annotations

import json
import os
import resource

import numpy as np
import pytest

from satool import testing
from satool.errors import BusyError, InputError
from satool.results.metrics import HeadScores
from satool.results.partial import PartialSums, shard_files
from satool.stages import extract, merge, metric, relate


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    testing.make_librispeech(root / "LS", speakers=("1", "2", "3"), per_speaker=3)
    ckpt = testing.make_checkpoint(root / "m.ckpt", preset="tiny")
    extract.run(extract.Settings(checkpoint=ckpt, corpus=root / "LS", out=root / "cache"))
    return root, ckpt


def assert_same_scores(a: HeadScores, b: HeadScores, rtol=1e-9):
    assert a.layers == b.layers and a.heads == b.heads and a.utterances == b.utterances
    assert set(a.values) == set(b.values)
    for name in a.values:
        np.testing.assert_allclose(a.values[name], b.values[name], rtol=rtol, atol=1e-12, equal_nan=True)
        np.testing.assert_array_equal(a.counts[name], b.counts[name])
    np.testing.assert_allclose(a.offset_profile, b.offset_profile, rtol=rtol, atol=1e-12, equal_nan=True)
    assert a.uniform_diagonality == pytest.approx(b.uniform_diagonality, rel=rtol)
    assert set(a.bootstrap) == set(b.bootstrap)
    for name in a.bootstrap:
        np.testing.assert_allclose(a.bootstrap[name], b.bootstrap[name], rtol=rtol, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(a.bootstrap_offset_profile, b.bootstrap_offset_profile, rtol=rtol, atol=1e-12,
                               equal_nan=True)
    # weights per power of two: counts of the same float16 values, so exactly equal
    np.testing.assert_array_equal(a.weight_histogram, b.weight_histogram)
    assert a.weight_histogram.sum() > 0


def assert_same_relations(a, b, rtol=1e-9):
    assert a.labels == b.labels and a.phones == b.phones and a.utterances == b.utterances
    for name in ("p_prime", "p_uniform", "verticality"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=rtol, atol=1e-15)


def test_a_stream_gives_the_cache_numbers_and_four_shards_merge_into_one(setup, tmp_path, monkeypatch):
    root, ckpt = setup
    monkeypatch.chdir(tmp_path)
    cached = metric.run(metric.Settings(source=root / "cache", out=tmp_path / "cache-metric")).scores
    single = metric.run(metric.Settings(source=ckpt, corpus=root / "LS", out=tmp_path / "one")).scores
    assert_same_scores(single, cached, rtol=1e-6)  # the stream rounds its maps to float16, as the cache stores them
    for i in range(4):
        assert metric.run(metric.Settings(source=ckpt, corpus=root / "LS", out=tmp_path / "four",
                                          shard=(i, 4))).scores is None
    assert len(shard_files(tmp_path / "four")) == 4
    merged = merge.run(merge.Settings(out=tmp_path / "four"))
    assert merged.kind == "metric" and merged.shards == 4 and merged.utterances == 9
    assert_same_scores(merged.result.scores, single)
    # what was written reads back the same
    assert_same_scores(HeadScores.load(tmp_path / "four"), HeadScores.load(tmp_path / "one"))
    for name in ("metrics.csv", "head_distribution.png", "offset_profiles.png", "metrics_bootstrap.npz"):
        assert (tmp_path / "four" / name).stat().st_size > 0
    # the same for the relation sums
    cached_rel = relate.run(relate.Settings(cache=root / "cache", out=tmp_path / "rel-cache")).relations
    single_rel = relate.run(relate.Settings(checkpoint=ckpt, corpus=root / "LS", out=tmp_path / "rel-one")).relations
    assert_same_relations(single_rel, cached_rel, rtol=1e-6)
    for i in range(4):
        relate.run(relate.Settings(checkpoint=ckpt, corpus=root / "LS", out=tmp_path / "rel-four", shard=(i, 4)))
    merged_rel = merge.run(merge.Settings(out=tmp_path / "rel-four")).result.relations
    assert_same_relations(merged_rel, single_rel)
    assert (tmp_path / "rel-four" / "relations.npz").stat().st_size > 0


def test_query_blocks_and_chosen_layers_give_the_same_numbers(setup, tmp_path, monkeypatch):
    root, ckpt = setup
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    whole = metric.run(metric.Settings(source=ckpt, corpus=root / "LS", out=tmp_path / "a", by=["globalness",
                                       "verticality", "diagonality", "weight"])).scores
    rows = metric.run(metric.Settings(source=ckpt, corpus=root / "LS", out=tmp_path / "b", block_mb=1e-5,
                                      by=["globalness", "verticality", "diagonality", "weight"])).scores
    assert_same_scores(rows, whole, rtol=1e-5)  # one query row per block
    second = metric.run(metric.Settings(source=ckpt, corpus=root / "LS", out=tmp_path / "c", layers=[2],
                                        by=["globalness", "weight"])).scores
    assert second.layers == [2]
    np.testing.assert_allclose(second.values["globalness"], whole.values["globalness"][1:], rtol=1e-5)
    # a stream bounds oneDNN's per-shape kernel cache (memory flat over many lengths) unless the user chose
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "8"
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "100")
    metric.run(metric.Settings(source=ckpt, corpus=root / "LS", out=tmp_path / "d", layers=[2], by=["globalness"]))
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "100"


def test_blocks_reduced_where_the_model_runs_give_the_host_numbers(setup, tmp_path, monkeypatch):
    """On a GPU the blocks stay torch tensors and are reduced where they lie (only sums come back to the
    host); here the same code runs on CPU tensors and must give what numpy's reductions give."""
    from satool.analysis import streaming
    from satool.stages import segment

    root, ckpt = setup
    monkeypatch.chdir(tmp_path)
    by = ["globalness", "verticality", "diagonality", "weight"]
    seg = dict(features=["attn:L1.H2", "attn:L2.H1"], tune_on="dev-clean", test_on="dev-clean", tune_utts=4)
    host = {block: metric.run(metric.Settings(source=ckpt, corpus=root / "LS", out=tmp_path / f"host{block}",
                                              block_mb=block, by=by)).scores for block in (1e-5, 256.0)}
    host_rel = relate.run(relate.Settings(checkpoint=ckpt, corpus=root / "LS", out=tmp_path / "host-rel",
                                          block_mb=1e-4)).relations
    host_seg = segment.run(segment.Settings(checkpoint=ckpt, corpus=root / "LS", out=tmp_path / "host-seg", **seg))
    original = streaming.model_utterances
    calls = []

    def on_device(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs, on_device=True)

    monkeypatch.setattr(streaming, "model_utterances", on_device)
    for block in (1e-5, 256.0):  # one query row per block (diagonals away from the block's corner), whole maps
        device = metric.run(metric.Settings(source=ckpt, corpus=root / "LS", out=tmp_path / f"dev{block}",
                                            block_mb=block, by=by)).scores
        assert_same_scores(device, host[block], rtol=1e-5)
    device_rel = relate.run(relate.Settings(checkpoint=ckpt, corpus=root / "LS", out=tmp_path / "dev-rel",
                                            block_mb=1e-4)).relations
    assert_same_relations(device_rel, host_rel, rtol=1e-6)
    device_seg = segment.run(segment.Settings(checkpoint=ckpt, corpus=root / "LS", out=tmp_path / "dev-seg", **seg))
    assert _segment_rows(device_seg.results) == _segment_rows(host_seg.results)
    assert len(calls) >= 5  # every pass above went through the torch reductions


class Killed(Exception):
    pass


class DiesAfterTwo:
    """A progress bar that kills its shard during the third utterance (its state is saved after each one)."""

    def __init__(self):
        self.seen = 0

    def total(self, total, completed=None):
        pass

    def advance(self, n=1):
        self.seen += n
        if self.seen == 3:
            raise Killed

    def info(self, text):
        pass


def test_a_finished_shard_is_skipped_and_an_interrupted_one_resumes(setup, tmp_path, monkeypatch):
    root, ckpt = setup
    monkeypatch.chdir(tmp_path)
    settings = dict(source=ckpt, corpus=root / "LS", out=tmp_path / "r", flush_every=0.0)

    with pytest.raises(Killed):
        metric.run(metric.Settings(**settings, shard=(0, 2)), DiesAfterTwo())
    state = PartialSums.load(tmp_path / "r" / "partial" / "metric-00000-of-00002.npz")
    assert not state.complete and len(state.utterances) == 2
    with pytest.raises(InputError, match="1 of 2 shards missing"):
        merge.merge_directory(tmp_path / "r")
    metric.run(metric.Settings(**settings, shard=(1, 2)))
    with pytest.raises(InputError, match="shard 0 of 2 not finished"):
        merge.merge_directory(tmp_path / "r")
    notes = []
    resumed = metric.run(metric.Settings(**settings, shard=(0, 2)), log=lambda text, label="": notes.append(text))
    assert resumed.stream.resumed == 2 and resumed.stream.reduced == 3
    assert any("resuming shard 0/2 after 2 utterances" in n for n in notes)
    again = metric.run(metric.Settings(**settings, shard=(0, 2)))
    assert again.stream.already_finished and again.stream.reduced == 0
    merged = merge.run(merge.Settings(out=tmp_path / "r")).result.scores
    single = metric.run(metric.Settings(source=ckpt, corpus=root / "LS", out=tmp_path / "one")).scores
    assert_same_scores(merged, single)
    # other settings in the same directory start the shard again
    notes.clear()
    other = metric.run(metric.Settings(**{**settings, "max_utts": 4}, shard=(1, 2)),
                       log=lambda text, label="": notes.append(text))
    assert other.stream.reduced == 2 and any("starts again" in n for n in notes)
    with pytest.raises(InputError, match="other settings"):
        merge.merge_directory(tmp_path / "r")


def test_two_processes_never_run_the_same_shard(setup, tmp_path, monkeypatch):
    import fcntl

    root, ckpt = setup
    monkeypatch.chdir(tmp_path)
    lock = tmp_path / "r" / "partial" / "metric-00000-of-00002.lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(BusyError, match="another process is running this shard"):
            metric.run(metric.Settings(source=ckpt, corpus=root / "LS", out=tmp_path / "r", shard=(0, 2)))


def test_kept_maps_are_a_cache_with_the_streamed_maps(setup, tmp_path, monkeypatch):
    from satool.cache import open_cache

    root, ckpt = setup
    monkeypatch.chdir(tmp_path)
    out = metric.run(metric.Settings(source=ckpt, corpus=root / "LS", out=tmp_path / "k", keep_maps=1,
                                     keep=["3-198-0002"], by=["globalness"]))
    kept = open_cache(tmp_path / "k" / "maps")
    assert sorted(kept.utterance_ids) == ["1-198-0000", "3-198-0002"]
    extracted = open_cache(root / "cache")
    for utt in kept.utterance_ids:
        np.testing.assert_array_equal(kept.attention(utt), extracted.attention(utt))
    assert out.scores.example == "1-198-0000" and (tmp_path / "k" / "top_heads.png").exists()


def _shard_file(tmp_path, setup):
    root, ckpt = setup
    metric.run(metric.Settings(source=ckpt, corpus=root / "LS", out=tmp_path / "r", shard=(0, 1),
                               by=["globalness"]))
    return tmp_path / "r" / "partial" / "metric-00000-of-00001.npz"


def _rewrite(file, change):
    with np.load(file, allow_pickle=False) as data:
        contents = {k: data[k] for k in data.files}
    change(contents)
    with open(file, "wb") as fh:
        np.savez(fh, **contents)


def _header(change):
    def edit(contents):
        header = json.loads(str(contents["header"]))
        change(header)
        contents["header"] = np.array(json.dumps(header))
    return edit


CRAFTED = {
    "not a zip": lambda f: f.write_bytes(b"garbage"),
    "a pickled object": lambda f: _rewrite(f, lambda c: c.update({"array/offset/sums": np.array([object()])})),
    "NaN sums": lambda f: _rewrite(f, lambda c: c["array/offset/sums"].fill(np.nan)),
    "a wrong shape": lambda f: _rewrite(f, lambda c: c.update({"array/offset/sums": np.zeros((3, 3))})),
    "negative counts": lambda f: _rewrite(f, lambda c: c["array/metric/globalness/count"].fill(-1)),
    "an unknown array": lambda f: _rewrite(f, lambda c: c.update({"array/extra": np.zeros(2)})),
    "a bad shard": lambda f: _rewrite(f, _header(lambda h: h.update(shard=[3, 2]))),
    "a bad kind": lambda f: _rewrite(f, _header(lambda h: h.update(kind="nope"))),
    "no header": lambda f: _rewrite(f, lambda c: c.pop("header")),
    "impossible layers": lambda f: _rewrite(f, _header(lambda h: h["settings"]["analysis"].update(layers=[]))),
}


@pytest.mark.parametrize("craft", CRAFTED)
def test_a_crafted_partial_file_is_one_line_and_exit_3(setup, tmp_path, monkeypatch, craft):
    monkeypatch.chdir(tmp_path)
    file = _shard_file(tmp_path, setup)
    CRAFTED[craft](file)
    with pytest.raises(InputError) as caught:
        merge.run(merge.Settings(out=tmp_path / "r"))
    assert caught.value.exit_code == 3 and "\n" not in str(caught.value)


def test_merge_on_the_command_line(setup, tmp_path, satool_cli):
    root, ckpt = setup
    for i in range(2):
        shard = satool_cli("metric", ckpt, root / "LS", "--shard", f"{i}/2", "--by", "globalness,weight",
                           "--out", tmp_path / "r", cwd=tmp_path)
        assert shard.returncode == 0, shard.stderr
        assert "satool merge" in shard.stderr
    done = satool_cli("merge", tmp_path / "r", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "merged 2 shards (9 utterances scored)" in done.stderr
    assert HeadScores.load(tmp_path / "r").utterances == 9
    (tmp_path / "r" / "partial" / "metric-00001-of-00002.npz").write_bytes(b"PK\x03\x04 not really")
    bad = satool_cli("merge", tmp_path / "r", cwd=tmp_path)
    assert bad.returncode == 3 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    missing = satool_cli("merge", tmp_path / "nothing", cwd=tmp_path)
    assert missing.returncode == 3 and "no partial sums here" in missing.stderr


@pytest.mark.slow
def test_a_job_array_through_submitits_local_executor_matches_one_process(setup, tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    root, ckpt = setup
    monkeypatch.chdir(tmp_path)
    common = dict(source=ckpt, corpus=root / "LS", by=["globalness", "verticality", "diagonality", "weight"])
    single = metric.run(metric.Settings(**common, out=tmp_path / "one")).scores
    cluster = metric.Cluster(jobs=tmp_path / "jobs", timeout_min=10)
    array = metric.run(metric.Settings(**common, out=tmp_path / "array", submit="local", shards=4, cluster=cluster))
    assert len(shard_files(tmp_path / "array")) == 4
    assert_same_scores(array.scores, single)
    assert any((tmp_path / "jobs").rglob("*_log.out"))  # submitit's own logs of each task
    # segmentation's shards too: each tunes on its own, the merge finds they chose the same
    from satool.stages import segment

    common = dict(checkpoint=ckpt, corpus=root / "LS", features=["attn:L2.H2", "mel"], tune_on="dev-clean",
                  test_on="dev-clean", tune_utts=3)
    one = segment.run(segment.Settings(**common, out=tmp_path / "seg-one"))
    four = segment.run(segment.Settings(**common, out=tmp_path / "seg-array", submit="local", shards=4,
                                        cluster=cluster))
    assert len(shard_files(tmp_path / "seg-array")) == 4
    assert _segment_rows(four.results) == _segment_rows(one.results)


@pytest.mark.slow
def test_a_60_s_utterance_on_a_24_by_16_model_within_the_block_budget(tmp_path, monkeypatch):
    import soundfile

    monkeypatch.chdir(tmp_path)
    ckpt = testing.make_checkpoint(tmp_path / "deep.ckpt", preset="tiny", num_layers=24, num_heads=16,
                                   hidden_size=64, intermediate_size=128)
    corpus = tmp_path / "LS" / "dev-clean" / "7" / "1"
    corpus.mkdir(parents=True)
    rng = np.random.default_rng(0)
    soundfile.write(corpus / "7-1-0000.flac", (0.1 * rng.standard_normal(60 * 16000)).astype(np.float32), 16000)
    (corpus / "7-1.trans.txt").write_text("7-1-0000 LONG\n")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out = metric.run(metric.Settings(source=ckpt, corpus=tmp_path / "LS", out=tmp_path / "r", block_mb=8,
                                     by=["globalness", "verticality", "diagonality", "weight"]))
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    scores = out.scores
    assert scores.utterances == 1 and (scores.layers, scores.heads) == (list(range(1, 25)), list(range(1, 17)))
    assert all(np.isfinite(v).all() for v in scores.values.values())
    steps = 2000  # 60 s of 10 ms frames, 3 per step: whole maps would be 24 x 16 x 2000^2 x 4 B = 6.1 GB
    assert 24 * 16 * steps**2 * 4 > 6e9 and grown < 1.5e9


def _segment_rows(results):
    """Everything a segmentation result (SegmentResults) holds, comparable (NaN written as a string)."""
    return json.dumps([(r.row(), r.curve, r.per_utterance) for r in results.results] + [results.test_ids],
                      sort_keys=True, default=str)


def test_segmentation_from_a_stream_gives_the_cache_scores_and_three_shards_merge_into_one(setup, tmp_path,
                                                                                           monkeypatch):
    from satool.stages import segment

    root, ckpt = setup
    monkeypatch.chdir(tmp_path)
    common = dict(features=["mfcc", "attn:L1.H2", "attn:L2.H1"], tune_on="dev-clean", test_on="dev-clean",
                  tune_utts=4)
    cached = segment.run(segment.Settings(cache=root / "cache", examples=[], out=tmp_path / "cache-seg", **common))
    streamed = segment.run(segment.Settings(checkpoint=ckpt, corpus=root / "LS", out=tmp_path / "one", **common))
    assert [r.source for r in streamed.results.results] == [r.source for r in cached.results.results]
    assert len(streamed.results.test_ids) == 9 and streamed.results.results[1].n_tune == 4
    # alpha, beta, every count, the curves, the counts per utterance
    assert _segment_rows(streamed.results) == _segment_rows(cached.results)
    for i in range(3):
        part = segment.run(segment.Settings(checkpoint=ckpt, corpus=root / "LS", out=tmp_path / "three",
                                            shard=(i, 3), **common))
        assert part.results is None
    merged = merge.run(merge.Settings(out=tmp_path / "three"))
    assert merged.kind == "segment" and merged.shards == 3
    assert _segment_rows(merged.result.results) == _segment_rows(streamed.results)
    # what was written reads back the same, and the partial files hold counts, not maps
    from satool.results.segment import SegmentResults

    def written(results):  # what a result file keeps (the curves' points keep the ratios), numbers as floats
        def floats(value):
            if isinstance(value, dict):
                return {k: floats(v) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return [floats(v) for v in value]
            return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else value

        return json.dumps(floats([(r.row(), r.per_utterance, r.curve_rows()) for r in results.results]))

    assert written(SegmentResults.load(tmp_path / "three")) == written(streamed.results)
    assert (tmp_path / "three" / "pr_curve.png").stat().st_size > 0
    assert sum(f.stat().st_size for f in shard_files(tmp_path / "three")) < 100_000


def test_hidden_states_streamed_give_the_cache_scores(setup, tmp_path, monkeypatch):
    from satool.stages import segment

    root, ckpt = setup
    monkeypatch.chdir(tmp_path)
    extract.run(extract.Settings(checkpoint=ckpt, corpus=root / "LS", out=tmp_path / "cache", hidden_states=[0, 2]))
    common = dict(features=["hidden:0", "hidden:2", "attn:L2.H1"], tune_on="dev-clean", test_on="dev-clean",
                  tune_utts=5)
    cached = segment.run(segment.Settings(cache=tmp_path / "cache", examples=[], out=tmp_path / "c", **common))
    streamed = segment.run(segment.Settings(checkpoint=ckpt, corpus=root / "LS", out=tmp_path / "s", **common))
    assert _segment_rows(streamed.results) == _segment_rows(cached.results)
    assert streamed.results.best_hidden == cached.results.best_hidden is not None


def test_segmentation_shards_resume_and_a_crafted_count_is_refused(setup, tmp_path, monkeypatch):
    from satool.stages import segment

    root, ckpt = setup
    monkeypatch.chdir(tmp_path)
    common = dict(checkpoint=ckpt, corpus=root / "LS", features=["attn:L1.H1"], tune_on="dev-clean",
                  test_on="dev-clean", tune_utts=3, out=tmp_path / "r", flush_every=0.0)

    with pytest.raises(Killed):
        segment.run(segment.Settings(**common, shard=(0, 2)), DiesAfterTwo())
    resumed = segment.run(segment.Settings(**common, shard=(0, 2)))
    assert resumed.stream.resumed == 2 and resumed.stream.reduced == 3
    segment.run(segment.Settings(**common, shard=(1, 2)))
    merged = merge.run(merge.Settings(out=tmp_path / "r")).result
    single = segment.run(segment.Settings(**{**common, "out": tmp_path / "one"}))
    assert _segment_rows(merged.results) == _segment_rows(single.results)
    # a count no pass can make: one line, exit 3
    _rewrite(tmp_path / "r" / "partial" / "segment-00001-of-00002.npz",
             lambda c: c["array/segment/point"].fill(-2))
    with pytest.raises(InputError, match="whole counts") as caught:
        merge.run(merge.Settings(out=tmp_path / "r"))
    assert caught.value.exit_code == 3 and "\n" not in str(caught.value)


def test_segmentation_from_a_checkpoint_refuses_what_needs_a_cache(setup, tmp_path, satool_cli):
    root, ckpt = setup
    for extra, message in ((["-f", "attn:best"], "attn:best needs a cache"),
                           (["-f", "hidden:all"], "hidden:all needs a cache"),
                           (["-f", "hidden:9"], "hidden states 0..2"),
                           (["-f", "mfcc", "--all-heads"], "--all-heads needs a cache"),
                           (["-f", "attn:L9.H1"], "layer 9")):
        result = satool_cli("segment", ckpt, root / "LS", *extra, "--tune-on", "dev-clean", "--test-on", "dev-clean",
                            "--out", tmp_path / "x", cwd=tmp_path)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
