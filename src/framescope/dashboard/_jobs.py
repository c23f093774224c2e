"""Latest-wins background jobs: one worker thread per channel.

A job is a callable returning an iterator of progressive results (typically
:func:`framescope.engine.iter_run`). A newer submission to a channel makes the job running
there stale: its thread drops it at its next result and closes the iterator, which for
``iter_run`` cancels the partitions still queued on the cluster. Only the newest pending
submission is kept, and jobs of one channel never overlap, so a burst of edits (a drag)
does not pile up on the workers; channels (one per detector, the frame, COM) run side by
side.

A job may run ``min_run`` seconds (default 0.25) before a newer submission preempts it.
Without that grace a drag, whose edits come faster than one image takes, would cancel every
job before it completes and show no complete image until the mouse stops; with it, short
jobs finish back to back with the latest edit, and long ones are still cancelled early.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["JobManager"]

log = logging.getLogger(__name__)

Job = Callable[[], Iterator[Any]]
OnUpdate = Callable[[Any], None]
OnError = Callable[[BaseException], None]


@dataclass(slots=True)
class _Request:
    generation: int
    job: Job
    on_update: OnUpdate
    on_error: OnError | None


class _Channel:
    def __init__(self, name: str, min_run: float) -> None:
        self.name = name
        self.min_run = min_run
        self.cond = threading.Condition()
        self.generation = 0  # of the latest submission
        self.cancelled = 0  # jobs up to this generation are cancelled
        self.pending: _Request | None = None
        self.running = False
        self.started = 0.0
        self.closed = False
        self.thread = threading.Thread(target=self._loop, name=f"framescope-dashboard-{name}",
                                       daemon=True)
        self.thread.start()

    def submit(self, job: Job, on_update: OnUpdate, on_error: OnError | None) -> int:
        with self.cond:
            self.generation += 1
            self.pending = _Request(self.generation, job, on_update, on_error)
            self.cond.notify_all()
            return self.generation

    def cancel(self) -> None:
        with self.cond:
            self.cancelled = self.generation
            self.pending = None
            self.cond.notify_all()

    def stale(self, generation: int) -> bool:
        """Cancelled, or a newer job waits and this one has had its ``min_run``."""
        if self.closed or generation <= self.cancelled:
            return True
        pending = self.pending
        return (pending is not None and pending.generation > generation
                and time.monotonic() - self.started >= self.min_run)

    def idle(self) -> bool:
        return not self.running and self.pending is None

    def _loop(self) -> None:
        while True:
            with self.cond:
                while self.pending is None and not self.closed:
                    self.cond.wait()
                if self.closed:
                    return
                req, self.pending, self.running = self.pending, None, True
                self.started = time.monotonic()
            try:
                self._run(req)
            finally:
                with self.cond:
                    self.running = False
                    self.cond.notify_all()

    def _run(self, req: _Request) -> None:
        iterator: Iterator[Any] | None = None
        if self.stale(req.generation):
            return
        try:
            iterator = req.job()
            for item in iterator:
                if self.stale(req.generation):
                    break  # a newer edit wins; closing below cancels the stale futures
                req.on_update(item)
        except Exception as exc:
            if self.stale(req.generation):
                return
            if req.on_error is None:
                log.exception("dashboard job %r failed", self.name)
            else:
                req.on_error(exc)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()


class JobManager:
    """Runs the latest job of each named channel in that channel's thread.

    Parameters
    ----------
    min_run : float
        Seconds a job runs before a newer submission to its channel preempts it.

    Examples
    --------
    >>> jobs = JobManager()
    >>> seen = []
    >>> _ = jobs.submit("demo", lambda: iter(range(3)), seen.append)
    >>> jobs.wait(timeout=5), seen
    (True, [0, 1, 2])
    >>> jobs.close()
    """

    def __init__(self, min_run: float = 0.25) -> None:
        self.min_run = min_run
        self._channels: dict[str, _Channel] = {}
        self._lock = threading.Lock()
        self._closed = False

    def _channel(self, name: str) -> _Channel:
        with self._lock:
            if self._closed:
                raise RuntimeError("JobManager is closed")
            channel = self._channels.get(name)
            if channel is None:
                channel = self._channels[name] = _Channel(name, self.min_run)
            return channel

    def submit(self, channel: str, job: Job, on_update: OnUpdate,
               on_error: OnError | None = None) -> int:
        """Run ``job()`` in ``channel`` after (or instead of) the job running there.

        The running job becomes stale once it has run ``min_run`` seconds; a job that was
        waiting is replaced. ``on_update`` gets every item the job yields (in the channel's
        thread) until the job is finished or stale; ``on_error`` gets an exception raised by
        a job that is not stale (default: logged). Returns the job's number in its channel.
        """
        return self._channel(channel).submit(job, on_update, on_error)

    def cancel(self, channel: str) -> None:
        """Drop the pending job of ``channel`` and make its running job stale."""
        with self._lock:
            ch = self._channels.get(channel)
        if ch is not None:
            ch.cancel()

    def busy(self) -> list[str]:
        """Channels with a job running or pending."""
        with self._lock:
            channels = list(self._channels.values())
        return [ch.name for ch in channels if not ch.idle()]

    def wait(self, channels: list[str] | None = None, timeout: float | None = None) -> bool:
        """Block until ``channels`` (default: all) are idle; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            targets = [ch for name, ch in self._channels.items()
                       if channels is None or name in channels]
        for ch in targets:
            with ch.cond:
                while not ch.idle():
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    ch.cond.wait(left)
        return True

    def close(self) -> None:
        """Make every job stale and stop the threads (running jobs stop at their next step)."""
        with self._lock:
            self._closed = True
            channels = list(self._channels.values())
        for ch in channels:
            with ch.cond:
                ch.closed = True
                ch.pending = None
                ch.cond.notify_all()
