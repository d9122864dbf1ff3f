"""Placeholders (stand-ins for objects of classes satool will not import) are inert whatever state the
file gave them: copy, deepcopy, pickle, repr, == and hash never call into the file's choices, never
recurse without bound and never raise; and `satool extract` on checkpoints carrying such objects in
any block ends with one line naming the file and a documented exit code, never a traceback."""

from __future__ import annotations

import argparse
import copy
import copyreg
import io
import pickle
import sys
import types
import zipfile
from pathlib import Path

import pytest
import torch

from satool import testing
from satool.errors import UnsafeFileError
from satool.models.safe_pickle import MAX_NESTING, Placeholder, safe_load_bytes

MODULE = "schedulers"  # one of PLACEHOLDER_MODULES, importable only while the files are written
SPLICE = "@@splice-here@@"


def _torch_bytes(obj, protocol=2) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, pickle_protocol=protocol)
    return buffer.getvalue()


def _splice(obj, raw: bytes) -> bytes:
    """torch.save ``obj`` (which holds the text SPLICE once), then put the raw pickle opcodes ``raw``
    (which push exactly one object) where the text was."""
    data = _torch_bytes(obj)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        members = {info.filename: z.read(info) for info in z.infolist()}
    pkl = next(name for name in members if name.endswith("data.pkl"))
    text = SPLICE.encode()
    opcode = b"X" + len(text).to_bytes(4, "little") + text
    assert members[pkl].count(opcode) == 1
    members[pkl] = members[pkl].replace(opcode, raw)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for name, content in members.items():
            z.writestr(name, content)
    return out.getvalue()


def _nested_lists(levels: int) -> bytes:
    return b"]" * levels + b"a" * (levels - 1)  # EMPTY_LIST x n, APPEND x n-1: [[[...]]]


def _placeholder_chain(levels: int) -> bytes:
    """p1 whose state is p2 whose state is p3 ... (NEWOBJ each, then BUILD from the inside out)."""
    return (f"c{MODULE}\nChain\n".encode() + b")\x81") * levels + b"b" * (levels - 1)


@pytest.fixture(scope="module")
def crafted():
    """name -> (object to pickle, pickle protocol): every way a file can make or fill a placeholder,
    and the argparse.Namespace tricks that used to turn a namespace into a placeholder without args."""
    module = types.ModuleType(MODULE)
    saved = sys.modules.get(MODULE)
    sys.modules[MODULE] = module

    def cls(name, **body):
        made = type(name, (), {"__module__": MODULE, **body})
        setattr(module, name, made)
        return made

    no_state = cls("NoState", __reduce__=lambda self: (type(self), ()))
    dict_state = cls("DictState")
    tuple_state = cls("TupleState", __reduce__=lambda self: (type(self), (), (1, "two", 3.0)))
    self_ref = cls("SelfRef")
    dunder = cls("DunderKeys", __getstate__=lambda self: {
        "__dict__": {"args": 1}, "__class__": 1, "args": None, "kwargs": 3, "state": 4, "__setstate__": 5,
        "_args": 6, "__reduce_ex__": 7, "__deepcopy__": 8})
    slot_state = cls("SlotState", __reduce__=lambda self: (type(self), (), (
        None, {"__class__": argparse.Namespace, "args": 1, "__dict__": {"x": 2}})))
    new_obj = cls("NewObj", __reduce_ex__=lambda self, p: (copyreg.__newobj__, (type(self), 1, "a"), {"k": [1]}))
    new_obj_ex = cls("NewObjEx", __reduce_ex__=lambda self, p: (
        copyreg.__newobj_ex__, (type(self), (1,), {"kw": 2}), {"k": 1}))
    reduce = cls("Reduce", __reduce__=lambda self: (type(self), (1, 2, [3]), {"__getnewargs_ex__": 0}))
    reconstructor = cls("Old", __reduce_ex__=lambda self, p: (copyreg._reconstructor, (type(self), object, None),
                                                              {"a": 1}))
    cls("Chain")

    class NamespaceBecomesPlaceholder:  # BUILD slot state setting __class__ (the reported traceback)
        def __reduce__(self):
            return argparse.Namespace, (), (None, {"__class__": dict_state})

    class NamespaceWithCopyHooks:  # dict state that would land __deepcopy__ in the instance __dict__
        def __reduce__(self):
            return argparse.Namespace, (), {"__deepcopy__": dict_state, "__reduce_ex__": dict_state, "a": 1}

    with_dict = dict_state()
    with_dict.__dict__.update(a=1, b=[1, 2])
    me = self_ref()
    me.__dict__.update(me=me, box=[me], nested={"again": me})
    objects = {
        "no-state": (no_state(), 2), "dict-state": (with_dict, 2), "tuple-state": (tuple_state(), 2),
        "self-referential": (me, 2), "dunder-keys": (dunder(), 2), "slot-state": (slot_state(), 2),
        "NEWOBJ": (new_obj(), 2), "NEWOBJ_EX": (new_obj_ex(), 4), "REDUCE": (reduce(), 2),
        "reconstructor": (reconstructor(), 2),  # refused: copyreg._reconstructor needs builtins.object
        "namespace-class": (NamespaceBecomesPlaceholder(), 2),
        "namespace-copy-hooks": (NamespaceWithCopyHooks(), 2),
    }
    yield objects
    if saved is None:
        sys.modules.pop(MODULE, None)
    else:
        sys.modules[MODULE] = saved


