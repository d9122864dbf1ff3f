"""Load untrusted torch checkpoints without letting them run code.

A ``torch.save`` file is a pickle, and a pickle can ask to call any function
(``os.system``, ``eval``, ...). ``torch.load(weights_only=True)`` blocks that
but also refuses the harmless non-tensor objects real s3prl checkpoints hold
(``argparse.Namespace`` in 'Args'/'Settings', pickled LR-schedule objects of
s3prl's old ``optimizers`` module inside 'Optimizer'). So satool reads them
with its own allow-list instead:

- the file format itself (zip or legacy torch format) is parsed by
  ``torch.load`` with ``pickle_module`` set to this module's restricted
  unpickler, so storages are rebuilt exactly as torch does it;
- every global the pickle names goes through :meth:`RestrictedUnpickler.find_class`,
  which only returns objects from :func:`allowed_globals` (tensor rebuild
  functions -- wrapped so their arguments are checked -- storage classes,
  dtypes, plain containers), ``argparse.Namespace`` (it only holds
  attributes), or an inert :class:`Placeholder` for classes under
  :data:`PLACEHOLDER_MODULES` (never imported, never called). Anything else
  stops the load with :class:`~satool.errors.UnsafeFileError` before it is
  called;
- what find_class hands out cannot be modified by the pickle's BUILD opcode
  (C types, sealed callables, tokens, read-only classes), so a file cannot
  patch torch or argparse for the rest of the process;
- pickle extension codes (EXT1/2/4, which bypass ``find_class`` once cached)
  and TorchScript archives (which contain code) are refused outright;
- placeholders keep whatever state the file gives them without applying it, and an
  ``argparse.Namespace`` takes no ``__dunder__`` attribute, so copying, pickling, printing or
  comparing what was loaded never calls into the file's choices; objects nested more than
  :data:`MAX_NESTING` levels deep are refused (every recursive walk over them would crash);
- any other failure (truncated or corrupt file) is an
  :class:`~satool.errors.InputError` naming the file.

docs/checkpoints.md lists the policy and the reasons.
"""

from __future__ import annotations

import _compat_pickle
import argparse
import builtins
import collections
import contextvars
import copy
import hashlib
import io
import os
import pickle
import pickletools
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from satool.errors import EnvironmentProblem, InputError, UnsafeFileError

__all__ = [
    "MAX_NESTING",
    "PLACEHOLDER_MODULES",
    "Placeholder",
    "RestrictedUnpickler",
    "allowed_globals",
    "bounded_repr",
    "safe_load",
    "safe_load_bytes",
    "safe_load_with_digest",
]

# Classes under these modules become inert Placeholders. They are what real
# s3prl / Mockingjay checkpoints pickle besides tensors: learning-rate
# schedule objects stored in BertAdam/Lamb param_groups ('schedule'), from
# s3prl's optimizers module under its old top-level name ('optimizers', which
# s3prl's own loader aliases in sys.modules) and its packaged name, from the
# paper-era repository (mockingjay.optimization, transformer.optimization),
# and LR schedulers from torch / Hugging Face that older trainers pickled
# whole. A placeholder records the name and the state; it is never imported.
PLACEHOLDER_MODULES: tuple[str, ...] = (
    "optimizers",
    "s3prl.optimizers",
    "schedulers",
    "s3prl.schedulers",
    "mockingjay.optimization",
    "transformer.optimization",
    "torch.optim.lr_scheduler",
    "pytorch_pretrained_bert.optimization",
    "transformers.optimization",
)

_REFUSAL_HINT = "only tensors, plain containers and known s3prl objects are allowed"


class _Refused(Exception):
    """Raised inside the unpickler; turned into UnsafeFileError with the file name."""

    def __init__(self, what: str, *, reason: str | None = None):
        super().__init__(what)
        self.what = what
        self.reason = reason or f"the file asks to call {what} ({_REFUSAL_HINT})"


def _refused_use(what: str) -> _Refused:
    return _Refused(what, reason=f"the file asks for {what} ({_REFUSAL_HINT})")


# The pickle BUILD opcode can set attributes on any object the file can name,
# including the classes and functions find_class returns. So everything handed
# out is immutable: C types, sealed callables (slotted instances without a
# __dict__), tokens for mutable torch classes, and classes whose metaclass
# refuses attribute assignment.


class _ReadOnlyType(type):
    """Metaclass of classes a checkpoint may name: their attributes cannot be changed."""

    def __setattr__(cls, name: str, value: Any) -> None:
        raise TypeError(f"{cls.__name__} is read-only")

    def __delattr__(cls, name: str) -> None:
        raise TypeError(f"{cls.__name__} is read-only")


