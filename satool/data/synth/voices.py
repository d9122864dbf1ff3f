"""Speaker voices: eSpeak NG variant parameters, sampled to be far apart.

A speaker is a :class:`Voice` (plain numbers, stored in the manifest); its
:meth:`Voice.variant_text` is the eSpeak NG variant file. :func:`make_voices`
spreads speakers over the parameter space by best-candidate sampling: each
new speaker is the farthest of a few random candidates from all speakers
chosen so far, so even 40 or 100+ speakers stay distinguishable.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

N_CANDIDATES = 12  # best-candidate sampling: candidates drawn per speaker
N_DIMS = 13  # dimensions of the unit cube voices are drawn from


@dataclass(frozen=True)
class Voice:
    """eSpeak NG voice-variant parameters of one speaker.

    pitch_hz: (base, top) of the pitch range, Hz. formant_pct: frequency
    scale of formants 0..8, percent of the default. speed_pct: speaking rate,
    percent. roughness: 0..7 (creak). breath: noise strength on formants 1..8.
    tone: (Hz, amplitude 0..255) x 3 spectral-tilt points. klatt: 0 = eSpeak's
    own wave generator, 1..6 = a Klatt voice source. echo and flutter are
    always 0 (echo blurs pauses; flutter breaks determinism).
    """

    pitch_hz: tuple[int, int]
    formant_pct: tuple[int, ...]
    formant_strength_pct: tuple[int, ...]
    speed_pct: int
    roughness: int
    breath: tuple[int, ...]
    voicing_pct: int
    consonants_pct: tuple[int, int]
    tone: tuple[int, ...]
    stress_add: tuple[int, ...]
    intonation: int
    klatt: int

    def variant_text(self) -> str:
        """The eSpeak NG variant file (every attribute stated: omitted ones carry over)."""
        lines = ["language variant", "name satool", f"pitch {self.pitch_hz[0]} {self.pitch_hz[1]}"]
        for i, (f, s) in enumerate(zip(self.formant_pct, self.formant_strength_pct, strict=True)):
            lines.append(f"formant {i} {f} {s} 100")
        lines += [
            "echo 0 0",
            "flutter 0",
            f"speed {self.speed_pct}",
            f"roughness {self.roughness}",
            "breath " + " ".join(map(str, self.breath)),
            f"voicing {self.voicing_pct}",
            f"consonants {self.consonants_pct[0]} {self.consonants_pct[1]}",
            "tone " + " ".join(map(str, self.tone)),
            "stressAdd " + " ".join(map(str, self.stress_add)),
            f"intonation {self.intonation}",
            f"klatt {self.klatt}",
        ]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _voice_from_unit(u: np.ndarray) -> Voice:
    """Map a point of the unit cube [0, 1]^13 to a voice."""
    size = u[0]  # vocal-tract size: 0 = long (low formants, low pitch), 1 = short
    scale = 82 + 38 * size  # overall formant scale, percent
    pitch = 70 * (240 / 70) ** (0.65 * size + 0.35 * u[1])  # base pitch, Hz
    jitter = (u[2:7] - 0.5) * 12  # per-formant deviation of F1..F5, percent
    formants = [round(scale)] + [round(scale + j) for j in jitter] + [round(scale)] * 3
    tilt = u[7]
    return Voice(
        pitch_hz=(round(pitch), round(pitch * (1.25 + 0.8 * u[8]))),
        formant_pct=tuple(formants),
        formant_strength_pct=(100, 100, 100, 100, round(70 + 60 * tilt), round(70 + 60 * tilt), 100, 100, 100),
        speed_pct=round(82 + 40 * u[9]),
        roughness=int(u[10] * 6.99),
        breath=(0,) * 8 if u[11] < 0.5 else tuple(round((u[11] - 0.5) * 8 * w) for w in (1, 2, 2, 2, 2, 2, 1, 1)),
        voicing_pct=100,
        consonants_pct=(round(80 + 40 * u[2]), round(80 + 40 * u[3])),
        tone=(600, round(140 + 60 * tilt), 1200, round(120 + 40 * tilt), 2000, round(90 + 50 * tilt)),
        stress_add=(0, 0, 0, 0, 0, 0, round(-20 + 40 * u[4]), round(-20 + 40 * u[5])),
        intonation=1 + int(u[6] * 2.99),
        klatt=int(u[12] * 6.99),
    )


def make_voices(n: int, seed: int) -> list[Voice]:
    """``n`` voices, deterministic for ``seed``; the first k voices do not depend on ``n``."""
    rng = np.random.default_rng([seed, 0x766F])
    chosen: list[np.ndarray] = []
    for _ in range(n):
        cands = rng.random((N_CANDIDATES, N_DIMS))
        if chosen:
            # distance in the dimensions that matter most for timbre, weighted
            w = np.array([3.0, 2.0, 1, 1, 1, 1, 1, 1, 1, 1.5, 1, 1, 1.5])
            d = np.sqrt((((cands[:, None, :] - np.array(chosen)[None]) * w) ** 2).sum(-1)).min(1)
            best = cands[int(np.argmax(d))]
        else:
            best = cands[0]
        chosen.append(best)
    return [_voice_from_unit(u) for u in chosen]