PLACEHOLDER_KINDS = ["no-state", "dict-state", "tuple-state", "self-referential", "dunder-keys", "slot-state",
                     "NEWOBJ", "NEWOBJ_EX", "REDUCE"]
NAMESPACE_TRICKS = ["namespace-class", "namespace-copy-hooks"]


def _load_one(crafted, kind):
    obj, protocol = crafted[kind]
    return safe_load_bytes(_torch_bytes({"x": obj}, protocol), name="crafted.ckpt")["x"]


def _assert_inert(ph):
    assert isinstance(ph, Placeholder) and type(ph.args) is tuple and type(ph.kwargs) is dict
    ph.state  # noqa: B018 - always there
    text = repr(ph)
    assert text.startswith("<placeholder for ") and "\n" not in text and len(text) <= 600
    assert str(ph) == text and f"{ph}" == text
    assert ph == ph and ph != copy.copy(ph) and not (ph == 1) and ph != "x"
    assert hash(ph) == hash(ph) and {ph: 1}[ph] == 1
    shallow = copy.copy(ph)
    assert type(shallow) is type(ph) and shallow.args == ph.args and shallow.state is ph.state
    deep = copy.deepcopy(ph)
    assert type(deep) is type(ph) and deep is not ph and repr(deep).startswith("<placeholder for ")
    again = pickle.loads(pickle.dumps(ph, protocol=pickle.HIGHEST_PROTOCOL))
    assert type(again) is type(ph) and again.qualified_name == ph.qualified_name
    assert copy.deepcopy([ph, ph])[0] is not ph
    with pytest.raises(AttributeError):
        ph.args = ("changed",)
    with pytest.raises(AttributeError):
        ph.__class__ = argparse.Namespace
    assert not hasattr(ph, "__dict__")
    return deep, again


@pytest.mark.parametrize("kind", PLACEHOLDER_KINDS)
def test_placeholders_are_inert_whatever_their_state(crafted, kind):
    ph = _load_one(crafted, kind)
    deep, again = _assert_inert(ph)
    if kind == "self-referential":
        assert ph.state["me"] is ph and deep.state["me"] is deep and deep.state["box"][0] is deep
        assert again.state["me"] is again and again.state["nested"]["again"] is again
        assert "..." in repr(ph)
    if kind == "dunder-keys":
        assert ph.args == () and ph.kwargs == {} and ph.state["args"] is None  # the state is only kept
    if kind == "NEWOBJ":
        assert ph.args == (1, "a") and deep.state == {"k": [1]} and deep.state["k"] is not ph.state["k"]
    if kind == "NEWOBJ_EX":
        assert ph.args == (1,) and ph.kwargs == {"kw": 2}
    if kind == "REDUCE":
        assert ph.args == (1, 2, [3]) and again.args == (1, 2, [3])
    if kind == "slot-state":
        assert isinstance(ph.state, tuple) and issubclass(ph.state[1]["__class__"], argparse.Namespace)


