"""Figures and the HTML report of a study of several models (``satool compare``, the demo's M3, M6,
M9): every figure compares one measurement across models on one stated scale, with its CSV (the
comparison's tables) beside it."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from satool.output.figures import figure
from satool.output.report import img, page, table
from satool.results.metrics import LOCAL_RATIO
from satool.results.study import Comparison, Study
from satool.results.verdicts import VerdictReport

CATEGORY_COLOURS = {"global": "tab:blue", "vertical": "tab:orange", "diagonal": "tab:green"}


def _by_model(rows: list[dict[str, Any]], names: list[str]) -> list[tuple[str, list[dict[str, Any]]]]:
    return [(name, [r for r in rows if r["model"] == name]) for name in names
            if any(r["model"] == name for r in rows)]


def _title(name: str, span) -> str:
    return name if span is None else f"{name} (Cnum {span})"


def draw(comparison: Comparison, out: Path) -> dict[str, Path]:
    """Every figure the tables allow (one PNG each, CSV beside it from :meth:`Comparison.save`)."""
    names = [m["name"] for m in comparison.models]
    spans = {m["name"]: m["mask_span"] for m in comparison.models}
    paths: dict[str, Path] = {}
    drawers = (("offsets", offsets_figure, "heads"), ("categories", categories_figure, "categories"),
               ("segmentation", segmentation_figure, "segmentation"), ("probes", probes_figure, "probes"),
               ("pruning", pruning_figure, "pruning"), ("spans", spans_figure, "spans"),
               ("masked_queries", masked_queries_figure, "masked_queries"),
               ("training", training_figure, "training"))
    for key, drawer, source in drawers:
        rows = comparison.table(source)
        if rows:
            paths[key] = drawer(rows, names, spans, out / f"{key}.png")
    return paths


def offsets_figure(rows, names, spans, path: Path) -> Path:
    """Every head's signed favourite offset (ms) against its locality (x uniform, 95 % bootstrap
    interval), one panel per model, coloured by category, on shared axes."""
    groups = _by_model(rows, names)
    top = max((r.get("locality_high") or r["locality"] or 0) for r in rows) * 1.1
    x_key = "favourite_offset_ms" if all(r.get("favourite_offset_ms") is not None for r in rows) else \
        "favourite_offset_steps"
    span = max(abs(r[x_key]) for r in rows) or 1
    with figure(path, size=(4.6 * len(groups), 4), ncols=len(groups), squeeze=False) as (fig, axes):
        for ax, (name, group) in zip(axes[0], groups):
            for category, colour in CATEGORY_COLOURS.items():
                sel = [r for r in group if r["category"] == category]
                if not sel:
                    continue
                x = np.array([r[x_key] for r in sel], float)
                y = np.array([r["locality"] or np.nan for r in sel], float)
                low = np.array([r.get("locality_low", np.nan) or np.nan for r in sel], float)
                high = np.array([r.get("locality_high", np.nan) or np.nan for r in sel], float)
                ax.errorbar(x, y, yerr=np.vstack([y - low, high - y]) if np.isfinite(low).any() else None, fmt="o",
                            ms=4, color=colour, ecolor=colour, elinewidth=0.6, alpha=0.8, label=category)
            ax.axhline(LOCAL_RATIO, color="gray", ls="--", lw=0.8, label=f"local ({LOCAL_RATIO:g}x)")
            ax.axvline(0, color="gray", ls=":", lw=0.8)
            ax.set_xlim(-1.1 * span, 1.1 * span)
            ax.set_ylim(0, top)
            ax.set_title(_title(name, spans.get(name)), fontsize=10)
            ax.set_xlabel("favourite offset, key - query (ms)" if x_key.endswith("ms") else "favourite offset (steps)")
            ax.set_ylabel("weight there / uniform weight")
        axes[0][0].legend(fontsize=7)
        fig.suptitle("Each head's favourite offset and its weight\n(whiskers: 95 % bootstrap interval over "
                     "utterances)", fontsize=9)
    return path


def categories_figure(rows, names, spans, path: Path) -> Path:
    """Heads per category and layer, one panel per model (bars stacked by category; same y scale)."""
    groups = _by_model([r for r in rows if r["layer"] != "all"], names)
    top = max(r["global"] + r["vertical"] + r["diagonal"] for r in rows if r["layer"] != "all")
    with figure(path, size=(3.8 * len(groups), 3.6), ncols=len(groups), squeeze=False) as (fig, axes):
        for ax, (name, group) in zip(axes[0], groups):
            layers = [r["layer"] for r in group]
            bottom = np.zeros(len(group))
            for category, colour in CATEGORY_COLOURS.items():
                values = np.array([r[category] for r in group], float)
                ax.bar(layers, values, bottom=bottom, color=colour, label=category)
                bottom += values
            total = next((r for r in rows if r["model"] == name and r["layer"] == "all"), {})
            ax.set_title(f"{_title(name, spans.get(name))}: " + ", ".join(
                f"{total.get(c, 0)} {c}" for c in CATEGORY_COLOURS), fontsize=9)
            ax.set_xlabel("layer")
            ax.set_ylabel("heads")
            ax.set_ylim(0, top)
            ax.set_xticks(layers)
        axes[0][0].legend(fontsize=7)
    return path


def segmentation_figure(rows, names, spans, path: Path) -> Path:
    """Strict R-value (20 ms) of MFCC, log-Mel, each model's chosen head and hidden state."""
    groups = _by_model(rows, names)
    kinds = ["mfcc", "log-Mel", "best head", "best hidden state"]
    width = 0.8 / len(kinds)
    with figure(path, size=(2.2 * len(groups) + 3, 3.8)) as (fig, ax):
        for k, kind in enumerate(kinds):
            values = [next((r["r_value"] for r in group if r["source"] == kind), np.nan) for _, group in groups]
            ax.bar(np.arange(len(groups)) + (k - 1.5) * width, values, width, label=kind)
        ax.set_xticks(np.arange(len(groups)), [_title(n, spans.get(n)) for n, _ in groups])
        finite = [r["r_value"] for r in rows if r["r_value"] is not None]
        ax.set_ylim(min(finite) - 5, max(finite) + 3)
        ax.set_ylabel("strict R-value, 20 ms (test split)")
        ax.set_title("Phone boundaries: the chosen head and hidden state of each model beside MFCC", fontsize=9)
        ax.legend(fontsize=7)
    return path


