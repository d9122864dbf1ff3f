"""Untrusted checkpoints: nothing in them runs, only known objects load."""

from __future__ import annotations

import argparse
import builtins
import copy
import copyreg
import io
import os
import pickle
import subprocess
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from satool.errors import InputError, UnsafeFileError
from satool.models.safe_pickle import (
    PLACEHOLDER_MODULES,
    Placeholder,
    allowed_globals,
    safe_load,
    safe_load_bytes,
)

HINT = "(only tensors, plain containers and known s3prl objects are allowed)"

# Process-spawning audit events: none may fire while a checkpoint loads.
_SPAWNS: list[str] = []
_WATCHING = False


def _audit(event, args):
    if _WATCHING and event in ("os.system", "subprocess.Popen", "os.posix_spawn", "os.exec",
                               "os.fork", "os.spawn", "ctypes.dlopen"):
        _SPAWNS.append(event)


sys.addaudithook(_audit)


def _load(data: bytes, name="ckpt.pt"):
    global _WATCHING
    _WATCHING = True
    try:
        return safe_load_bytes(data, name=name)
    finally:
        _WATCHING = False


class _Call:
    """Pickles as ``func(*args)``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _torch_bytes(obj, legacy=False) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "PWNED"
    yield path
    assert not path.exists(), "code from the checkpoint ran"
    assert not _SPAWNS, f"checkpoint loading fired {_SPAWNS}"


def _payloads(marker: Path):
    touch = f"open({str(marker)!r}, 'w').write('x')"
    return {
        "os.system": _Call(os.system, f"touch {marker}"),
        "builtins.eval": _Call(builtins.eval, touch),
        "builtins.exec": _Call(builtins.exec, touch),
        "subprocess.Popen": _Call(subprocess.Popen, ["touch", str(marker)]),
        "builtins.getattr": _Call(builtins.getattr, OrderedDict, "fromkeys"),
    }


def _nestings(payload):
    state = {"encoder.weight": torch.ones(2, 2)}
    return {
        "top": payload,
        "in-dict": {"Transformer": state, "Config": {"transformer": {"hidden_size": payload}}},
        "in-list": {"Optimizer": {"param_groups": [{"lr": 1.0}, [1, payload]]}},
        "in-ordereddict": {"Transformer": OrderedDict(state, evil=payload)},
    }


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_refuses_code_in_torch_checkpoints(marker, legacy):
    for shown, payload in _payloads(marker).items():
        for where, obj in _nestings(payload).items():
            with pytest.raises(UnsafeFileError) as info:
                _load(_torch_bytes(obj, legacy=legacy))
            assert str(info.value) == (
                f"ckpt.pt: refused to load: the file asks to call {shown} {HINT}"), where


def test_refuses_code_in_raw_pickles(marker):
    for protocol in (0, 2, 4, 5):
        for shown, payload in _payloads(marker).items():
            data = pickle.dumps({"x": [payload]}, protocol=protocol)
            with pytest.raises(UnsafeFileError, match=rf"asks to call {shown} "):
                _load(data, name="raw.pkl")


def test_refuses_inst_opcode_and_extension_codes(marker):
    inst = b"(S'touch " + str(marker).encode() + b"'\nios\nsystem\n."  # protocol 0 INST
    with pytest.raises(UnsafeFileError, match="os.system"):
        _load(inst)
    code = 0x7FFFFFF0
    copyreg.add_extension("posix", "system", code)
    try:
        data = pickle.dumps(_Call(os.system, f"touch {marker}"), protocol=2)
        assert pickle.EXT4 in data
        pickle.loads(pickle.dumps(os.system, protocol=2))  # fill the extension cache
        with pytest.raises(UnsafeFileError, match="extension codes"):
            _load(data)
    finally:
        copyreg.remove_extension("posix", "system", code)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_refuses_whole_modules_and_torchscript(tmp_path, marker):
    with pytest.raises(UnsafeFileError, match="torch.nn.modules.linear.Linear"):
        _load(_torch_bytes(torch.nn.Linear(2, 2)))
    with pytest.raises(UnsafeFileError, match="torch.nn.modules.linear.Linear"):
        _load(_torch_bytes({"model": torch.nn.Linear(2, 2)}, legacy=True))
    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    path = tmp_path / "scripted.pt"
    torch.jit.save(scripted, str(path))
    with pytest.raises(UnsafeFileError, match="TorchScript archive"):
        safe_load(path)


def test_refuses_hooks_and_odd_tensor_rebuilds(marker):
    hooked = _Call(torch._utils._rebuild_parameter, torch.ones(2), False, OrderedDict(h=1))
    with pytest.raises(UnsafeFileError, match="asks for tensor backward hooks"):
        _load(_torch_bytes({"p": hooked}))
    bad = _Call(torch._utils._rebuild_tensor_v2, [1, 2], 0, (2,), (1,), False, OrderedDict())
    with pytest.raises(UnsafeFileError, match="a list instead of a storage"):
        _load(pickle.dumps(bad, protocol=2))


def test_truncated_and_corrupt_files(tmp_path):
    data = _torch_bytes({"Transformer": {"w": torch.randn(8, 8)}})
    for cut in (0, 10, len(data) // 2, len(data) - 1):
        with pytest.raises(InputError) as info:
            _load(data[:cut], name="cut.ckpt")
        assert not isinstance(info.value, UnsafeFileError)
        assert str(info.value).startswith("cut.ckpt: ") and "\n" not in str(info.value)
    with pytest.raises(InputError, match="not a readable torch checkpoint"):
        _load(pickle.dumps({"a": 1}), name="plain.pkl")
    with pytest.raises(InputError, match="no such file"):
        safe_load(tmp_path / "missing.ckpt")
    with pytest.raises(InputError, match="directory"):
        safe_load(tmp_path)


@pytest.fixture
def s3prl_like_modules(monkeypatch):
    """Classes named like s3prl's, importable only while the checkpoint is written."""
    made = {}
    for module_name, class_name in (("optimizers", "WarmupLinearSchedule"),
                                    ("torch.optim.lr_scheduler", "MadeUpSchedule")):
        module = sys.modules.get(module_name) or types.ModuleType(module_name)
        if module_name not in sys.modules:
            monkeypatch.setitem(sys.modules, module_name, module)

        def reject(self, state):
            raise AssertionError("the real class must never be used")

        cls = type(class_name, (), {"__setstate__": reject, "__module__": module_name})
        monkeypatch.setattr(module, class_name, cls, raising=False)
        made[f"{module_name}.{class_name}"] = cls
    return made


