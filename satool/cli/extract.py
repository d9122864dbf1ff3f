"""`satool extract`: attention caches (stage: satool.stages.extract; library: satool.cache)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import typer

from satool.cli.common import log, parse_csv, parse_numbers, progress_bar, say
from satool.maps import HELP as MAPS_HELP
from satool.stages import default, default_csv
from satool.stages import extract as stage


def extract(
    checkpoint: Path | None = typer.Argument(None, help="Model: a Mockingjay, TERA, Audio ALBERT or DistilHuBERT "
                                             "checkpoint (s3prl or satool), a local wav2vec2/HuBERT/WavLM/"
                                             "data2vec-audio/Whisper transformers directory, or another "
                                             "registered model (default: the workspace's)."),
    corpus: Path | None = typer.Argument(None, help="Corpus directory (default: the workspace's)."),
    out: Path = typer.Option(default(stage.Settings, "out"), "--out", "-o", help="Cache directory."),
    alignments: Path | None = typer.Option(default(stage.Settings, "alignments"), "--alignments", "-a",
                                           help="MFA TextGrid directory."),
    split: str | None = typer.Option(default(stage.Settings, "split"), help="Only these splits or families "
                                     "(comma-separated, e.g. dev-clean or test); default all."),
    phone_set: str = typer.Option(default(stage.Settings, "phone_set"), "--phone-set", help="Phone classes of the "
                                  "labels: auto (from the alignments), arpabet, timit39, ipa, ipa-arpabet, data; "
                                  "recorded in the cache."),
    layers: str | None = typer.Option(default_csv(stage.Settings, "layers"), help="Layers to store, 1-based, e.g. "
                                      "'1,3-5' (default all)."),
    heads: str | None = typer.Option(default_csv(stage.Settings, "heads"), help="Heads to store, 1-based (default "
                                     "all)."),
    hidden_states: str | None = typer.Option(default_csv(stage.Settings, "hidden_states"), "--hidden",
                                             help="Also store these hidden states (0 = embedding output), e.g. "
                                             "'0-4'; needed for segment --features hidden:L."),
    max_utts: int | None = typer.Option(default(stage.Settings, "max_utts"), min=1,
                                        help="At most this many utterances."),
    max_frames: int | None = typer.Option(default(stage.Settings, "max_frames"), min=1,
                                          help="Truncate utterances to this many 10 ms frames."),
    compression: str = typer.Option(default(stage.Settings, "compression"), help="blosc (LZ4 + shuffle: default, "
                                    "fastest), lzf, gzip (smallest, slowest) or none; see docs/performance.md."),
    shard: str | None = typer.Option(default(stage.Settings, "shard"), help="Process share i/N of the corpus "
                                     "(0-based i); or use torchrun."),
    strict: bool = typer.Option(default(stage.Settings, "strict"), help="Stop at the first bad utterance instead of "
                                "skipping it."),
    flush_every: float = typer.Option(default(stage.Settings, "flush_every"), min=0.0, help="Seconds between shard "
                                      "closes: at most this much work is redone after a crash (0 = after every "
                                      "utterance)."),
    device: str = typer.Option(default(stage.Settings, "device"), help="cpu, cuda, mps or auto."),
    maps: str = typer.Option(default(stage.Settings, "maps"), "--maps", help=MAPS_HELP + " Recorded in the "
                             "cache: every stage reading it works on that kind."),
) -> None:
    """Run a model over a corpus and store its attention maps in an HDF5 cache.

    Stores, per utterance, the maps \\[layer, head, query, key] at the model's step
    rate (float16), speaker, frame and step counts, and phone labels and
    boundaries when alignments exist. Killed or interrupted? Run the same command:
    finished utterances are kept and skipped. Several processes: --shard i/N in
    each, or torchrun --nproc-per-node N -m satool extract ... (one cache).

    Says before the work how many utterances carry phone alignments (and warns
    when none do: relate, segment and the phone probe need them).

    Example: satool extract ckpt.pt LibriSpeech/ --alignments mfa/ --split dev-clean
    """
    from satool.workspace import Workspace

    workspace = Workspace()
    checkpoint = workspace.resolve("checkpoint", checkpoint, hint="pass CHECKPOINT or run 'satool pretrain'")
    corpus = workspace.resolve("corpus", corpus, hint="pass CORPUS")
    if alignments is None and workspace.path("corpus") == corpus:
        alignments = workspace.path("alignments")
    settings = stage.Settings(
        checkpoint=checkpoint, corpus=corpus, out=out, alignments=alignments, split=parse_csv(split) or None,
        phone_set=phone_set, layers=parse_numbers(layers), heads=parse_numbers(heads),
        hidden_states=parse_numbers(hidden_states) or [], max_utts=max_utts, max_frames=max_frames,
        compression=compression, shard=parse_shard(shard), strict=strict, flush_every=flush_every, device=device,
        maps=maps)
    index, count = stage.world_shard(settings.shard)
    label = "extracting" if count == 1 else f"extracting {index}/{count}"

    def ready(plan: dict) -> None:  # every check passed; the work starts after this
        say(f"{plan['utterances']} utterances, {plan['aligned']} with phone alignments ({plan['phone_set']})")
        if plan["aligned"] == 0:
            say("no utterance has phone labels: relate, segment and the phone probe need them "
                "(pass --alignments DIR with MFA TextGrids)", "warning:")

    with contextlib.ExitStack() as stack:
        bars: list = []

        class Lazy:  # the bar appears once the work starts, not before the checks
            def total(self, total, completed=None):
                if not bars:
                    bars.append(stack.enter_context(progress_bar(total, label)))
                bars[0].total(total, completed)

        summary = stage.run(settings, Lazy(), log, on_ready=ready)
    kind = "" if settings.maps == "attention" else f" ({settings.maps} maps)"
    say(f"{settings.out}{kind}: {summary.written} utterances written, {summary.already_done} already there, "
        f"{len(summary.skipped)} skipped ({summary.seconds:.1f} s; "
        f"{summary.audio_seconds / max(summary.seconds, 1e-9):.0f}x real time)")
    if index == 0:
        stage.record(workspace, settings, summary)


def parse_shard(value: str | None) -> tuple[int, int] | None:
    """'0/2' -> (0, 2); None -> None."""
    if not value:
        return None
    try:
        i, n = (int(x) for x in value.split("/"))
    except ValueError:
        from satool.errors import UsageError

        raise UsageError(f"--shard {value!r}: expected i/N, e.g. 0/2") from None
    return i, n