def probes_figure(rows, names, spans, path: Path) -> Path:
    """Probe score against the layer probed, one line per model; the input features as dashed lines."""
    tasks = list(dict.fromkeys(r["task"] for r in rows if r["measure"] == "accuracy"))
    with figure(path, size=(4.4 * len(tasks), 3.8), ncols=len(tasks), squeeze=False) as (fig, axes):
        for ax, task in zip(axes[0], tasks):
            for name, group in _by_model([r for r in rows if r["task"] == task], names):
                model = sorted((r["layer"], r["score"]) for r in group if r["representation"] == "model"
                               and r["layer"] is not None and r["layer"] >= 0)
                if model:
                    ax.plot([m[0] for m in model], [100 * m[1] for m in model], marker="o", ms=4,
                            label=_title(name, spans.get(name)))
            inputs = {r["representation"]: r["score"] for r in rows if r["task"] == task
                      and r["representation"] != "model"}
            for (representation, score), style in zip(inputs.items(), ("--", ":")):
                ax.axhline(100 * score, color="gray", ls=style, lw=1, label=f"{representation} (input)")
            chance = next(r["chance"] for r in rows if r["task"] == task)
            ax.axhline(100 * chance, color="black", ls="-.", lw=0.7, label="chance")
            ax.set_title(task)
            ax.set_xlabel("hidden state (0 = embedding output, L = layer L)")
            ax.set_ylabel("accuracy (%)")
        axes[0][0].legend(fontsize=7)
    return path


