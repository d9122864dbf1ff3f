"""eSpeak NG (en-us) phonemes -> ARPAbet and TIMIT labels of the synthetic corpus.

Conventions (see docs/synthetic-corpus.md):

* TextGrid labels are CMU ARPAbet (39 phones) with a stress digit on every
  vowel (1 primary, 2 secondary, 0 unstressed) taken from eSpeak's own
  stress marks; silence is the empty label.
* PHN labels are TIMIT symbols: the ARPAbet phone in lower case without
  stress, except a flapped t/d (eSpeak ``t#``/``d#``) which is ``dx``; stop
  closures are ``bcl dcl gcl pcl tcl kcl`` (``tcl``/``dcl`` before ``ch``/
  ``jh``, as in TIMIT); ``h#`` is the silence at either end, ``pau`` any
  other silence.
* An eSpeak phoneme with no single ARPAbet equivalent (r-coloured vowels,
  syllabic consonants, the triphthongs of "fire" and "quiet") becomes two
  ARPAbet phones; its duration is split by :data:`SPLIT_FIRST`.
* An eSpeak phoneme missing from :data:`ESPEAK_TO_ARPABET` raises
  :class:`UnknownPhonemeError` naming it, rather than being guessed.

The TIMIT 61 -> 39 fold itself lives in :mod:`satool.data.phones` (shared with
the corpus readers); :func:`fold_timit` applies it to one label.
"""

from __future__ import annotations

from satool.data.phones import ARPABET as _ARPABET
from satool.data.phones import TIMIT_39, TIMIT_DELETED, TIMIT_FOLD

# eSpeak NG en-us phoneme mnemonic (stress marks stripped) -> ARPAbet phones
# without stress. Sources: espeak-ng phsource/ph_english(_us) and CMUdict
# pronunciations of words that use each phoneme. Notes:
#   t#, d#  flapped t/d ("city", "water"): ARPAbet T/D, TIMIT dx
#   t2      weakened t ("into"); ?  glottal stop ("button"): T as in CMUdict
#   0       'lot' vowel (AA in General American); O2, O, O: 'thought'/'song' (AO)
#   A@ e@ i@3 O@ o@ U@   r-coloured vowels: vowel + R ("car", "chair", "near")
#   aI@ aI3 aU@          "quiet" AY AH, "fire" AY ER, "hour" AW ER
#   @L n- m- l- N-       syllabic consonants: AH + consonant, as in CMUdict
#   a# @ @2 @5 V         reduced/strut vowels: AH;  3 3: -> ER
#   i  'happy' vowel: IY (unstressed);  aa 'bath' vowel: AE in General American
ESPEAK_TO_ARPABET: dict[str, tuple[str, ...]] = {
    # stops, affricates, fricatives
    "p": ("P",), "b": ("B",), "t": ("T",), "t2": ("T",), "t#": ("T",), "?": ("T",),
    "d": ("D",), "d#": ("D",), "k": ("K",), "g": ("G",), "tS": ("CH",), "dZ": ("JH",),
    "f": ("F",), "v": ("V",), "T": ("TH",), "D": ("DH",), "s": ("S",), "z": ("Z",),
    "z#": ("Z",), "z/2": ("Z",), "S": ("SH",), "Z": ("ZH",), "h": ("HH",), "x": ("K",),
    # nasals, liquids, glides
    "m": ("M",), "n": ("N",), "N": ("NG",), "l": ("L",), "l/": ("L",), "l/2": ("L",),
    "l/3": ("L",), "r": ("R",), "r/": ("R",), "r-": ("R",), "w": ("W",), "w#": ("W",),
    "j": ("Y",),
    "@L": ("AH", "L"), "l-": ("AH", "L"), "n-": ("AH", "N"), "m-": ("AH", "M"), "N-": ("AH", "NG"),
    # monophthongs
    "@": ("AH",), "@2": ("AH",), "@5": ("AH",), "@#": ("AH",), "a#": ("AH",), "a#2": ("AH",),
    "V": ("AH",), "02": ("AH",), "3": ("ER",), "3:": ("ER",),
    "a": ("AE",), "aa": ("AE",), "a2": ("AE",),
    "E": ("EH",), "E2": ("EH",), "E#": ("EH",), "e#": ("EH",),
    "I": ("IH",), "I2": ("IH",), "I#": ("IH",), "I2#": ("IH",),
    "i": ("IY",), "i:": ("IY",),
    "0": ("AA",), "0#": ("AA",), "A:": ("AA",), "A#": ("AA",),
    "O": ("AO",), "O2": ("AO",), "O:": ("AO",),
    "U": ("UH",), "u:": ("UW",),
    # diphthongs
    "aI": ("AY",), "aU": ("AW",), "eI": ("EY",), "OI": ("OY",), "oU": ("OW",), "oU#": ("OW",),
    "e:": ("EY",), "o:": ("OW",),
    # two-part vowels
    "A@": ("AA", "R"), "e@": ("EH", "R"), "i@3": ("IH", "R"), "i@": ("IY", "AH"),
    "O@": ("AO", "R"), "o@": ("AO", "R"), "U@": ("UH", "R"),
    "aI@": ("AY", "AH"), "aI3": ("AY", "ER"), "aU@": ("AW", "ER"),
}

