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
from satool.stages import NoProgress


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
    probe_steps: int = 8000  # at most; probes stop early when held-out training utterances stop improving
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


# The demo runs on the CPU wherever it runs (its documented numbers and times are the CPU's); the stages'
# own default is "auto".
DEVICE = "cpu"

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
        with (progress_factory(name) if progress_factory else NoProgress()) as bar:
            extra = body(bar) or {}
        state.mark(name, wanted, time.perf_counter() - began, **extra)

    corpus, ckpt, cache = out / "corpus", out / "model.ckpt", out / "attention-cache"
    results = out / "results"

    def make_corpus(bar):
        try:
            from satool.data.synth import synthesize_corpus
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
        from satool.stages import pretrain as stage
        from satool.training.pretrain import PretrainSettings

        step = stage.Settings(corpus=corpus, out=ckpt, device=DEVICE, training=PretrainSettings(
            preset=settings.preset, mask_span=3, downsample=3, steps=settings.pretrain_steps,
            batch_size=settings.batch_size, learning_rate=settings.learning_rate, seed=settings.seed,
            pre_layer_norm=settings.pre_layer_norm, save_every=max(100, settings.pretrain_steps // 5)))
        result = stage.run(step, bar)
        stage.record(workspace, step, result)
        return {"final_loss": result.final_loss, "heldout_l1": result.heldout_l1,
                "frames_per_second": result.frames_per_second, "warnings": result.warnings}

    def run_stage(module, step, bar) -> Any:
        outputs = module.run(step, bar)
        module.record(workspace, step, outputs)
        return outputs

    def health(bar):
        from satool.stages import health as stage

        run_stage(stage, stage.Settings(checkpoint=ckpt, corpus=corpus, split="dev", seed=settings.seed,
                                        out=results / "health", device=DEVICE), bar)

    def extract(bar):
        from satool.stages import extract as stage

        states = [h for h in settings.hidden_states if h <= _num_layers(ckpt)]
        summary = run_stage(stage, stage.Settings(checkpoint=ckpt, corpus=corpus, out=cache, split=["dev", "test"],
                                                  hidden_states=states, device=DEVICE), bar)
        return {"utterances": summary.written + summary.already_done, "skipped": len(summary.skipped)}

    def metric(bar):
        from satool.stages import metric as stage

        run_stage(stage, stage.Settings(source=cache, out=results / "metric"), bar)

    def segment(bar):
        from satool.stages import segment as stage

        # the head and the hidden state are chosen on dev (heads: tuned on one half, scored on the other);
        # the test split scores them once
        run_stage(stage, stage.Settings(cache=cache, features=["mfcc", "mel", "attn:best", "hidden:all"], tune_on="dev",
                                        test_on="test", tune_utts=settings.segment_tune_utts,
                                        test_utts=settings.segment_test_utts, curve_hidden=False,
                                        examples=["mfcc", "attn:best"], out=results / "segment"), bar)

    def relate(bar):
        from satool.stages import relate as stage

        run_stage(stage, stage.Settings(cache=cache, out=results / "relate"), bar)

    def data() -> Any:
        from satool.stages.probe import Data

        return Data(checkpoint=ckpt, corpus=corpus, train_utts=settings.probe_train_utts,
                    test_utts=settings.probe_test_utts, device=DEVICE)

    def probing() -> Any:
        from satool.analysis.probing.tasks import ProbeSettings

        return ProbeSettings(steps=settings.probe_steps)

    def probe(bar):
        from satool.stages import probe as stage

        outputs = run_stage(stage, stage.Settings(data=data(), tasks=["phone", "speaker", "speaker-utt", "reconstruction"],
                                                  probing=probing(), seed=settings.seed, out=results / "probe"), bar)
        return {"warnings": outputs.warnings}

    def prune(bar):
        from satool.stages import prune as stage

        run_stage(stage, stage.Settings(data=data(), step=settings.prune_step, random_seeds=settings.random_seeds,
                                        metrics=results / "metric", probing=probing(), seed=settings.seed,
                                        out=results / "prune"), bar)

    def report(bar):
        from satool.stages import report as stage

        run_stage(stage, stage.Settings(directory=out), bar)

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
    with (progress_factory("report") if progress_factory else NoProgress()) as bar:
        report(bar)
    state.mark("report", {}, time.perf_counter() - began)
    return state.done


def _num_layers(ckpt: Path) -> int:
    from satool.models.mockingjay.checkpoint import load_checkpoint

    return load_checkpoint(ckpt).config.num_layers