def pruning_figure(rows, names, spans, path: Path) -> Path:
    """Each metric order's drop against the random orders' mean (band: their spread), one panel per
    model and task, at every share of heads judged."""
    groups = _by_model(rows, names)
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    with figure(path, size=(4 * len(tasks), 3.2 * len(groups)), nrows=len(groups), ncols=len(tasks),
                squeeze=False) as (fig, axes):
        for row, (name, group) in zip(axes, groups):
            for ax, task in zip(row, tasks):
                sel = [r for r in group if r["task"] == task]
                shares = list(dict.fromkeys(r["share"] for r in sel))
                x = np.arange(len(shares))
                for by in dict.fromkeys(r["by"] for r in sel):
                    drops = [next((100 * r["drop"] for r in sel if r["share"] == s and r["by"] == by), np.nan)
                             for s in shares]
                    ax.plot(x, drops, marker="o", ms=3, label=by)
                mean = np.array([next(100 * r["random_mean"] for r in sel if r["share"] == s) for s in shares])
                spread = np.array([next(100 * r["random_spread"] for r in sel if r["share"] == s) for s in shares])
                ax.fill_between(x, mean - spread / 2, mean + spread / 2, color="gray", alpha=0.25, label="random")
                ax.set_xticks(x, shares, fontsize=7)
                ax.set_title(f"{_title(name, spans.get(name))}: {task}", fontsize=9)
                ax.set_ylabel("points lost (positive = worse)")
        axes[0][0].legend(fontsize=7)
        fig.supxlabel("heads pruned")
    return path


def spans_figure(rows, names, spans, path: Path) -> Path:
    """Score against the attention span r, one line per model (task panels); dots: no limit."""
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    with figure(path, size=(4.6 * len(tasks), 3.8), ncols=len(tasks), squeeze=False) as (fig, axes):
        for ax, task in zip(axes[0], tasks):
            for name, group in _by_model([r for r in rows if r["task"] == task], names):
                line, = ax.plot([r["span"] for r in group], [100 * r["score"] for r in group], marker="o", ms=3,
                                label=_title(name, spans.get(name)))
                if group[0]["no_limit"] is not None:
                    ax.axhline(100 * group[0]["no_limit"], color=line.get_color(), ls=":", lw=1)
            ax.set_xscale("symlog", linthresh=1)
            ax.set_xlabel("attention span r (model steps); dotted: no limit")
            ax.set_ylabel("accuracy (%)")
            ax.set_title(task)
        axes[0][0].legend(fontsize=7)
    return path


def masked_queries_figure(rows, names, spans, path: Path) -> Path:
    """The most local heads' favourite offsets (ms) on clean input and, under pre-training masks, for
    masked and for unmasked queries: one panel per model."""
    groups = _by_model(rows, names)
    unit = "ms" if all(r.get("clean_offset_ms") is not None for r in rows) else "steps"
    with figure(path, size=(4.6 * len(groups), 3.8), ncols=len(groups), squeeze=False) as (fig, axes):
        for ax, (name, group) in zip(axes[0], groups):
            x = np.arange(len(group))
            for k, (kind, colour) in enumerate((("clean", "black"), ("masked_queries", "tab:red"),
                                                ("unmasked_queries", "tab:blue"))):
                ax.bar(x + (k - 1) * 0.27, [r.get(f"{kind}_offset_{unit}") or 0 for r in group], 0.27, color=colour,
                       label=kind.replace("_", " "))
            ax.axhline(0, color="gray", lw=0.8)
            ax.set_xticks(x, [r["label"] for r in group], rotation=45, fontsize=7)
            ax.set_ylabel(f"favourite offset ({unit})")
            ax.set_title(_title(name, spans.get(name)), fontsize=10)
        axes[0][0].legend(fontsize=7)
        fig.suptitle("Where the most local heads look:\nclean input vs pre-training masks", fontsize=9)
    return path


def training_figure(rows, names, spans, path: Path) -> Path:
    """Favourite offset (ms) of each model's most local heads against training steps."""
    groups = _by_model(rows, names)
    unit = "ms" if all(r.get("favourite_offset_ms") is not None for r in rows) else "steps"
    with figure(path, size=(4.6 * len(groups), 3.6), ncols=len(groups), squeeze=False) as (fig, axes):
        for ax, (name, group) in zip(axes[0], groups):
            for head in dict.fromkeys(r["label"] for r in group):
                sel = [r for r in group if r["label"] == head]
                ax.plot([r["step"] for r in sel], [r[f"favourite_offset_{unit}"] for r in sel], marker="o", ms=3,
                        label=f"{head} ({sel[-1]['locality']:.1f}x at the end)")
            ax.axhline(0, color="gray", ls=":", lw=0.8)
            ax.set_xlabel("training step")
            ax.set_ylabel(f"favourite offset ({unit})")
            ax.set_title(_title(name, spans.get(name)), fontsize=10)
            ax.legend(fontsize=6)
        fig.suptitle("Favourite offset of the heads most local\nat the end of training, through training", fontsize=9)
    return path


