"""What is *inside* a checkpoint is checked too: no call builds memory from a size, no storage is
larger than the file, no member is compressed, no storage is left unfilled, no numbers are chosen
to collide, and a real checkpoint loads in about twice its size."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest
import torch

from satool.errors import InputError, UnsafeFileError
from satool.models.safe_pickle import safe_load_bytes


class _Call:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _torch_bytes(obj, legacy=False) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


@pytest.mark.parametrize("call, shown", [
    (_Call(bytearray, 10**9), "builtins.bytearray built from a int"),
    (_Call(bytes, 10**9), "builtins.bytes built from a int"),
    (_Call(list, range(3 * 10**7)), "builtins.list built from a range"),
    (_Call(tuple, range(3 * 10**7)), "builtins.tuple built from a range"),
    (_Call(set, range(3 * 10**7)), "builtins.set built from a range"),
    (_Call(np.ndarray, (2,), np.dtype("f8"), b"\x01" * 16), "numpy.ndarray called directly"),
    (_Call(np.ndarray, (2,), np.dtype("O"), b"\x01" * 16), "numpy array of dtype object"),
])
def test_allowed_callables_refuse_sizes_and_raw_buffers(call, shown):
    for legacy in (False, True):
        began = time.perf_counter()
        with pytest.raises(UnsafeFileError, match=shown.replace(".", r"\.")):
            safe_load_bytes(_torch_bytes({"Config": {"x": call}}, legacy=legacy), name="evil.ckpt")
        assert time.perf_counter() - began < 5


def test_plain_containers_and_numpy_values_still_load():
    states = {"a": np.arange(4.0), "b": np.float32(2.5), "c": bytearray(b"xy"), "d": {1, 2}, "e": frozenset({3}),
              "f": (1, [2, 3]), "g": range(3), "h": b"raw", "i": np.zeros((2, 3), dtype=np.int16)}
    for legacy in (False, True):
        loaded = safe_load_bytes(_torch_bytes(states, legacy=legacy))
        assert loaded["a"].tolist() == [0, 1, 2, 3] and loaded["b"] == np.float32(2.5)
        assert loaded["c"] == bytearray(b"xy") and loaded["g"] == range(3) and loaded["i"].shape == (2, 3)
    with pytest.raises(UnsafeFileError, match="dtype object"):
        safe_load_bytes(_torch_bytes({"o": np.array([None, 1], dtype=object)}))
    with pytest.raises(UnsafeFileError, match="numpy array of dtype <U3"):
        safe_load_bytes(_torch_bytes({"o": np.array(["abc"])}))


def test_object_array_buffer_attack_never_crashes(tmp_path):
    """The red team's SIGSEGV: an object array over attacker bytes, then a deepcopy of the config."""
    path = tmp_path / "evil.ckpt"
    path.write_bytes(_torch_bytes({"Transformer": {}, "Config": {"transformer": {
        "x": _Call(np.ndarray, (1,), np.dtype("O"), (0x41414141).to_bytes(8, "little"))}}}))
    code = textwrap.dedent(f"""
        import copy, sys
        from satool.models.mockingjay.checkpoint import load_checkpoint
        from satool.errors import SatoolError
        try:
            load_checkpoint({str(path)!r})
        except SatoolError as exc:
            print(type(exc).__name__, exc)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("UnsafeFileError") and "numpy array of dtype object" in result.stdout


def _zip_members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {info.filename: z.read(info) for info in z.infolist()}


def _rezip(members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=compression) as z:
        for name, content in members.items():
            z.writestr(name, content)
    return out.getvalue()


def test_compressed_zip_members_are_refused():
    data = _torch_bytes({"w": torch.zeros(1000)})
    with pytest.raises(UnsafeFileError, match="is compressed"):
        safe_load_bytes(_rezip(_zip_members(data), zipfile.ZIP_DEFLATED), name="bomb.ckpt")


def test_storages_larger_than_the_file_are_refused_before_allocation():
    data = _torch_bytes({"w": torch.zeros(3)})
    members = _zip_members(data)
    pkl = next(n for n in members if n.endswith("data.pkl"))
    assert b"cpuq\x02K\x03" in members[pkl] or b"cpuK\x03" in members[pkl] or b"K\x03t" in members[pkl]
    members[pkl] = members[pkl].replace(b"K\x03t", b"J" + (10**9).to_bytes(4, "little") + b"t", 1)
    began = time.perf_counter()
    with pytest.raises(InputError, match="more than the file holds"):
        safe_load_bytes(_rezip(members), name="huge.ckpt")
    assert time.perf_counter() - began < 5


def _legacy_without_storage_data(obj) -> bytes:
    """A legacy torch file whose list of storages to fill is empty (the data never arrives)."""
    data = _torch_bytes(obj, legacy=True)
    stream = io.BytesIO(data)
    for _ in range(3):  # magic number, protocol, system info
        pickle.load(stream)

    class Anything:
        def __init__(self, *args, **kwargs):
            pass

        def __call__(self, *args, **kwargs):
            return self

        def __setstate__(self, state):
            pass

    class Skip(pickle.Unpickler):
        def persistent_load(self, pid):
            return None

        def find_class(self, module, name):
            return Anything()

    Skip(stream).load()
    head = data[:stream.tell()]
    pickle.load(stream)  # the real list of keys
    return head + pickle.dumps([], protocol=2) + data[stream.tell():]


def test_legacy_storages_that_are_never_filled_are_refused():
    with pytest.raises(InputError, match="declared but their data is not in the file"):
        safe_load_bytes(_legacy_without_storage_data({"w": torch.ones(4)}), name="old.ckpt")


def test_hash_colliding_numbers_are_refused_quickly():
    modulus = 2**61 - 1  # CPython hashes integers modulo this prime
    keys = {1 + i * modulus: i for i in range(20000)}
    data = pickle.dumps({"Config": keys}, protocol=2)
    buffer = _torch_bytes({"placeholder": 0})
    members = _zip_members(buffer)
    pkl = next(n for n in members if n.endswith("data.pkl"))
    members[pkl] = data
    began = time.perf_counter()
    with pytest.raises(UnsafeFileError, match="one hash value"):
        safe_load_bytes(_rezip(members), name="slow.ckpt")
    assert time.perf_counter() - began < 5


def _peak_rss_mb(code: str) -> float:
    script = "import resource\n" + code + "\nprint(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    return float(result.stdout.split()[-1])


def test_loading_peaks_at_about_twice_the_file_size(tmp_path):
    """docs/checkpoints.md promises about 2x the file size; measured against the same process
    that only imports satool and torch."""
    path = tmp_path / "big.ckpt"
    torch.save({"Transformer": {f"w{i}": torch.randn(1024, 1024) for i in range(16)}}, path)  # 64 MiB
    size_mb = path.stat().st_size / 2**20
    setup = "import torch, satool.models.safe_pickle as s"
    base = _peak_rss_mb(setup)
    loaded = _peak_rss_mb(setup + f"\nx = s.safe_load({str(path)!r})")
    assert loaded - base < 2.5 * size_mb, (loaded - base, size_mb)
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(_torch_bytes({"Config": _Call(bytearray, 10**9)}))
    attacked = _peak_rss_mb(setup + f"""
try:
    s.safe_load({str(evil)!r})
except Exception:
    pass""")
    assert attacked - base < 50  # a 1 KB file gets nowhere near the 1 GB it asked for
