"""`satool corpus`: inspect, check and generate corpora."""

from __future__ import annotations

from pathlib import Path

import typer

from satool.cli.common import print_json, progress_bar, results_console, say

app = typer.Typer(
    help="Inspect and check corpora; generate the built-in synthetic one.",
    no_args_is_help=True, rich_markup_mode="rich",
)

ALIGNMENTS = typer.Option(
    None, "--alignments", "-a", help="Directory of MFA TextGrids (any layout, matched by utterance id)."
)
LAYOUT = typer.Option(None, "--layout", help="Reader to use instead of auto-detection (see 'satool plugins').")
PHONE_SET = typer.Option("auto", "--phone-set", help="Phone classes: auto (from the alignments), arpabet, timit39, "
                         "ipa (MFA english_mfa), ipa-arpabet (IPA folded to ARPAbet), data (the labels as they are).")


@app.command()
def info(
    path: Path = typer.Argument(..., help="Corpus directory (LibriSpeech, TIMIT, or any folder of audio)."),
    alignments: Path | None = ALIGNMENTS,
    layout: str | None = LAYOUT,
    phone_set: str = PHONE_SET,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Show what satool detects: layout, splits, utterances, speakers, hours, phones, alignments.

    Reads every audio header and alignment once (a progress bar shows how far).
    """
    from satool.data.corpus import open_corpus
    from satool.data.corpus.summary import summarise
    from satool.plugins import get_plugins

    corpus = open_corpus(path, alignments, layout, readers=get_plugins().corpora.objects(), phone_set=phone_set)
    with progress_bar(len(corpus.utterances), "reading headers") as bar:
        summary = summarise(corpus, bar.advance)
    if as_json:
        print_json(summary)
        return
    from rich.table import Table

    out = results_console()
    out.print(f"[bold]{summary['root']}[/]: layout [bold]{summary['layout']}[/], "
              f"{summary['utterances']} utterances, {summary['speakers']} speakers, "
              f"{summary['hours']:.2f} h, {summary['aligned_utterances']} aligned")
    table = Table("split", "utterances", "speakers", "hours", "aligned")
    for name, s in summary["splits"].items():
        table.add_row(name, str(s["utterances"]), str(s["speakers"]), f"{s['hours']:.2f}", str(s["aligned"]))
    out.print(table)
    inventory = summary["phone_inventory"]
    out.print(f"phone set [bold]{summary['phone_set']}[/]: {len(inventory)} phones seen")
    if inventory:
        out.print("  " + " ".join(f"{p}:{n}" for p, n in inventory.items()))
    if summary["phones_missing"]:
        out.print(f"  never seen: {' '.join(summary['phones_missing'])}")
    for line in summary["problems"] + summary["notes"]:
        say(line, "problem:", out=out)


@app.command()
def check(
    path: Path = typer.Argument(..., help="Corpus directory."),
    alignments: Path | None = ALIGNMENTS,
    layout: str | None = LAYOUT,
    phone_set: str = PHONE_SET,
    require_alignment: bool = typer.Option(False, help="Count utterances without alignment as bad."),
    as_json: bool = typer.Option(False, "--json", help="Print the bad utterances as JSON."),
) -> None:
    """Load every utterance (audio and alignment) and list the ones stages would skip.

    Exits with code 3 when any utterance is bad (with --require-alignment: also when one has no
    alignment), so that scripts can stop before a long run; 0 when every one is good.
    """
    from satool.data.corpus import Skipped, open_corpus
    from satool.data.features import FeatureConfig
    from satool.errors import EXIT_INPUT
    from satool.plugins import get_plugins

    corpus = open_corpus(path, alignments, layout, readers=get_plugins().corpora.objects(), phone_set=phone_set)
    skipped: list = []
    good = 0
    window = FeatureConfig().n_fft // 2
    with progress_bar(len(corpus.utterances), "checking") as bar:
        for loaded in corpus.iter_loaded(corpus.utterances, skipped, require_alignment=require_alignment):
            if len(loaded.wave) <= window:  # what every model's front end refuses
                skipped.append(Skipped(loaded.utterance.id, f"too short: {len(loaded.wave)} samples (a 25 ms "
                                                            f"analysis window needs more than {window})"))
            else:
                good += 1
            bar.advance()
        bar.advance(len(skipped))
    if as_json:
        print_json({"good": good, "bad": [{"utterance": s.utterance_id, "reason": s.reason} for s in skipped]})
    else:
        for s in skipped:
            say(f"{s.utterance_id}: {s.reason}", "bad:")
        say(f"{good} good, {len(skipped)} bad utterances (phone set {corpus.phone_set.name}, "
            f"{len(corpus.phone_set)} classes)")
    if skipped:
        raise typer.Exit(EXIT_INPUT)


@app.command()
def split(
    path: Path = typer.Argument(..., help="Corpus directory."),
    out: Path = typer.Option(..., "--out", "-o", help="Split file to write (tab-separated: utterance, split)."),
    source: str | None = typer.Option(None, "--from", help="Only these splits of the corpus (names or families, "
                                      "comma-separated), e.g. test-clean; default all."),
    by: str = typer.Option("utterance", help="speaker: parts share no speaker; utterance: every speaker's "
                           "utterances are divided, so every speaker is in every part (speaker probes)."),
    fractions: str = typer.Option("0.7,0.3", help="Share of each part, comma-separated."),
    names: str = typer.Option("probe-train,probe-test", help="Name of each part, comma-separated."),
    seed: int = typer.Option(0, help="Same seed, same split."),
    alignments: Path | None = ALIGNMENTS,
    layout: str | None = LAYOUT,
) -> None:
    """Write a split file for probing: a speaker-disjoint or utterance-disjoint division of a corpus.

    Use it with 'satool probe --splits FILE --train-split probe-train --test-split probe-test' (and
    prune): the listed utterances take the file's splits, the others are left out.
    """
    from satool.cli.common import parse_csv
    from satool.data.corpus import open_corpus
    from satool.data.corpus.splitfile import divide, write
    from satool.errors import UsageError
    from satool.plugins import get_plugins

    corpus = open_corpus(path, alignments, layout, readers=get_plugins().corpora.objects())
    utterances = corpus.select(parse_csv(source) or None)
    try:
        shares = [float(x) for x in parse_csv(fractions)]
    except ValueError:
        raise UsageError(f"--fractions {fractions!r}: expected numbers, e.g. 0.7,0.3") from None
    parts = parse_csv(names)
    assignment = divide(utterances, by, shares, parts, seed)
    write(out, assignment, header=f"satool corpus split {path} --from {source or 'all'} --by {by} "
                                  f"--fractions {fractions} --names {names} --seed {seed}")
    for name in parts:
        ids = [u for u in utterances if assignment[u.id] == name]
        say(f"{name}: {len(ids)} utterances, {len({u.speaker for u in ids})} speakers")
    say(f"wrote {out}")


@app.command()
def synth(
    out: Path = typer.Argument(..., help="Output directory (created)."),
    speakers: int = typer.Option(40, min=2, help="Number of distinct voices."),
    utterances_per_speaker: int = typer.Option(30, min=3, help="Sentences per speaker (split 70/10/20)."),
    seed: int = typer.Option(0, help="Same seed, same corpus (byte for byte)."),
    heldout_speakers: int = typer.Option(0, min=0, help="Extra speakers in a speaker-disjoint 'test-unseen' split."),
) -> None:
    """Generate a phone-aligned multi-speaker English corpus offline with eSpeak NG.

    Writes LibriSpeech layout (16 kHz FLAC + .trans.txt), an MFA-style TextGrid
    and a TIMIT-style .PHN per utterance, and manifest.json. Needs the optional
    extra: pip install 'satool\\[synth]' (eSpeak NG, GPL-3.0).
    """
    from satool.data.synth import synthesize_corpus

    total = (speakers + heldout_speakers) * utterances_per_speaker
    with progress_bar(total, "synthesising") as bar:
        manifest = synthesize_corpus(
            out, speakers=speakers, utterances_per_speaker=utterances_per_speaker, seed=seed,
            heldout_speakers=heldout_speakers, progress=lambda done, total: bar.total(total, done),
        )
    hours = manifest["total_hours"]
    say(f"wrote {out} ({hours:.2f} h); see {out / 'manifest.json'}")
