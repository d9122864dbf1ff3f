"""`satool report`: one self-contained HTML file with the paper's analyses for a run.

Everything is read back from the files the stages saved (found through the
directory's ``satool.toml``), so ``satool report DIR`` rebuilds the report
at any time. Figures are embedded as base64 PNGs: the file opens offline
and can be mailed around. The report opens with the model's health checks;
a table then sets this run's numbers beside the paper's findings, each
judged by a stated rule (:mod:`satool.analysis.verdicts`) and all of them
"inconclusive" when the model is not healthy.
"""

from __future__ import annotations

import base64
import csv
import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from satool.errors import InputError

PAPER = {
    "mfcc_r": 76.68,
    "best_head_r": {"M3": 79.99, "M6": 78.43, "M9": 78.19},
    "hidden11_r": 77.53,
    "phone_accuracy_before": 70.0,
}


def _img(path: Path, alt: str, width: str = "100%") -> str:
    if not path.exists():
        return f'<p class="missing">({html.escape(path.name)} was not produced by this run)</p>'
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}" style="max-width:{width}">'
            f'<figcaption>{html.escape(alt)} <span class="file">({html.escape(path.name)})</span></figcaption></figure>')


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str]], fmt: dict[str, str] | None = None) -> str:
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


def _read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(open(path))) if path.exists() else []


def _load_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def _paths(directory: Path) -> dict[str, Path | None]:
    from satool.workspace import Workspace

    ws = Workspace(directory / "satool.toml")
    results = directory / "results"
    found: dict[str, Path | None] = {}
    for name in ("checkpoint", "corpus", "cache", "health", "metrics", "segment", "relate", "probe", "prune"):
        path = ws.path(name)
        if path is None and name in ("health", "metrics", "segment", "relate", "probe", "prune"):
            candidate = results / ("metric" if name == "metrics" else name)
            path = candidate if candidate.exists() else None
        found[name] = path
    return found


