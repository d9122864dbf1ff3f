"""`satool compare`: several runs side by side, every finding judged (stage: satool.stages.compare)."""

from __future__ import annotations

from pathlib import Path

import typer

from satool.cli.common import log, parse_csv, progress_bar, results_console, say
from satool.stages import compare as stage
from satool.stages import default


def compare(
    runs: list[Path] = typer.Argument(..., help="Run directories (each where stages ran: satool.toml or results/), "
                                      "e.g. the demo's M3 M6 M9."),
    names: str | None = typer.Option(None, "--names", help="Labels of the runs, comma-separated (default: their "
                                     "directory names)."),
    spans: str | None = typer.Option(None, "--spans", help="Mask span Cnum of each run's model, comma-separated "
                                     "(default: read from each run's checkpoint)."),
    out: Path = typer.Option(default(stage.Settings, "out"), "--out", "-o", help="Directory for the tables, "
                             "figures, verdicts and report.html."),
) -> None:
    """Lay several models side by side and judge every finding of the paper, including those that compare
    mask spans (M3, M6, M9).

    Per head and model: favourite offset (ms) and locality with bootstrap intervals; categories per
    layer; segmentation, probes per layer, pruning and span pruning per model; where the most local
    heads look under pre-training masks; their offsets through training. Each table as CSV, each
    figure on one stated scale, and verdicts.csv/json with the rule behind every verdict.
    """
    from satool.errors import UsageError

    try:
        numbers = [int(s) for s in parse_csv(spans)] if spans else None
    except ValueError:
        raise UsageError(f"--spans {spans!r}: give whole numbers, comma-separated") from None
    settings = stage.Settings(runs=list(runs), names=parse_csv(names) or None, spans=numbers, out=out)
    with progress_bar(None, "comparing") as bar:
        outputs = stage.run(settings, bar, log)
    counts: dict[str, int] = {}
    for v in outputs.verdicts.verdicts:
        counts[v.verdict] = counts.get(v.verdict, 0) + 1
    results_console().print(f"{len(outputs.verdicts.verdicts)} verdicts: " +
                            ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    say(f"wrote {outputs.report} and {len(outputs.paths)} files into {out}")
