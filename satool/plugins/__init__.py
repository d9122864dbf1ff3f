"""Plugin manager: loads built-ins and entry points, owns the registries.

``get_plugins()`` returns the process-wide :class:`Plugins`. Each entry point
of the ``satool`` group is imported on its own; a plugin that fails to import
or to register is recorded in ``Plugins.failed`` and reported in one warning
line, and everything else keeps working. Environment switches:

- ``SATOOL_STRICT_PLUGINS=1``: such a failure raises :class:`PluginError`.
- ``SATOOL_DISABLE_PLUGIN_AUTOLOAD=1``: load the built-ins only.
- ``SATOOL_PLUGIN_TIMEOUT`` (seconds, default 10): a plugin whose import takes
  longer is reported as failed and skipped, so a plugin that blocks cannot
  hang every command.

A plugin cannot stop satool: ``sys.exit`` (any BaseException but Ctrl-C) in its
import or its hooks is a failure like any other, and whatever it prints while
loading or registering goes to stderr, never into satool's results on stdout.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Generic, TypeVar

import pluggy

from satool.errors import PluginError, UsageError
from satool.plugins import hookspecs
from satool.plugins.hookspecs import HOOK_NAMES, KINDS

ENTRY_POINT_GROUP = "satool"
BUILTIN_PLUGINS = (
    "satool.plugins.builtins.metrics",
    "satool.plugins.builtins.tasks",
    "satool.plugins.builtins.corpora",
    "satool.plugins.builtins.models",
)


T = TypeVar("T")


@dataclass
class Registered(Generic[T]):
    """One registered thing and the plugin that registered it."""

    name: str
    obj: T
    plugin: str
    extra: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Names -> registered objects of one kind; rejects duplicates."""

    def __init__(self, kind: str):
        self.kind = kind  # plural, e.g. "metrics"
        self._items: dict[str, Registered[T]] = {}

    @property
    def singular(self) -> str:
        return KINDS[self.kind].singular if self.kind in KINDS else self.kind

    def add(self, name: str, obj: T, plugin: str, **extra: Any) -> None:
        if not isinstance(name, str) or not name or name != name.strip():
            raise PluginError(f"plugin {plugin!r} registered a {self.singular} with an invalid name {name!r}")
        if name in self._items:
            owner = self._items[name].plugin
            raise PluginError(
                f"plugin {plugin!r} registered {self.singular} {name!r}, "
                f"but plugin {owner!r} already registered that name"
            )
        self._items[name] = Registered(name, obj, plugin, dict(extra))

    def get(self, name: str) -> T:
        """The object registered under ``name``; a UsageError listing the known names otherwise."""
        try:
            return self._items[name].obj
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise UsageError(f"unknown {self.singular} {name!r} (known: {known})") from None

    def entry(self, name: str) -> Registered[T]:
        self.get(name)
        return self._items[name]

    def names(self) -> list[str]:
        return list(self._items)

    def objects(self) -> list[T]:
        """The registered objects in registration order (built-ins first): what ``load_model(loaders=)``
        and ``open_corpus(readers=)`` take."""
        return [entry.obj for entry in self._items.values()]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[Registered[T]]:
        return iter(self._items.values())

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class PluginFailure:
    name: str
    error: str


@dataclass
class PluginInfo:
    name: str
    version: str
    module: Any
    builtin: bool


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


