"""`satool metric`: score every head (library: satool.headscores, satool.metrics)."""

from __future__ import annotations

from pathlib import Path

import typer

from satool.cli.common import parse_csv, print_json, progress_bar, results_console, say

DEFAULT_OUT = Path("results/metric")


def metric(
    source: Path | None = typer.Argument(None, help="An attention cache (default: the workspace's), or a "
                                         "checkpoint followed by CORPUS to score without writing a cache."),
    corpus: Path | None = typer.Argument(None, help="Corpus, only when SOURCE is a checkpoint."),
    by: str | None = typer.Option(None, "--by", help="Metrics, comma-separated (default: every registered one; "
                                  "see 'satool plugins')."),
    out: Path | None = typer.Option(None, "--out", "-o", help=f"Results directory (default {DEFAULT_OUT})."),
    as_json: bool = typer.Option(False, "--json", help="Print the per-head table as JSON on stdout."),
    top: int = typer.Option(4, min=1, help="Heads per metric in the attention-map figure."),
    allow_partial: bool = typer.Option(False, help="Use an unfinished cache's finished utterances."),
    alignments: Path | None = typer.Option(None, help="Alignments (checkpoint mode)."),
    split: str | None = typer.Option(None, help="Splits to use, comma-separated (checkpoint mode)."),
    max_utts: int | None = typer.Option(None, min=1, help="At most this many utterances (checkpoint mode)."),
    max_frames: int | None = typer.Option(None, min=1, help="Truncate utterances (checkpoint mode)."),
    device: str = typer.Option("auto", help="cpu, cuda, mps or auto (checkpoint mode)."),
) -> None:
    """Globalness, verticality, diagonality and weight of every head, and its category.

    G = mean entropy of a head's attention rows; V = -entropy of its mean row;
    D = -mean |query - key| / T; W = its largest weight (docs/science.md §3; plugin
    metrics too). Each head's category is the metric (G, V or D) in whose
    ranking it places best. Writes metrics.csv, metrics.json,
    head_distribution.png and top_heads.png (+ .npz) into --out.

    Examples: satool metric attention-cache/ --json
              satool metric model.ckpt LibriSpeech/ --split dev-clean   (no cache on disk)
    """
    from satool.headscores import model_stream, score_cache, score_heads, write_outputs
    from satool.plugins import get_plugins
    from satool.workspace import Workspace

    workspace = Workspace()
    registry = get_plugins().metrics
    names = parse_csv(by) or registry.names()
    metrics = [registry.get(n) for n in names]
    out = out or DEFAULT_OUT
    source = workspace.resolve("cache", source, hint="pass a cache made by 'satool extract'")
    example_id, example = None, None
    if (source / "manifest.json").exists():
        from satool.cache import open_cache

        if corpus is not None:
            from satool.errors import UsageError

            raise UsageError(f"{source} is a cache: CORPUS is only for checkpoints")
        cache = open_cache(source)
        cache.require_complete(allow_partial, warn=lambda m: say(m, "warning:"))
        with progress_bar(len(cache.utterance_ids), "scoring heads") as bar:
            scores = score_cache(cache, metrics, progress=bar.advance)
        example_id = cache.utterance_ids[0]
        example = cache.attention(example_id)
        step_s = cache.frames_per_step * 0.01
        workspace_paths = {"cache": source, "metrics": out}
    else:
        from satool.corpus import open_corpus
        from satool.models.base import load_model, resolve_device

        corpus = workspace.resolve("corpus", corpus, hint="pass CORPUS after the checkpoint")
        model = load_model(source, device=resolve_device(device))
        opened = open_corpus(corpus, alignments)
        utterances = opened.select(parse_csv(split) or None, max_utts)
        skipped: list = []
        first: dict = {}
        with progress_bar(len(utterances), "scoring heads") as bar:
            stream = model_stream(model, opened, utterances, max_frames=max_frames, skipped=skipped, first=first)
            layers, heads = list(range(1, model.num_layers + 1)), list(range(1, model.num_heads + 1))
            scores = score_heads(stream, metrics, layers, heads, progress=bar.advance,
                                 source={"checkpoint": str(source), "corpus": str(corpus)})
            bar.advance(len(skipped))
        for utt, reason in skipped:
            say(f"{utt}: {reason}", "skipped")
        example_id, example = first.get("id"), first.get("attention")
        step_s = model.step_s
        workspace_paths = {"checkpoint": source, "corpus": corpus, "metrics": out}
    previous = _earlier_results(out, scores)
    if previous is not None:  # --by X adds or replaces X's columns; the other metrics stay
        kept = [n for n in previous.values if n not in scores.values]
        scores = scores.merged_into(previous)
        if kept:
            say(f"kept {', '.join(kept)} from the earlier results in {out} (same cache and heads)")
    paths = write_outputs(scores, out, example_id, example, k=top, step_s=step_s)
    workspace.record("metric", workspace_paths, metrics=",".join(names))
    for name, reason in scores.failed.items():
        say(f"metric {name!r} failed and has no values: {reason}", "warning:")
    if as_json:
        print_json(scores.records())
    else:
        _print_summary(scores)
    say(f"wrote {', '.join(str(p) for p in paths.values())}")


def _earlier_results(out: Path, scores):
    """Results already in ``out`` for the same source (cache and model), or None."""
    from satool.errors import InputError
    from satool.headscores import HeadScores

    if not (out / "metrics.json").exists():
        return None
    try:
        previous = HeadScores.load(out)
    except InputError:
        return None
    same = all(previous.source.get(k) == scores.source.get(k) for k in ("cache", "sha256", "checkpoint", "corpus"))
    return previous if same else None


def _print_summary(scores) -> None:
    from collections import Counter

    import numpy as np
    from rich.table import Table

    from satool.headscores import NEAR_TIE, top_heads

    out = results_console()
    categories = Counter(scores.categories().ravel().tolist())
    out.print(f"{len(scores.layers) * len(scores.heads)} heads over {scores.utterances} utterances: "
              + ", ".join(f"{n} {c}" for c, n in sorted(categories.items()) if c))
    local = scores.locality()
    if local is not None:
        from satool.locality import LOCAL_RATIO

        ratio, offset = local
        best = np.unravel_index(np.nanargmax(np.where(np.isfinite(ratio), ratio, -np.inf)), ratio.shape)
        n_local = int(np.sum(ratio >= LOCAL_RATIO))
        out.print(f"local heads (favourite offset >= {LOCAL_RATIO:g}x the uniform weight): {n_local} of {ratio.size}; "
                  f"most local L{scores.layers[best[0]]}.H{scores.heads[best[1]]}: {ratio[best]:.1f}x at offset "
                  f"{int(offset[best]):+d} steps")
        if categories.get("diagonal") and n_local == 0:
            out.print("note: categories compare ranks; no head is local, so the heads ranked 'diagonal' do not "
                      "attend near themselves")
    table = Table("metric", "prune first", "top heads (highest value first)")
    for name in scores.values:
        if np.all(np.isnan(scores.values[name])):
            top = "n/a: no utterance gave a value (no ranking)"
        else:
            top = ", ".join(f"L{layer}.H{head}" for layer, head in top_heads(scores, name, 5))
        table.add_row(name, scores.prune_first.get(name, "highest"), top)
    out.print(table)
    for name in scores.values:
        tied = int(scores.near_ties(name).sum())
        if tied:
            say(f"{name}: {tied} of {scores.values[name].size} heads lie within {NEAR_TIE:g} x the largest value of "
                "another head: their order (and ranks, categories) is arbitrary", "note:")
