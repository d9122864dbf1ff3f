"""Built-in stages (subcommands) of the ``satool`` command."""

from __future__ import annotations

from satool import hookimpl


@hookimpl
def register_stages(register):
    from satool.cli import (
        corpus,
        demo,
        extract,
        health,
        metric,
        plugins,
        probe,
        prune,
        relate,
        report,
        segment,
        train,
        view,
    )

    register("pretrain", train.pretrain, "Stages")
    register("health", health.health, "Stages")
    register("extract", extract.extract, "Stages")
    register("metric", metric.metric, "Stages")
    register("segment", segment.segment, "Stages")
    register("relate", relate.relate, "Stages")
    register("probe", probe.probe, "Stages")
    register("prune", prune.prune, "Stages")
    register("demo", demo.demo, "Workflow")
    register("report", report.report, "Workflow")
    register("view", view.view, "Workflow")
    register("corpus", corpus.app, "Data and plugins")
    register("plugins", plugins.plugins, "Data and plugins")