class Namespace(argparse.Namespace, metaclass=_ReadOnlyType):
    """``argparse.Namespace`` as loaded from a checkpoint (a read-only subclass).

    Only plain attribute names may be set: a file's BUILD cannot set ``__class__`` (turning it into
    another allowed class) or put ``__deepcopy__``, ``__reduce_ex__``, ... into its ``__dict__``,
    where ``copy`` and ``pickle`` would find and call them."""

    def __setattr__(self, name: str, value: Any) -> None:
        _check_attribute_name(name)
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        _check_attribute_name(name)
        object.__delattr__(self, name)

    def __setstate__(self, state: Any) -> None:  # BUILD: a dict, or (dict, slot dict) as pickle writes them
        parts = state if isinstance(state, tuple) and len(state) == 2 else (state,)
        for part in parts:
            if part is None:
                continue
            if type(part) is not dict:
                raise _refused_use(f"argparse.Namespace state of type {_type_name(part)}")
            for name, value in part.items():
                _check_attribute_name(name)
                object.__setattr__(self, name, value)

    def __reduce__(self):  # pickles (and deep-copies) as a plain argparse.Namespace
        return argparse.Namespace, (), dict(vars(self))

    def __repr__(self) -> str:
        return bounded_repr(self)


def _check_attribute_name(name: Any) -> None:
    if type(name) is not str or (name.startswith("__") and name.endswith("__")):
        raise _refused_use(f"argparse.Namespace attribute {bounded_repr(name)}")


class _Sealed:
    """Base of the callables and tokens a checkpoint may name (no __dict__, no slots)."""

    __slots__ = ()


def _sealed_callable(function: Callable[..., Any], name: str) -> _Sealed:
    def call(self, *args: Any, **kwargs: Any) -> Any:
        return function(*args, **kwargs)

    cls = type(name, (_Sealed,), {"__slots__": (), "__call__": call,
                                  "__repr__": lambda self: f"<allowed {name}>"})
    return cls()


def _token(name: str) -> _Sealed:
    """An inert stand-in for a mutable torch class, mapped back where torch needs it."""
    cls = type(name, (_Sealed,), {"__slots__": (), "__repr__": lambda self: f"<{name}>"})
    return cls()


def _refusing_token(name: str, use: str) -> _Sealed:
    """A stand-in that may be passed around but refuses to be called."""
    def call(self, *args: Any, **kwargs: Any) -> Any:
        raise _refused_use(use)

    cls = type(name, (_Sealed,), {"__slots__": (), "__call__": call, "__repr__": lambda self: f"<{name}>"})
    return cls()


_TENSOR = _token("torch.Tensor")
# numpy.ndarray(shape, dtype, buffer) would build an array over arbitrary bytes (with an object
# dtype: over arbitrary pointers); a file may only name it as _reconstruct's subtype.
_NDARRAY = _refusing_token("numpy.ndarray", "numpy.ndarray called directly (arrays over raw buffers)")
_PARAMETER = _token("torch.nn.Parameter")
_UNTYPED_STORAGE = _token("torch.UntypedStorage")


