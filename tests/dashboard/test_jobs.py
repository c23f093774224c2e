from __future__ import annotations

import threading

import numpy as np
import pytest

from framescope.dashboard._jobs import JobManager


@pytest.fixture
def jobs():
    manager = JobManager(min_run=0)  # pure latest-wins; see test_min_run for the grace
    yield manager
    manager.close()


def gated(name: str, gates: list[threading.Event], log: list[str],
          started: threading.Event | None = None):
    """A job yielding one item per gate, recording when it is closed."""

    def job():
        if started is not None:
            started.set()
        try:
            for i, gate in enumerate(gates):
                assert gate.wait(10), f"{name}: gate {i} never opened"
                yield f"{name}{i}"
            log.append(f"{name} finished")
        except GeneratorExit:
            log.append(f"{name} closed")
            raise

    return job


def test_latest_wins_and_the_stale_job_is_closed(jobs):
    log: list[str] = []
    seen: list[str] = []
    first = threading.Event()
    a_gates = [threading.Event() for _ in range(3)]
    a_gates[0].set()

    def on_update(item):
        seen.append(item)
        first.set()

    jobs.submit("vi:bf", gated("a", a_gates, log), on_update)
    assert first.wait(10)  # job a is running and has published a0
    b_gates = [threading.Event() for _ in range(2)]
    for g in b_gates:
        g.set()
    jobs.submit("vi:bf", gated("b", b_gates, log), on_update)
    a_gates[1].set()  # a's next step: it is stale now, so the channel closes it
    assert jobs.wait(timeout=10)
    assert seen == ["a0", "b0", "b1"]  # nothing of a after b was submitted
    assert log == ["a closed", "b finished"]


def test_a_burst_of_edits_runs_only_the_last(jobs):
    log: list[str] = []
    seen: list[str] = []
    hold, started = threading.Event(), threading.Event()
    jobs.submit("c", gated("x", [hold], log, started), seen.append)
    assert started.wait(10)
    for i in range(5):  # all queued while x blocks: only the newest survives
        gate = threading.Event()
        gate.set()
        jobs.submit("c", gated(f"e{i}", [gate], log), seen.append)
    hold.set()
    assert jobs.wait(timeout=10)
    assert seen == ["e40"]
    assert log == ["x closed", "e4 finished"]


def test_min_run_lets_a_young_job_finish_then_runs_the_newest():
    jobs = JobManager(min_run=30)
    try:
        log: list[str] = []
        seen: list[str] = []
        gates = [threading.Event() for _ in range(3)]
        started = threading.Event()
        jobs.submit("c", gated("a", gates, log, started), seen.append)
        assert started.wait(10)
        for i in range(3):  # a drag: edits faster than a job takes
            gate = threading.Event()
            gate.set()
            jobs.submit("c", gated(f"e{i}", [gate], log), seen.append)
        for g in gates:
            g.set()
        assert jobs.wait(timeout=10)
        # the running job was young: it completed, then only the newest edit ran
        assert seen == ["a0", "a1", "a2", "e20"]
        assert log == ["a finished", "e2 finished"]
    finally:
        jobs.close()


def test_min_run_preempts_a_long_job():
    jobs = JobManager(min_run=0.05)
    try:
        log: list[str] = []
        gates = [threading.Event() for _ in range(3)]
        started = threading.Event()
        jobs.submit("c", gated("a", gates, log, started), lambda item: None)
        assert started.wait(10)
        gates[0].set()
        threading.Event().wait(0.1)  # a has run longer than min_run
        done = threading.Event()
        done.set()
        jobs.submit("c", gated("b", [done], log), lambda item: None)
        gates[1].set()
        assert jobs.wait(timeout=10)
        assert log == ["a closed", "b finished"]
    finally:
        jobs.close()


def test_channels_are_independent(jobs):
    seen: list[str] = []
    jobs.submit("a", lambda: iter(["a"]), seen.append)
    jobs.submit("b", lambda: iter(["b"]), seen.append)
    assert jobs.wait(timeout=10)
    assert sorted(seen) == ["a", "b"]
    assert jobs.busy() == []


def test_cancel_and_errors(jobs):
    log: list[str] = []
    gate = threading.Event()
    jobs.submit("c", gated("x", [gate], log), lambda item: log.append(item))
    jobs.cancel("c")
    gate.set()
    assert jobs.wait(timeout=10)
    assert "x0" not in log

    errors: list[BaseException] = []

    def boom():
        yield 1
        raise ValueError("bad mask")

    jobs.submit("d", boom, lambda item: None, errors.append)
    assert jobs.wait(timeout=10)
    assert [str(e) for e in errors] == ["bad mask"]


def test_closing_the_iter_run_generator_stops_a_stale_engine_job(jobs, small):
    """A real iter_run (sync: a yield per partition): the stale job stops after one
    partition, the new one completes."""
    from framescope.engine import iter_run
    from framescope.udf import SumFrame

    arr, frames = small
    closed: list[int] = []
    parts: list[tuple[str, int]] = []
    second_submitted = threading.Event()

    def job(tag):
        def run():
            n = 0
            try:
                for ds in iter_run(SumFrame(), arr, client="sync"):
                    n += 1
                    yield tag, n, ds
                    if tag == "old":
                        second_submitted.wait(10)
            except GeneratorExit:
                closed.append(n)
                raise
        return run

    results = []

    def on_update(item):
        tag, n, ds = item
        parts.append((tag, n))
        results.append(ds)

    jobs.submit("frame", job("old"), on_update)
    while not parts:
        threading.Event().wait(0.01)
    jobs.submit("frame", job("new"), on_update)
    second_submitted.set()
    assert jobs.wait(timeout=60)
    assert closed == [2]  # the old job was closed at its next partition, not run to the end
    assert [p for p in parts if p[0] == "old"] == [("old", 1)]
    assert [n for tag, n in parts if tag == "new"] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(results[-1]["sum"], frames.sum(axis=(0, 1)))
