"""`satool merge`: the shards of a streaming pass as one result (library: satool.results.partial)."""

from __future__ import annotations

from pathlib import Path

import typer

from satool.cli.common import log, say
from satool.stages import default
from satool.stages import merge as stage


def merge(
    out: Path = typer.Argument(..., help="The results directory the shards wrote into (--out of "
                               "'satool metric|relate|segment CKPT CORPUS --shard i/N')."),
    kind: str | None = typer.Option(default(stage.Settings, "kind"), help="metric, relate or segment, when OUT "
                                    "holds the partial sums of several."),
) -> None:
    """Add the partial sums of the N shards in OUT/partial/ and write the results one process would have.

    Every shard 0..N-1 must be there and finished (rerun an unfinished one: it
    resumes), run with the same settings over disjoint utterances. Writes the
    stage's results and figures into OUT, as 'satool metric', 'relate' or 'segment'.

    Example: for i in 0 1 2 3; do satool metric model.ckpt LS/ --shard $i/4 -o res & done; wait
             satool merge res
    """
    from satool.workspace import Workspace

    workspace = Workspace()
    settings = stage.Settings(out=out, kind=kind)
    outputs = stage.run(settings, None, log)
    stage.record(workspace, settings, outputs)
    result = outputs.result
    if outputs.kind == "metric":
        say(f"merged {outputs.shards} shards ({result.scores.utterances} utterances scored); wrote "
            f"{', '.join(str(p) for p in result.paths.values())}")
    elif outputs.kind == "relate":
        say(f"merged {outputs.shards} shards ({result.relations.utterances} aligned utterances); wrote "
            f"relations into {out}")
    else:
        say(f"merged {outputs.shards} shards ({len(result.results.test_ids)} test utterances segmented); wrote "
            f"segmentation scores into {out}")