def build_report(directory: str | Path, out: str | Path | None = None) -> Path:
    """Write ``directory/report.html`` (or ``out``) from the saved results."""
    from satool.analysis import verdicts as rules

    directory = Path(directory).resolve()
    if not directory.is_dir():
        raise InputError("not a directory", path=directory)
    paths = _paths(directory)
    if not any(paths.values()):
        raise InputError("no satool results here (no satool.toml paths and no results/ directory)", path=directory)
    out = Path(out) if out is not None else directory / "report.html"
    sections: list[tuple[str, str]] = []
    findings: list[rules.Verdict] = []
    state = (_load_json(directory / "demo-state.json") or {}).get("done", {})

    # -- run summary -----------------------------------------------------------
    summary = []
    if state:
        timing = ", ".join(f"{k} {v.get('seconds', 0):.0f} s" for k, v in state.items())
        summary.append(f"<p>Stages and their run times: {html.escape(timing)}.</p>")
    corpus_manifest = _load_json(paths["corpus"] / "manifest.json") if paths["corpus"] else None
    if corpus_manifest:
        counts = corpus_manifest.get("counts", {})
        counted = ", ".join(f"{value} {key.replace('_', ' ')}" for key, value in counts.items())
        summary.append(f"<p>Corpus: synthetic, {corpus_manifest.get('total_hours', 0):.2f} h, "
                       f"{html.escape(counted)}.</p>")
    reference = state.get("model", {}).get("reference")
    if reference:
        summary.append(
            f"<p>Model: the reference model that ships with satool, trained by <code>"
            f"{html.escape(str(reference.get('command', '')))}</code> ({reference.get('steps')} steps, seed "
            f"{reference.get('seed')}, satool {html.escape(str(reference.get('satool_version')))}; sha256 "
            f"{html.escape(str(reference.get('sha256', ''))[:16])}...).</p>")
    if paths["checkpoint"]:
        for suffix, alt in ((".loss.png", "Pre-training loss (masked-frame L1)"),
                            (".heldout.png", "Held-out checks during pre-training: masked L1 beside the baselines, "
                                             "and head locality")):
            figure_path = paths["checkpoint"].with_name(paths["checkpoint"].name + suffix)
            if figure_path.exists():
                summary.append(_img(figure_path, alt, "80%"))
    sections.append(("Run", "".join(summary)))

    # -- inputs of the health gate and of the findings --------------------------
    health_doc = _load_json(paths["health"] / "health.json") if paths["health"] else None
    probe_rows = _load_json(paths["probe"] / "probe_results.json") if paths["probe"] else None
    prune_rows = _read_csv(paths["prune"] / "prune_results.csv") if paths["prune"] else []
    curves = rules.PruneCurves(prune_rows) if prune_rows else None
    scores = None
    if paths["metrics"] and (paths["metrics"] / "metrics.json").exists():
        from satool.results.metrics import HeadScores

        scores = HeadScores.load(paths["metrics"])
    health = rules.health(health_doc, probe_rows, curves)
    sections.append(("Model health", _health_section(health, health_doc, probe_rows, curves)))

    # -- heads -----------------------------------------------------------------
    if scores is not None:
        sections.append(("Which heads are global, vertical, diagonal (paper Fig. 1)",
                         _heads_section(scores, paths["metrics"]) + _viewer_link(directory, paths)))

    # -- segmentation ----------------------------------------------------------
    seg_dir = paths["segment"]
    if seg_dir and (seg_dir / "segment_results.json").exists():
        doc = _load_json(seg_dir / "segment_results.json")
        rows = [dict(r) for r in doc["results"]]
        for r in rows:
            for key in ("strict_r_value", "lenient_r_value", "strict_precision", "strict_recall", "strict_f1"):
                if isinstance(r.get(key), (int, float)):
                    r[key] = 100 * r[key]
        body = (
            f"<p>{html.escape(doc.get('boundary_convention', ''))}; tolerance {1000 * doc['tolerance_s']:.0f} ms. "
            "Parameters tuned on dev for the best strict R-value, scores on test.</p>"
            + _table(rows, [("source", "source"), ("strict_precision", "P"), ("strict_recall", "R"),
                            ("strict_f1", "F1"), ("strict_r_value", "R-value (strict)"),
                            ("lenient_r_value", "R-value (lenient)")],
                     {k: ".1f" for k in ("strict_precision", "strict_recall", "strict_f1", "strict_r_value",
                                         "lenient_r_value")})
            + _img(seg_dir / "pr_curve.png", "Fig. 2: precision and recall over beta, against the MFCC baseline",
                   "60%")
        )
        for example in sorted(seg_dir.glob("example_*.png")):
            body += _img(example, f"Segmentation example: {example.stem.removeprefix('example_')}")
        sections.append(("Phone boundaries from attention (paper Fig. 2)", body))
        findings += _segment_findings(doc)

    # -- relations -------------------------------------------------------------
    rel_dir = paths["relate"]
    if rel_dir and (rel_dir / "relations.npz").exists():
        body = "<p>P_h = (P' - P_U) / P_U: red = the query phone prefers the key phone, blue = avoids it.</p>"
        for image in sorted(rel_dir.glob("relation_*.png")):
            body += _img(image, f"Fig. 3: phone relation map of {image.stem.removeprefix('relation_')}", "70%")
        body += _img(rel_dir / "verticality_vs_concentration.png",
                     "Fig. 4: verticality against each head's strongest phone concentration", "60%")
        data = np.load(rel_dir / "relations.npz")
        conc = np.where(np.isfinite(data["concentration"]), data["concentration"], -np.inf).max(axis=1)
        findings.append(rules.vertical_phones_verdict(np.asarray(data["verticality"], float),
                                                      np.where(np.isfinite(conc), conc, np.nan)))
        sections.append(("Which phones attend to which (paper Fig. 3 and 4)", body))

    # -- probing and pruning ---------------------------------------------------
    if probe_rows:
        sections.append(("What the representations know", _probe_section(probe_rows)))
    if curves is not None:
        body = (_img(paths["prune"] / "prune_curves.png", "Fig. 5: pruning heads in each metric's order")
                + _img(paths["prune"] / "globalness_vs_weight.png",
                       "Fig. 6: positions of every head in the globalness and the weight order", "55%")
                + "<p>Each metric's order against the random orders at the paper's share of heads and larger "
                  "ones (drop = accuracy lost against no pruning; positive = worse):</p>"
                + _table(curves.table(), [("share", "heads pruned"), ("task", "task"), ("by", "order"),
                                          ("drop", "drop"), ("random_mean", "random mean drop"),
                                          ("random_spread", "random spread"), ("versus_random", "vs random")],
                         {"drop": ".3f", "random_mean": ".3f", "random_spread": ".3f"}))
        sections.append(("Which heads matter (paper Fig. 5 and 6)", body))
        local, order = None, None
        if scores is not None and scores.locality() is not None and "diagonality" in scores.values:
            ratio = scores.locality()[0]
            local = {(layer, head): float(ratio[i, j]) for i, layer in enumerate(scores.layers)
                     for j, head in enumerate(scores.heads)}
            order = scores.pruning_order("diagonality")
        findings += rules.pruning_verdicts(curves, local, order)

    if findings:
        judged = rules.gate(findings, health)
        rows = [v.row() for v in judged]
        used = sorted({v.rule for v in judged} | {"health"}, key=list(rules.RULES).index)
        body = (_gate_note(health)
                + _table(rows, [("claim", "finding (Yang, Liu & Lee 2020)"), ("paper", "paper"),
                                ("this run", "this run"), ("verdict", "verdict"), ("reason", "why")])
                + "<h3>Rules</h3><ul>" + "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(rules.RULES[k])}</li>"
                                                for k in used) + "</ul>")
        sections.insert(1, ("This run beside the paper", body))
        from satool.results.files import write_csv, write_json

        write_csv(directory / "results" / "verdicts.csv", rows)
        write_json(directory / "results" / "verdicts.json",
                   {"health": [c.__dict__ for c in health.checks], "healthy": health.passed, "verdicts": rows,
                    "rules": {k: rules.RULES[k] for k in used}})
    out.write_text(_page(directory, sections))
    return out


