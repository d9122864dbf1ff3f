"""Phone sets: which classes frame labels are ids into, and how raw alignment labels map to them.

A :class:`PhoneSet` maps the labels found in alignment files to a fixed
inventory of class names. Frame labels are ids into ``PhoneSet.names``;
``IGNORE`` (-1) marks frames with no usable label (TIMIT's glottal stop
``q``, MFA's spoken noise ``spn``).

Named sets (``--phone-set NAME``; docs/corpora.md):

- ``arpabet``: MFA's ``english_us_arpa`` and CMU ARPAbet, stress digits stripped, 39 phones + ``sil``;
- ``timit39``: TIMIT's 61 phones folded to 39 (Lee & Hon 1989);
- ``ipa``: MFA's ``english_mfa`` IPA phones as they are (:data:`IPA_TO_ARPABET`'s keys + ``sil``);
- ``ipa-arpabet``: those IPA phones folded to the ARPAbet classes, so that results from the two MFA
  English models can be set side by side (the folding is approximate: allophones and the flap are
  merged into their phoneme, see :data:`IPA_TO_ARPABET`);
- ``data``: exactly the labels the alignments use (silence merged), from a scan of every file.

``auto`` (the default) picks ``arpabet`` when every label of a sample of the alignments is
ARPAbet, ``ipa`` when every one is a known MFA IPA phone, and ``data`` otherwise.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

from satool.errors import InputError

IGNORE = -1
SILENCE = "sil"

# The 39 ARPAbet phones of the CMU dictionary / MFA's English models.
ARPABET = (
    "AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG "
    "OW OY P R S SH T TH UH UW V W Y Z ZH"
).split()

# Lee & Hon (1989) folding of TIMIT's 61 phones to 39 classes, as used by
# Kaldi's timit recipe (conf/phones.60-48-39.map) and most phone-recognition
# papers. 'q' (glottal stop) is deleted: its frames are IGNORE.
TIMIT_FOLD = {
    "ao": "aa", "ax": "ah", "ax-h": "ah", "axr": "er", "hv": "hh", "ix": "ih",
    "el": "l", "em": "m", "en": "n", "nx": "n", "eng": "ng", "zh": "sh", "ux": "uw",
    "pcl": SILENCE, "tcl": SILENCE, "kcl": SILENCE, "bcl": SILENCE, "dcl": SILENCE,
    "gcl": SILENCE, "h#": SILENCE, "pau": SILENCE, "epi": SILENCE,
}
TIMIT_61 = (
    "aa ae ah ao aw ax ax-h axr ay b bcl ch d dcl dh dx eh el em en eng epi er ey f g "
    "gcl h# hh hv ih ix iy jh k kcl l m n ng nx ow oy p pau pcl q r s sh t tcl th uh uw "
    "ux v w y z zh"
).split()
TIMIT_39 = sorted({TIMIT_FOLD.get(p, p) for p in TIMIT_61 if p != "q"})
TIMIT_DELETED = {"q"}

MFA_SILENCE = {"", "sil", "sp", "<eps>", "silence"}
MFA_NOISE = {"spn"}  # spoken noise: not a phone, its frames are IGNORE

# MFA english_mfa (IPA) phones -> the ARPAbet classes (approximate: allophones merged).
IPA_TO_ARPABET = {
    "ɑ": "AA", "ɑː": "AA", "a": "AA", "aː": "AA", "ɒ": "AA", "ɒː": "AA",
    "æ": "AE", "ʌ": "AH", "ɐ": "AH", "ə": "AH", "ɔ": "AO", "ɔː": "AO", "aw": "AW", "aj": "AY",
    "b": "B", "bʲ": "B", "tʃ": "CH", "d": "D", "dʲ": "D", "ɾ": "D", "ɾʲ": "D", "ð": "DH",
    "ɛ": "EH", "ɛː": "EH", "ɚ": "ER", "ɝ": "ER", "ɜ": "ER", "ɜː": "ER", "e": "EY", "eː": "EY", "ej": "EY",
    "f": "F", "fʲ": "F", "ɡ": "G", "ɡʷ": "G", "ɟ": "G", "ɟʷ": "G", "h": "HH", "ç": "HH",
    "ɪ": "IH", "i": "IY", "iː": "IY", "dʒ": "JH",
    "k": "K", "kʰ": "K", "kʷ": "K", "c": "K", "cʰ": "K", "cʷ": "K",
    "l": "L", "ɫ": "L", "ɫ̩": "L", "ʎ": "L", "m": "M", "mʲ": "M", "m̩": "M", "ɱ": "M",
    "n": "N", "n̩": "N", "ɲ": "N", "ŋ": "NG", "o": "OW", "oː": "OW", "ow": "OW", "ɔj": "OY",
    "p": "P", "pʰ": "P", "pʲ": "P", "pʷ": "P", "ɹ": "R", "s": "S", "ʃ": "SH",
    "t": "T", "tʰ": "T", "tʲ": "T", "tʷ": "T", "ʔ": "T", "θ": "TH", "ʊ": "UH",
    "u": "UW", "uː": "UW", "ʉ": "UW", "ʉː": "UW", "v": "V", "vʲ": "V", "w": "W", "j": "Y", "z": "Z", "ʒ": "ZH",
}


def normalise(label: str) -> str:
    """A raw label as compared: Unicode NFC, surrounding blanks removed."""
    return unicodedata.normalize("NFC", label).strip()


@dataclass(frozen=True)
class PhoneSet:
    """A named inventory of phone classes and the rule mapping raw labels to it."""

    name: str
    names: tuple[str, ...]
    kind: str  # "arpabet", "timit", "ipa-arpabet" (IPA folded to ARPAbet) or "inventory" (labels as they are)
    _index: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {n: i for i, n in enumerate(self.names)})

    def __len__(self) -> int:
        return len(self.names)

    def fold(self, raw: str, *, source: str | None = None) -> str | None:
        """The class name of a raw label (None = deleted/ignored); InputError if unknown."""
        label = normalise(raw)
        if self.kind != "timit":
            if label.lower() in MFA_SILENCE:
                return SILENCE
            if label.lower() in MFA_NOISE:
                return None
        if self.kind == "arpabet":
            base = re.sub(r"[012]$", "", label.upper())
            if base in self._index:
                return base
        elif self.kind == "ipa-arpabet":
            if label in IPA_TO_ARPABET:
                return IPA_TO_ARPABET[label]
        elif self.kind == "inventory":
            if label in self._index:
                return label
        else:
            lower = label.lower()
            if lower in TIMIT_DELETED:
                return None
            folded = TIMIT_FOLD.get(lower, lower)
            if folded in self._index:
                return folded
        where = f"{source}: " if source else ""
        raise InputError(f"{where}phone {raw!r} is not in the {self.name} phone set")

    def index(self, raw: str, *, source: str | None = None) -> int:
        """Class id of a raw label (IGNORE for deleted labels)."""
        folded = self.fold(raw, source=source)
        return IGNORE if folded is None else self._index[folded]


ARPABET_SET = PhoneSet("arpabet", tuple(ARPABET + [SILENCE]), "arpabet")
TIMIT39_SET = PhoneSet("timit39", tuple(TIMIT_39), "timit")
IPA_SET = PhoneSet("ipa", tuple(sorted(IPA_TO_ARPABET) + [SILENCE]), "inventory")
IPA_ARPABET_SET = PhoneSet("ipa-arpabet", tuple(ARPABET + [SILENCE]), "ipa-arpabet")
PHONE_SETS = {p.name: p for p in (ARPABET_SET, TIMIT39_SET, IPA_SET, IPA_ARPABET_SET)}
CHOICES = ("auto", *PHONE_SETS, "data")


def share(phone_set: PhoneSet, counts: dict[str, int]) -> float:
    """The share of label occurrences (``counts``: label -> occurrences) that fold into ``phone_set``."""
    total = sum(counts.values())
    fitting = 0
    for label, n in counts.items():
        try:
            phone_set.fold(label)
        except InputError:
            continue
        fitting += n
    return fitting / total if total else 0.0


def inventory(labels: Iterable[str], name: str = "data") -> PhoneSet:
    """Exactly the phones in ``labels`` (normalised; silence merged into ``sil``, spoken noise left out)."""
    phones = {normalise(x) for x in labels}
    phones = {p for p in phones if p.lower() not in MFA_SILENCE | MFA_NOISE}
    return PhoneSet(name, tuple(sorted(phones) + [SILENCE]), "inventory")


AUTO_SHARE = 0.9  # auto picks a known set when at least this share of label occurrences fit it


def choose(counts: dict[str, int]) -> PhoneSet:
    """``auto``: arpabet if (nearly) every label occurrence is ARPAbet, ipa if (nearly) every one is a
    known MFA IPA phone, else the inventory of the labels themselves. "Nearly": a few bad labels are
    errors of their files (reported when loaded), not a reason to change the whole corpus's set."""
    for candidate in (ARPABET_SET, IPA_SET):
        if share(candidate, counts) >= AUTO_SHARE:
            return candidate
    return inventory(counts)
