"""Run every benchmark in this folder (what `nox -s bench` runs); each prints its own table.

    python benchmarks/run_all.py [--quick]
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
QUICK_FLAG = {"bench_extract.py", "bench_demo.py", "bench_stream.py"}  # benchmarks that accept --quick


def main() -> int:
    quick = "--quick" in sys.argv[1:]
    failed = []
    for script in sorted(HERE.glob("bench_*.py")):
        args = [sys.executable, str(script)]
        if quick and script.name in QUICK_FLAG:
            args.append("--quick")
        print(f"\n=== {script.name} ===", flush=True)
        if subprocess.run(args).returncode != 0:
            failed.append(script.name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