def test_placeholders_from_protocol_0_inst_and_without_new():
    ph = safe_load_bytes(_splice({"x": SPLICE}, f"(i{MODULE}\nOld\n".encode()), name="p0.ckpt")["x"]
    _assert_inert(ph)
    bare = object.__new__(type(ph))  # no file can do this, but even then: args, kwargs, state
    assert bare.args == () and bare.kwargs == {} and bare.state is None
    _assert_inert(bare)


def test_repr_is_bounded_for_huge_deep_and_shared_states():
    ph = safe_load_bytes(_splice({"x": SPLICE}, _placeholder_chain(MAX_NESTING - 2)), name="chain.ckpt")["x"]
    assert repr(ph).count("placeholder for") <= 4
    _assert_inert(ph)
    laughs = []
    for _ in range(40):  # 2**40 leaves if printed naively
        laughs = [laughs, laughs]
    cls = type(ph)
    wide = cls.__new__(cls, "x" * 10**6, 10**5000, list(range(10**5)))
    wide.__setstate__({"laughs": laughs, "big": "y" * 10**6, "tensor": torch.zeros(1000, 1000)})
    text = repr(wide)
    assert len(text) <= 600 and "\n" not in text
    _assert_inert(wide)


@pytest.mark.parametrize("kind", NAMESPACE_TRICKS)
def test_namespace_state_cannot_set_dunders(crafted, kind):
    with pytest.raises(UnsafeFileError, match="argparse.Namespace attribute '__"):
        _load_one(crafted, kind)


def test_namespaces_still_load_and_repr_is_bounded(crafted):
    ns = safe_load_bytes(_torch_bytes({"a": argparse.Namespace(x=1, y=[1, 2])}), name="ok.ckpt")["a"]
    assert vars(ns) == {"x": 1, "y": [1, 2]} and copy.deepcopy(ns) == argparse.Namespace(x=1, y=[1, 2])
    loop = argparse.Namespace(x=1)
    loop.me = loop
    ns = safe_load_bytes(_torch_bytes({"a": loop}), name="loop.ckpt")["a"]
    assert ns.me is ns and repr(ns) == "Namespace(x=1, me=...)"
    assert copy.deepcopy(ns).me is not ns


@pytest.mark.parametrize("raw", [_nested_lists(MAX_NESTING + 50), _placeholder_chain(MAX_NESTING + 50),
                                 _nested_lists(100_000)], ids=["lists", "placeholders", "lists-100000"])
def test_deep_nesting_is_refused(crafted, raw):
    with pytest.raises(UnsafeFileError, match=f"more than {MAX_NESTING} levels deep"):
        safe_load_bytes(_splice({"Config": {"a": SPLICE}}, raw), name="deep.ckpt")


def test_nesting_up_to_the_limit_loads(crafted):
    loaded = safe_load_bytes(_splice({"Config": SPLICE}, _nested_lists(MAX_NESTING - 1)), name="ok.ckpt")
    assert isinstance(loaded["Config"], list)
    copy.deepcopy(loaded)
    repr(loaded)


# -- satool extract on checkpoints carrying them in every block -------------------------------------