def test_known_s3prl_objects_load_as_placeholders(s3prl_like_modules, monkeypatch, marker):
    objects = {}
    for name, cls in s3prl_like_modules.items():
        obj = cls.__new__(cls)
        obj.__dict__.update(warmup=0.07, t_total=1000)
        objects[name] = obj
    states = {
        "Args": argparse.Namespace(upstream="mockingjay", seed=1337, device="cuda"),
        "Optimizer": {"state": {}, "param_groups": [
            {"lr": 2e-4, "schedule": objects["optimizers.WarmupLinearSchedule"]}]},
        "Scheduler": objects["torch.optim.lr_scheduler.MadeUpSchedule"],
        "Step": np.int64(5), "loss": np.float32(0.5), "curve": np.arange(3.0),
        "Transformer": {"w": torch.randn(2, 3).t(), "p": torch.nn.Parameter(torch.ones(2))},
        "misc": {b"bytes", 1, frozenset({2})}, "dtype": torch.float16,
        "device": torch.device("cpu"), "size": torch.Size([3]),
    }
    files = [_torch_bytes(states, legacy=legacy) for legacy in (False, True)]
    monkeypatch.delitem(sys.modules, "optimizers")
    for data in files:
        loaded = _load(data)
        assert "optimizers" not in sys.modules
        assert isinstance(loaded["Args"], argparse.Namespace)
        assert vars(loaded["Args"]) == {"upstream": "mockingjay", "seed": 1337, "device": "cuda"}
        schedule = loaded["Optimizer"]["param_groups"][0]["schedule"]
        assert isinstance(schedule, Placeholder)
        assert schedule.qualified_name == "optimizers.WarmupLinearSchedule"
        assert schedule.state == {"warmup": 0.07, "t_total": 1000}
        assert schedule.to_dict()["class"] == "optimizers.WarmupLinearSchedule"
        assert loaded["Scheduler"].qualified_name == "torch.optim.lr_scheduler.MadeUpSchedule"
        assert not callable(schedule)
        copied = copy.deepcopy(schedule)
        assert type(copied) is type(schedule) and copied.state == schedule.state
        assert loaded["Step"] == 5 and loaded["curve"].tolist() == [0.0, 1.0, 2.0]
        assert torch.equal(loaded["Transformer"]["w"], states["Transformer"]["w"])
        assert isinstance(loaded["Transformer"]["p"], torch.nn.Parameter)
        assert loaded["misc"] == states["misc"] and loaded["dtype"] is torch.float16


