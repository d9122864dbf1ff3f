"""Sentences for the synthetic corpus: a built-in word list and a tiny grammar.

Everything here is plain Python driven by a caller's ``numpy.random.Generator``,
so the same generator state always gives the same sentence. The words were
chosen so that ordinary sentences exercise all English phones, and
:data:`COVERAGE_WORDS` (one word per rare phone) is forced into the first
sentences of a corpus so that even a small corpus holds every phone.
"""

from __future__ import annotations

import re

import numpy as np

# Slot -> words. Only plain alphabetic words (no digits or abbreviations, which
# eSpeak would expand) and no multi-word idioms.
WORDS: dict[str, tuple[str, ...]] = {
    "det": ("the", "a", "this", "that", "my", "your", "his", "her", "our", "their", "every", "one"),
    "noun": (
        "dog", "cat", "horse", "goat", "mouse", "bird", "fish", "wolf", "turtle", "chicken",
        "garden", "window", "table", "chair", "house", "village", "river", "mountain", "bridge",
        "kitchen", "church", "station", "garage", "school", "road", "ship", "boat", "engine",
        "teacher", "doctor", "farmer", "sailor", "soldier", "judge", "child", "woman", "neighbor",
        "daughter", "brother", "mother", "father", "king", "queen", "giant", "thief", "cook",
        "apple", "orange", "peach", "cheese", "sugar", "butter", "bottle", "letter", "paper",
        "book", "coin", "toy", "jacket", "shirt", "shoe", "hat", "ring", "feather", "stone",
        "treasure", "picture", "television", "cushion", "pudding", "flower", "cloud", "moon",
        "song", "voice", "thing", "path", "tooth", "yard", "city", "party", "computer", "puzzle",
        "oyster", "basket", "wagon", "lamp", "pocket", "finger", "hammer", "violin", "pillow",
    ),
    "adj": (
        "big", "small", "old", "young", "red", "green", "yellow", "brown", "white", "black",
        "happy", "quiet", "loud", "heavy", "tiny", "lovely", "pretty", "clever", "gentle",
        "usual", "beige", "royal", "noisy", "good", "wooden", "woolen", "thick", "smooth",
        "rough", "cheap", "huge", "strange", "shiny", "sharp", "fresh", "dusty", "hungry",
        "lazy", "funny", "sleepy", "proud", "famous", "golden", "purple", "orange", "careful",
    ),
    "verb": (
        "saw", "found", "painted", "carried", "washed", "pushed", "pulled", "watched", "touched",
        "measured", "enjoyed", "cooked", "visited", "bought", "sold", "brought", "loved", "liked",
        "followed", "opened", "closed", "cleaned", "chased", "helped", "kept", "dropped",
        "lifted", "moved", "fixed", "checked", "shared", "noticed", "wanted", "admired",
        "guarded", "pointed at", "looked at", "thought about", "took", "put away", "hid",
        "mended", "borrowed", "threw", "caught", "avoided", "destroyed", "pictured",
    ),
    "adv": (
        "slowly", "quickly", "happily", "quietly", "today", "yesterday", "again", "early",
        "later", "carefully", "gently", "together", "usually", "sometimes", "outside", "at noon",
    ),
    "prep": (
        "in", "on", "under", "near", "behind", "beside", "across", "through", "with", "from",
        "into", "over", "by", "without", "toward",
    ),
    "name": (
        "Anna", "Peter", "Maria", "George", "Lucy", "Thomas", "Joseph", "Sarah", "Michael",
        "Julia", "Oliver", "Charlotte", "Hugo", "Nora", "Ethan", "Zoe", "Victor", "Rachel",
        "Joy", "Howard", "Judith", "Arthur",
    ),
}

# Templates: "{slot}" is filled from WORDS; "{Slot}" capitalises the word.
# Commas and full stops make eSpeak pause, so utterances contain silences.
TEMPLATES: tuple[str, ...] = (
    "{Det} {adj} {noun} {verb} {det} {noun}.",
    "{Name} {verb} {det} {noun} {prep} {det} {adj} {noun}.",
    "{Adv}, {det} {noun} {verb} {det} {adj} {noun}.",
    "{Det} {noun} {verb} {det} {noun}, and {name} {verb} {det} {noun}.",
    "{Name} {verb} {det} {adj} {noun}. {Det} {noun} was {adj}.",
    "{Prep} {det} {noun}, {name} {verb} {det} {noun}.",
    "{Det} {adj} {noun} {verb} {det} {noun} {adv}.",
    "{Name} and {name} {verb} {det} {noun}.",
    "{Det} {noun} was {adj}, but {det} {noun} was {adj}.",
    "{Name} {verb} {det} {noun}. It was {adj}.",
)

# One word per phone that random sentences might miss in a small corpus:
# (slot, word, the ARPAbet phone it is there for). TIMIT's flap "dx" comes
# from the t in "water"-like words (eSpeak's en-us t#).
COVERAGE_WORDS: tuple[tuple[str, str, str], ...] = (
    ("noun", "treasure", "ZH"),
    ("noun", "toy", "OY"),
    ("noun", "book", "UH"),
    ("noun", "city", "DX"),
    ("noun", "mouse", "AW"),
    ("noun", "tooth", "TH"),
    ("noun", "feather", "DH"),
    ("noun", "king", "NG"),
    ("noun", "judge", "JH"),
    ("noun", "church", "CH"),
    ("noun", "yard", "Y"),
    ("noun", "ship", "SH"),
    ("noun", "horse", "HH"),
    ("noun", "goat", "G"),
    ("noun", "bird", "ER"),
    ("noun", "violin", "V"),
    ("adj", "wooden", "UH"),
    ("adj", "beige", "ZH"),
    ("adj", "royal", "OY"),
    ("adj", "huge", "Y"),
)


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def make_sentence(rng: np.random.Generator, force: tuple[str, str] | None = None) -> str:
    """One sentence (with punctuation, first letter capitalised).

    ``force`` = (slot, word) puts ``word`` into the first slot of that kind.
    """
    template = _pick(rng, TEMPLATES)
    if force is not None and "{" + force[0] not in template.lower():
        template = TEMPLATES[0]  # has every slot a coverage word needs
    forced = force
    out: list[str] = []
    for i, part in enumerate(template.split("{")):
        if i == 0:
            out.append(part)
            continue
        slot, rest = part.split("}", 1)
        key = slot.lower()
        if forced is not None and forced[0] == key:
            word, forced = forced[1], None
        else:
            word = _pick(rng, WORDS[key])
        if slot[0].isupper():
            word = word[0].upper() + word[1:]
        out.append(word + rest)
    # "a apple" -> "an apple" (words starting with u here are said /ju/: "a usual")
    return re.sub(r"\b([Aa]) (?=[aeioAEIO])", r"\1n ", "".join(out))


def transcript(sentence: str) -> list[str]:
    """Words of ``sentence`` in capitals without punctuation (LibriSpeech style)."""
    return [w.strip(".,;:!?").upper() for w in sentence.split() if w.strip(".,;:!?")]