class Placeholder(metaclass=_ReadOnlyType):
    """Inert stand-in for a pickled object whose class satool will not import.

    ``qualified_name`` is the class the file named (e.g.
    ``optimizers.WarmupLinearSchedule``); ``args``/``kwargs`` are what the
    pickle passed to it and ``state`` what it asked to restore. It has no
    behaviour: no ``__call__``, no ``__iter__``, no attribute magic.

    Whatever the file gave it, a placeholder always has ``args`` (a tuple), ``kwargs`` (a dict)
    and ``state``; it has no ``__dict__`` (slots only) and refuses attribute assignment, so no
    state can reach the machinery ``copy`` and ``pickle`` look up. ``copy.copy``,
    ``copy.deepcopy`` (self-references included) and ``pickle`` use satool's own methods;
    ``repr`` is bounded in depth and length; ``==`` and ``hash`` are by identity.
    """

    __slots__ = ("_args", "_kwargs", "_state")
    qualified_name: ClassVar[str] = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Placeholder:
        return _new_placeholder(cls, args, kwargs, None)

    @property
    def args(self) -> tuple:
        return _slot(self, "_args", ())

    @property
    def kwargs(self) -> dict[str, Any]:
        return _slot(self, "_kwargs", None) or {}

    @property
    def state(self) -> Any:
        return _slot(self, "_state", None)

    def __setstate__(self, state: Any) -> None:  # BUILD, whatever the state: kept, never applied
        object.__setattr__(self, "_state", state)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"a placeholder for {self.qualified_name} is read-only")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"a placeholder for {self.qualified_name} is read-only")

    def __copy__(self) -> Placeholder:
        return _new_placeholder(type(self), self.args, dict(self.kwargs), self.state)

    def __deepcopy__(self, memo: dict[int, Any]) -> Placeholder:
        twin = _new_placeholder(type(self), (), {}, None)
        memo[id(self)] = twin  # before the parts: a state that holds the placeholder itself
        object.__setattr__(twin, "_args", copy.deepcopy(self.args, memo))
        object.__setattr__(twin, "_kwargs", copy.deepcopy(self.kwargs, memo))
        object.__setattr__(twin, "_state", copy.deepcopy(self.state, memo))
        return twin

    def __reduce_ex__(self, protocol: Any) -> tuple:
        # the state travels separately (BUILD), so pickle memoises the object first and a
        # self-referential state pickles
        return _restore_placeholder, (self.qualified_name, self.args, self.kwargs), self.state

    def __reduce__(self) -> tuple:
        return self.__reduce_ex__(2)

    def __getstate__(self) -> Any:
        return self.state

    def __eq__(self, other: object) -> bool:
        return self is other

    def __ne__(self, other: object) -> bool:
        return self is not other

    def __hash__(self) -> int:
        return object.__hash__(self)

    def to_dict(self) -> dict[str, Any]:
        return {"class": self.qualified_name, "args": list(self.args),
                "kwargs": dict(self.kwargs), "state": self.state}

    def __repr__(self) -> str:
        return bounded_repr(self)


def _slot(placeholder: Placeholder, name: str, default: Any) -> Any:
    try:
        return getattr(Placeholder, name).__get__(placeholder, type(placeholder))
    except AttributeError:  # never set (an instance made without __new__)
        return default


def _new_placeholder(cls: type[Placeholder], args: Any, kwargs: Any, state: Any) -> Placeholder:
    self = object.__new__(cls)
    object.__setattr__(self, "_args", args if type(args) is tuple else tuple(args))
    object.__setattr__(self, "_kwargs", kwargs if type(kwargs) is dict else dict(kwargs))
    object.__setattr__(self, "_state", state)
    return self


def _restore_placeholder(qualified_name: str, args: tuple, kwargs: dict) -> Placeholder:
    """How a placeholder pickles (plain ``pickle`` only: satool's unpickler does not allow it)."""
    if type(qualified_name) is not str:
        raise TypeError("a placeholder's class name must be text")
    return _new_placeholder(_placeholder_class(qualified_name), args, kwargs, None)


_PLACEHOLDER_CLASSES: dict[str, type[Placeholder]] = {}
_MAX_NAME = 120


def _placeholder_class(qualified_name: str) -> type[Placeholder]:
    cls = _PLACEHOLDER_CLASSES.get(qualified_name)
    if cls is None:
        short = qualified_name.rsplit(".", 1)[-1][:_MAX_NAME] or "Object"
        cls = _ReadOnlyType(short, (Placeholder,), {
            "__slots__": (), "qualified_name": qualified_name,
            "__module__": "satool.models.safe_pickle.placeholders"})
        _PLACEHOLDER_CLASSES[qualified_name] = cls
    return cls


# -- bounded repr: what a file holds may be self-referential, deeply nested or huge ----------------

_REPR_DEPTH = 3
_REPR_ITEMS = 6
_REPR_TEXT = 60
_REPR_TOTAL = 600


def bounded_repr(value: Any) -> str:
    """One line, at most a few hundred characters, for anything a checkpoint can hold: containers
    are shown to a few levels and items, a value inside itself as ``...``; only numbers, text and
    arrays are asked for their own repr."""
    text = _bounded(value, 0, set())
    return text if len(text) <= _REPR_TOTAL else text[:_REPR_TOTAL - 3] + "..."


