"""The HTML report of a run: one self-contained file with the paper's analyses and the verdicts.

It renders typed results only (:class:`~satool.results.run.RunResults`, the
:class:`~satool.results.verdicts.VerdictReport` the report stage computed); figures are embedded
as base64 PNGs, so the file opens offline and can be mailed around. The report opens with the
model's health checks; a table then sets this run's numbers beside the paper's findings.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from satool.results.health import BASELINES, HealthCheck
from satool.results.maps import MapsSideBySide
from satool.results.metrics import LOCAL_RATIO, HeadScores
from satool.results.probe import ProbeResults
from satool.results.run import RunResults
from satool.results.segment import BOUNDARY_CONVENTION
from satool.results.verdicts import Health, VerdictReport


def img(path: Path, alt: str, width: str = "100%") -> str:
    if not path.exists():
        return f'<p class="missing">({html.escape(path.name)} was not produced by this run)</p>'
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}" style="max-width:{width}">'
            f'<figcaption>{html.escape(alt)} <span class="file">({html.escape(path.name)})</span></figcaption></figure>')


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]], fmt: dict[str, str] | None = None) -> str:
    fmt = fmt or {}
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title in columns)
    body = []
    for row in rows:
        cells = []
        for key, _ in columns:
            value = row.get(key, "")
            if isinstance(value, float) and key in fmt:
                value = format(value, fmt[key])
            cells.append(f"<td>{html.escape(str(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render(run: RunResults, verdicts: VerdictReport | None, out: Path, *, viewer: str = "",
           layers: list[dict[str, Any]] | None = None) -> Path:
    """Write the HTML report of one run: its results, the verdicts (computed by the report stage),
    ``viewer`` (a paragraph linking the offline viewer file, or why there is none) and ``layers`` (per
    task, the best layer against the best input feature, when several layers were probed)."""
    sections: list[tuple[str, str]] = []

    # -- run summary -----------------------------------------------------------
    summary = []
    if run.stages:
        timing = ", ".join(f"{k} {v.get('seconds', 0):.0f} s" for k, v in run.stages.items())
        summary.append(f"<p>Stages and their run times: {html.escape(timing)}.</p>")
    if run.corpus:
        counted = ", ".join(f"{value} {key.replace('_', ' ')}" for key, value in run.corpus["counts"].items())
        summary.append(f"<p>Corpus: synthetic, {run.corpus['total_hours']:.2f} h, {html.escape(counted)}.</p>")
    reference = run.model
    if reference:
        summary.append(
            f"<p>Model: the reference model that ships with satool, trained by <code>"
            f"{html.escape(str(reference.get('command', '')))}</code> ({reference.get('steps')} steps, seed "
            f"{reference.get('seed')}, satool {html.escape(str(reference.get('satool_version')))}; sha256 "
            f"{html.escape(str(reference.get('sha256', ''))[:16])}...).</p>")
    checkpoint = run.paths.get("checkpoint")
    if checkpoint:
        for suffix, alt in ((".loss.png", "Pre-training loss (masked-frame L1)"),
                            (".heldout.png", "Held-out checks during pre-training: masked L1 beside the baselines, "
                                             "and head locality")):
            figure_path = checkpoint.with_name(checkpoint.name + suffix)
            if figure_path.exists():
                summary.append(img(figure_path, alt, "80%"))
    sections.append(("Run", "".join(summary)))

    health = verdicts.health.get(run.name) if verdicts else None
    if health is not None:
        sections.append(("Model health", _health_section(health, run, verdicts.rules.get("health", ""))))

    # -- heads -----------------------------------------------------------------
    if run.metrics is not None:
        sections.append(("Which heads are global, vertical, diagonal (paper Fig. 1)",
                         _heads_section(run.metrics, run.paths["metrics"]) + viewer
                         + _maps_section(run.maps_side_by_side)))

    # -- segmentation ----------------------------------------------------------
    if run.segment is not None:
        seg, seg_dir = run.segment, run.paths["segment"]
        rows = [r.row() for r in seg.results]
        for r in rows:
            for key in ("strict_r_value", "lenient_r_value", "strict_precision", "strict_recall", "strict_f1"):
                if isinstance(r.get(key), (int, float)):
                    r[key] = 100 * r[key]
        body = (
            f"<p>{html.escape(BOUNDARY_CONVENTION)}; tolerance {1000 * seg.tolerance_s:.0f} ms. "
            "Parameters tuned on dev for the best strict R-value, scores on test.</p>"
            + table(rows, [("source", "source"), ("strict_precision", "P"), ("strict_recall", "R"),
                            ("strict_f1", "F1"), ("strict_r_value", "R-value (strict)"),
                            ("lenient_r_value", "R-value (lenient)")],
                     {k: ".1f" for k in ("strict_precision", "strict_recall", "strict_f1", "strict_r_value",
                                         "lenient_r_value")})
            + img(seg_dir / "pr_curve.png", "Fig. 2: precision and recall over beta, against the MFCC baseline",
                   "60%")
        )
        for example in sorted(seg_dir.glob("example_*.png")):
            body += img(example, f"Segmentation example: {example.stem.removeprefix('example_')}")
        sections.append(("Phone boundaries from attention (paper Fig. 2)", body))

    # -- relations -------------------------------------------------------------
    if run.relations is not None:
        rel_dir = run.paths["relate"]
        body = "<p>P_h = (P' - P_U) / P_U: red = the query phone prefers the key phone, blue = avoids it.</p>"
        for image in sorted(rel_dir.glob("relation_*.png")):
            body += img(image, f"Fig. 3: phone relation map of {image.stem.removeprefix('relation_')}", "70%")
        body += img(rel_dir / "verticality_vs_concentration.png",
                     "Fig. 4: verticality against each head's strongest phone concentration", "60%")
        sections.append(("Which phones attend to which (paper Fig. 3 and 4)", body))

    # -- probing and pruning ---------------------------------------------------
    if run.probe is not None:
        sections.append(("What the representations know", _probe_section(run.probe) + _layers_section(layers or [])))
    if run.prune is not None:
        prune_dir = run.paths["prune"]
        body = (img(prune_dir / "prune_curves.png", "Fig. 5: pruning heads in each metric's order")
                + img(prune_dir / "globalness_vs_weight.png",
                       "Fig. 6: positions of every head in the globalness and the weight order", "55%")
                + f"<p>The probes read {_layer_name(run.prune.layer)}. Each metric's order against the random "
                  "orders at the paper's share of heads and larger ones (drop = accuracy lost against no pruning; "
                  "positive = worse):</p>"
                + table(verdicts.pruning.get(run.name, []) if verdicts else [], [("share", "heads pruned"), ("task", "task"), ("by", "order"),
                                                ("drop", "drop"), ("random_mean", "random mean drop"),
                                                ("random_spread", "random spread"), ("versus_random", "vs random")],
                         {"drop": ".3f", "random_mean": ".3f", "random_spread": ".3f"}))
        sections.append(("Which heads matter (paper Fig. 5 and 6)", body))

    if verdicts is not None and verdicts.verdicts:
        rows = [v.row() for v in verdicts.verdicts]
        body = (_gate_note(health)
                + table(rows, [("claim", "finding (Yang, Liu & Lee 2020)"), ("paper", "paper"),
                                ("this run", "this run"), ("verdict", "verdict"), ("reason", "why")])
                + "<h3>Rules</h3><ul>" + "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>"
                                                for k, v in verdicts.rules.items()) + "</ul>")
        sections.insert(1, ("This run beside the paper", body))
    out.write_text(_page(run.directory, sections))
    return out


def viewer_paragraph(target: Path | None, example: str | None, problem: str | None = None) -> str:
    """The paragraph linking the offline viewer file of the example utterance (or saying why there is none)."""
    if target is None:
        return f'<p class="missing">(no viewer file: {html.escape(problem or "no attention cache")})</p>'
    return (f'<p>Every head of {html.escape(str(example))} over its spectrogram, with the phones and the audio, on '
            f'one stated colour scale: <a href="{html.escape(target.name)}">{html.escape(target.name)}</a> (opens '
            'offline; <code>satool view</code> browses every utterance).</p>')


def _gate_note(health) -> str:
    if health.passed:
        return "<p>The model passed every health check, so the findings below are judged by their rules.</p>"
    return ("<p class=\"missing\">The model did not pass the health checks (" + html.escape(health.failure())
            + "): every finding is <b>inconclusive</b>. The numbers are shown, but they describe a model that "
              "has not learned what the paper's models learned.</p>")


def _health_section(health: Health, run: RunResults, rule: str) -> str:
    parts = ["<p>Before reading the heads, check that the model learned: a model that did not learn has heads "
             "whose categories are only rank order, and nothing here would say anything about the paper's "
             "models.</p>"]
    check: HealthCheck | None = run.health
    if check is not None:
        rows = [{"what": "model", "masked L1": check.model_l1},
                {"what": "model, attention off (each head attends only to its own step)",
                 "masked L1": check.attention_off_l1}]
        rows += [{"what": f"baseline: {name}", "masked L1": check.baselines[name]} for name in BASELINES]
        parts.append(f"<p>Held-out masked reconstruction ({check.split or 'dev'} split, {check.utterances} "
                     "utterances, one fixed draw of masks, masked steps zeroed; lower is better):</p>")
        parts.append(table(rows, [("what", ""), ("masked L1", "masked L1")], {"masked L1": ".4f"}))
    rows = [{"check": c.name, "result": {True: "pass", False: "FAIL", None: "not measured"}[c.passed],
             "detail": c.detail} for c in health.checks]
    parts.append(table(rows, [("check", "check"), ("result", "result"), ("detail", "numbers")]))
    parts.append(f"<p><b>{'Healthy' if health.passed else 'Not healthy'}</b>: {html.escape(rule)}</p>")
    return "".join(parts)


def _heads_section(scores: HeadScores, metrics_dir: Path) -> str:
    rows = scores.records()
    per_layer: dict[int, dict[str, int]] = {}
    for r in rows:
        counts = per_layer.setdefault(r["layer"], {"global": 0, "vertical": 0, "diagonal": 0, "local": 0})
        if r["category"]:
            counts[r["category"]] += 1
        if (r.get("locality") or 0) >= LOCAL_RATIO:
            counts["local"] += 1
    layer_rows = [{"layer": k, **v} for k, v in sorted(per_layer.items())]
    n_local = sum(v["local"] for v in per_layer.values())
    n_diag = sum(v["diagonal"] for v in per_layer.values())
    text = ("<p>Each head's globalness (mean entropy of its rows), verticality (negative entropy of its mean "
            "row) and diagonality (negative mean |q - k| / T); its category is the metric it ranks best in. "
            "Categories compare ranks among this model's heads, not values against uniform attention, so they "
            "are shown beside two absolute measures: D relative to uniform attention (1 = weights as far from "
            "the diagonal as uniform attention puts them, 0 = all on the diagonal) and locality (the weight a "
            f"head's favourite relative offset carries, in units of the uniform weight; local = at least "
            f"{LOCAL_RATIO:g}x).</p>")
    if scores.locality() is not None:
        text += (f"<p>{n_local} of {len(rows)} heads are local; {n_diag} heads rank best in diagonality. "
                 + ("Only local heads are called diagonal heads in this report." if n_local else
                    "No head is local: the heads ranked 'diagonal' do not attend near themselves, and this "
                    "report does not call them diagonal heads.") + "</p>")
    top = sorted(rows, key=lambda r: -(r.get("locality") or 0))[:8]
    return (_maps_note(scores) + text + img(metrics_dir / "top_heads.png", "Fig. 1: attention maps of the top heads per metric")
            + table(layer_rows, [("layer", "layer"), ("global", "rank: global"), ("vertical", "rank: vertical"),
                                  ("diagonal", "rank: diagonal"), ("local", f"local (>= {LOCAL_RATIO:g}x)")])
            + "<p>The most local heads:</p>"
            + table(top, [("label", "head"), ("category", "rank category"), ("locality", "locality (x uniform)"),
                           ("favourite_offset", "favourite offset (steps)"),
                           ("diagonality_vs_uniform", "D / D of uniform")],
                     {"locality": ".2f", "diagonality_vs_uniform": ".3f"})
            + img(metrics_dir / "offset_profiles.png", "Offset profiles: mean weight by relative offset, in units "
                   "of uniform attention", "70%")
            + (img(metrics_dir / "weight_histograms.png", "Attention weights per power of two: each head's share "
                   "of its weights in each bin, over the corpus", "80%") if scores.weight_histogram is not None else "")
            + img(metrics_dir / "head_distribution.png", "Head distribution, coloured by layer"))


def _maps_note(scores: HeadScores) -> str:
    from satool.maps import ATTENTION, DESCRIPTIONS, kind_of

    kind = kind_of(scores.source)
    if kind == ATTENTION:
        return ""
    return (f"<p><b>Maps: {html.escape(kind)}</b> ({html.escape(DESCRIPTIONS[kind])}; docs/maps.md): every number "
            "and figure of this section describes these maps, not the raw attention weights.</p>")


def _maps_section(beside: MapsSideBySide | None) -> str:
    """The same heads' metrics on two map kinds (``satool metric --beside``), when the run has them."""
    if beside is None:
        return ""
    first, second = beside.kinds
    rho = [{"metric": m, "rho": beside.rank_correlation[m]} for m in beside.metrics]
    changed = [r for r in beside.rows if r["category changed"]]
    columns = [("label", "head")] + [(f"{m} ({k})", f"{m[0].upper()} {k}") for m in beside.metrics
                                      if m in ("globalness", "verticality", "diagonality") for k in beside.kinds]
    columns += [(f"category ({k})", f"category {k}") for k in beside.kinds]
    moved = sorted(beside.rows, key=lambda r: -abs((r.get(f"verticality rank ({first})") or 0)
                                                   - (r.get(f"verticality rank ({second})") or 0)))[:10]
    return (f"<h3>{html.escape(first)} maps beside {html.escape(second)} maps of the same heads</h3>"
            "<p>Raw weights can mislead: a key weighted heavily adds little when its transformed value is small "
            "(docs/maps.md). Rank correlation of each metric between the two kinds (1 = the same order of "
            f"heads), and the heads whose category differs ({len(changed)} of {len(beside.rows)}):</p>"
            + table(rho, [("metric", "metric"), ("rho", "Spearman rho")], {"rho": ".3f"})
            + table(changed, columns, {c: ".3f" for c, _ in columns[1:-2]})
            + "<p>The heads whose verticality rank moves most:</p>"
            + table(moved, columns, {c: ".3f" for c, _ in columns[1:-2]}))


