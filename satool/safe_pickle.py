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
- any other failure (truncated or corrupt file) is an
  :class:`~satool.errors.InputError` naming the file.

docs/checkpoints.md lists the policy and the reasons.
"""

from __future__ import annotations

import _compat_pickle
import argparse
import builtins
import collections
import hashlib
import io
import os
import pickle
import pickletools
from collections.abc import Callable
from typing import Any, ClassVar

from satool.errors import EnvironmentProblem, InputError, UnsafeFileError

__all__ = [
    "PLACEHOLDER_MODULES",
    "Placeholder",
    "RestrictedUnpickler",
    "allowed_globals",
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
    """``argparse.Namespace`` as loaded from a checkpoint (a read-only subclass)."""

    def __reduce__(self):  # pickles (and deep-copies) as a plain argparse.Namespace
        return argparse.Namespace, (), dict(vars(self))


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


_TENSOR = _token("torch.Tensor")
_PARAMETER = _token("torch.nn.Parameter")
_UNTYPED_STORAGE = _token("torch.UntypedStorage")


class Placeholder(metaclass=_ReadOnlyType):
    """Inert stand-in for a pickled object whose class satool will not import.

    ``qualified_name`` is the class the file named (e.g.
    ``optimizers.WarmupLinearSchedule``); ``args``/``kwargs`` are what the
    pickle passed to it and ``state`` what it asked to restore. It has no
    behaviour: no ``__call__``, no ``__iter__``, no attribute magic.
    """

    qualified_name: ClassVar[str] = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Placeholder:
        self = super().__new__(cls)
        self.args = args
        self.kwargs = kwargs
        self.state = None
        return self

    def __setstate__(self, state: Any) -> None:
        self.state = state

    # So that copy.copy/deepcopy give an equal placeholder.
    def __getnewargs_ex__(self) -> tuple[tuple, dict]:
        return self.args, self.kwargs

    def __getstate__(self) -> Any:
        return self.state

    def to_dict(self) -> dict[str, Any]:
        return {"class": self.qualified_name, "args": list(self.args),
                "kwargs": dict(self.kwargs), "state": self.state}

    def __repr__(self) -> str:
        return f"<placeholder for {self.qualified_name}: state={self.state!r}>"


_PLACEHOLDER_CLASSES: dict[str, type[Placeholder]] = {}


def _placeholder_class(qualified_name: str) -> type[Placeholder]:
    cls = _PLACEHOLDER_CLASSES.get(qualified_name)
    if cls is None:
        short = qualified_name.rsplit(".", 1)[-1] or "Object"
        cls = _ReadOnlyType(short, (Placeholder,), {
            "qualified_name": qualified_name, "__module__": "satool.safe_pickle.placeholders"})
        _PLACEHOLDER_CLASSES[qualified_name] = cls
    return cls


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
    import numpy as np

    if subtype is not np.ndarray:
        raise _refused_use(f"numpy array subclass {getattr(subtype, '__name__', subtype)!r}")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


_ALLOWED: dict[tuple[str, str], Any] | None = None


def allowed_globals() -> dict[tuple[str, str], Any]:
    """``(module, name) -> object`` for every global a checkpoint may name."""
    global _ALLOWED
    if _ALLOWED is None:
        import numpy as np
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
            ("numpy", "dtype"): np.dtype,
            ("numpy", "ndarray"): np.ndarray,
            # Read-only stand-ins for Python classes.
            ("argparse", "Namespace"): Namespace,
            ("torch", "Tensor"): _TENSOR,
            ("torch._tensor", "Tensor"): _TENSOR,
            ("torch.nn.parameter", "Parameter"): _PARAMETER,
            ("torch", "UntypedStorage"): _UNTYPED_STORAGE,
            ("torch.storage", "UntypedStorage"): _UNTYPED_STORAGE,
        })
        for name in ("dict", "list", "tuple", "set", "frozenset", "int", "float", "complex",
                     "bool", "str", "bytes", "bytearray", "slice", "range"):
            table[("builtins", name)] = getattr(builtins, name)
        for name, value in vars(torch).items():
            if isinstance(value, torch.dtype):
                table[("torch", name)] = value
        _ALLOWED = table
    return _ALLOWED


def _numpy_scalar(dtype, data=None):
    import numpy as np

    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise _refused_use("a numpy scalar of object dtype")
    return scalar(dtype, data)


# -- the unpickler -----------------------------------------------------------

# Shown under the name people know: os.system pickles as posix.system (nt.system).
_SHOWN_AS = {"posix": "os", "nt": "os"}

_EXTENSION_OPCODES = frozenset({"EXT1", "EXT2", "EXT4"})


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
        try:
            for opcode, _arg, _pos in pickletools.genops(file):
                if opcode.name in _EXTENSION_OPCODES:
                    raise _Refused(opcode.name, reason=(
                        f"the file uses pickle extension codes ({opcode.name}), "
                        "which can stand for any function"))
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
        if len(pid) > 1 and pid[1] is _UNTYPED_STORAGE:  # torch checks this identity
            import torch

            pid = (pid[0], torch.UntypedStorage, *pid[2:])
        return loader(pid)


def _load(file, **kwargs):
    return RestrictedUnpickler(file, **kwargs).load()


class _PickleModule:
    """What ``torch.load(pickle_module=...)`` needs: ``Unpickler``, ``load``, ``__name__``."""

    __name__ = "satool.safe_pickle"
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
    try:
        _refuse_torchscript(buffer)
        buffer.seek(0)
        return torch.load(buffer, map_location="cpu", pickle_module=PICKLE_MODULE,
                          weights_only=False, mmap=False)
    except _Refused as exc:
        raise UnsafeFileError(f"refused to load: {exc.reason}", path=name) from None
    except (InputError, EnvironmentProblem):
        raise
    except Exception as exc:  # anything else means the bytes are not a sound checkpoint
        raise InputError(f"not a readable torch checkpoint ({_describe(exc)})",
                         path=name) from None


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
