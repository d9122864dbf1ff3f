"""What the viewer shows, read lazily from a cache and the results beside it (JSON-ready dicts).

Arrays travel as base64: maps for the head grid as uint8 on a stated scale (``vmax``: the value of
the brightest colour), a head's own map and its rows as float32 (hover shows exact weights). Every
utterance id must be one the cache holds; audio is read only from the file the cache's corpus
records for that utterance, only if it lies inside the corpus directory and still has the checksum
recorded at extraction. A corpus that moved still shows maps and labels, with a note.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from satool.errors import InputError
from satool.timebase import FRAME_S, SAMPLE_RATE

GRID_SIZE = 64  # maps in the head grid are average-pooled to at most this many steps per axis


class NotFound(Exception):
    """The request names something the cache or its results do not hold (HTTP 404)."""


def b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def pool(maps: np.ndarray, size: int = GRID_SIZE) -> np.ndarray:
    """Average-pool the last two axes to at most ``size`` (mass-preserving blocks; ``[..., q, k]``)."""
    steps = maps.shape[-1]
    if steps <= size:
        return maps
    edges = np.linspace(0, steps, size + 1).round().astype(int)
    rows = np.add.reduceat(maps, edges[:-1], axis=-2) / np.diff(edges)[:, None]
    return np.add.reduceat(rows, edges[:-1], axis=-1) / np.diff(edges)[None, :]


def _finite_list(values: np.ndarray) -> list[float | None]:
    """A 1-D array as JSON numbers (NaN and infinities as null)."""
    return [None if not np.isfinite(v) else float(v) for v in values]


def quantised(values: np.ndarray, vmax: float) -> str:
    """uint8 codes of ``values / vmax`` (0 = 0, 255 = vmax or more), base64."""
    scale = 255.0 / vmax if vmax > 0 else 0.0
    return b64(np.clip(np.round(values * scale), 0, 255).astype(np.uint8))


@dataclass
class ViewData:
    """A cache and, when found, the metric and relation results of the same run."""

    cache_path: Path
    metrics_dir: Path | None = None
    relate_dir: Path | None = None
    readers: Any = None  # the corpus readers for the cache's corpus (default: satool's own)

    def __post_init__(self) -> None:
        from satool.cache import open_cache

        self.cache = open_cache(self.cache_path)
        self._ids = set(self.cache.utterance_ids)
        self._corpus = None
        self._corpus_problem: str | None = None
        self._scores = None
        from satool.results.metrics import HeadScores

        if HeadScores.exists(self.metrics_dir):
            self._scores = HeadScores.load(self.metrics_dir)

    # -- lookups -----------------------------------------------------------------------------
    def _utterance(self, utt_id: str) -> str:
        if utt_id not in self._ids:
            raise NotFound(f"no utterance {utt_id!r} in this cache")
        return utt_id

    @property
    def step_s(self) -> float:
        return self.cache.frames_per_step * FRAME_S

    def corpus(self):
        """The corpus the cache recorded, or None (with :attr:`corpus_problem` saying why)."""
        if self._corpus is None and self._corpus_problem is None:
            from satool.data.corpus import open_corpus

            info = self.cache.attrs.get("corpus", {})
            try:
                self._corpus = open_corpus(info.get("root") or "", info.get("alignments"), info.get("layout"),
                                           readers=self.readers, phone_set=info.get("phone_set_name") or "auto")
            except Exception as exc:  # noqa: BLE001 - any reason means: no audio, maps still work
                self._corpus_problem = f"the corpus {info.get('root')!r} is not available ({exc})"
        return self._corpus

    # -- API ---------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        from satool.maps import DESCRIPTIONS, kind_of

        corpus = self.corpus()
        rows = self.metric_rows()
        return {
            "cache": str(self.cache_path), "layers": self.cache.layers, "heads": self.cache.heads,
            "maps": self.cache.maps, "maps_definition": DESCRIPTIONS[self.cache.maps],
            "metrics_maps": None if self._scores is None else kind_of(self._scores.source),
            "relations_maps": self._relations_kind(),
            "step_s": self.step_s, "frames_per_step": self.cache.frames_per_step,
            "phone_set": self.cache.phone_set, "utterances": len(self.cache.utterance_ids),
            "audio": corpus is not None, "audio_note": None if corpus is not None else self._corpus_problem,
            "metrics": rows is not None, "relations": self.has_relations(),
            "profiles": self.corpus_profiles(), "histograms": self.corpus_histograms(),
        }

    def corpus_profiles(self) -> dict[str, list] | None:
        """Every head's offset profile over the corpus (from 'satool metric' results), by label."""
        if self._scores is None or self._scores.offset_profile is None:
            return None
        from satool.heads import label

        profile = self._scores.offset_profile
        return {label(layer, head): _finite_list(profile[i, j])
                for i, layer in enumerate(self._scores.layers) for j, head in enumerate(self._scores.heads)}

    def corpus_histograms(self) -> dict[str, Any] | None:
        """Every head's share of weights per power of two over the corpus (from 'satool metric' results),
        by label, with the bins' lower edges (satool.analysis.histogram)."""
        if self._scores is None or self._scores.weight_histogram is None:
            return None
        from satool.analysis.histogram import LOWER_EDGES, fractions
        from satool.heads import label

        shares = fractions(self._scores.weight_histogram)
        return {"lower_edges": LOWER_EDGES.tolist(),
                "shares": {label(layer, head): _finite_list(shares[i, j]) for i, layer in enumerate(self._scores.layers)
                           for j, head in enumerate(self._scores.heads)}}

    def utterances(self) -> list[dict[str, Any]]:
        out = []
        for utt in self.cache.utterance_ids:
            meta = self.cache.meta(utt)
            out.append({"id": utt, "speaker": meta.get("speaker"), "split": meta.get("split"),
                        "duration_s": meta.get("duration_s"), "transcript": meta.get("transcript"),
                        "n_steps": meta.get("n_steps"), "aligned": meta.get("frame_labels") is not None})
        return out

    def grid(self, utt_id: str) -> dict[str, Any]:
        """Every head's map of one utterance, pooled to :data:`GRID_SIZE`, on one shared scale (``vmax``
        = the largest pooled weight of any head) and with each head's own largest weight (``head_max``)."""
        maps = pool(self.cache.attention(self._utterance(utt_id)))  # [layer, head, q, k]
        vmax = float(maps.max()) if maps.size else 1.0
        head_max = maps.reshape(*maps.shape[:2], -1).max(axis=-1)
        return {"id": utt_id, "size": int(maps.shape[-1]), "n_steps": int(self.cache.meta(utt_id)["n_steps"]),
                "vmax": vmax, "head_max": head_max.round(6).tolist(), "maps": quantised(maps, vmax),
                "scale": "shared: 0 (dark) to vmax, the largest weight of any head after pooling"}

    def head(self, utt_id: str, label: str) -> dict[str, Any]:
        """One head's full map as float32 ``[query, key]`` plus its offset profile and its share of weights
        per power of two on this utterance."""
        from satool.analysis.histogram import fractions, weight_histogram
        from satool.analysis.locality import offset_sums, profile

        layer, head = self.cache.position(label)
        attn = self.cache.attention(self._utterance(utt_id), layer=layer, head=head).astype(np.float32)
        sums, queries = offset_sums(attn)
        return {"id": utt_id, "label": label, "n_steps": int(attn.shape[0]), "map": b64(attn),
                "max": float(attn.max()), "offsets": list(range(-(len(queries) // 2), len(queries) // 2 + 1)),
                "offset_profile": _finite_list(profile(sums, queries)),
                "histogram": _finite_list(fractions(weight_histogram(attn)))}

    def labels(self, utt_id: str) -> dict[str, Any]:
        """Phone intervals (from the cache's frame labels) and, when the alignment is readable, words."""
        meta = self.cache.meta(self._utterance(utt_id))
        phones = self.cache.phone_set
        intervals = []
        labels = meta.get("frame_labels")
        if labels is not None and len(labels):
            change = np.flatnonzero(np.diff(labels)) + 1
            starts = np.r_[0, change]
            ends = np.r_[change, len(labels)]
            for a, b in zip(starts, ends):
                if labels[a] >= 0:
                    intervals.append({"start": a * FRAME_S, "end": b * FRAME_S, "label": phones[int(labels[a])]})
        words = []
        corpus = self.corpus()
        if corpus is not None:
            utterance = next((u for u in corpus.utterances if u.id == utt_id), None)
            if utterance is not None and utterance.alignment is not None:
                try:
                    from satool.data.alignment import read_alignment

                    words = [{"start": w.start, "end": w.end, "label": w.label}
                             for w in read_alignment(utterance.alignment).words if w.label]
                except InputError:
                    words = []
        return {"id": utt_id, "phones": intervals, "words": words, "duration_s": meta.get("duration_s")}

    def _audio_file(self, utt_id: str) -> Path:
        corpus = self.corpus()
        if corpus is None:
            raise NotFound(self._corpus_problem or "no corpus")
        utterance = next((u for u in corpus.utterances if u.id == utt_id), None)
        if utterance is None:
            raise NotFound(f"the corpus no longer has {utt_id!r}")
        root = Path(corpus.root).resolve()
        real = Path(utterance.audio).resolve()
        if root not in real.parents:  # a symlink out of the corpus is not served
            raise NotFound("the audio file lies outside the corpus directory")
        recorded = self.cache.meta(utt_id).get("audio_crc32")
        if recorded is not None:
            from satool.data.audio import audio_checksum

            if audio_checksum(real) != recorded:
                raise NotFound("the audio changed since the cache was made")
        return real

    def wave(self, utt_id: str) -> np.ndarray:
        """The utterance's samples (float32, 16 kHz), as long as the cache's maps cover."""
        from satool.data.audio import load_audio

        real = self._audio_file(self._utterance(utt_id))
        n = int(self.cache.meta(utt_id).get("n_samples") or 0)
        wave = load_audio(real)
        return wave[:n] if n else wave

    def audio_wav(self, utt_id: str) -> bytes:
        """16-bit PCM WAV of the utterance (what the page plays)."""
        import soundfile

        buffer = io.BytesIO()
        soundfile.write(buffer, self.wave(utt_id), SAMPLE_RATE, format="WAV", subtype="PCM_16")
        return buffer.getvalue()

    def spectrogram(self, utt_id: str) -> dict[str, Any]:
        """The log-Mel input ``[frame, 80]`` (per-utterance normalised), uint8 on a stated range."""
        from satool.data.features import FeatureConfig, FeatureExtractor

        mel = FeatureExtractor(FeatureConfig())(self.wave(utt_id)).numpy()
        low, high = np.percentile(mel, [1, 99])
        codes = np.clip((mel - low) / max(high - low, 1e-6) * 255, 0, 255).astype(np.uint8)
        return {"id": utt_id, "frames": int(mel.shape[0]), "bins": int(mel.shape[1]), "data": b64(codes),
                "range": [float(low), float(high)], "frame_s": 0.01}

    def metric_rows(self) -> list[dict[str, Any]] | None:
        return None if self._scores is None else self._scores.records()

    def _relations_kind(self) -> str | None:
        if not self.has_relations():
            return None
        from satool.results.relations import Relations

        try:
            return Relations.load(self.relate_dir).maps
        except InputError:
            return None

    def has_relations(self) -> bool:
        from satool.results.relations import Relations

        return Relations.exists(self.relate_dir)

    def relations(self) -> dict[str, Any]:
        """Every head's P_h (phones that occur only) on one diverging scale, and its concentration."""
        from satool.results.relations import Relations

        if not self.has_relations():
            raise NotFound("no relation results (run 'satool relate')")
        relations = Relations.load(self.relate_dir)  # checked as it is read
        present = np.flatnonzero(np.diag(relations.p_uniform) > 0)
        norm = np.asarray(relations.p_norm, np.float32)[:, present][:, :, present]
        finite = np.abs(norm[np.isfinite(norm)])
        bound = float(np.percentile(finite, 99)) if finite.size else 1.0
        concentration = np.asarray(relations.concentration, np.float32)[:, present]
        return {"labels": list(relations.labels), "phones": [relations.phones[i] for i in present],
                "bound": bound, "p_norm": b64(np.nan_to_num(norm, nan=0.0)),
                "concentration": b64(np.nan_to_num(concentration, nan=0.0)),
                "scale": f"shared diverging: -{bound:.3g} (blue, avoidance) to +{bound:.3g} (red, preference)"}


def to_json(value: Any) -> bytes:
    from satool.results.files import json_ready

    return json.dumps(json_ready(value), allow_nan=False).encode()
