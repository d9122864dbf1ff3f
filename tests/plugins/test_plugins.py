"""Plugins: entry points, isolation of broken plugins, one test per hook, docs coverage."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

from satool import errors, hookimpl
from satool.plugins import Plugins, hookspecs

# --------------------------------------------------------------------------
# Fake installed distributions for entry-point tests.


def make_distribution(root: Path, dist: str, entry_point: str, module: str, source: str) -> None:
    """Create an importable module plus a dist-info declaring a 'satool' entry point."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[satool]\n{entry_point} = {module}\n")


GOOD = """
from satool import hookimpl
from satool.analysis.metrics import HeadMetric
import numpy as np

@hookimpl
def register_metrics(register):
    register(HeadMetric("first-row", lambda a, m: a[..., 0, 0], prune_first="lowest"))
"""
BROKEN_IMPORT = "raise RuntimeError('cannot import me')\n"
BROKEN_HOOK = """
from satool import hookimpl

@hookimpl
def register_metrics(register):
    raise ValueError('boom inside the hook')
"""
BAD_SIGNATURE = """
from satool import hookimpl

@hookimpl
def register_metrics(register, something_unknown):
    pass
"""
DUPLICATE = """
from satool import hookimpl
from satool.analysis.metrics import HeadMetric

@hookimpl
def register_metrics(register):
    register(HeadMetric("globalness", lambda a, m: a[..., 0, 0], prune_first="lowest"))
"""


@pytest.fixture
def plugin_dir(tmp_path):
    make_distribution(tmp_path, "satool-good", "good", "good_plugin", GOOD)
    make_distribution(tmp_path, "satool-broken-import", "broken-import", "broken_import", BROKEN_IMPORT)
    make_distribution(tmp_path, "satool-broken-hook", "broken-hook", "broken_hook", BROKEN_HOOK)
    make_distribution(tmp_path, "satool-bad-signature", "bad-signature", "bad_signature", BAD_SIGNATURE)
    make_distribution(tmp_path, "satool-duplicate", "duplicate", "duplicate_plugin", DUPLICATE)
    return tmp_path


def _env(plugin_dir, **extra):
    import os

    path = os.pathsep.join(filter(None, [str(plugin_dir), os.environ.get("PYTHONPATH", "")]))
    return {"PYTHONPATH": path, **extra}


