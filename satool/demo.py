"""`satool demo`: the whole study end to end on the built-in synthetic corpus.

Stages (each a plain library call; finished ones are skipped on a second run,
tracked in ``DIR/demo-state.json`` together with the settings they ran with):

1. synthesise the corpus (eSpeak NG voices, exact phone alignments)
2. model: copy the reference model that ships with satool (:mod:`satool.reference`), or
   with ``pretrain=True`` pre-train one with the same recipe as far as the budget allows
3. health: held-out masked L1 beside four baselines, attention off, head locality (dev split)
4. extract attention (dev and test splits, with hidden states)
5. metric: G, V, D, W, categories, offset profiles and locality
6. segment: MFCC, log-Mel, every head (ranked on dev), the best head and hidden layer
7. relate: phone relation maps of the most vertical heads
8. probe: phone, speaker, utterance speaker, reconstruction; log-Mel and MFCC beside
9. prune: every metric and five random orders, three tasks
10. report: DIR/report.html, every finding judged by a stated rule

``DIR/satool.toml`` records everything, so any stage can be rerun by hand
inside DIR (e.g. ``cd DIR && satool prune --by globalness --task speaker``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from satool.errors import EnvironmentProblem


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of the full demo and of ``--quick`` (CI smoke test)."""

    speakers: int = 40
    utterances_per_speaker: int = 30
    # False: analyse the shipped reference model; True: pre-train one here with the same recipe
    pretrain: bool = False
    preset: str = "demo"
    pretrain_steps: int = 3000
    learning_rate: float = 1e-3
    pre_layer_norm: bool = True
    batch_size: int = 8
    hidden_states: tuple[int, ...] = (0, 1, 2, 3, 4)
    segment_tune_utts: int | None = 60
    segment_test_utts: int | None = 120
    probe_steps: int = 1500
    probe_train_utts: int | None = 300  # taken round-robin over speakers, so every test speaker is seen
    probe_test_utts: int | None = 120
    prune_step: int = 8  # 0, 8, ..., 48 heads: 1/6 (the paper's 24 of 144), 1/3, 1/2, ...
    random_seeds: int = 5  # the spread of the random orders is the noise every verdict is compared with
    seed: int = 0

    @classmethod
    def quick(cls) -> DemoSettings:
        return cls(speakers=8, utterances_per_speaker=10, pretrain=True, preset="tiny", pretrain_steps=60,
                   batch_size=8, hidden_states=(0, 1, 2), segment_tune_utts=None, segment_test_utts=None,
                   probe_steps=150, probe_train_utts=None, probe_test_utts=None, prune_step=1, random_seeds=3)


@dataclass
class DemoState:
    """What finished, with which settings, and how long it took."""

    path: Path
    done: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> DemoState:
        file = path / "demo-state.json"
        done = json.loads(file.read_text()).get("done", {}) if file.exists() else {}
        return cls(path, done)

    def finished(self, stage: str, settings: dict) -> bool:
        return self.done.get(stage, {}).get("settings") == _plain(settings)

    def mark(self, stage: str, settings: dict, seconds: float, **extra: Any) -> None:
        self.done[stage] = {"settings": _plain(settings), "seconds": seconds, **extra}
        from satool.cache import write_json_atomic

        write_json_atomic(self.path / "demo-state.json", {"done": self.done})


def _plain(settings: dict) -> dict:
    """Settings as they read back from JSON (tuples become lists), so comparisons hold across runs."""
    return json.loads(json.dumps(settings))


STAGES = ("corpus", "model", "health", "extract", "metric", "segment", "relate", "probe", "prune", "report")