# Fraction of a two-part phoneme's duration given to its first ARPAbet phone.
SPLIT_FIRST: dict[str, float] = {"@L": 0.3, "l-": 0.3, "n-": 0.3, "m-": 0.3, "N-": 0.3}
SPLIT_FIRST_DEFAULT = 0.6

# eSpeak phonemes that mark a transition, not a phone: their audio joins the
# phone before them (";" is the palatal glide in "Julia", "Maria").
ESPEAK_MERGE_BACK = frozenset({";"})

# eSpeak phonemes whose second ARPAbet part (R) is dropped when eSpeak already
# says an r next ("car is" -> A@ r-): the R comes from that r.
R_PHONEMES = frozenset({"r", "r/", "r-"})

FLAPS = frozenset({"t#", "d#"})

# Stress marks eSpeak prefixes to a vowel in its phoneme events.
STRESS_MARKS = {"'": "1", ",": "2"}

ARPABET_VOWELS = frozenset("AA AE AH AO AW AY EH ER EY IH IY OW OY UH UW".split())
ARPABET = frozenset(_ARPABET)

# Stop (ARPAbet) -> TIMIT closure symbol of a silent run right before it.
CLOSURES = {"P": "pcl", "B": "bcl", "T": "tcl", "D": "dcl", "K": "kcl", "G": "gcl", "CH": "tcl", "JH": "dcl"}

# The 39 folded TIMIT classes (Lee & Hon 1989; satool.data.phones holds the fold):
# they include dx and not zh.
FOLDED_39 = frozenset(TIMIT_39)


class UnknownPhonemeError(ValueError):
    """eSpeak NG produced a phoneme this module has no ARPAbet mapping for."""


def split_stress(name: str) -> tuple[str, str]:
    """eSpeak event name -> (phoneme without marks, ARPAbet stress digit "0"/"1"/"2")."""
    stress = "0"
    i = 0
    while i < len(name) and name[i] in "',%=":
        stress = STRESS_MARKS.get(name[i], stress)
        i += 1
    return name[i:] or name, stress


def to_arpabet(phoneme: str) -> tuple[str, ...]:
    """ARPAbet phones (no stress) for an eSpeak phoneme (no stress marks)."""
    try:
        return ESPEAK_TO_ARPABET[phoneme]
    except KeyError:
        raise UnknownPhonemeError(
            f"eSpeak NG phoneme {phoneme!r} has no ARPAbet mapping; add it to "
            "satool.data.synth.phones.ESPEAK_TO_ARPABET"
        ) from None


def fold_timit(label: str) -> str | None:
    """TIMIT label -> one of the 39 folded classes (None for the deleted "q")."""
    if label in TIMIT_DELETED:
        return None
    return TIMIT_FOLD.get(label, label)
