"""`satool demo`: the paper's whole experiment end to end on the built-in synthetic corpus.

The paper compares three models trained alike except for the mask span Cnum (M3, M6, M9). The demo
studies the reference models that ship with satool the same way (or, with ``pretrain=True``, models
it pre-trains here with the same recipe and each span):

1. corpus: synthesise it once (eSpeak NG voices, exact phone alignments);
2. for every model, in ``DIR/<model>/`` (a workspace of its own, with its own report):
   model (copy or pre-train), health (held-out masked L1 beside four baselines, attention off, head
   locality, where the local heads look under pre-training masks), extract (dev and test), metric
   (G, V, D, W, offset profiles, bootstrap replicates), segment (every head ranked on dev; the best
   head and hidden state scored on test), relate (phone relation maps), probe (every hidden layer and
   the input features), prune, spans (attention spans), report. The first model gets the whole
   single-model study (every metric order and five random orders, three tasks: the paper's Fig. 5 a-c
   are M3's); the others what the comparison findings judge (globalness against five random orders,
   phone task, at half the heads and above: Fig. 5 d-f), which keeps three models inside the budget;
3. study: the models side by side (``satool compare``) and a verdict on every finding of the paper,
   in ``DIR/report.html`` (tables and figures in ``DIR/study/``).

Finished stages are skipped on a second run (tracked in ``demo-state.json`` files with the settings
they ran with). Model-independent work is done once: MFCC and log-Mel segmentation and the
input-feature probes of the first model are shared with the others (same corpus, same utterances).
Any stage can be rerun by hand in a model's directory (``cd DIR/M3 && satool prune --by globalness``).
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
    models: tuple[str, ...] = ("M3", "M6", "M9")  # the shipped reference models studied (those installed)
    # False: study the shipped reference models; True: pre-train one per mask span here (same recipe)
    pretrain: bool = False
    spans: tuple[int, ...] = (3, 6, 9)  # mask spans Cnum of the models pre-trained with ``pretrain``
    preset: str = "demo"
    pretrain_steps: int = 3000
    learning_rate: float = 1e-3
    pre_layer_norm: bool = True
    batch_size: int = 8
    hidden_states: tuple[int, ...] = (0, 1, 2, 3, 4)
    segment_tune_utts: int | None = 60
    segment_test_utts: int | None = 120
    segment_workers: int = 0  # processes ranking the heads: one per core (1: no processes to start)
    probe_steps: int = 8000  # at most; probes stop early when held-out training utterances stop improving
    probe_precision: str = "auto"  # the probes' products: bfloat16 where native (about 2x faster), else float32
    probe_train_utts: int | None = 300  # taken round-robin over speakers, so every test speaker is seen
    probe_test_utts: int | None = 120
    # The first model gets the whole single-model study (the paper's pruning figures for the three tasks
    # are M3's); the others what the comparison findings judge (phone task, globalness against random).
    prune_levels: tuple[int, ...] = (8, 16, 24, 32, 48)  # heads: 1/6 (the paper's 24 of 144), 1/3, 1/2, 2/3, all
    prune_tasks: tuple[str, ...] = ("phone", "speaker", "speaker-utt")
    prune_by: tuple[str, ...] = ("globalness", "verticality", "diagonality", "weight", "random")
    compared_prune_levels: tuple[int, ...] = (24, 32, 48)  # half, the first level above half, all
    compared_prune_tasks: tuple[str, ...] = ("phone",)
    compared_prune_by: tuple[str, ...] = ("globalness", "random")
    compared_probe_tasks: tuple[str, ...] = ("phone", "speaker-utt", "reconstruction")  # on every layer
    random_seeds: int = 5  # the spread of the random orders is the noise every verdict is compared with
    attention_spans: tuple[int, ...] = (0, 1, 2, 4, 8, 16)  # span pruning: r in model steps (phone task)
    judge: bool = True  # False: the sizes are too small to measure the noise; every verdict inconclusive
    seed: int = 0

    @classmethod
    def quick(cls) -> DemoSettings:
        """A smoke test of every stage on the shipped models: a small corpus, short probes, few
        pruning levels; it judges nothing."""
        return cls(speakers=4, utterances_per_speaker=6, hidden_states=(0, 2, 4), segment_tune_utts=4,
                   segment_test_utts=4, segment_workers=1, probe_steps=40, probe_train_utts=None, probe_test_utts=None,
                   prune_levels=(48,), prune_tasks=("phone", "speaker-utt"), compared_prune_levels=(48,),
                   compared_probe_tasks=("phone", "speaker-utt"), random_seeds=3, attention_spans=(2,),
                   judge=False)

    def model_names(self) -> list[str]:
        if self.pretrain:
            return [f"M{span}" for span in self.spans]
        from satool import reference

        shipped = reference.available()
        return [name for name in self.models if name in shipped]


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


def run_demo(out: str | Path, settings: DemoSettings, *,
             on_stage: Callable[[int, str, bool], None] | None = None,
             progress_factory: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """Run (or resume) every stage into ``out``; returns every stage's state, keyed ``model/stage``
    (``corpus`` and ``study`` for the shared ones).

    ``on_stage(index, name, skipped)`` is called as each stage starts (``name``: ``M3/extract``, ...);
    ``progress_factory(description)`` returns a context manager with ``advance(n)`` / ``total(total,
    done)`` / ``info(text)`` for the stage's progress bar.
    """
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    names = settings.model_names()
    if not names:
        raise EnvironmentProblem("none of the reference models " + ", ".join(settings.models) + " is installed")
    top = DemoState.load(out)
    s = asdict(settings)
    corpus = out / "corpus"
    position = [0]

    def stage(state: DemoState, label: str, name: str, wanted: dict, body: Callable[[Any], dict | None],
              always: bool = False) -> None:
        position[0] += 1
        skipped = not always and state.finished(name, wanted)
        if on_stage is not None:
            on_stage(position[0], label, skipped)
        if skipped:
            return
        began = time.perf_counter()
        with (progress_factory(label) if progress_factory else NoProgress()) as bar:
            extra = body(bar) or {}
        state.mark(name, wanted, time.perf_counter() - began, **extra)

    def make_corpus(bar):
        try:
            from satool.data.synth import synthesize_corpus
        except ImportError as exc:  # pragma: no cover - the synth extra is missing
            raise EnvironmentProblem(
                f"the demo needs the synthetic corpus: pip install 'satool[synth]' ({exc})") from None
        manifest = synthesize_corpus(corpus, speakers=settings.speakers,
                                     utterances_per_speaker=settings.utterances_per_speaker, seed=settings.seed,
                                     progress=lambda d, t: bar.total(t, d), overwrite=True)
        return {"hours": manifest["total_hours"]}

    data_keys = {k: s[k] for k in ("speakers", "utterances_per_speaker", "seed")}
    stage(top, "corpus", "corpus", data_keys, make_corpus)
    first = out / names[0]
    for index, name in enumerate(names):
        model = ModelRun(out / name, name, corpus, settings, shared_from=None if index == 0 else first)
        state = DemoState.load(model.directory)
        model_keys = {**data_keys, "model": model.identity()}
        for stage_name, keys in MODEL_STAGES:
            wanted = {**model_keys, **{k: s[k] for k in keys}}
            if stage_name in ("segment", "probe") and index:
                wanted["shared_from"] = names[0]
            stage(state, f"{name}/{stage_name}", stage_name, wanted, getattr(model, stage_name),
                  always=stage_name == "report")

    def study(bar):
        from satool.stages import compare

        spans = [int(n[1:]) if n[1:].isdigit() else None for n in names]
        outputs = compare.run(compare.Settings(runs=[out / n for n in names], names=names, spans=spans,
                                               out=out / "study", judge=settings.judge,
                                               why_not=QUICK_REASON), bar)
        import shutil

        shutil.copyfile(outputs.report, out / "report.html")
        rewrite_links(out / "report.html")
        return {"verdicts": len(outputs.verdicts.verdicts)}

    stage(top, "study", "study", {}, study, always=True)
    done = {f"{name}/{k}": v for name in names for k, v in DemoState.load(out / name).done.items()}
    return {"corpus": top.done.get("corpus", {}), **done, "study": top.done.get("study", {})}


def stage_count(settings: DemoSettings) -> int:
    """How many stages :func:`run_demo` announces: the corpus, every model's, the study."""
    return 1 + len(settings.model_names()) * len(MODEL_STAGES) + 1