def _shorten(text: str, limit: int = _REPR_TEXT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _type_name(value: Any) -> str:
    return _shorten(type(value).__name__, 40)


def _bounded(value: Any, depth: int, active: set[int]) -> str:
    kind = type(value)
    if value is None or kind in (bool, float, complex):
        return repr(value)
    if kind is int:
        return repr(value) if value.bit_length() <= 64 else f"<int of {value.bit_length()} bits>"
    if kind in (str, bytes, bytearray):
        return _shorten(repr(value[:_REPR_TEXT]) if len(value) > _REPR_TEXT else repr(value))
    if isinstance(value, type):
        name = getattr(value, "qualified_name", None) if issubclass(value, Placeholder) else None
        return f"<class {_shorten(name or value.__qualname__)}>"
    if id(value) in active:
        return "..."
    if depth >= _REPR_DEPTH:
        if isinstance(value, Placeholder):
            return f"<placeholder for {_shorten(value.qualified_name)}>"
        return "<...>" if isinstance(value, (dict, list, tuple, set, frozenset, argparse.Namespace)) \
            else f"<{_type_name(value)}>"
    active.add(id(value))
    try:
        def show(item: Any) -> str:
            return _bounded(item, depth + 1, active)

        def items(values: Any, render: Callable[[Any], str]) -> str:
            shown = []
            for n, item in enumerate(values):
                if n == _REPR_ITEMS:
                    shown.append("...")
                    break
                shown.append(render(item))
            return ", ".join(shown)

        if isinstance(value, Placeholder):
            return f"<placeholder for {_shorten(value.qualified_name)}: state={show(value.state)}>"
        if isinstance(value, argparse.Namespace):
            fields = items(vars(value).items(), lambda kv: f"{_shorten(str(kv[0]), 40)}={show(kv[1])}")
            return f"Namespace({fields})"
        if isinstance(value, dict):
            body = "{" + items(value.items(), lambda kv: f"{show(kv[0])}: {show(kv[1])}") + "}"
            return body if kind is dict else f"{_type_name(value)}({body})"
        if isinstance(value, list):
            return "[" + items(value, show) + "]"
        if isinstance(value, tuple) and kind is tuple:
            return "(" + items(value, show) + ("," if len(value) == 1 else "") + ")"
        if isinstance(value, (set, frozenset)):
            return f"{kind.__name__}({{{items(value, show)}}})"
        if isinstance(value, slice):
            return f"slice({show(value.start)}, {show(value.stop)}, {show(value.step)})"
        try:  # tensors, arrays, numpy scalars, dtypes, torch.Size, ...: their own (summarised) repr
            return _shorten(repr(value), 120)
        except Exception:
            return f"<{_type_name(value)}>"
    finally:
        active.discard(id(value))


def _is_placeholder_module(module: str) -> bool:
    return any(module == m or module.startswith(m + ".") for m in PLACEHOLDER_MODULES)


# -- checked wrappers around the callables a checkpoint may invoke ----------


def _check_storage(storage: Any) -> None:
    import torch

    if not isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)):
        raise _refused_use(f"a tensor rebuilt from a {type(storage).__name__} instead of a storage")


def _check_hooks(hooks: Any) -> None:
    # torch never saves hooks (they would be callables); refuse any.
    if hooks:
        raise _refused_use("tensor backward hooks")


def _check_state(state: Any) -> None:
    parts = state if isinstance(state, tuple) else (state,)
    for part in parts:
        if part is None:
            continue
        if not isinstance(part, dict):
            raise _refused_use(f"a tensor state of type {type(part).__name__}")
        for key in part:
            if not isinstance(key, str) or key.startswith("__"):
                raise _refused_use(f"tensor attribute {key!r}")


def _rebuild_tensor(storage, storage_offset, size, stride):
    import torch

    _check_storage(storage)
    return torch._utils._rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
                       backward_hooks, metadata=None):
    import torch

    _check_storage(storage)
    _check_hooks(backward_hooks)
    return torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride,
                                           bool(requires_grad), collections.OrderedDict(),
                                           metadata)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad,
                       backward_hooks, dtype, metadata=None):
    import torch

    _check_storage(storage)
    _check_hooks(backward_hooks)
    return torch._utils._rebuild_tensor_v3(storage, storage_offset, size, stride,
                                           bool(requires_grad), collections.OrderedDict(),
                                           dtype, metadata)


def _rebuild_parameter(data, requires_grad, backward_hooks):
    import torch

    _check_hooks(backward_hooks)
    if not isinstance(data, torch.Tensor):
        raise _refused_use(f"a parameter made of {type(data).__name__}")
    return torch._utils._rebuild_parameter(data, bool(requires_grad), collections.OrderedDict())


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    import torch

    _check_hooks(backward_hooks)
    _check_state(state)
    if not isinstance(data, torch.Tensor):
        raise _refused_use(f"a parameter made of {type(data).__name__}")
    return torch._utils._rebuild_parameter_with_state(
        data, bool(requires_grad), collections.OrderedDict(), state)


def _sealed_rebuilders() -> list[Any]:
    table = allowed_globals()
    return [table[("torch._utils", name)] for name in (
        "_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
        "_rebuild_parameter_with_state")]


