"""What `satool corpus info` reports about a corpus."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from satool.data.alignment import read_alignment
from satool.data.audio import audio_info
from satool.data.corpus.base import Corpus
from satool.errors import InputError


def summarise(corpus: Corpus, progress: Callable[[int], None] | None = None) -> dict:
    """Counts per split, hours, phone inventory and alignment coverage.

    Reads every audio header and every alignment once; unreadable files are
    counted and listed under ``problems`` rather than raised.
    """
    splits: dict[str, dict] = {}
    phones: Counter[str] = Counter()
    problems: list[str] = []
    aligned = 0
    for utt in corpus.utterances:
        s = splits.setdefault(utt.split, {"utterances": 0, "speakers": set(), "seconds": 0.0, "aligned": 0})
        s["utterances"] += 1
        s["speakers"].add(utt.speaker)
        try:
            s["seconds"] += audio_info(utt.audio).duration_s
        except InputError as exc:
            problems.append(str(exc))
        if utt.alignment is not None:
            try:
                alignment = read_alignment(utt.alignment)
                for p in alignment.phones:
                    folded = corpus.phone_set.fold(p.label, source=str(utt.alignment))
                    if folded is not None:
                        phones[folded] += 1
                aligned += 1
                s["aligned"] += 1
            except InputError as exc:
                problems.append(str(exc))
        if progress is not None:
            progress(1)
    speakers = set().union(*(s["speakers"] for s in splits.values())) if splits else set()
    return {
        "root": str(corpus.root),
        "layout": corpus.layout,
        "splits": {
            name: {
                "utterances": s["utterances"], "speakers": len(s["speakers"]),
                "hours": s["seconds"] / 3600, "aligned": s["aligned"],
            }
            for name, s in sorted(splits.items())
        },
        "utterances": len(corpus.utterances),
        "speakers": len(speakers),
        "hours": sum(s["seconds"] for s in splits.values()) / 3600,
        "aligned_utterances": aligned,
        "phone_set": corpus.phone_set.name,
        "phone_inventory": dict(sorted(phones.items())),
        "phones_missing": [p for p in corpus.phone_set.names if p not in phones] if aligned else [],
        "problems": problems,
        "notes": corpus.notes,
    }
