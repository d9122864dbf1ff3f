"""`satool report`: one self-contained HTML file with the paper's analyses for a run.

Everything is read back from the files the stages saved (found through the
directory's ``satool.toml``), so ``satool report DIR`` rebuilds the report
at any time. Figures are embedded as base64 PNGs: the file opens offline
and can be mailed around. A table sets this run's numbers beside the
paper's (SPEC sections 5 and 7), each with a one-line reading.
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
    for name in ("checkpoint", "corpus", "cache", "metrics", "segment", "relate", "probe", "prune"):
        path = ws.path(name)
        if path is None and name in ("metrics", "segment", "relate", "probe", "prune"):
            candidate = results / ("metric" if name == "metrics" else name)
            path = candidate if candidate.exists() else None
        found[name] = path
    return found


def pruning_readings(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The paper's pruning findings (SPEC section 7) checked on this run's curves."""
    if not rows:
        return []
    total = max(int(r["pruned"]) for r in rows)
    tasks = sorted({r["task"] for r in rows})

    def score(by: str, task: str, pruned: int) -> float | None:
        values = [float(r["score"]) for r in rows if r["by"] == by and r["task"] == task
                  and int(r["pruned"]) == pruned]
        return float(np.mean(values)) if values else None

    levels = sorted({int(r["pruned"]) for r in rows})
    half = min(levels, key=lambda p: abs(p - total / 2))
    early = min((p for p in levels if p > 0), key=lambda p: abs(p - min(24, total / 2)), default=0)
    out = []
    names = [n for n in ("globalness", "verticality", "diagonality", "weight", "random")
             if any(r["by"] == n for r in rows)]
    if "diagonality" in names and early:
        drops = {n: np.mean([score(n, t, 0) - score(n, t, early) for t in tasks]) for n in names}
        worst = max(drops, key=drops.get)
        out.append({
            "claim": f"diagonal heads matter most: pruning the most diagonal heads ({early} of {total} here; "
                     "paper: 24 of 144) drops all tasks sharply",
            "this run": "change after pruning: " + ", ".join(
                f"{n} {-100 * d:+.1f} pts" for n, d in sorted(drops.items(), key=lambda x: -x[1])),
            "reading": "reproduces" if worst == "diagonality" else
                       f"does not reproduce: pruning by {worst} costs most here (mean drop over tasks)",
        })
    if "verticality" in names and "speaker" in tasks and early:
        v = score("verticality", "speaker", 0) - score("verticality", "speaker", early)
        others = [score(n, "speaker", 0) - score(n, "speaker", early) for n in names if n != "verticality"]
        out.append({
            "claim": "vertical heads matter for frame-level speaker identity",
            "this run": f"speaker accuracy change after {early} heads: verticality {-100 * v:+.1f} pts, "
                        f"others {-100 * float(np.mean(others)):+.1f} pts on average",
            "reading": "reproduces" if v > float(np.mean(others)) + 0.01 else
                       "does not reproduce (within 1 point of the other orders)" if v > float(np.mean(others)) else
                       "does not reproduce",
        })
    if "globalness" in names and "phone" in tasks:
        before, after = score("globalness", "phone", 0), score("globalness", "phone", half)
        least = min([n for n in names if n != "random"],
                    key=lambda n: np.mean([score(n, t, 0) - score(n, t, half) for t in tasks]))
        line = {
            "claim": "global heads matter least; pruning > 50 % of heads by globalness keeps phone accuracy "
                     f"(paper: about {PAPER['phone_accuracy_before']:.0f} % before pruning)",
            "this run": f"phone accuracy {100 * before:.1f} % -> {100 * after:.1f} % after pruning {half} of {total} "
                        f"heads by globalness; least harmful order: {least}",
            "reading": ("reproduces" if before - after < 0.02 and least == "globalness" else
                        "partly reproduces" if before - after < 0.02 else "does not reproduce"),
        }
        out.append(line)
        if "speaker-utt" in tasks:
            b, a = score("globalness", "speaker-utt", 0), score("globalness", "speaker-utt", half)
            out.append({
                "claim": "utterance-level speaker accuracy is mostly kept when pruning by globalness",
                "this run": f"{100 * b:.1f} % -> {100 * a:.1f} % after {half} heads",
                "reading": "reproduces" if a >= 0.8 * b else "does not reproduce",
            })
    return out


