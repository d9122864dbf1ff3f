"""Phone relation results (paper sec. 6, with the authors' erratum): for every head, the joint
distribution P'_h of query phone -> key phone weight, the same under uniform attention P_U, their
normalised difference P_h and each phone's concentration C_h.

``satool relate`` saves :class:`Relations` as ``relations.npz`` (every array), ``relations.csv``
(long format) and ``concentration.csv``; :meth:`Relations.load` reads the arrays back (no pickled
objects) and checks their shapes and values.
"""

from __future__ import annotations

import csv
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from satool.errors import InputError
from satool.heads import label
from satool.results.files import MAX_RESULT_BYTES, StoredResult


@dataclass
class Relations(StoredResult):
    """Corpus-level relation maps of a set of heads."""

    labels: list[str]  # head labels 'L3.H7'
    layers: np.ndarray  # int [head]
    heads: np.ndarray  # int [head]
    phones: list[str]
    p_prime: np.ndarray  # [head, query phone, key phone]
    p_uniform: np.ndarray  # [query phone, key phone]
    utterances: int
    verticality: np.ndarray | None = None  # [head] (for Fig. 4)
    maps: str = "attention"  # the map kind related (satool.maps); files without it hold raw weights

    NPZ: ClassVar[str] = "relations.npz"
    MAIN: ClassVar[str] = NPZ
    CSV: ClassVar[str] = "relations.csv"
    CONCENTRATION_CSV: ClassVar[str] = "concentration.csv"

    @property
    def p_norm(self) -> np.ndarray:
        """P_h = (P'_h - P_U) / P_U, NaN where P_U = 0: ``[head, m, n]``."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.p_uniform > 0, (self.p_prime - self.p_uniform) / self.p_uniform, np.nan)

    @property
    def concentration(self) -> np.ndarray:
        """C_h[n]: mean over query phones m (with P_U[m, n] > 0) of P_h[m, n]: ``[head, phone]``."""
        p = self.p_norm
        with np.errstate(invalid="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                return np.nanmean(p, axis=1)

    def strongest_concentration(self) -> np.ndarray:
        """``[head]``: the largest C_h[n] over phones (the phone a head focuses on most); NaN if none."""
        return _extreme(self.concentration, np.nanmax)

    def strongest_neglect(self) -> np.ndarray:
        """``[head]``: the smallest C_h[n] over phones (the phone a head neglects most); NaN if none."""
        return _extreme(self.concentration, np.nanmin)

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        """relations.npz, relations.csv (long format) and concentration.csv."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            out / self.NPZ, labels=np.array(self.labels), layers=self.layers, heads=self.heads,
            phones=np.array(self.phones), p_prime=self.p_prime, p_uniform=self.p_uniform, p_norm=self.p_norm,
            concentration=self.concentration, utterances=self.utterances,
            verticality=self.verticality if self.verticality is not None else np.array([]),
            maps=np.array(self.maps),
        )
        norm = self.p_norm
        with open(out / self.CSV, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["layer", "head", "query_phone", "key_phone", "p_prime", "p_uniform", "p_norm"])
            for h in range(len(self.labels)):
                for m, pm in enumerate(self.phones):
                    for n, pn in enumerate(self.phones):
                        if self.p_uniform[m, n] > 0:
                            w.writerow([self.layers[h], self.heads[h], pm, pn, f"{self.p_prime[h, m, n]:.6g}",
                                        f"{self.p_uniform[m, n]:.6g}", f"{norm[h, m, n]:.6g}"])
        concentration = self.concentration
        with open(out / self.CONCENTRATION_CSV, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["layer", "head", "phone", "concentration", "verticality"])
            for h in range(len(self.labels)):
                vert = "" if self.verticality is None else f"{self.verticality[h]:.6g}"
                for n, phone in enumerate(self.phones):
                    if np.isfinite(concentration[h, n]):
                        w.writerow([self.layers[h], self.heads[h], phone, f"{concentration[h, n]:.6g}", vert])
        return {"npz": out / self.NPZ, "csv": out / self.CSV, "concentration": out / self.CONCENTRATION_CSV}


    @classmethod
    def load(cls, directory: str | Path) -> Relations:
        """Read ``relations.npz`` back: no pickled objects, every array's shape and values checked."""
        file = Path(directory) / cls.NPZ
        if not file.is_file():
            raise InputError("missing (run 'satool relate' first)", path=file)
        if file.stat().st_size > MAX_RESULT_BYTES:
            raise InputError(f"larger than {MAX_RESULT_BYTES // 2**20} MB: not a satool result file", path=file)
        try:
            with np.load(file, allow_pickle=False) as data:
                arrays = {k: data[k] for k in ("labels", "layers", "heads", "phones", "p_prime", "p_uniform",
                                               "utterances", "verticality")}
                if "maps" in data.files:
                    arrays["maps"] = data["maps"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
            raise InputError(f"not a satool relations file ({' '.join(str(exc).split())[:160]})", path=file) from None
        return cls.from_arrays(arrays, file)

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray], file: Path) -> Relations:
        def fail(message: str):
            raise InputError(message, path=file)

        labels, phones = a["labels"], a["phones"]
        if labels.ndim != 1 or phones.ndim != 1 or labels.dtype.kind != "U" or phones.dtype.kind != "U":
            fail("labels and phones must be lists of names")
        n_heads, n_phones = len(labels), len(phones)
        for name, shape in (("layers", (n_heads,)), ("heads", (n_heads,)), ("p_prime", (n_heads, n_phones, n_phones)),
                            ("p_uniform", (n_phones, n_phones))):
            if a[name].shape != shape or a[name].dtype.kind not in "iuf":
                fail(f"{name} must be a {' x '.join(map(str, shape))} numeric array, found {a[name].shape}")
        for name in ("p_prime", "p_uniform"):
            if not np.all(np.isfinite(a[name])) or np.any(a[name] < 0) or np.any(a[name] > 1 + 1e-6):
                fail(f"{name} must hold probabilities (finite, 0..1)")
        if a["utterances"].shape != () or a["utterances"].dtype.kind not in "iu" or int(a["utterances"]) < 1:
            fail("utterances must be a count >= 1")
        vert = a["verticality"]
        if vert.size and (vert.shape != (n_heads,) or not np.all(np.isfinite(vert))):
            fail("verticality must hold one finite value per head")
        from satool.maps import MAP_KINDS

        kind = a.get("maps", np.array("attention"))
        if kind.shape != () or kind.dtype.kind != "U" or str(kind) not in MAP_KINDS:
            fail(f"maps must name a map kind ({', '.join(MAP_KINDS)})")
        return cls([str(x) for x in labels], a["layers"].astype(int), a["heads"].astype(int),
                   [str(x) for x in phones], a["p_prime"].astype(np.float64), a["p_uniform"].astype(np.float64),
                   int(a["utterances"]), vert.astype(np.float64) if vert.size else None, str(kind))

    def index(self, layer: int, head: int) -> int:
        """Position of head ``layer``.``head`` (1-based numbers) in the arrays."""
        for i, (a, b) in enumerate(zip(self.layers, self.heads)):
            if (int(a), int(b)) == (layer, head):
                return i
        raise KeyError(label(layer, head))


def _extreme(values: np.ndarray, reduce) -> np.ndarray:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a head without any finite value gives NaN
        return reduce(values, axis=1)
