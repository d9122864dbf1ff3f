"""The hooks a satool plugin can implement.

A plugin is any importable module (or object) with functions decorated by
``satool.hookimpl`` and named like the hooks below. Third-party packages make
theirs known through an entry point in the ``satool`` group::

    [project.entry-points.satool]
    my_plugin = "my_package.plugin"

Every hook receives a ``register`` callback. The core owns the names: calling
``register`` with a name that is already taken raises
:class:`satool.errors.PluginError` naming both plugins, and the core records
which plugin registered what (``satool plugins`` shows it). satool's own
stages, metrics, tasks, corpora and models are registered through these very
hooks (see ``satool/plugins/builtins/``).

Hooks are called lazily, the first time the kind of thing they register is
needed, and one plugin at a time: a plugin that raises inside a hook is
reported by name and the others keep working.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("satool")


@hookspec
def register_stages(register):
    """Add subcommands (stages) to the ``satool`` command.

    Call ``register(name, command, panel=None)`` once per subcommand:

    - ``name`` -- the subcommand name, e.g. ``"extract"``;
    - ``command`` -- a plain function turned into a Typer command (its
      parameters are Typer arguments/options, its docstring the ``--help``
      text), or a ``typer.Typer`` instance added as a command group;
    - ``panel`` -- the ``--help`` panel to list it under (default
      ``"Plugin stages"``).

    Keep the module that implements this hook light: import heavy libraries
    (torch) inside the command function so ``satool --help`` stays fast.
    """


@hookspec
def register_metrics(register):
    """Add head metrics usable wherever a metric name is accepted.

    Call ``register(metric)`` with a :class:`satool.analysis.metrics.HeadMetric`:
    its ``name``, a function from one utterance's attention maps
    ``attn[layer, head, query, key]`` to values ``[layer, head]``, how values
    are accumulated over a corpus, and the pruning order (which heads
    ``satool prune --by NAME`` removes first).
    """


@hookspec
def register_tasks(register):
    """Add probing tasks usable by ``satool probe`` and ``satool prune``.

    Call ``register(task)`` with a :class:`satool.analysis.probing.tasks.ProbeTask`: its
    ``name``, the labels it predicts, the probe it trains on the
    representations, and how it is scored (with chance level).
    """


@hookspec
def register_corpora(register):
    """Add corpus readers for ``satool corpus info`` and every stage that reads audio.

    Call ``register(reader)`` with a :class:`satool.data.corpus.CorpusReader`: its
    ``name``, a ``detect(path)`` score used to auto-detect the layout of a
    directory, and ``open(path, alignments=None)`` returning a
    :class:`satool.data.corpus.Corpus`.
    """


@hookspec
def register_models(register):
    """Add model loaders for ``satool extract``, ``probe`` and ``prune``.

    Call ``register(loader)`` with a :class:`satool.models.ModelLoader`: its
    ``name``, ``can_load(path)`` and ``load(path, device)`` returning a
    :class:`satool.models.AttentionModel` (features in, hidden states and
    attention maps ``[layer, head, query, key]`` out, head and span masks).
    """


HOOK_NAMES = (
    "register_stages",
    "register_metrics",
    "register_tasks",
    "register_corpora",
    "register_models",
)