def build_report(directory: str | Path, out: str | Path | None = None) -> Path:
    """Write ``directory/report.html`` (or ``out``) from the saved results."""
    directory = Path(directory).resolve()
    if not directory.is_dir():
        raise InputError("not a directory", path=directory)
    paths = _paths(directory)
    if not any(paths.values()):
        raise InputError("no satool results here (no satool.toml paths and no results/ directory)", path=directory)
    out = Path(out) if out is not None else directory / "report.html"
    sections: list[str] = []
    comparison: list[dict[str, str]] = []
    state = (_load_json(directory / "demo-state.json") or {}).get("done", {})

    # -- run summary -----------------------------------------------------------
    summary = []
    if state:
        timing = ", ".join(f"{k} {v.get('seconds', 0):.0f} s" for k, v in state.items())
        summary.append(f"<p>Stages and their run times: {html.escape(timing)}.</p>")
    corpus_manifest = _load_json(paths["corpus"] / "manifest.json") if paths["corpus"] else None
    if corpus_manifest:
        counts = corpus_manifest.get("counts", {})
        summary.append(f"<p>Corpus: synthetic, {corpus_manifest.get('total_hours', 0):.2f} h, "
                       f"{html.escape(json.dumps(counts))}.</p>")
    pre = state.get("pretrain", {})
    if pre.get("heldout_l1") is not None:
        summary.append(
            f"<p>Pre-training: held-out masked-frame L1 <b>{pre['heldout_l1']:.3f}</b> against "
            f"{pre['heldout_mean_frame_l1']:.3f} for predicting each utterance's mean frame "
            f"({100 * (1 - pre['heldout_l1'] / pre['heldout_mean_frame_l1']):.0f} % lower).</p>")
    if paths["checkpoint"]:
        loss = paths["checkpoint"].with_name(paths["checkpoint"].name + ".loss.png")
        summary.append(_img(loss, "Pre-training loss (masked-frame L1)", "60%"))
    sections.append(("Run", "".join(summary)))

    # -- heads -----------------------------------------------------------------
    if paths["metrics"] and (paths["metrics"] / "metrics.json").exists():
        doc = _load_json(paths["metrics"] / "metrics.json")
        rows = doc["heads_table"]
        per_layer: dict[int, dict[str, int]] = {}
        for r in rows:
            per_layer.setdefault(r["layer"], {"global": 0, "vertical": 0, "diagonal": 0})[r["category"]] += 1
        layer_rows = [{"layer": k, **v} for k, v in sorted(per_layer.items())]
        body = (
            "<p>Each head's globalness (mean entropy of its rows), verticality (negative entropy of its mean "
            "row) and diagonality (negative mean |q - k| / T); its category is the metric it ranks best in.</p>"
            + _img(paths["metrics"] / "top_heads.png", "Fig. 1: attention maps of the top heads per metric")
            + _table(layer_rows, [("layer", "layer"), ("global", "global"), ("vertical", "vertical"),
                                  ("diagonal", "diagonal")])
            + _img(paths["metrics"] / "head_distribution.png", "Head distribution, coloured by layer")
        )
        sections.append(("Which heads are global, vertical, diagonal (paper Fig. 1)", body))

    # -- segmentation ----------------------------------------------------------
    seg_dir = paths["segment"]
    if seg_dir and (seg_dir / "segment_results.json").exists():
        doc = _load_json(seg_dir / "segment_results.json")
        rows = doc["results"]
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
        by_source = {r["source"]: r for r in rows}
        mfcc = by_source.get("mfcc")
        head = by_source.get(doc.get("best_head") or "", None)
        hidden = by_source.get(doc.get("best_hidden") or "", None)
        if mfcc:
            comparison.append({"claim": "MFCC baseline R-value (TIMIT, strict, 20 ms)", "paper": f"{PAPER['mfcc_r']}",
                               "this run": f"{mfcc['strict_r_value']:.2f}",
                               "reading": "a different corpus (synthetic speech): compare the gaps, not the values"})
        if head and mfcc:
            better = head["strict_r_value"] > mfcc["strict_r_value"]
            comparison.append({
                "claim": "the best block-diagonal head beats MFCC (M3 79.99, M6 78.43, M9 78.19 vs 76.68)",
                "paper": "79.99 / 78.43 / 78.19",
                "this run": f"{head['source']}: {head['strict_r_value']:.2f} vs MFCC {mfcc['strict_r_value']:.2f}",
                "reading": "reproduces" if better else "does not reproduce: no head beats MFCC here",
            })
        if hidden and mfcc:
            comparison.append({
                "claim": "a hidden layer beats MFCC (M3 layer 11: 77.53 vs 76.68)", "paper": f"{PAPER['hidden11_r']}",
                "this run": f"{hidden['source']}: {hidden['strict_r_value']:.2f}",
                "reading": "reproduces" if hidden["strict_r_value"] > mfcc["strict_r_value"] else "does not reproduce",
            })

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
        vert = data["verticality"]
        if len(vert) > 2:
            rho = _spearman(vert, conc)
            comparison.append({
                "claim": "vertical heads focus on particular phones (Fig. 4)", "paper": "positive relation",
                "this run": f"Spearman rho(verticality, max concentration) = {rho:.2f} over {len(vert)} heads",
                "reading": "reproduces" if rho > 0.3 else "does not reproduce",
            })
        sections.append(("Which phones attend to which (paper Fig. 3 and 4)", body))

    # -- probing and pruning ---------------------------------------------------
    probe_rows = _read_csv(paths["probe"] / "probe_results.csv") if paths["probe"] else []
    if probe_rows:
        sections.append(("What the representations know", _table(
            probe_rows, [("task", "task"), ("score", "score"), ("chance", "chance"), ("score_name", "measure"),
                         ("n_train", "train items"), ("n_test", "test items")])))
    prune_rows = _read_csv(paths["prune"] / "prune_results.csv") if paths["prune"] else []
    if prune_rows:
        body = (_img(paths["prune"] / "prune_curves.png", "Fig. 5: pruning heads in each metric's order")
                + _img(paths["prune"] / "globalness_vs_weight.png",
                       "Fig. 6: positions of every head in the globalness and the weight order", "55%"))
        sections.append(("Which heads matter (paper Fig. 5 and 6)", body))
        for line in pruning_readings(prune_rows):
            comparison.append({"claim": line["claim"], "paper": "yes", "this run": line["this run"],
                               "reading": line["reading"]})

    if comparison:
        sections.insert(1, ("This run beside the paper", _table(
            comparison, [("claim", "finding (Yang, Liu & Lee 2020)"), ("paper", "paper"), ("this run", "this run"),
                         ("reading", "reading")])))
    out.write_text(_page(directory, sections))
    return out


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


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