QUICK_REASON = "the --quick demo's sizes cannot measure the noise: it judges nothing"


def rewrite_links(report: Path) -> None:
    """The study report is copied to DIR/report.html: its links to the models' reports and to the relation
    maps are relative to DIR/study/."""
    text = report.read_text()
    report.write_text(text.replace('href="../', 'href="'))


MODEL_STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("model", ("pretrain", "preset", "pretrain_steps", "learning_rate", "pre_layer_norm", "batch_size")),
    ("health", ()),
    ("extract", ("hidden_states",)),
    ("metric", ()),
    ("segment", ("segment_tune_utts", "segment_test_utts")),
    ("relate", ()),
    ("probe", ("probe_steps", "probe_precision", "probe_train_utts", "probe_test_utts", "compared_probe_tasks")),
    ("prune", ("probe_steps", "probe_precision", "probe_train_utts", "probe_test_utts", "prune_levels", "prune_tasks",
               "prune_by", "compared_prune_levels", "compared_prune_tasks", "compared_prune_by", "random_seeds")),
    ("spans", ("probe_steps", "probe_precision", "probe_train_utts", "probe_test_utts", "attention_spans")),
    ("report", ()),
)


class ModelRun:
    """The stages of one model of the demo, in its own directory (a workspace of its own)."""

    def __init__(self, directory: Path, name: str, corpus: Path, settings: DemoSettings,
                 shared_from: Path | None = None):
        from satool.workspace import Workspace

        self.directory, self.name, self.corpus, self.settings = directory, name, corpus, settings
        self.shared_from = shared_from  # the first model's directory: model-independent results come from it
        directory.mkdir(parents=True, exist_ok=True)
        self.workspace = Workspace(directory / "satool.toml")
        self.ckpt, self.cache, self.results = directory / "model.ckpt", directory / "attention-cache", \
            directory / "results"

    def identity(self) -> dict[str, Any]:
        """What the model's results depend on: the shipped weights, or the recipe that trains it here."""
        if self.settings.pretrain:
            return {"pretrain": self.name}
        from satool import reference

        return {"reference": reference.provenance(self.name).get("sha256")}

    def _run(self, module, step, bar) -> Any:
        outputs = module.run(step, bar)
        module.record(self.workspace, step, outputs)
        return outputs

    def model(self, bar):
        if not self.settings.pretrain:
            import shutil

            from satool import reference

            shutil.copyfile(reference.checkpoint(self.name), self.ckpt)
            self.workspace.record("pretrain", {"checkpoint": self.ckpt, "corpus": self.corpus})
            return {"reference": reference.provenance(self.name)}
        from satool.stages import pretrain as stage
        from satool.training.settings import PretrainSettings

        s = self.settings
        step = stage.Settings(corpus=self.corpus, out=self.ckpt, device=DEVICE, training=PretrainSettings(
            preset=s.preset, mask_span=int(self.name[1:]), downsample=3, steps=s.pretrain_steps,
            batch_size=s.batch_size, learning_rate=s.learning_rate, seed=s.seed, pre_layer_norm=s.pre_layer_norm,
            save_every=max(100, s.pretrain_steps // 5)))
        result = self._run(stage, step, bar)
        return {"final_loss": result.final_loss, "heldout_l1": result.heldout_l1,
                "frames_per_second": result.frames_per_second, "warnings": result.warnings,
                "reference": {"name": self.name, "training_settings": {"mask_span": int(self.name[1:])}}}

    def health(self, bar):
        from satool.stages import health as stage

        self._run(stage, stage.Settings(checkpoint=self.ckpt, corpus=self.corpus, split="dev",
                                        seed=self.settings.seed, out=self.results / "health", device=DEVICE), bar)

    def extract(self, bar):
        from satool.stages import extract as stage

        states = [h for h in self.settings.hidden_states if h <= _num_layers(self.ckpt)]
        summary = self._run(stage, stage.Settings(checkpoint=self.ckpt, corpus=self.corpus, out=self.cache,
                                                  split=["dev", "test"], hidden_states=states, device=DEVICE), bar)
        return {"utterances": summary.written + summary.already_done, "skipped": len(summary.skipped)}

    def metric(self, bar):
        from satool.stages import metric as stage

        self._run(stage, stage.Settings(source=self.cache, out=self.results / "metric"), bar)

    def segment(self, bar):
        from satool.stages import segment as stage

        # the head and the hidden state are chosen on dev (heads: tuned on one half, scored on the other);
        # the test split scores them once. MFCC and log-Mel do not depend on the model: computed once.
        shared = self._shared_segment()
        features = (["mfcc", "mel"] if shared is None else []) + ["attn:best", "hidden:all"]
        outputs = self._run(stage, stage.Settings(
            cache=self.cache, features=features, tune_on="dev", test_on="test",
            tune_utts=self.settings.segment_tune_utts, test_utts=self.settings.segment_test_utts, curve_hidden=False,
            examples=["mfcc", "attn:best"] if shared is None else ["attn:best"], workers=self.settings.segment_workers,
            out=self.results / "segment"), bar)
        if shared is not None:
            results = outputs.results
            if shared.test_ids != results.test_ids:
                raise EnvironmentProblem(f"{self.name}: its test utterances differ from {self.shared_from.name}'s")
            results.results[1:1] = [shared.source("mfcc"), shared.source("mel")]
            results.save(self.results / "segment")

    def _shared_segment(self):
        if self.shared_from is None:
            return None
        from satool.results.segment import SegmentResults

        return SegmentResults.load(self.shared_from / "results" / "segment")

    def relate(self, bar):
        from satool.stages import relate as stage

        self._run(stage, stage.Settings(cache=self.cache, out=self.results / "relate"), bar)

    def _data(self) -> Any:
        from satool.stages.probe import Data

        return Data(checkpoint=self.ckpt, corpus=self.corpus, train_utts=self.settings.probe_train_utts,
                    test_utts=self.settings.probe_test_utts, device=DEVICE)

    def _probing(self) -> Any:
        from satool.analysis.probing.tasks import ProbeSettings

        return ProbeSettings(steps=self.settings.probe_steps, precision=self.settings.probe_precision)

    def probe(self, bar):
        from satool.stages import probe as stage
        from satool.stages.probe import ALL_LAYERS

        outputs = self._run(stage, stage.Settings(
            data=self._data(), layers=[ALL_LAYERS],
            tasks=["phone", "speaker", "speaker-utt", "reconstruction"] if self.shared_from is None
            else list(self.settings.compared_probe_tasks),
            probing=self._probing(), seed=self.settings.seed, inputs=self.shared_from is None,
            out=self.results / "probe"), bar)
        if self.shared_from is not None:  # the input features' rows do not depend on the model: computed once
            from satool.results.probe import ProbeResults

            results = outputs.results
            results.rows += ProbeResults.load(self.shared_from / "results" / "probe").input_rows()
            results.save(self.results / "probe")
        return {"warnings": outputs.warnings}

    def prune(self, bar):
        from satool.stages import prune as stage

        s, first = self.settings, self.shared_from is None
        self._run(stage, stage.Settings(data=self._data(), levels=list(s.prune_levels if first else s.compared_prune_levels),
                                        tasks=list(s.prune_tasks if first else s.compared_prune_tasks),
                                        by=list(s.prune_by if first else s.compared_prune_by),
                                        random_seeds=self.settings.random_seeds, metrics=self.results / "metric",
                                        probing=self._probing(), seed=self.settings.seed,
                                        out=self.results / "prune"), bar)

    def spans(self, bar):
        from satool.stages import prune as stage

        step = stage.Settings(data=self._data(), tasks=["phone"], spans=list(self.settings.attention_spans),
                              probing=self._probing(), seed=self.settings.seed, out=self.results / "spans")
        outputs = stage.run(step, bar)
        self.workspace.record("spans", {"spans": step.out})
        return {"configurations": outputs.configurations}

    def report(self, bar):
        from satool.stages import report as stage

        self._run(stage, stage.Settings(directory=self.directory, judge=self.settings.judge, why_not=QUICK_REASON), bar)


def _num_layers(ckpt: Path) -> int:
    from satool.models.mockingjay.checkpoint import load_checkpoint

    return load_checkpoint(ckpt).config.num_layers