def test_plugins_json_lists_example_plugin(satool_cli):
    result = satool_cli("plugins", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == {"plugins", "commands", "metrics", "tasks", "corpora", "models", "failed"}
    phonetics = next(p for p in data["plugins"] if p["name"] == "phonetics")
    assert phonetics["version"] == "0.1.0"
    assert phonetics["hooks"] == ["register_metrics", "register_tasks"]
    assert {"name": "silence-focus", "plugin": "phonetics"} in data["metrics"]
    assert {"name": "boundary", "plugin": "phonetics"} in data["tasks"]
    assert data["commands"] == []  # satool's own commands are the command line's, not plugins'
    assert data["failed"] == []


def test_broken_plugins_are_reported_and_everything_else_works(satool_cli, plugin_dir):
    result = satool_cli("plugins", "--json", env=_env(plugin_dir))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    failed = {f["name"]: f["error"] for f in data["failed"]}
    assert failed["broken-import"] == "RuntimeError: cannot import me"
    assert failed["broken-hook"] == "ValueError: boom inside the hook"
    assert "something_unknown" in failed["bad-signature"]
    assert "'globalness'" in failed["duplicate"] and "satool.plugins.builtins.metrics" in failed["duplicate"]
    metrics = {m["name"]: m["plugin"] for m in data["metrics"]}
    assert metrics["first-row"] == "good"
    assert metrics["globalness"] == "satool.plugins.builtins.metrics"
    # one warning line per failed plugin, naming it
    warnings = [line for line in result.stderr.splitlines() if line.startswith("satool: warning:")]
    assert len(warnings) == 4, result.stderr
    for name in failed:
        assert any(f"plugin {name!r}" in w for w in warnings)
    # and other commands keep working
    help_result = satool_cli("--help", env=_env(plugin_dir))
    assert help_result.returncode == 0 and "extract" in help_result.stdout


def test_strict_plugins_makes_failure_fatal(satool_cli, plugin_dir):
    result = satool_cli("plugins", env=_env(plugin_dir, SATOOL_STRICT_PLUGINS="1"))
    assert result.returncode == errors.EXIT_PLUGIN
    # entry points load in name order; the first failure stops the command
    assert result.stderr.strip().splitlines() == [
        result.stderr.strip().splitlines()[0]
    ] and result.stderr.startswith("satool: error: plugin 'bad-signature' failed: ")
    assert "SATOOL_STRICT_PLUGINS=1" in result.stderr


def test_disable_autoload_loads_builtins_only(satool_cli, plugin_dir):
    result = satool_cli("plugins", "--json", env=_env(plugin_dir, SATOOL_DISABLE_PLUGIN_AUTOLOAD="1"))
    data = json.loads(result.stdout)
    assert all(p["builtin"] for p in data["plugins"])
    assert data["failed"] == [] and "silence-focus" not in [m["name"] for m in data["metrics"]]


def test_unknown_name_lists_known_ones():
    plugins = Plugins(autoload=False)
    with pytest.raises(errors.UsageError, match=r"unknown metric 'nope' \(known: diagonality, globalness"):
        plugins.metrics.get("nope")


# --------------------------------------------------------------------------
# One test per hook (test_hook_<name>); test_every_hook_has_test_and_docs checks it.


def _with(hook_name: str, body):
    plugin = type("Plugin", (), {hook_name: staticmethod(hookimpl(body))})
    plugins = Plugins(autoload=False)
    plugins.add_plugin(plugin, "test-plugin")
    return plugins


def test_hook_register_commands(capsys):
    from satool.cli import run

    def register_commands(register):
        def hello(name: str = "world") -> None:
            """Say hello."""
            print(f"hello {name}")

        register("hello", hello, "Greetings")

    plugins = _with("register_commands", register_commands)
    assert run(["hello", "--name", "satool"], plugins=plugins) == 0
    assert capsys.readouterr().out == "hello satool\n"
    assert run(["--help"], plugins=plugins) == 0
    help_text = capsys.readouterr().out
    assert "Greetings" in help_text and "extract" in help_text  # beside satool's own commands
    assert plugins.commands.entry("hello").plugin == "test-plugin"


def test_hook_register_stages(capsys):
    """The earlier name of register_commands: a plugin written for it keeps working."""
    from satool.cli import run

    def register_stages(register):
        def hello() -> None:
            """Say hello."""
            print("hello from an older plugin")

        register("hello", hello)

    plugins = _with("register_stages", register_stages)
    assert run(["hello"], plugins=plugins) == 0
    assert capsys.readouterr().out == "hello from an older plugin\n"
    assert plugins.commands.entry("hello").extra["panel"] == "Plugin commands"


def test_a_plugin_command_cannot_replace_a_builtin_one(capsys):
    from satool.cli import run

    def register_commands(register):
        register("extract", lambda: print("not the real extract"))

    plugins = _with("register_commands", register_commands)
    assert run(["extract", "--help"], plugins=plugins) == 0
    captured = capsys.readouterr()
    assert "not the real extract" not in captured.out and "attention maps" in captured.out
    assert "command 'extract' is one of satool's own commands" in captured.err
    assert plugins.failed[0].name == "test-plugin"


def test_kinds_are_declared_once():
    from satool.plugins import Plugins, hookspecs

    assert list(hookspecs.KINDS) == ["commands", "metrics", "tasks", "corpora", "models"]
    assert set(hookspecs.HOOK_NAMES) == {k.hook for k in hookspecs.KINDS.values()} | {"register_stages"}
    plugins = Plugins(autoload=False)
    for kind in hookspecs.KINDS:
        assert getattr(plugins, kind) is plugins.registry(kind)
    assert set(plugins.describe()) == {"plugins", "failed", *hookspecs.KINDS}


def test_hook_register_metrics():
    from satool.analysis.metrics import HeadMetric

    def register_metrics(register):
        register(HeadMetric("self", lambda a, m: np.einsum("lhqq->lh", a) / a.shape[-1], prune_first="lowest"))

    plugins = _with("register_metrics", register_metrics)
    metric = plugins.metrics.get("self")
    attn = np.broadcast_to(np.eye(3, dtype=np.float32), (1, 2, 3, 3))
    np.testing.assert_allclose(metric.per_utterance(attn, {}), [[1.0, 1.0]])


def test_hook_register_tasks():
    from satool.analysis.probing.tasks import ProbeScore, ProbeTask

    class Constant(ProbeTask):
        name = "constant"

        def evaluate(self, train, test, **kwargs):
            return ProbeScore("constant", 1.0, 0.5, "accuracy", True, 0, 0)

    plugins = _with("register_tasks", lambda register: register(Constant()))
    assert plugins.tasks.get("constant").evaluate(None, None).score == 1.0
    assert "phone" in plugins.tasks  # built-ins stay


def test_hook_register_corpora(tmp_path):
    import soundfile

    from satool import testing
    from satool.data.corpus import Corpus, Utterance, open_corpus
    from satool.data.phones import ARPABET_SET

    class ListReader:
        """A corpus given by a file list: 'wav.scp' lines 'UTT SPEAKER PATH'."""

        name = "wav-scp"
        description = "a wav.scp file listing utterance, speaker, path"

        def detect(self, path):
            return 1.0 if (path / "wav.scp").exists() else 0.0

        def open(self, path, alignments=None):
            rows = [line.split() for line in (path / "wav.scp").read_text().splitlines()]
            return Corpus(path, self.name, ARPABET_SET,
                          [Utterance(u, "all", s, path / p) for u, s, p in rows])

    soundfile.write(tmp_path / "a.wav", testing.tone_audio([("AA", 0.2)]), 16000)
    (tmp_path / "wav.scp").write_text("utt1 spk1 a.wav\n")
    plugins = _with("register_corpora", lambda register: register(ListReader()))
    corpus = open_corpus(tmp_path, readers=plugins.corpora.objects())  # beats the audio-dir reader
    assert corpus.layout == "wav-scp" and corpus.utterances[0].speaker == "spk1"
    assert len(corpus.load(corpus.utterances[0]).wave) == 3200


def test_hook_register_models(tmp_path):
    import torch

    from satool.models.base import AttentionModel, EncodedUtterance
    from satool.models.loading import load_model

    class UniformModel(AttentionModel):
        """Every head attends uniformly: a baseline 'model' for sanity checks."""

        name = "uniform"
        num_layers, num_heads, hidden_size, frames_per_step = 2, 3, 4, 2
        hidden_state_names = ["embedding", "layer 1", "layer 2"]

        def input_features(self, wave):
            return torch.zeros(len(wave) // 320, 4)

        def encode(self, features, **kwargs):
            out = []
            for f in features:
                n = f.shape[0]
                out.append(EncodedUtterance(torch.full((2, 3, n, n), 1.0 / n), None, n))
            return out

        def provenance(self):
            return {"type": "uniform"}

    class UniformLoader:
        name = "uniform"
        description = "files ending in .uniform"

        def can_load(self, path):
            return path.suffix == ".uniform"

        def load(self, path, device="cpu"):
            return UniformModel()

    plugins = _with("register_models", lambda register: register(UniformLoader()))
    (tmp_path / "m.uniform").write_text("")
    model = load_model(tmp_path / "m.uniform", loaders=plugins.models.objects())
    encoded = model.encode([model.input_features(np.zeros(3200))])[0]
    assert encoded.attentions.shape == (2, 3, 10, 10) and model.step_s == 0.02
    assert [e.name for e in plugins.models] == ["mockingjay", "distiller", "hf-speech", "whisper", "uniform"]


def test_duplicate_registration_names_both_plugins():
    from satool.analysis.metrics import HeadMetric

    plugins = _with(
        "register_metrics",
        lambda register: register(HeadMetric("weight", lambda a, m: a.max(), prune_first="lowest")),
    )
    metrics = plugins.metrics  # the duplicate is reported, not fatal
    assert metrics.entry("weight").plugin == "satool.plugins.builtins.metrics"
    assert plugins.failed[0].name == "test-plugin"
    assert "already registered by plugin 'satool.plugins.builtins.metrics'" in plugins.failed[0].error


def test_every_hook_has_test_and_docs():
    doc = (REPO / "docs" / "plugins.md").read_text()
    tests = Path(__file__).read_text()
    for hook in hookspecs.HOOK_NAMES:
        assert re.search(rf"^### `{hook}", doc, re.M), f"{hook} not documented in docs/plugins.md"
        assert f"def test_hook_{hook}(" in tests, f"{hook} has no test_hook_{hook}"
        assert getattr(hookspecs, hook).__doc__, f"{hook} has no docstring"


# --------------------------------------------------------------------------
# Plugins that exit, block, print or fail while scoring cannot take satool down with them.

EXITS = "import sys\nsys.exit(0)\n"
BLOCKS = "import time\ntime.sleep(3600)\n"
PRINTS = """
from satool import hookimpl
from satool.analysis.metrics import HeadMetric
import numpy as np
print("hello from import")

def noisy(attn, meta):
    print("hello from a metric")
    return np.zeros(attn.shape[:2])

@hookimpl
def register_metrics(register):
    print("hello from a hook")
    register(HeadMetric("noisy", noisy, prune_first="lowest"))
"""
RAISES = """
from satool import hookimpl
from satool.analysis.metrics import HeadMetric

def fragile(attn, meta):
    raise ZeroDivisionError("division by zero in a plugin")

@hookimpl
def register_metrics(register):
    register(HeadMetric("fragile", fragile, prune_first="lowest"))
"""


@pytest.fixture
def unruly_dir(tmp_path):
    make_distribution(tmp_path, "satool-exits", "exits", "exits_plugin", EXITS)
    make_distribution(tmp_path, "satool-blocks", "blocks", "blocks_plugin", BLOCKS)
    make_distribution(tmp_path, "satool-prints", "prints", "prints_plugin", PRINTS)
    make_distribution(tmp_path, "satool-raises", "raises", "raises_plugin", RAISES)
    return tmp_path


def test_exiting_and_blocking_plugins_are_failures_not_the_end(satool_cli, unruly_dir):
    import time

    began = time.perf_counter()
    result = satool_cli("plugins", "--json", env=_env(unruly_dir, SATOOL_PLUGIN_TIMEOUT="2"))
    assert time.perf_counter() - began < 60
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)  # stdout holds the JSON alone, though a plugin printed
    failed = {f["name"]: f["error"] for f in data["failed"]}
    assert failed["exits"] == "it called sys.exit(0) while importing"
    assert failed["blocks"] == "its import did not finish within 2 s (SATOOL_PLUGIN_TIMEOUT)"
    assert "hello from" in result.stderr and "hello" not in result.stdout
    version = satool_cli("--version", env=_env(unruly_dir, SATOOL_PLUGIN_TIMEOUT="2"))
    assert version.returncode == 0 and version.stdout.strip()
    strict = satool_cli("plugins", env=_env(unruly_dir, SATOOL_PLUGIN_TIMEOUT="2", SATOOL_STRICT_PLUGINS="1"))
    assert strict.returncode == errors.EXIT_PLUGIN and "failed" in strict.stderr


def test_metric_json_stays_clean_and_a_failing_metric_spares_the_others(satool_cli, unruly_dir, tmp_path):
    from cachefiles import write

    write(tmp_path / "cache", ["a", "b"], np.random.default_rng(0))
    result = satool_cli("metric", tmp_path / "cache", "--json", "--out", tmp_path / "out",
                        env=_env(unruly_dir, SATOOL_PLUGIN_TIMEOUT="2"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert all(r["globalness"] is not None and r["noisy"] == 0 for r in rows)
    assert all(r["fragile"] is None and r["rank_fragile"] is None for r in rows)
    assert "metric 'fragile' failed and has no values: ZeroDivisionError: division by zero in a plugin" \
        in " ".join(result.stderr.split())
    assert "hello from a metric" in result.stderr


def test_plugin_api_names_resolve_and_load_nothing_heavy():
    import subprocess
    import sys

    from satool.plugins import api

    assert set(api.__all__) == {"hookimpl", *api._EXPORTS}
    for name in api.__all__:
        assert getattr(api, name) is not None, name
    assert api.hookimpl is hookimpl
    code = "import sys, satool.plugins.api; print([m for m in ('torch', 'h5py', 'matplotlib') if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stderr


def test_plugin_api_is_documented():
    from satool.plugins import api

    doc = (REPO / "docs" / "plugins.md").read_text()
    for name in api.__all__:
        assert f"`{name}`" in doc, f"{name} (satool.plugins.api) not in docs/plugins.md"