def run_demo(out: str | Path, settings: DemoSettings, *,
             on_stage: Callable[[int, str, bool], None] | None = None,
             progress_factory: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """Run (or resume) every stage into ``out``; returns the demo state.

    ``on_stage(index, name, skipped)`` is called as each stage starts;
    ``progress_factory(description)`` returns a context manager with
    ``advance(n)`` / ``total(total, done)`` for the stage's progress bar.
    """
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    state = DemoState.load(out)
    s = asdict(settings)
    # what the analysed model depends on: the shipped weights, or the recipe that trains one here
    if settings.pretrain:
        s["model"] = {k: s[k] for k in ("preset", "pretrain_steps", "learning_rate", "pre_layer_norm", "batch_size")}
    else:
        from satool import reference

        s["model"] = {"reference": reference.provenance().get("sha256")}

    from satool.workspace import Workspace

    workspace = Workspace(out / "satool.toml")

    def stage(index: int, name: str, keys: tuple[str, ...], body: Callable[[Any], dict | None]) -> None:
        wanted = {k: s[k] for k in keys}
        skipped = state.finished(name, wanted)
        if on_stage is not None:
            on_stage(index, name, skipped)
        if skipped:
            return
        began = time.perf_counter()
        with (progress_factory(name) if progress_factory else _NoProgress()) as bar:
            extra = body(bar) or {}
        state.mark(name, wanted, time.perf_counter() - began, **extra)

    corpus, ckpt, cache = out / "corpus", out / "model.ckpt", out / "attention-cache"
    results = out / "results"

    def make_corpus(bar):
        try:
            from satool.synth import synthesize_corpus
        except ImportError as exc:  # pragma: no cover - the synth extra is missing
            raise EnvironmentProblem(
                f"the demo needs the synthetic corpus: pip install 'satool[synth]' ({exc})") from None
        manifest = synthesize_corpus(corpus, speakers=settings.speakers,
                                     utterances_per_speaker=settings.utterances_per_speaker, seed=settings.seed,
                                     progress=lambda d, t: bar.total(t, d), overwrite=True)
        workspace.record("corpus", {"corpus": corpus})
        return {"hours": manifest["total_hours"]}

    def model(bar):
        if not settings.pretrain:
            import shutil

            from satool import reference

            shutil.copyfile(reference.checkpoint(), ckpt)
            workspace.record("pretrain", {"checkpoint": ckpt, "corpus": corpus})
            return {"reference": reference.provenance()}
        from satool.pretrain import PretrainSettings
        from satool.pretrain import pretrain as run

        result = run(corpus, ckpt, PretrainSettings(
            preset=settings.preset, mask_span=3, downsample=3, steps=settings.pretrain_steps,
            batch_size=settings.batch_size, learning_rate=settings.learning_rate, seed=settings.seed,
            pre_layer_norm=settings.pre_layer_norm, save_every=max(100, settings.pretrain_steps // 5),
        ), progress=lambda step, loss: (bar.total(settings.pretrain_steps, step), bar.info(f"loss {loss:.3f}")))
        workspace.record("pretrain", {"checkpoint": ckpt, "corpus": corpus}, steps=settings.pretrain_steps)
        return {"final_loss": result.final_loss, "heldout_l1": result.heldout_l1,
                "frames_per_second": result.frames_per_second, "warnings": result.warnings}

    def health(bar):
        from satool.heldout import evaluate_checkpoint, save_health

        bar.total(len(open_corpus_split(corpus, "dev")), 0)
        check = evaluate_checkpoint(ckpt, corpus, "dev", seed=settings.seed, progress=bar.advance)
        save_health(check, results / "health", split="dev", checkpoint=ckpt)
        workspace.record("health", {"health": results / "health"})

    def extract(bar):
        from satool.extract import ExtractSettings
        from satool.extract import extract as run

        states = [h for h in settings.hidden_states if h <= _num_layers(ckpt)]
        summary = run(ckpt, corpus, cache, ExtractSettings(split=["dev", "test"], hidden_states=states),
                      progress=lambda d, t: bar.total(t, d))
        workspace.record("extract", {"cache": cache})
        return {"utterances": summary.written + summary.already_done, "skipped": len(summary.skipped)}

    def metric(bar):
        from satool.cache import open_cache
        from satool.headscores import score_cache, write_outputs
        from satool.plugins import get_plugins

        opened = open_cache(cache)
        bar.total(len(opened.utterance_ids), 0)
        scores = score_cache(opened, [e.obj for e in get_plugins().metrics], progress=bar.advance)
        write_outputs(scores, results / "metric", opened.utterance_ids[0], opened.attention(opened.utterance_ids[0]),
                      step_s=opened.frames_per_step * 0.01)
        workspace.record("metric", {"metrics": results / "metric"})

    def segment(bar):
        from satool.cache import open_cache
        from satool.results import write_csv
        from satool.segment_study import (
            FeatureSource,
            FrameSource,
            aligned_ids,
            rank_heads,
            study,
            write_study,
        )

        opened = open_cache(cache)
        frames = FrameSource(opened)
        tune_ids = aligned_ids(opened, "dev")[: settings.segment_tune_utts]
        test_ids = aligned_ids(opened, "test")[: settings.segment_test_utts]
        bar.total(len(opened.layers) * len(opened.heads), 0)
        # heads are ranked on dev alone (tuned on one half, scored on the other), so the test split
        # is used once, for the chosen head
        half = len(tune_ids) // 2
        heads = rank_heads(frames, tune_ids[:half], tune_ids[half:], tolerance=0.02, progress=bar.advance)
        write_csv(results / "segment" / "heads_by_r_value.csv", heads)
        best_head = FeatureSource("attn", heads[0]["layer"], heads[0]["head"])
        hidden = [FeatureSource("hidden", h) for h in opened.hidden_states]
        outcomes = study(frames, [FeatureSource("mfcc"), FeatureSource("mel"), best_head, *hidden], tune_ids,
                         test_ids, tuned_on="dev", curve=lambda source: source.kind != "hidden",
                         progress=lambda label, done, total: (bar.total(total, done), bar.info(label)))
        # the hidden state is chosen on the tuning split (dev), like the head: the test split only scores it
        best_hidden = max((r for r in outcomes if r.source.startswith("hidden:")),
                          key=lambda r: r.tune_r_value, default=None)
        write_study(frames, outcomes, results / "segment", tolerance=0.02, example_id=test_ids[0],
                    examples=[FeatureSource("mfcc"), best_head],
                    extra={"best_head": best_head.label, "best_hidden": best_hidden.source if best_hidden else None})
        workspace.record("segment", {"segment": results / "segment"})

    def relate(bar):
        from satool.cache import open_cache
        from satool.headscores import cache_stream
        from satool.relations import relate as run
        from satool.relations import save_all, top_heads

        opened = open_cache(cache)
        bar.total(len(opened.utterance_ids), 0)
        relations = run(cache_stream(opened, reuse_buffer=True), opened.layers, opened.heads, opened.phone_set, progress=bar.advance)
        save_all(relations, top_heads(relations.verticality, 4), results / "relate")
        workspace.record("relate", {"relate": results / "relate"})

    def probe_and_prune_data(bar):
        from satool.corpus import open_corpus
        from satool.models.base import load_model
        from satool.representations import ProbeData

        model, opened = load_model(ckpt), open_corpus(corpus)
        train = opened.select("train", settings.probe_train_utts, balanced=True)
        test = opened.select("test", settings.probe_test_utts, balanced=True)
        bar.total(len(train) + len(test), 0)
        return model, opened, train, test, [ProbeData(model, opened, utts, reconstruction=True, progress=bar.advance)
                                            for utts in (train, test)]

    def probe(bar):
        from satool.plugins import get_plugins
        from satool.probe_study import convergence_warnings, left_out_warnings, probe_rows
        from satool.probing import ProbeSettings
        from satool.results import write_csv, write_json

        model, opened, train, test, data = probe_and_prune_data(bar)
        tasks = [get_plugins().tasks.get(t) for t in ("phone", "speaker", "speaker-utt", "reconstruction")]
        rows, _ = probe_rows(model, opened, train, test, tasks, settings=ProbeSettings(steps=settings.probe_steps),
                             seed=settings.seed, data=tuple(data))
        write_csv(results / "probe" / "probe_results.csv", rows)
        write_json(results / "probe" / "probe_results.json", rows)
        workspace.record("probe", {"probe": results / "probe"})
        return {"warnings": left_out_warnings(rows) + convergence_warnings(rows)}

    def prune(bar):
        from satool.headscores import HeadScores
        from satool.plugins import get_plugins
        from satool.probing import ProbeSettings
        from satool.pruning import RepresentationStore, plan, save_sweep, sweep_heads

        model, _, _, _, data = probe_and_prune_data(bar)
        tasks = [get_plugins().tasks.get(t) for t in ("phone", "speaker", "speaker-utt")]
        scores = HeadScores.load(results / "metric")
        sweep = plan(["globalness", "verticality", "diagonality", "weight", "random"], scores, model.num_layers,
                     model.num_heads, step=settings.prune_step, random_seeds=range(settings.random_seeds))
        bar.total(sum(len(o) for o in sweep.orders.values()) * len(sweep.levels), 0)
        rows = sweep_heads(RepresentationStore(*data), sweep, tasks, seed=settings.seed,
                           settings=ProbeSettings(steps=settings.probe_steps),
                           on_level=lambda name, level: bar.advance())
        save_sweep(rows, results / "prune", total_heads=model.num_layers * model.num_heads, scores=scores,
                   first=sweep.levels[1])
        workspace.record("prune", {"prune": results / "prune"})

    def report(bar):
        from satool.report import build_report

        build_report(out)
        workspace.record("report", {"report": out / "report.html"})

    data_keys = ("speakers", "utterances_per_speaker", "seed")
    model_keys = (*data_keys, "model")
    probe_keys = (*model_keys, "probe_steps", "probe_train_utts", "probe_test_utts")
    bodies = [
        ("corpus", data_keys, make_corpus),
        ("model", model_keys, model),
        ("health", model_keys, health),
        ("extract", (*model_keys, "hidden_states"), extract),
        ("metric", model_keys, metric),
        ("segment", (*model_keys, "segment_tune_utts", "segment_test_utts"), segment),
        ("relate", model_keys, relate),
        ("probe", probe_keys, probe),
        ("prune", (*probe_keys, "prune_step", "random_seeds"), prune),
    ]
    for index, (name, keys, body) in enumerate(bodies, 1):
        stage(index, name, keys, body)
    # the report is always rebuilt (cheap), so it shows every finished stage
    if on_stage is not None:
        on_stage(len(bodies) + 1, "report", False)
    began = time.perf_counter()
    with (progress_factory("report") if progress_factory else _NoProgress()) as bar:
        report(bar)
    state.mark("report", {}, time.perf_counter() - began)
    return state.done


def open_corpus_split(corpus: Path, split: str) -> list:
    from satool.corpus import open_corpus

    return open_corpus(corpus).select(split)


def _num_layers(ckpt: Path) -> int:
    from satool.models.checkpoint import load_checkpoint

    return load_checkpoint(ckpt).config.num_layers


class _NoProgress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def advance(self, n: int = 1) -> None:
        pass

    def total(self, total: int, completed: int | None = None) -> None:
        pass

    def info(self, text: str) -> None:
        pass
