"""`satool demo` against its time budgets: --quick <= 1 min, the full demo (three models) <= 15 min.

    python benchmarks/bench_demo.py [--quick]

Runs the demo in a fresh temporary directory and prints each stage's time from
the demo's own state file, and the total as a fraction of the budget. The
budget is an absolute time on 2 CPU cores; run it on an otherwise idle machine
(the test suite only checks that the demo works, not how long it takes).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _bench import print_table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only the --quick demo (CI smoke-test size)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="satool-bench-demo-"))
    try:
        runs = [("--quick", 60.0)] + ([] if args.quick else [("full", 900.0)])
        for name, budget in runs:
            out = work / name.strip("-")
            command = [sys.executable, "-m", "satool", "demo", "--out", str(out)] + (["--quick"] if name == "--quick" else [])
            began = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            total = time.perf_counter() - began
            stages = json.loads((out / "demo-state.json").read_text())["done"]
            models = sorted(p.parent.name for p in out.glob("*/demo-state.json"))
            for model in models:  # every model's stages, in the order they ran
                done = json.loads((out / model / "demo-state.json").read_text())["done"]
                stages.update({f"{model}/{stage}": info for stage, info in done.items()})
            stages["study"] = stages.pop("study", {})
            by_stage: dict[str, float] = {}
            for key, info in stages.items():
                by_stage[key.split("/")[-1]] = by_stage.get(key.split("/")[-1], 0.0) + info.get("seconds", 0.0)
            rows = [[stage, info.get("seconds", 0.0)] for stage, info in stages.items()]
            rows += [[f"all models: {stage}", seconds] for stage, seconds in by_stage.items() if len(models) > 1
                     and stage not in ("corpus", "study")]
            rows.append(["total (wall, incl. start-up and report)", total])
            rows.append([f"fraction of the {budget / 60:.0f}-minute budget (target <= 1)", total / budget])
            print_table(f"satool demo {name}", ["stage", "seconds"], rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
