"""The hooks a satool plugin can implement, and the one table of plugin kinds.

A plugin is any importable module (or object) with functions decorated by
``satool.hookimpl`` and named like the hooks below (what plugins import is
:mod:`satool.plugins.api`). Third-party packages make theirs known through an
entry point in the ``satool`` group::

    [project.entry-points.satool]
    my_plugin = "my_package.plugin"

Every hook receives a ``register`` callback. The core owns the names: calling
``register`` with a name that is already taken raises
:class:`satool.errors.PluginError` naming both plugins, and the core records
which plugin registered what (``satool plugins`` shows it). satool's own
metrics, tasks, corpora and models are registered through these very hooks
(see ``satool/plugins/builtins/``); its own commands are the command line's
(``satool.cli``), and plugins add theirs beside them.

Hooks are called lazily, the first time the kind of thing they register is
needed, and one plugin at a time: a plugin that raises inside a hook is
reported by name and the others keep working.

Each kind is declared once, by its hook below (``@_kind(registry, singular)``):
:data:`KINDS` and :data:`HOOK_NAMES` are built from those declarations, and the
plugin manager's registries from :data:`KINDS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pluggy

hookspec = pluggy.HookspecMarker("satool")


@dataclass(frozen=True)
class Kind:
    """One kind of thing plugins register: its registry, the hook that fills it, its name in messages."""

    name: str  # plural, the registry's name: "metrics"
    hook: str  # "register_metrics"
    singular: str  # "metric"
    legacy_hooks: tuple[str, ...] = ()  # earlier names of the hook, still called


KINDS: dict[str, Kind] = {}  # registry name -> kind, in declaration order
HOOK_NAMES: tuple[str, ...] = ()  # every hook a plugin may implement (legacy names included)


def _kind(name: str, singular: str) -> Callable:
    def declare(function: Callable) -> Callable:
        global HOOK_NAMES
        KINDS[name] = Kind(name, function.__name__, singular)
        HOOK_NAMES = (*HOOK_NAMES, function.__name__)
        return hookspec(function)

    return declare


def _legacy(name: str) -> Callable:
    """An earlier name of the hook of kind ``name``: implementations of it fill the same registry."""
    def declare(function: Callable) -> Callable:
        global HOOK_NAMES
        kind = KINDS[name]
        KINDS[name] = Kind(kind.name, kind.hook, kind.singular, (*kind.legacy_hooks, function.__name__))
        HOOK_NAMES = (*HOOK_NAMES, function.__name__)
        return hookspec(function)

    return declare


@_kind("commands", "command")
def register_commands(register):
    """Add subcommands to the ``satool`` command, beside satool's own.

    Call ``register(name, command, panel=None)`` once per subcommand:

    - ``name`` -- the subcommand name, e.g. ``"phonemes"`` (not one of satool's own);
    - ``command`` -- a plain function turned into a Typer command (its
      parameters are Typer arguments/options, its docstring the ``--help``
      text), or a ``typer.Typer`` instance added as a command group;
    - ``panel`` -- the ``--help`` panel to list it under (default
      ``"Plugin commands"``).

    Keep the module that implements this hook light: import heavy libraries
    (torch) inside the command function so ``satool --help`` stays fast.
    """


@_legacy("commands")
def register_stages(register):
    """The earlier name of :func:`register_commands`, still called the same way (a plugin written
    for it keeps working); new plugins implement ``register_commands``."""


@_kind("metrics", "metric")
def register_metrics(register):
    """Add head metrics usable wherever a metric name is accepted.

    Call ``register(metric)`` with a :class:`satool.plugins.api.HeadMetric`:
    its ``name``, a function from one utterance's attention maps
    ``attn[layer, head, query, key]`` and its :class:`satool.plugins.api.UtteranceMeta`
    to values ``[layer, head]``, how values are accumulated over a corpus, and the
    pruning order (which heads ``satool prune --by NAME`` removes first).
    """


@_kind("tasks", "task")
def register_tasks(register):
    """Add probing tasks usable by ``satool probe`` and ``satool prune``.

    Call ``register(task)`` with a :class:`satool.plugins.api.ProbeTask`: its
    ``name``, the labels it predicts, the probe it trains on the
    representations, and how it is scored (with chance level).
    """


@_kind("corpora", "corpus reader")
def register_corpora(register):
    """Add corpus readers for ``satool corpus info`` and every stage that reads audio.

    Call ``register(reader)`` with a :class:`satool.plugins.api.CorpusReader`: its
    ``name``, a ``detect(path)`` score used to auto-detect the layout of a
    directory, and ``open(path, alignments=None)`` returning a
    :class:`satool.plugins.api.Corpus`.
    """


@_kind("models", "model loader")
def register_models(register):
    """Add model loaders for ``satool extract``, ``probe`` and ``prune``.

    Call ``register(loader)`` with a :class:`satool.plugins.api.ModelLoader`: its
    ``name``, ``can_load(path)`` and ``load(path, device)`` returning a
    :class:`satool.plugins.api.AttentionModel` (features in, hidden states and
    attention maps ``[layer, head, query, key]`` out, head and span masks).
    """
