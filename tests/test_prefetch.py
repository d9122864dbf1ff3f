"""Read-ahead and write-behind threads: order, errors, and no write left running."""

from __future__ import annotations

import threading
import time

import pytest

from satool.prefetch import WriteBehind, prefetched


def test_prefetched_keeps_order_and_reads_ahead():
    loaded_by = []

    def load(i):
        loaded_by.append(threading.current_thread().name)
        return i * i

    assert list(prefetched(range(20), load)) == [(i, i * i) for i in range(20)]
    assert threading.current_thread().name not in loaded_by  # the loading ran in the background


def test_prefetched_reraises_a_load_error_in_the_consumer():
    def load(i):
        if i == 3:
            raise ValueError("bad item 3")
        return i

    seen = []
    with pytest.raises(ValueError, match="bad item 3"):
        for item, _ in prefetched(range(10), load):
            seen.append(item)
    assert seen == [0, 1, 2]


def test_prefetched_stops_its_thread_when_the_consumer_leaves_early():
    before = threading.active_count()
    for item, _ in prefetched(range(1000), lambda i: i):
        if item == 2:
            break
    deadline = time.time() + 5
    while threading.active_count() > before and time.time() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before


def test_write_behind_writes_in_order_one_behind():
    written, in_flight = [], []

    def write(i):
        in_flight.append(i)
        time.sleep(0.01)
        written.append(i)

    with WriteBehind() as behind:
        for i in range(6):
            behind(write, i)
            # the caller is at most one write ahead: every earlier write has finished
            assert written == list(range(i)) or written == list(range(i + 1))
    assert written == list(range(6))


def test_write_behind_reraises_a_write_error_at_the_next_call():
    def write(i):
        if i == 1:
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        with WriteBehind() as behind:
            behind(write, 0)
            behind(write, 1)
            behind(write, 2)  # waits for write 1 and raises its error here
            pytest.fail("the error of write 1 was not raised")


def test_write_behind_reraises_the_last_write_error_on_exit():
    def fail():
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        with WriteBehind() as behind:
            behind(fail)


def test_leaving_on_an_error_waits_for_the_write_in_flight_and_keeps_the_first_error():
    finished = threading.Event()

    def slow_write():
        time.sleep(0.3)
        finished.set()

    with pytest.raises(KeyboardInterrupt):
        with WriteBehind() as behind:
            behind(slow_write)
            raise KeyboardInterrupt  # Ctrl-C while the write runs
    assert finished.is_set(), "the with block returned while a write was still running"
