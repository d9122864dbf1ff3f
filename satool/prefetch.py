"""Read ahead in a background thread while the caller computes (bounded queue)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def prefetched(items: Iterable[T], load: Callable[[T], Any], depth: int = 2) -> Iterator[tuple[T, Any]]:
    """Yield ``(item, load(item))`` in order, loading up to ``depth`` items ahead.

    Exceptions raised by ``load`` are re-raised in the consumer; leaving the
    loop early stops the thread.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def worker() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                q.put(("ok", item, load(item)))
        except BaseException as exc:  # surfaced in the consumer
            q.put(("error", None, exc))
        finally:
            q.put(("done", None, None))

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        while True:
            kind, item, value = q.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield item, value
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get(timeout=0.05)
            except queue.Empty:
                pass