def _rebuild_from_type_v2(func, new_type, args, state):
    import torch

    if not any(func is allowed for allowed in _sealed_rebuilders()):
        raise _refused_use("a tensor subclass rebuilt by an unknown function")
    types = {id(_TENSOR): torch.Tensor, id(_PARAMETER): torch.nn.Parameter}
    if id(new_type) not in types:
        raise _refused_use(f"tensor subclass {getattr(new_type, '__name__', new_type)!r}")
    _check_state(state)
    return torch._tensor._rebuild_from_type_v2(func, types[id(new_type)], tuple(args), state)


def _rebuild_from_type(func, type_, args, state):
    return _rebuild_from_type_v2(func, type_, args, state)


def _reconstructor(cls, base, state):
    """copyreg._reconstructor (protocol 0/1 objects), for allowed classes only."""
    if base is not object or not (
        isinstance(cls, type) and (issubclass(cls, Placeholder) or cls is Namespace)
    ):
        raise _refused_use(f"copyreg._reconstructor of {getattr(cls, '__name__', cls)!r}")
    return cls.__new__(cls)


def _codecs_encode(obj, encoding="utf-8", errors="strict"):
    """_codecs.encode as protocol-2 pickles use it for bytes: str -> latin-1 bytes."""
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise _refused_use(f"_codecs.encode with encoding {encoding!r}")
    return obj.encode("latin-1")


def _numpy_reconstruct(subtype, shape, dtype):
    """numpy's pickle entry point: an empty array of ``dtype`` that BUILD then fills from bytes the
    file holds. Only plain arrays of plain numbers; ``shape`` must be the empty shape numpy writes."""
    import numpy as np

    if subtype is not _NDARRAY:
        raise _refused_use(f"numpy array subclass {getattr(subtype, '__name__', subtype)!r}")
    if dtype != b"b":  # numpy writes b"b"; the real dtype comes with the data (BUILD)
        _check_numpy_dtype(dtype)
    if not (isinstance(shape, tuple) and all(type(n) is int and 0 <= n <= 1 for n in shape)):
        raise _refused_use(f"a numpy array pre-allocated with shape {shape!r}")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _numpy_dtype(spec, align=False, copy=False):
    """numpy.dtype as numpy pickles it (``dtype('f8', False, True)``): plain numbers only."""
    import numpy as np

    if not isinstance(spec, str) or len(spec) > 8:
        raise _refused_use(f"numpy.dtype of {type(spec).__name__}")
    try:
        dtype = np.dtype(spec)
    except TypeError:
        raise _refused_use(f"numpy.dtype {spec!r}") from None
    _check_numpy_dtype(dtype)
    return np.dtype(spec, bool(align), bool(copy))


def _check_numpy_dtype(dtype: Any) -> None:
    import numpy as np

    if not isinstance(dtype, np.dtype):
        raise _refused_use(f"a numpy array of {type(dtype).__name__}")
    if dtype.hasobject or dtype.kind not in "biufc":
        raise _refused_use(f"a numpy array of dtype {dtype}")


_ALLOWED: dict[tuple[str, str], Any] | None = None


def allowed_globals() -> dict[tuple[str, str], Any]:
    """``(module, name) -> object`` for every global a checkpoint may name."""
    global _ALLOWED
    if _ALLOWED is None:
        import torch

        functions: dict[tuple[str, str], Callable[..., Any]] = {
            ("copyreg", "_reconstructor"): _reconstructor,
            ("_codecs", "encode"): _codecs_encode,
            ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
            ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
            ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
            ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
            ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
            ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
            ("torch._tensor", "_rebuild_from_type"): _rebuild_from_type,
            ("numpy.core.multiarray", "scalar"): _numpy_scalar,
            ("numpy._core.multiarray", "scalar"): _numpy_scalar,
            ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
            ("numpy", "dtype"): _numpy_dtype,
        }
        table: dict[tuple[str, str], Any] = {
            key: _sealed_callable(function, f"{key[0]}.{key[1]}")
            for key, function in functions.items()
        }
        table.update({
            # Types implemented in C, so BUILD cannot modify them.
            ("collections", "OrderedDict"): collections.OrderedDict,
            ("torch", "Size"): torch.Size,
            ("torch", "device"): torch.device,
            ("numpy", "ndarray"): _NDARRAY,  # only as _reconstruct's subtype: never called
            # Read-only stand-ins for Python classes.
            ("argparse", "Namespace"): Namespace,
            ("torch", "Tensor"): _TENSOR,
            ("torch._tensor", "Tensor"): _TENSOR,
            ("torch.nn.parameter", "Parameter"): _PARAMETER,
            ("torch", "UntypedStorage"): _UNTYPED_STORAGE,
            ("torch.storage", "UntypedStorage"): _UNTYPED_STORAGE,
        })
        for name in ("int", "float", "complex", "bool", "slice", "range"):
            table[("builtins", name)] = getattr(builtins, name)  # C types of bounded size
        for name, function in _CHECKED_BUILTINS.items():
            table[("builtins", name)] = _sealed_callable(function, f"builtins.{name}")
        for name, value in vars(torch).items():
            if isinstance(value, torch.dtype):
                table[("torch", name)] = value
        _ALLOWED = table
    return _ALLOWED