class Plugins:
    """The loaded plugins and the registries they fill (lazily): one per kind of
    :data:`satool.plugins.hookspecs.KINDS`, as an attribute of the kind's name (``plugins.metrics``)."""

    def __init__(self, *, autoload: bool | None = None, strict: bool | None = None):
        self.strict = _env_flag("SATOOL_STRICT_PLUGINS") if strict is None else strict
        if autoload is None:
            autoload = not _env_flag("SATOOL_DISABLE_PLUGIN_AUTOLOAD")
        self.pm = pluggy.PluginManager("satool")
        self.pm.add_hookspecs(hookspecs)
        self.info: dict[str, PluginInfo] = {}
        self.failed: list[PluginFailure] = []
        self._registries: dict[str, Registry] = {}
        from satool import __version__

        for module_name in BUILTIN_PLUGINS:
            module = importlib.import_module(module_name)
            self._add(module_name, module, __version__, builtin=True)
        if autoload:
            self._load_entry_points()

    # -- loading -----------------------------------------------------------
    def _add(self, name: str, module: Any, version: str, builtin: bool) -> None:
        self.pm.register(module, name=name)
        self.info[name] = PluginInfo(name, version, module, builtin)

    def _fail(self, name: str, error: BaseException | str) -> None:
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        text = " ".join(str(text).split())  # one line
        self.failed.append(PluginFailure(name, text))
        if self.strict:
            raise PluginError(f"plugin {name!r} failed: {text} (fatal because SATOOL_STRICT_PLUGINS=1)")
        print(f"satool: warning: plugin {name!r} failed and was skipped: {text}", file=sys.stderr)

    def _load_entry_points(self) -> None:
        timeout = _timeout()
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if ep.name in self.info:
                self._fail(ep.name, "another plugin already uses this name")
                continue
            outcome = _call_with_timeout(ep.load, timeout)
            if isinstance(outcome, _Failed):  # a broken plugin must not break satool
                self._fail(ep.name, outcome.error)
                continue
            version = ep.dist.version if ep.dist is not None else "unknown"
            try:
                with contextlib.redirect_stdout(sys.stderr):
                    self._add(ep.name, outcome, version, builtin=False)
            except (Exception, SystemExit) as exc:  # e.g. a hookimpl that does not match a hookspec
                self._fail(ep.name, exc)

    def add_plugin(self, module: Any, name: str, version: str = "local") -> None:
        """Register a plugin object directly (tests, notebooks). Registries are rebuilt."""
        self._add(name, module, version, builtin=False)
        self._registries.clear()

    # -- registries --------------------------------------------------------
    def registry(self, kind: str) -> Registry:
        """The registry of ``kind`` (a name in :data:`~satool.plugins.hookspecs.KINDS`: 'commands',
        'metrics', 'tasks', 'corpora', 'models')."""
        if kind not in self._registries:
            if kind not in KINDS:
                raise UsageError(f"unknown kind of plugin object {kind!r} (known: {', '.join(KINDS)})")
            spec = KINDS[kind]
            self._registries[kind] = self._collect((spec.hook, *spec.legacy_hooks), Registry(kind))
        return self._registries[kind]

    def reject(self, plugin: str, reason: str) -> None:
        """Report ``plugin`` as failed (``reason``: one line), as a failure while loading it is."""
        self._fail(plugin, reason)

    def _collect(self, hook_names: tuple[str, ...], registry: Registry) -> Registry:
        # In registration order: built-ins first, so a plugin cannot take a built-in's name.
        impls = [impl for name in hook_names for impl in getattr(self.pm.hook, name).get_hookimpls()]
        for impl in impls:
            plugin_name = self.pm.get_name(impl.plugin) or repr(impl.plugin)
            if any(f.name == plugin_name for f in self.failed):
                continue
            staged: list[tuple[str, Any, dict]] = []

            def register(*args: Any, _staged=staged, _kind=registry.kind, **kwargs: Any) -> None:
                _staged.append(_registration(_kind, args, kwargs))

            try:
                with contextlib.redirect_stdout(sys.stderr):
                    impl.function(register=register)
                scratch = Registry(registry.kind)
                for name, obj, extra in staged:
                    if name in registry:
                        owner = registry.entry(name).plugin
                        raise PluginError(
                            f"{registry.singular} {name!r} is already registered by plugin {owner!r}"
                        )
                    scratch.add(name, obj, plugin_name, **extra)
            except (Exception, SystemExit) as exc:
                self._fail(plugin_name, exc)
                continue
            for entry in scratch:
                registry.add(entry.name, entry.obj, entry.plugin, **entry.extra)
        return registry


    # -- description -------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """Everything `satool plugins --json` prints (fills every registry)."""
        registries = {kind: self.registry(kind) for kind in KINDS}
        plugins = []
        for name, info in self.info.items():
            if any(f.name == name for f in self.failed):
                continue
            hooks = sorted(
                h for h in HOOK_NAMES if any(
                    self.pm.get_name(i.plugin) == name for i in getattr(self.pm.hook, h).get_hookimpls()
                )
            )
            registered = {
                kind: [e.name for e in reg if e.plugin == name] for kind, reg in registries.items()
            }
            plugins.append(
                {
                    "name": name,
                    "version": info.version,
                    "builtin": info.builtin,
                    "hooks": hooks,
                    "registered": {k: v for k, v in registered.items() if v},
                }
            )
        result: dict[str, Any] = {"plugins": plugins}
        for kind, reg in registries.items():
            result[kind] = [{"name": e.name, "plugin": e.plugin} for e in reg]
        result["failed"] = [{"name": f.name, "error": f.error} for f in self.failed]
        return result