def _layer_name(layer: int) -> str:
    return {-1: "the last layer", 0: "the embedding output"}.get(layer, f"layer {layer}")


def _layers_section(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    shown = [{**r, "interval": "" if r.get("vs_input_low") is None else
              f"{100 * r['vs_input']:+.1f} pts ({100 * r['vs_input_low']:+.1f} to {100 * r['vs_input_high']:+.1f})"}
             for r in rows]
    return ("<p>Every hidden layer probed (0 = the embedding output): the best layer per task, and whether it "
            "beats the best input feature (95 % paired bootstrap interval over test utterances).</p>"
            + table(shown, [("task", "task"), ("best_layer", "best layer"), ("score", "its score"),
                            ("best_input", "best input feature"), ("input_score", "its score"),
                            ("interval", "best layer - input"), ("beats_input", "beats the input?"),
                            ("scores_by_layer", "every layer (%)")], {"score": ".4f", "input_score": ".4f"}))


def _probe_section(probes: ProbeResults) -> str:
    shown = []
    for r in probes.rows:
        shown.append({**r.as_dict(), "converged": {True: "yes", False: "NO", None: "-"}[r.score.converged],
                      "left out": r.score.left_out})
    added = probes.pretraining_added()
    return ("<p>The same probes on the model's layers and on the input features: the difference is what "
            "pre-training added. Chance = always answering the most frequent training class (reconstruction: "
            "predicting each utterance's mean frame). Test utterances whose speaker the training split lacks "
            "are left out of both speaker tasks. The input features are normalised per utterance, so every "
            "utterance's mean frame is zero: their utterance-level rows pool the mean and standard deviation "
            "of the features before that normalisation. A probe has converged when its error and loss on "
            "held-out training utterances stopped improving.</p>"
            + (f"<p>Model against the best input feature, task by task: {html.escape('; '.join(added))}.</p>"
               if added else "")
            + table(shown, [("task", "task"), ("representation", "representation"), ("score", "score"),
                             ("chance", "chance"), ("score_name", "measure"), ("n_train", "train items"),
                             ("n_test", "test items"), ("left out", "test utts left out"),
                             ("converged", "probe converged")], {"score": ".4f", "chance": ".4f"}))


def _page(directory: Path, sections: list[tuple[str, str]]) -> str:
    return page(f"satool report: {directory}", f"satool report {directory}", sections)


def page(title: str, rebuild: str, sections: list[tuple[str, str]]) -> str:
    """A self-contained HTML page: ``sections`` (title, HTML) under ``title``; ``rebuild``: the
    command that makes it again."""
    from satool import __version__

    body = "".join(f'<section><h2>{html.escape(title)}</h2>{content}</section>' for title, content in sections)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }}
h1 {{ font-size: 1.6em; }} h2 {{ border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: .9em; }}
th, td {{ border: 1px solid #ddd; padding: .3em .6em; text-align: left; vertical-align: top; }}
th {{ background: #f3f3f3; }} figure {{ margin: 1em 0; }} figcaption {{ font-size: .85em; color: #555; }}
.file {{ color: #999; }} .missing {{ color: #a33; }}
</style></head>
<body data-figures="pending">
<h1>{html.escape(title)}</h1>
<p>Understanding self-attention of a self-supervised speech transformer, after Yang, Liu &amp; Lee,
<i>Understanding Self-Attention of Self-Supervised Audio Transformers</i> (Interspeech 2020).
Made by satool {html.escape(__version__)}; rebuild with <code>{html.escape(rebuild)}</code>.</p>
{body}
<script>
window.addEventListener("load", function () {{
  var images = Array.prototype.slice.call(document.images);
  var ok = images.every(function (img) {{ return img.complete && img.naturalWidth > 0; }});
  document.body.setAttribute("data-figures", ok ? "ok:" + images.length : "broken");
}});
</script>
</body></html>
"""
