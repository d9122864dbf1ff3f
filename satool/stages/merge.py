"""Stage `merge`: the N shards of a streaming pass (``--shard i/N``) as the results of one process.

Reads ``OUT/partial/KIND-i-of-N.npz`` (every file checked), requires exactly shards 0..N-1 of one
run, each finished, over disjoint utterances, adds their sums (:func:`satool.results.partial.merge`)
and finishes them as the stage would have (``metric``: metrics.csv/.json, the bootstrap replicates
and figures; ``relate``: relations.npz/.csv, concentration.csv and figures; ``segment``:
segment_results.csv/.json and the precision-recall curves) in OUT.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from satool.stages import Log, NoProgress, Progress, quiet


@dataclass
class Settings:
    out: Path  # the results directory the shards wrote into (it holds partial/)
    kind: str | None = None  # "metric", "relate" or "segment" when OUT holds several; None = the one it holds


@dataclass
class Outputs:
    kind: str
    shards: int
    utterances: int  # covered by the shards (reduced or skipped)
    result: Any  # metric.Outputs, relate.Outputs or segment.Outputs


def merge_directory(out: Path, kind: str | None = None):
    """The merged :class:`~satool.results.partial.PartialSums` of the shards in ``out``."""
    from satool.errors import InputError, UsageError
    from satool.results.partial import KINDS, PartialSums, merge, shard_files

    if kind is not None and kind not in KINDS:
        raise UsageError(f"--kind {kind}: expected one of {', '.join(KINDS)}")
    files = [f for f in shard_files(out) if kind is None or f.name.startswith(f"{kind}-")]
    if not files:
        raise InputError(f"no partial sums here (run 'satool metric|relate|segment CKPT CORPUS --shard i/N --out {out}' "
                         "first)", path=Path(out) / PartialSums.DIR)
    kinds = sorted({f.name.split("-")[0] for f in files})
    if len(kinds) > 1:
        raise UsageError(f"{out} holds partial sums of {' and '.join(kinds)}: choose one with --kind")
    counts = sorted({f.name.rsplit("-of-", 1)[1] for f in files})
    if len(counts) > 1:
        raise InputError(f"partial sums of different shardings ({', '.join(c.removesuffix('.npz') for c in counts)} "
                         "shards): remove the stale ones", path=Path(out) / PartialSums.DIR)
    parts = [PartialSums.load(f) for f in files]
    for part, file in zip(parts, files):
        check_part(part, file)
    return merge(parts, where=Path(out) / PartialSums.DIR)


def check_part(part, file: Path) -> None:
    """Rebuild one shard's accumulators from its file, so that impossible sums (negative counts, say) are
    refused naming that file, before they are added to the others'."""
    from satool.analysis.relations import RelationSums
    from satool.analysis.scoring import ScoreSums
    from satool.analysis.segmentation.streamed import SegmentSums
    from satool.errors import InputError

    try:
        described = part.settings["analysis"]
        if part.kind == "metric":
            ScoreSums.from_arrays(described, part.arrays, part.info.get("failed", {}), where=file)
        elif part.kind == "relate":
            RelationSums.from_arrays(described, part.arrays, where=file)
        else:
            SegmentSums.from_arrays(described, part.arrays, where=file)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise InputError(f"not the partial sums of a {part.kind} pass (settings incomplete)", path=file) from None


def run(settings: Settings, progress: Progress | None = None, log: Log = quiet) -> Outputs:
    from satool.stages import metric, relate, segment

    progress = progress or NoProgress()
    merged = merge_directory(settings.out, settings.kind)
    stage = {"metric": metric, "relate": relate, "segment": segment}[merged.kind]
    result = stage.finish(merged, settings.out, log, where=Path(settings.out) / "partial")
    return Outputs(merged.kind, _shard_count(settings.out, merged.kind), len(merged.utterances), result)


def _shard_count(out: Path, kind: str) -> int:
    from satool.results.partial import shard_files

    return len([f for f in shard_files(out) if f.name.startswith(f"{kind}-")])


def record(workspace, settings: Settings, outputs: Outputs) -> None:
    name = {"metric": "metrics", "relate": "relate", "segment": "segment"}[outputs.kind]
    workspace.record(outputs.kind, {name: settings.out}, merged_shards=outputs.shards)