def _registry_property(kind: str) -> property:
    return property(lambda self: self.registry(kind), doc=f"The registry of {KINDS[kind].singular} objects.")


for _kind_name in KINDS:  # plugins.commands, plugins.metrics, ... : one per kind, from the one table
    setattr(Plugins, _kind_name, _registry_property(_kind_name))


PLUGIN_THREAD = "satool-plugin"


class _PluginThreadsToStderr:
    """sys.stdout, except that what threads importing plugins write goes to stderr (a plugin still
    blocked in its import after the time limit must never write into satool's results)."""

    def __init__(self, stdout):
        self._stdout = stdout

    def _target(self):
        return sys.stderr if threading.current_thread().name.startswith(PLUGIN_THREAD) else self._stdout

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        self._target().flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stdout, name)


def _route_plugin_threads_to_stderr() -> None:
    if not isinstance(sys.stdout, _PluginThreadsToStderr):
        sys.stdout = _PluginThreadsToStderr(sys.stdout)


@dataclass
class _Failed:
    error: BaseException | str


def _timeout() -> float:
    try:
        return max(0.1, float(os.environ.get("SATOOL_PLUGIN_TIMEOUT", "10")))
    except ValueError:
        return 10.0


def _call_with_timeout(function: Callable[[], Any], seconds: float) -> Any:
    """``function()`` in a daemon thread, its stdout sent to stderr; a :class:`_Failed` when it raises
    anything but Ctrl-C (``sys.exit`` included) or is still running after ``seconds``."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = function()
        except KeyboardInterrupt as exc:  # pragma: no cover - re-raised below
            result["interrupt"] = exc
        except BaseException as exc:  # noqa: BLE001 - SystemExit from a plugin is a failure too
            result["error"] = exc

    _route_plugin_threads_to_stderr()
    thread = threading.Thread(target=target, name=f"{PLUGIN_THREAD}-import", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():  # left running (a daemon: it cannot keep the process alive); it prints to stderr
        return _Failed(f"its import did not finish within {seconds:g} s (SATOOL_PLUGIN_TIMEOUT)")
    if "interrupt" in result:
        raise result["interrupt"]
    if "error" in result:
        error = result["error"]
        if isinstance(error, SystemExit):
            return _Failed(f"it called sys.exit({error.code!r}) while importing")
        return _Failed(error)
    return result["value"]


def _registration(kind: str, args: tuple, kwargs: dict) -> tuple[str, Any, dict]:
    """Normalise the arguments of a ``register`` callback into (name, obj, extra)."""
    if kind == "commands":
        if len(args) < 2 and "command" not in kwargs:
            raise PluginError("register(name, command, panel=None) needs a name and a command")
        name = args[0] if args else kwargs.pop("name")
        command = args[1] if len(args) > 1 else kwargs.pop("command")
        panel = args[2] if len(args) > 2 else kwargs.pop("panel", None)
        if kwargs:
            raise PluginError(f"register() got unexpected arguments {sorted(kwargs)}")
        if not callable(command):
            raise PluginError(f"command {name!r}: must be a function or a typer.Typer")
        return name, command, {"panel": panel or "Plugin commands"}
    if len(args) != 1 or kwargs:
        raise PluginError(f"register() for {kind} takes exactly one object")
    obj = args[0]
    name = getattr(obj, "name", None)
    if not isinstance(name, str):
        raise PluginError(f"registered {kind[:-1]} object {obj!r} has no string 'name'")
    return name, obj, {}


_PLUGINS: Plugins | None = None


def get_plugins() -> Plugins:
    """The process-wide plugin manager (created on first use)."""
    global _PLUGINS
    if _PLUGINS is None:
        _PLUGINS = Plugins()
    return _PLUGINS


def reset_plugins() -> None:
    """Forget the process-wide manager (tests that change the environment)."""
    global _PLUGINS
    _PLUGINS = None


def lookup(kind: str, name: str) -> Any:
    """Shorthand: ``lookup('metrics', 'globalness')``."""
    return get_plugins().registry(kind).get(name)

