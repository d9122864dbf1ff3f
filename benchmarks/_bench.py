"""Shared helpers for the benchmarks: timing (best of N) and a printed table."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Smallest wall time of ``repeats`` calls (seconds), after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def best_times_interleaved(fns: dict[str, Callable[[], object]], rounds: int = 5) -> dict[str, float]:
    """Smallest wall time of each function (seconds) over ``rounds`` rounds that call them in
    turn, after one warm-up round: slow phases of a noisy machine hit every function alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(rounds + 1):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if round_:
                times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


def print_table(title: str, header: list[str], rows: list[list[object]]) -> None:
    """A plain-text table that reads well in a terminal and in CI logs."""
    cells = [[str(c) if not isinstance(c, float) else f"{c:.4g}" for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