# ---------------------------------------------------------------------------
# the report


def render(study: Study, comparison: Comparison, verdicts: VerdictReport, figures: dict[str, Path], out: Path, *,
           relation_maps: dict[str, list[Path]] | None = None, note: str = "") -> Path:
    """The study's HTML report: models and health, every finding judged, then the comparisons."""
    import os

    sections = []
    models, links = [], []
    for run, span in zip(study.runs, study.spans):
        health = verdicts.health.get(run.name)
        models.append({"model": run.name, "Cnum": "?" if span is None else span,
                       "health": "-" if health is None else ("healthy" if health.passed else
                                                             "NOT healthy: " + health.failure())})
        if (run.directory / "report.html").exists():
            target = os.path.relpath(run.directory / "report.html", out.parent)
            links.append(f'<a href="{html.escape(target)}">{html.escape(run.name)}</a>')
    sections.append(("Models", (f"<p>{html.escape(note)}</p>" if note else "")
                     + table(models, [("model", "model"), ("Cnum", "mask span Cnum"), ("health", "health")])
                     + (f"<p>Each model's own report: {', '.join(links)}.</p>" if links else "")))
    rows = [v.row() for v in verdicts.verdicts]
    body = ("<p>Every finding of Yang, Liu &amp; Lee (2020) that these models can speak to, judged by the rule "
            "named in the last column (rules below). A finding about one model is judged on each; a finding "
            "that compares mask spans is judged on the study. A model that fails its health checks makes its "
            "findings inconclusive.</p>"
            + table(rows, [("finding", "#"), ("model", "model"), ("claim", "finding (paper section)"),
                           ("paper", "paper"), ("this run", "measured"), ("verdict", "verdict"), ("reason", "why"),
                           ("rule", "rule")])
            + "<h3>Rules</h3><ul>" + "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>"
                                            for k, v in verdicts.rules.items()) + "</ul>")
    sections.append(("Every finding of the paper, judged", body))
    captions = {
        "offsets": "Every head's favourite offset (ms) and locality per model",
        "masked_queries": "The most local heads under pre-training masks: masked and unmasked queries",
        "training": "Favourite offsets of the most local heads through training",
        "categories": "Categories per layer and model",
        "segmentation": "Segmentation per model (strict R-value, test split)",
        "probes": "What each layer knows, per model, beside the input features",
        "pruning": "Pruning orders against random orders, per model (drop in points)",
        "spans": "Span pruning per model",
    }
    for key, caption in captions.items():
        if key in figures:
            extra = ""
            if key == "masked_queries":
                extra = table(comparison.table("masked_queries"), [
                    ("model", "model"), ("label", "head"), ("clean_offset_ms", "clean: offset (ms)"),
                    ("clean_weight", "clean: x uniform"), ("masked_queries_offset_ms", "masked queries: offset (ms)"),
                    ("masked_queries_weight_at_0", "masked queries: weight at 0"),
                    ("unmasked_queries_offset_ms", "unmasked queries: offset (ms)"),
                    ("unmasked_queries_weight_at_0", "unmasked queries: weight at 0")],
                    {k: ".2f" for k in ("clean_weight", "masked_queries_weight_at_0", "unmasked_queries_weight_at_0")})
            sections.append((caption, img(figures[key], caption) + extra))
    for name, maps in (relation_maps or {}).items():
        if maps:
            sections.append((f"Phone relation maps of the heads that matter: {name}",
                             "<p>The heads among the first pruned by weight but kept by globalness (Fig. 6), and "
                             "the most local head; one diverging scale per model.</p>"
                             + "".join(img(p, p.stem.replace("_", " "), "45%") for p in maps)))
    out.write_text(page("satool study: " + ", ".join(study.names), "satool compare " + " ".join(
        str(r.directory) for r in study.runs), sections))
    return out