# Containers and byte strings as a pickle may build them by calling their type: only from data the
# file already holds (a list, a tuple, a byte string), never from a size or a lazy iterable, so a
# kilobyte file cannot ask for a gigabyte (bytearray(10**9), list(range(10**8))).
_MATERIALISED = (list, tuple, dict, set, frozenset)


def _container(kind: type) -> Callable[..., Any]:
    def build(*args: Any) -> Any:
        if len(args) > 1 or (args and not isinstance(args[0], _MATERIALISED)):
            shown = type(args[0]).__name__ if args else "?"
            raise _refused_use(f"builtins.{kind.__name__} built from a {shown}")
        return kind(*args)
    return build


def _byte_string(kind: type) -> Callable[..., Any]:
    def build(*args: Any) -> Any:
        if not args:
            return kind()
        data = args[0]
        if isinstance(data, (bytes, bytearray)) and len(args) == 1:
            return kind(data)
        if isinstance(data, str) and len(args) == 2 and args[1] in ("latin1", "latin-1", "utf-8", "utf8", "ascii"):
            return kind(data, args[1])
        raise _refused_use(f"builtins.{kind.__name__} built from a {type(data).__name__}")
    return build


def _text(*args: Any) -> str:
    if len(args) > 1 or (args and not isinstance(args[0], (str, int, float))):
        raise _refused_use("builtins.str of anything but text or a number")
    return str(*args)


_CHECKED_BUILTINS: dict[str, Callable[..., Any]] = {
    **{kind.__name__: _container(kind) for kind in _MATERIALISED},
    "bytes": _byte_string(bytes), "bytearray": _byte_string(bytearray), "str": _text,
}


def _numpy_scalar(dtype, data=None):

    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar
    _check_numpy_dtype(dtype)
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise _refused_use("a numpy scalar whose bytes do not match its dtype")
    return scalar(dtype, data)


# -- the unpickler -----------------------------------------------------------

# Shown under the name people know: os.system pickles as posix.system (nt.system).
_SHOWN_AS = {"posix": "os", "nt": "os"}

_EXTENSION_OPCODES = frozenset({"EXT1", "EXT2", "EXT4"})
_MAX_SAME_HASH = 64


@dataclass
class _Budget:
    """What one load may allocate for tensor storages: no more bytes than the file holds (storages
    are stored raw), and, in the legacy format, every storage declared must also be filled."""

    remaining: int
    seen: dict[str, int] = field(default_factory=dict)
    filled: set[str] | None = None


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("satool_storage_budget", default=None)