def _viewer_link(directory: Path, paths: dict[str, Path | None]) -> str:
    """Every head of the example utterance, browsable offline (satool view --export), linked here."""
    if not paths.get("cache") or not paths.get("metrics"):
        return ""
    example = None
    top = paths["metrics"] / "top_heads.npz"
    if top.exists():
        with np.load(top, allow_pickle=False) as data:
            example = str(data["utterance"])
    try:
        from satool.view.data import ViewData
        from satool.view.export import export_html

        data = ViewData(paths["cache"], paths["metrics"], paths.get("relate"))
        example = example if example in data.cache.utterance_ids else data.cache.utterance_ids[0]
        target = export_html(data, directory / "view-example.html", [example])
    except Exception as exc:  # noqa: BLE001 - the report is still written, saying why the viewer is not
        return f'<p class="missing">(no viewer file: {html.escape(str(exc))})</p>'
    return (f'<p>Every head of {html.escape(example)} over its spectrogram, with the phones and the audio, on one '
            f'stated colour scale: <a href="{html.escape(target.name)}">{html.escape(target.name)}</a> (opens '
            'offline; <code>satool view</code> browses every utterance).</p>')


def _gate_note(health) -> str:
    if health.passed:
        return "<p>The model passed every health check, so the findings below are judged by their rules.</p>"
    return ("<p class=\"missing\">The model did not pass the health checks (" + html.escape(health.failure())
            + "): every finding is <b>inconclusive</b>. The numbers are shown, but they describe a model that "
              "has not learned what the paper's models learned.</p>")


def _health_section(health, doc: dict | None, probe_rows, curves) -> str:
    parts = ["<p>Before reading the heads, check that the model learned: a model that did not learn has heads "
             "whose categories are only rank order, and nothing here would say anything about the paper's "
             "models.</p>"]
    if doc:
        from satool.training.heldout import BASELINES

        rows = [{"what": "model", "masked L1": doc["heldout_l1"]},
                {"what": "model, attention off (each head attends only to its own step)",
                 "masked L1": doc["attention_off_l1"]}]
        rows += [{"what": f"baseline: {name}", "masked L1": doc[f"{name}_l1"]} for name in BASELINES]
        parts.append(f"<p>Held-out masked reconstruction ({doc.get('split', 'dev')} split, {doc['utterances']} "
                     "utterances, one fixed draw of masks, masked steps zeroed; lower is better):</p>")
        parts.append(_table(rows, [("what", ""), ("masked L1", "masked L1")], {"masked L1": ".4f"}))
    rows = [{"check": c.name, "result": {True: "pass", False: "FAIL", None: "not measured"}[c.passed],
             "detail": c.detail} for c in health.checks]
    parts.append(_table(rows, [("check", "check"), ("result", "result"), ("detail", "numbers")]))
    parts.append(f"<p><b>{'Healthy' if health.passed else 'Not healthy'}</b>: {html.escape(_rule('health'))}</p>")
    return "".join(parts)


def _rule(key: str) -> str:
    from satool.analysis.verdicts import RULES

    return RULES[key]


def _heads_section(scores, metrics_dir: Path) -> str:
    from satool.analysis.locality import LOCAL_RATIO

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
    return (text + _img(metrics_dir / "top_heads.png", "Fig. 1: attention maps of the top heads per metric")
            + _table(layer_rows, [("layer", "layer"), ("global", "rank: global"), ("vertical", "rank: vertical"),
                                  ("diagonal", "rank: diagonal"), ("local", f"local (>= {LOCAL_RATIO:g}x)")])
            + "<p>The most local heads:</p>"
            + _table(top, [("label", "head"), ("category", "rank category"), ("locality", "locality (x uniform)"),
                           ("favourite_offset", "favourite offset (steps)"),
                           ("diagonality_vs_uniform", "D / D of uniform")],
                     {"locality": ".2f", "diagonality_vs_uniform": ".3f"})
            + _img(metrics_dir / "offset_profiles.png", "Offset profiles: mean weight by relative offset, in units "
                   "of uniform attention", "70%")
            + _img(metrics_dir / "head_distribution.png", "Head distribution, coloured by layer"))


