"""Stage `report`: load a run's saved results, judge every finding by its stated rule
(satool.analysis.verdicts), save the verdicts and write one self-contained HTML report
(satool.output.report)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from satool.stages import Log, Progress, quiet


@dataclass
class Settings:
    directory: Path = Path(".")
    out: Path | None = None  # default DIRECTORY/report.html
    judge: bool = True  # False: every verdict inconclusive, with ``why_not`` (sizes too small for the noise)
    why_not: str = ""


def run(settings: Settings, progress: Progress | None = None, log: Log = quiet) -> Path:
    from dataclasses import replace

    from satool.analysis.verdicts import judge_run
    from satool.output.report import render, viewer_paragraph
    from satool.results.run import RunResults
    from satool.results.verdicts import INCONCLUSIVE

    results = RunResults.load(settings.directory)
    verdicts = judge_run(results)
    if not settings.judge:
        verdicts.verdicts = [replace(v, verdict=INCONCLUSIVE, reason=settings.why_not) for v in verdicts.verdicts]
    if verdicts.verdicts:
        verdicts.save(results.directory / "results")
    target, example, problem = export_viewer(results)
    viewer = viewer_paragraph(target, example, problem) if results.paths.get("cache") and results.metrics else ""
    from satool.analysis.comparison import layer_rows

    layers = layer_rows(results.probe) if results.probe is not None else []
    return render(results, verdicts, Path(settings.out) if settings.out else results.directory / "report.html",
                  viewer=viewer, layers=layers)


def export_viewer(results) -> tuple[Path | None, str | None, str | None]:
    """Every head of the run's example utterance as one offline viewer file beside the report:
    (file, utterance, None), or (None, None, why not)."""
    cache, scores = results.paths.get("cache"), results.metrics
    if not cache or scores is None:
        return None, None, "no attention cache or metric results"
    try:
        from satool.plugins import get_plugins
        from satool.view.data import ViewData
        from satool.view.export import export_html

        data = ViewData(cache, results.paths["metrics"], results.paths.get("relate"),
                        readers=get_plugins().corpora.objects())
        example = scores.example if scores.example in data.cache.utterance_ids else data.cache.utterance_ids[0]
        return export_html(data, results.directory / "view-example.html", [example]), example, None
    except Exception as exc:  # noqa: BLE001 - the report is still written, saying why the viewer is not
        return None, None, str(exc)


def record(workspace, settings: Settings, outputs: Path) -> None:
    workspace.record("report", {"report": outputs})
