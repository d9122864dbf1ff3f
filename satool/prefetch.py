"""Overlap I/O with computation: read ahead, and write behind, in one background thread each."""

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


class WriteBehind:
    """Run write calls in one background thread, in order, at most one behind the caller.

    ``write_behind(fn, *args)`` waits for the previous write (re-raising its
    error), then starts ``fn(*args)`` and returns at once, so the next
    utterance is computed while this one is written. Leaving the ``with``
    block waits for the last write, also on an error or Ctrl-C, so whoever
    closes the file afterwards never races a write in progress.
    """

    def __enter__(self) -> WriteBehind:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="satool-write")
        self._pending = None
        return self

    def __call__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.wait()
        self._pending = self._pool.submit(fn, *args, **kwargs)

    def wait(self) -> None:
        """Block until the last write finished; re-raise its error."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.wait()
            else:  # already failing: finish the write in flight, keep the first error
                pending, self._pending = self._pending, None
                if pending is not None:
                    while True:
                        try:
                            pending.exception()
                            break
                        except KeyboardInterrupt:  # a second Ctrl-C: the write still has to end first
                            continue
        finally:
            self._pool.shutdown(wait=True)