def pretraining_added(rows: list[dict[str, Any]]) -> list[str]:
    """One phrase per task scored on the model and on input features: the model's score, the best
    input feature's, and the difference in points (positive = the model knows more)."""
    out = []
    for task in dict.fromkeys(r["task"] for r in rows):
        model = next((r for r in rows if r["task"] == task and r.get("representation", "model") == "model"), None)
        inputs = [r for r in rows if r["task"] == task and r.get("representation", "model") != "model"
                  and r.get("score") is not None]
        if model is None or model.get("score") is None or not inputs or model.get("score_name") != "accuracy":
            continue
        best = max(inputs, key=lambda r: r["score"])
        out.append(f"{task} {100 * model['score']:.1f} % vs {best['representation']} {100 * best['score']:.1f} % "
                   f"({100 * (model['score'] - best['score']):+.1f} pts)")
    return out


def _probe_section(rows: list[dict[str, Any]]) -> str:
    shown = []
    for r in rows:
        shown.append({**r, "converged": {True: "yes", False: "NO", None: "-"}.get(r.get("converged"), "-"),
                      "left out": r.get("test_utterances_left_out", 0)})
    added = pretraining_added(rows)
    return ("<p>The same probes on the model's last layer and on the input features: the difference is what "
            "pre-training added. Chance = always answering the most frequent training class (reconstruction: "
            "predicting each utterance's mean frame). Test utterances whose speaker the training split lacks "
            "are left out of both speaker tasks. The input features are normalised per utterance, so every "
            "utterance's mean frame is zero: their utterance-level rows pool the mean and standard deviation "
            "of the features before that normalisation. A probe has converged when its error and loss on "
            "held-out training utterances stopped improving.</p>"
            + (f"<p>Model against the best input feature, task by task: {html.escape('; '.join(added))}.</p>"
               if added else "")
            + _table(shown, [("task", "task"), ("representation", "representation"), ("score", "score"),
                             ("chance", "chance"), ("score_name", "measure"), ("n_train", "train items"),
                             ("n_test", "test items"), ("left out", "test utts left out"),
                             ("converged", "probe converged")], {"score": ".4f", "chance": ".4f"}))


def _segment_findings(doc: dict[str, Any]) -> list:
    from satool.analysis.verdicts import segment_verdict

    by_source = {r["source"]: r for r in doc["results"]}
    per_utt = doc.get("strict_per_utterance") or {}
    out = []
    mfcc = by_source.get("mfcc")
    if not mfcc or "mfcc" not in per_utt:
        return out
    mfcc = {**mfcc, "strict_per_utterance": per_utt["mfcc"]}
    for key, claim, paper in (
        ("best_head", "the best block-diagonal head beats MFCC (M3 79.99, M6 78.43, M9 78.19 vs 76.68)",
         "79.99 / 78.43 / 78.19"),
        ("best_hidden", "a hidden layer beats MFCC (M3 layer 11: 77.53 vs 76.68)", str(PAPER["hidden11_r"])),
    ):
        label = doc.get(key)
        if label in by_source and label in per_utt:
            out.append(segment_verdict(claim, paper, label, {**by_source[label], "strict_per_utterance": per_utt[label]},
                                       mfcc))
    return out


def _page(directory: Path, sections: list[tuple[str, str]]) -> str:
    from satool import __version__

    body = "".join(f'<section><h2>{html.escape(title)}</h2>{content}</section>' for title, content in sections)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>satool report: {html.escape(directory.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }}
h1 {{ font-size: 1.6em; }} h2 {{ border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: .9em; }}
th, td {{ border: 1px solid #ddd; padding: .3em .6em; text-align: left; vertical-align: top; }}
th {{ background: #f3f3f3; }} figure {{ margin: 1em 0; }} figcaption {{ font-size: .85em; color: #555; }}
.file {{ color: #999; }} .missing {{ color: #a33; }}
</style></head>
<body data-figures="pending">
<h1>satool report: {html.escape(str(directory))}</h1>
<p>Understanding self-attention of a self-supervised speech transformer, after Yang, Liu &amp; Lee,
<i>Understanding Self-Attention of Self-Supervised Audio Transformers</i> (Interspeech 2020).
Made by satool {html.escape(__version__)}; rebuild with <code>satool report {html.escape(str(directory))}</code>.</p>
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