# where: (how to put a value there, whether satool reads that value: then the run must fail)
PLACES = {
    "Upstream_Config-extra-key": (lambda s, v: s["Upstream_Config"]["transformer"].__setitem__("extra", v), False),
    "Upstream_Config-hidden_size": (lambda s, v: s["Upstream_Config"]["transformer"].__setitem__("hidden_size", v),
                                    True),
    "Config-transformer": (lambda s, v: s.__setitem__("Config", {"transformer": v}), True),
    "audio-extra-key": (lambda s, v: s["Upstream_Config"]["audio"].__setitem__("extra", v), False),
    "audio-hop_ms": (lambda s, v: s["Upstream_Config"]["audio"].__setitem__("hop_ms", v), True),
    "audio-input": (lambda s, v: s["Upstream_Config"]["audio"].__setitem__("input", v), True),
    "Transformer-weight": (lambda s, v: s["Transformer"].__setitem__("encoder.layer.0.output.dense.bias", v), True),
    "Transformer-dict": (lambda s, v: s.__setitem__("Transformer", v), True),
    "Optimizer": (lambda s, v: s.__setitem__("Optimizer", {"state": {}, "param_groups": [{"schedule": v}]}),
                  False),
    "Satool-config": (lambda s, v: s["Satool"].__setitem__("config", v), True),
    "Satool-extra-key": (lambda s, v: s["Satool"].__setitem__("extra", v), False),
    "Step": (lambda s, v: s.__setitem__("Step", v), False),
}


@pytest.fixture(scope="module")
def extract_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("placeholders")
    base = torch.load(testing.make_checkpoint(root / "base.ckpt"), weights_only=True)
    testing.make_librispeech(root / "LS", speakers=("19",), per_speaker=1)
    return root, base


def _extract(root: Path, ckpt: Path, monkeypatch, capsys) -> tuple[int, str]:
    from satool.cli import run

    monkeypatch.chdir(root)
    capsys.readouterr()
    code = run(["extract", str(ckpt), str(root / "LS"), "--out", str(root / f"cache-{ckpt.stem}")])
    return code, capsys.readouterr().err


def _check_outcome(code: int, err: str, ckpt: Path, must_fail: bool) -> None:
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("satool: error:")]
    if code == 0:
        assert not must_fail and not errors, err
        return
    assert code in (3, 4), (code, err)  # docs/exit-codes.md: bad input file / untrusted file refused
    assert len(errors) == 1 and errors[0].startswith(f"satool: error: {ckpt}: ") and len(errors[0]) < 1000, err


@pytest.mark.parametrize("place", list(PLACES))
def test_extract_on_checkpoints_carrying_crafted_objects(crafted, extract_setup, place, monkeypatch, capsys):
    root, base = extract_setup
    put, read = PLACES[place]
    for kind, (obj, protocol) in crafted.items():
        states = copy.deepcopy(base)
        put(states, obj)
        ckpt = root / f"{place}-{kind}.ckpt"
        ckpt.write_bytes(_torch_bytes(states, protocol))
        code, err = _extract(root, ckpt, monkeypatch, capsys)
        _check_outcome(code, err, ckpt, must_fail=read or kind in NAMESPACE_TRICKS)
        if kind in NAMESPACE_TRICKS:
            assert code == 4 and "argparse.Namespace attribute" in err
    for name, raw in {"deep-lists": _nested_lists(5000), "deep-placeholders": _placeholder_chain(5000)}.items():
        states = copy.deepcopy(base)
        put(states, SPLICE)
        ckpt = root / f"{place}-{name}.ckpt"
        ckpt.write_bytes(_splice(states, raw))
        code, err = _extract(root, ckpt, monkeypatch, capsys)
        _check_outcome(code, err, ckpt, must_fail=True)
        assert code == 4 and "levels deep" in err


def test_the_reported_traceback_in_a_real_process(crafted, extract_setup, satool_cli):
    """The red team's file: a namespace in the audio block whose BUILD sets __class__ to a placeholder
    class, then the deepcopy of the audio block met a placeholder without args."""
    root, base = extract_setup
    states = copy.deepcopy(base)
    states["Upstream_Config"]["audio"]["extra"] = crafted["namespace-class"][0]
    ckpt = root / "reported.ckpt"
    ckpt.write_bytes(_torch_bytes(states))
    result = satool_cli("extract", ckpt, root / "LS", "--out", root / "cache-reported", cwd=root, timeout=300)
    assert result.returncode == 4 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"satool: error: {ckpt}: refused to load")
    assert not list((root / "cache-reported").glob("shard-*"))
