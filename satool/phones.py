"""Phone sets: MFA ARPAbet (stress stripped, plus silence) and TIMIT's 61 -> 39 folding.

A :class:`PhoneSet` maps the labels found in alignment files to a fixed
inventory of class names. Frame labels are ids into ``PhoneSet.names``;
``IGNORE`` (-1) marks frames with no usable label (e.g. TIMIT's glottal
stop ``q``, which the standard folding deletes).
"""

from __future__ import annotations

import re
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

MFA_SILENCE = {"", "sil", "sp", "spn", "<eps>", "silence"}


@dataclass(frozen=True)
class PhoneSet:
    """A named inventory of phone classes and the rule mapping raw labels to it."""

    name: str
    names: tuple[str, ...]
    kind: str  # "arpabet" or "timit"
    _index: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {n: i for i, n in enumerate(self.names)})

    def __len__(self) -> int:
        return len(self.names)

    def fold(self, raw: str, *, source: str | None = None) -> str | None:
        """The class name of a raw label (None = deleted/ignored); InputError if unknown."""
        label = raw.strip()
        if self.kind == "arpabet":
            if label.lower() in MFA_SILENCE:
                return SILENCE
            base = re.sub(r"[012]$", "", label.upper())
            if base in self._index:
                return base
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
PHONE_SETS = {p.name: p for p in (ARPABET_SET, TIMIT39_SET)}