class RestrictedUnpickler(pickle.Unpickler):
    """A pickle.Unpickler that only hands out allow-listed globals.

    Pass the module-like :data:`PICKLE_MODULE` to ``torch.load(pickle_module=...)``.
    """

    def __init__(self, file, **kwargs):
        super().__init__(file, **kwargs)
        self._file = file

    def load(self):
        self._scan_opcodes()
        return super().load()

    def _scan_opcodes(self) -> None:
        # Extension codes are resolved through a process-wide cache that
        # bypasses find_class once filled: refuse them before unpickling.
        file = self._file
        if not (hasattr(file, "seek") and hasattr(file, "tell")):
            raise pickle.UnpicklingError("a pickle stream that cannot be checked before loading")
        start = file.tell()
        by_hash: dict[int, set] = {}
        try:
            for opcode, arg, _pos in pickletools.genops(file):
                if opcode.name in _EXTENSION_OPCODES:
                    raise _Refused(opcode.name, reason=(
                        f"the file uses pickle extension codes ({opcode.name}), "
                        "which can stand for any function"))
                if type(arg) in (int, float):
                    # numbers hash to themselves: a file can pick thousands of distinct ones with one
                    # hash, and building a dict of them takes quadratic time
                    same = by_hash.setdefault(hash(arg), set())
                    same.add(arg)
                    if len(same) > _MAX_SAME_HASH:
                        raise _Refused("colliding numbers", reason=(
                            f"the file holds more than {_MAX_SAME_HASH} distinct numbers with one hash "
                            "value (built to make loading take quadratic time)"))
        finally:
            file.seek(start)

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _compat_pickle.NAME_MAPPING:  # Python 2 names
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        found = allowed_globals().get((module, name))
        if found is not None:
            return found
        if _is_placeholder_module(module) and name.isidentifier():
            return _placeholder_class(f"{module}.{name}")
        raise _Refused(f"{_SHOWN_AS.get(module, module)}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        # torch sets its own storage loader as an instance attribute after
        # construction; only its 'storage' records are let through.
        if not isinstance(pid, tuple) or not pid:
            raise pickle.UnpicklingError(f"bad persistent id {type(pid).__name__}")
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind != "storage":
            raise _Refused(f"{kind!r} record", reason=(
                f"the file holds a pickled torch {kind!r} (whole modules are code; "
                "satool loads state dicts only)"))
        loader: Callable[[Any], Any] | None = self.__dict__.get("persistent_load")
        if loader is None:
            raise pickle.UnpicklingError("storage record outside a torch file")
        _charge(pid)
        if len(pid) > 1 and pid[1] is _UNTYPED_STORAGE:  # torch checks this identity
            import torch

            pid = (pid[0], torch.UntypedStorage, *pid[2:])
        return loader(pid)


def _charge(pid: tuple) -> None:
    """Count a storage record against the load's budget before torch allocates it."""
    budget = _BUDGET.get()
    if budget is None or len(pid) < 5:
        return
    key, numel = str(pid[2]), pid[4]
    itemsize = getattr(getattr(pid[1], "dtype", None), "itemsize", 1)
    if type(numel) is not int or numel < 0:
        raise pickle.UnpicklingError(f"storage {key} has a bad size {numel!r}")
    if key in budget.seen:
        return
    size = numel * itemsize
    budget.seen[key] = size
    budget.remaining -= size
    if budget.remaining < 0:
        raise InputError(f"tensor storages declare {sum(budget.seen.values())} bytes, more than the file holds "
                         "(a damaged or crafted file)")


def _load(file, **kwargs):
    result = RestrictedUnpickler(file, **kwargs).load()
    budget = _BUDGET.get()
    # torch's legacy format loads the list of storage keys to fill right after the main pickle
    if budget is not None and budget.seen and budget.filled is None and isinstance(result, list):
        budget.filled = {str(k) for k in result}
    return result


class _PickleModule:
    """What ``torch.load(pickle_module=...)`` needs: ``Unpickler``, ``load``, ``__name__``."""

    __name__ = "satool.models.safe_pickle"
    Unpickler = RestrictedUnpickler
    load = staticmethod(_load)


PICKLE_MODULE = _PickleModule()


# -- public entry points -------------------------------------------------------


def safe_load(path: str | os.PathLike[str]) -> Any:
    """Read a torch checkpoint from ``path`` with the restricted unpickler."""
    return safe_load_with_digest(path)[0]


def safe_load_with_digest(path: str | os.PathLike[str]) -> tuple[Any, str]:
    """Like :func:`safe_load`, also returning the sha256 of the bytes read."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise InputError("no such file", path=path) from None
    except IsADirectoryError:
        raise InputError("is a directory, expected a checkpoint file", path=path) from None
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", path=path) from None
    return safe_load_bytes(data, name=path), hashlib.sha256(data).hexdigest()


def safe_load_bytes(data: bytes, *, name: str | os.PathLike[str] = "<bytes>") -> Any:
    """Unpickle torch-saved ``data``; errors name ``name``."""
    import torch

    if _forced_weights_only():
        raise EnvironmentProblem(
            "TORCH_FORCE_WEIGHTS_ONLY_LOAD is set, which stops satool's own (stricter) "
            "checkpoint allow-list from running; unset it", path=name)
    if not data:
        raise InputError("empty file, expected a torch checkpoint", path=name)
    buffer = io.BytesIO(data)
    budget = _Budget(len(data))
    token = _BUDGET.set(budget)
    try:
        _refuse_torchscript(buffer)
        _check_zip_members(buffer, len(data))
        buffer.seek(0)
        loaded = torch.load(buffer, map_location="cpu", pickle_module=PICKLE_MODULE,
                            weights_only=False, mmap=False)
        _check_nesting(loaded)
        if budget.filled is not None and not set(budget.seen) <= budget.filled:
            missing = sorted(set(budget.seen) - budget.filled)
            raise InputError(f"{len(missing)} tensor storage(s) are declared but their data is not in the file "
                             "(they would hold uninitialised memory)")
        return loaded
    except _Refused as exc:
        raise UnsafeFileError(f"refused to load: {exc.reason}", path=name) from None
    except (InputError, EnvironmentProblem) as exc:
        if exc.path is None:
            raise type(exc)(exc.message, path=name) from None
        raise
    except Exception as exc:  # anything else means the bytes are not a sound checkpoint
        raise InputError(f"not a readable torch checkpoint ({_describe(exc)})",
                         path=name) from None
    finally:
        _BUDGET.reset(token)


# Deeper than this, the loaded objects are refused: pickle builds any depth without recursion (a few
# bytes a level), but deepcopy, repr, json and == recurse, and would end in a RecursionError. Real
# checkpoints nest a handful of levels (an optimizer's state is the deepest, at about five).
MAX_NESTING = 100


def _children(value: Any) -> Any:
    """What ``value`` holds that copy, repr or == would descend into (None for a leaf)."""
    if isinstance(value, dict):
        return (*value.keys(), *value.values())
    if isinstance(value, (list, tuple, set, frozenset)):
        return value
    if isinstance(value, Placeholder):
        return (value.args, value.kwargs, value.state)
    if isinstance(value, argparse.Namespace):
        return tuple(vars(value).values())
    if isinstance(value, slice):
        return (value.start, value.stop, value.step)
    if type(value).__module__.startswith("torch"):  # a tensor's attributes (torch's own state)
        attributes = getattr(value, "__dict__", None)
        return tuple(attributes.values()) if type(attributes) is dict and attributes else None
    return None


def _check_nesting(root: Any) -> None:
    """Refuse objects nested more than :data:`MAX_NESTING` levels deep along any path (through shared
    objects too: a recursive repr or == walks every path; a value inside itself is not followed round).
    Iterative, so the check itself cannot run out of stack."""
    children = _children(root)
    if children is None:
        return
    height: dict[int, int] = {}  # id -> levels from it down, once finished (the graph stays alive)
    open_ids = {id(root)}
    stack: list[list[Any]] = [[root, iter(children), 1]]
    while stack:
        frame = stack[-1]
        for child in frame[1]:
            key = id(child)
            if key in height:
                frame[2] = max(frame[2], height[key] + 1)
                continue
            below = None if key in open_ids else _children(child)
            if below is None:
                continue
            if len(stack) >= MAX_NESTING:
                raise _too_deep()
            open_ids.add(key)
            stack.append([child, iter(below), 1])
            break
        else:
            stack.pop()
            open_ids.discard(id(frame[0]))
            height[id(frame[0])] = frame[2]
            if frame[2] > MAX_NESTING:
                raise _too_deep()
            if stack:
                stack[-1][2] = max(stack[-1][2], frame[2] + 1)


def _too_deep() -> _Refused:
    return _Refused("deep nesting", reason=(
        f"the file nests containers or objects more than {MAX_NESTING} levels deep "
        "(built to make copying or printing it crash)"))


def _check_zip_members(buffer: io.BytesIO, size: int) -> None:
    """torch's zip format stores members uncompressed; a compressed member could inflate far past the
    file's size, so it is refused before anything is read."""
    import torch

    buffer.seek(0)
    if not torch.serialization._is_zipfile(buffer):
        return
    buffer.seek(0)
    try:
        members = zipfile.ZipFile(buffer).infolist()
    except (zipfile.BadZipFile, ValueError, OSError):
        return  # torch's own reader reports the damage
    for member in members:
        if member.compress_type != zipfile.ZIP_STORED or member.file_size > size:
            raise _Refused("compressed member", reason=(
                f"member {member.filename!r} is compressed ({member.compress_size} bytes that would inflate "
                f"to {member.file_size}); torch files store members uncompressed"))


def _refuse_torchscript(buffer: io.BytesIO) -> None:
    import torch

    if not torch.serialization._is_zipfile(buffer):
        return
    buffer.seek(0)
    reader = torch._C.PyTorchFileReader(buffer)
    if "constants.pkl" in reader.get_all_records():
        raise _Refused("TorchScript", reason=(
            "the file is a TorchScript archive, which contains code "
            "(satool reads torch.save checkpoints)"))


def _forced_weights_only() -> bool:
    return os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "0").lower() in ("1", "y", "yes",
                                                                            "true")


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = text.split(" This is an internal miniz error")[0]
    if len(text) > 120:
        text = text[:117] + "..."
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text
