"""A small ctypes binding of eSpeak NG (the copy bundled by ``espeakng-loader``).

eSpeak NG is a process-wide singleton in C, so this module keeps one
:class:`EspeakEngine` per process (:func:`get_engine`). It initialises the
library in synchronous mode with phoneme events, so every phoneme event
carries its start sample; the events of an utterance end exactly at the
audio length.

Voices are *variant files* written into a private copy of the data
directory (the installed package stays untouched). Two things keep the
output byte-identical for the same input:

* the library's noise generator is re-seeded before every utterance
  (``espeak_ng_SetRandSeed``);
* ``flutter`` is always 0: its phase is a C function-static that never
  resets, so any flutter makes an utterance depend on everything
  synthesised before it in the process.

Every variant file states every attribute, because attributes a variant
leaves out can carry over from the previously selected voice (seen with
``speed``).
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from satool.errors import EnvironmentProblem

INSTALL_HINT = "pip install 'satool[synth]'"

# speak_lib.h constants.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EVENT_PHONEME = 7
_PARAM_VOLUME = 2
_VOLUME = 50  # percent; the default 100 clips some Klatt voices (we normalise later)

# Data files English needs (the rest of the 19 MB directory is other languages).
_DATA_FILES = ("phontab", "phonindex", "phondata", "phondata-manifest", "intonations", "en_dict")


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    """``espeak_EVENT`` from speak_lib.h."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),  # 1-based character index in the text
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms
        ("sample", ctypes.c_int),  # start sample in the utterance's audio
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class PhonemeEvent:
    """One eSpeak phoneme: ``sample`` = start sample (eSpeak rate), ``name`` with stress mark."""

    sample: int
    name: str
    text_position: int


@dataclass(frozen=True)
class WordEvent:
    """Start of a word: ``sample`` (eSpeak rate); ``text_position`` 1-based character index."""

    sample: int
    text_position: int


@dataclass(frozen=True)
class Synthesis:
    """``audio[sample]`` int16 at ``sample_rate`` Hz, with the events in time order."""

    audio: np.ndarray
    sample_rate: int
    phonemes: list[PhonemeEvent]
    words: list[WordEvent]


def _load_loader():
    try:
        import espeakng_loader
    except ImportError as err:
        raise EnvironmentProblem(
            f"the synthetic corpus needs eSpeak NG (package espeakng-loader): {INSTALL_HINT}"
        ) from err
    return espeakng_loader


class EspeakEngine:
    """The eSpeak NG library, initialised on a private copy of its English data."""

    def __init__(self) -> None:
        loader = _load_loader()
        self._lock = threading.Lock()
        self._tmp = Path(tempfile.mkdtemp(prefix="satool-espeak-"))
        atexit.register(shutil.rmtree, self._tmp, True)
        src = Path(loader.get_data_path())
        data = self._tmp / "espeak-ng-data"
        (data / "voices" / "!v").mkdir(parents=True)
        for name in _DATA_FILES:
            shutil.copy2(src / name, data / name)
        shutil.copytree(src / "lang", data / "lang")
        self._variants = data / "voices" / "!v"
        try:
            lib = ctypes.CDLL(loader.get_library_path())
        except OSError as err:
            raise EnvironmentProblem(f"cannot load libespeak-ng ({err}); reinstall: {INSTALL_HINT}") from err
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Info.restype = ctypes.c_char_p
        lib.espeak_Info.argtypes = [ctypes.c_void_p]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, str(self._tmp).encode(), _INITIALIZE_PHONEME_EVENTS)
        if rate <= 0:
            raise EnvironmentProblem(f"espeak_Initialize failed (returned {rate}); reinstall: {INSTALL_HINT}")
        self._lib = lib
        self.sample_rate = int(rate)
        self.version = lib.espeak_Info(None).decode()
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, int, bytes | int]] = []
        self._callback = _CALLBACK(self._on_synth)  # keep a reference: C holds the pointer
        lib.espeak_SetSynthCallback(self._callback)

    def _on_synth(self, wav, n_samples, events) -> int:
        if n_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, (n_samples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type == _EVENT_PHONEME:
                self._events.append((ev.type, ev.sample, ev.text_position, ev.id.string))
            elif ev.type == _EVENT_WORD:
                self._events.append((ev.type, ev.sample, ev.text_position, 0))
            i += 1
        return 0

    def select_variant(self, variant_text: str) -> str:
        """Write ``variant_text`` as a variant file (named by its hash); return its voice name."""
        name = "satool-" + hashlib.sha1(variant_text.encode()).hexdigest()[:12]
        path = self._variants / name
        if not path.exists():
            path.write_text(variant_text)
        return "en-us+" + name

    def synthesize(self, text: str, voice: str, seed: int) -> Synthesis:
        """Speak ``text`` (ASCII/UTF-8) with ``voice`` (e.g. from :meth:`select_variant`)."""
        data = text.encode("utf-8")
        with self._lock:
            self._chunks, self._events = [], []
            if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise EnvironmentProblem(f"eSpeak NG cannot load voice {voice!r}")
            self._lib.espeak_SetParameter(_PARAM_VOLUME, _VOLUME, 0)
            self._lib.espeak_ng_SetRandSeed(seed & 0x7FFFFFFF)
            err = self._lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if err != 0:
                raise RuntimeError(f"espeak_Synth failed with code {err} for {text!r}")
            chunks, events = self._chunks, self._events
        audio = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
        phonemes = [PhonemeEvent(s, raw.decode("utf-8"), pos) for t, s, pos, raw in events if t == _EVENT_PHONEME]
        words = [WordEvent(s, pos) for t, s, pos, _ in events if t == _EVENT_WORD]
        return Synthesis(audio.astype(np.int16), self.sample_rate, phonemes, words)


_ENGINE: EspeakEngine | None = None


def get_engine() -> EspeakEngine:
    """The process-wide engine (created on first use)."""
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = EspeakEngine()
    return _ENGINE