def test_placeholder_modules_do_not_cover_neighbours(marker):
    assert "optimizers" in PLACEHOLDER_MODULES
    original = pickle.dumps(_Call(os.system, "true"), protocol=2)
    assert b"cposix\nsystem\n" in original
    for module in ("optimizers_evil", "torch.optim", "s3prl", "transformers", "xoptimizers"):
        data = original.replace(b"cposix\n", b"c" + module.encode() + b"\n")
        with pytest.raises(UnsafeFileError, match=f"asks to call {module}.system "):
            _load(data)


def test_allow_list_is_small_and_inert():
    modules = {module for module, _ in allowed_globals()}
    assert modules <= {"builtins", "collections", "argparse", "copyreg", "_codecs", "torch",
                       "torch._utils", "torch._tensor", "torch.nn.parameter", "torch.storage",
                       "numpy", "numpy.core.multiarray", "numpy._core.multiarray"}
    builtin_names = {name for module, name in allowed_globals() if module == "builtins"}
    assert builtin_names <= {"dict", "list", "tuple", "set", "frozenset", "int", "float",
                             "complex", "bool", "str", "bytes", "bytearray", "slice", "range"}


def _build_on_global(module: str, name: str, attribute: str) -> bytes:
    """A pickle that names a global and BUILDs attribute = set onto it (slot state)."""
    text = attribute.encode()
    return (b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n"
            + b"N}X" + len(text).to_bytes(4, "little") + text + b"c__builtin__\nset\ns"
            + b"\x86b.")


@pytest.mark.parametrize("module,name", [
    ("argparse", "Namespace"), ("torch", "Tensor"), ("torch.nn.parameter", "Parameter"),
    ("torch", "UntypedStorage"), ("torch._utils", "_rebuild_tensor_v2"),
    ("copyreg", "_reconstructor"), ("optimizers", "WarmupLinearSchedule"),
    ("collections", "OrderedDict"), ("torch", "Size"), ("torch", "float32"),
])
def test_build_cannot_patch_allowed_globals(module, name, marker):
    for attribute in ("__repr__", "__defaults__", "__call__"):
        with pytest.raises(InputError):
            _load(_build_on_global(module, name, attribute))
    assert argparse.Namespace.__repr__ is not set and "__call__" not in vars(torch.Tensor)
    assert not isinstance(torch.Tensor.__dict__.get("__repr__"), type)


# -- fuzzing: random damage never runs code, and only ever raises InputError ----

_VALID = _torch_bytes({
    "Transformer": {"encoder.layer.0.weight": torch.randn(4, 4), "bias": torch.zeros(4)},
    "Args": argparse.Namespace(seed=1), "Step": 3, "Config": {"transformer": {"a": [1, 2.5]}},
})
_VALID_LEGACY = _torch_bytes({"w": torch.randn(3, 3), "n": argparse.Namespace(x=1)},
                             legacy=True)


def _flip(data: bytes, flips) -> bytes:
    damaged = bytearray(data)
    for position, mask in flips:
        damaged[position % len(damaged)] ^= mask
    return bytes(damaged)


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(legacy=st.booleans(),
       flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1,
                      max_size=6))
def test_fuzzed_checkpoints_load_or_raise_input_error(legacy, flips):
    data = _flip(_VALID_LEGACY if legacy else _VALID, flips)
    try:
        _load(data, name="fuzz.ckpt")
    except InputError as exc:  # UnsafeFileError is an InputError too
        assert str(exc).startswith("fuzz.ckpt: ") and "\n" not in str(exc)
    assert not _SPAWNS


@settings(max_examples=100, deadline=None, database=None)
@given(st.binary(max_size=300))
def test_fuzzed_pickle_streams(data):
    try:
        _load(b"\x80\x02" + data, name="fuzz.pkl")
    except InputError:
        pass
    assert not _SPAWNS
