"""The handle of a running job, whatever runs it: a file job, one stream, many receivers.

A :class:`Job` is shaped like a future: :attr:`Job.status`, :meth:`Job.partial`,
:meth:`Job.result`, :meth:`Job.cancel`, :meth:`Job.done`. What runs the job is a *runner*
behind it; the handle only forwards, and a finalizer cancels the runner when the handle is
dropped without :meth:`Job.cancel`, so no receiver outlives the last reference to its job.
The runners' threads never hold the handle (they would keep it alive).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import xarray as xr

from framescope.engine._group import named_udfs, task_udf
from framescope.udf._base import UDF

__all__ = ["Job", "Runner", "first", "shaped"]

Results = xr.Dataset | list[xr.Dataset] | dict[str, xr.Dataset]


def shaped(out: dict[str, xr.Dataset], udfs: Any) -> Results:
    """The per-name Datasets in the shape the UDFs were given: one, a list or a dict."""
    if isinstance(udfs, UDF):
        return next(iter(out.values()))
    if isinstance(udfs, Mapping):
        return out
    return list(out.values())


def first(results: Results) -> xr.Dataset:
    """The first Dataset of a job's results, whatever their shape (their ``done`` maps and
    status attrs are the same)."""
    if isinstance(results, xr.Dataset):
        return results
    return results[0] if isinstance(results, list) else next(iter(results.values()))


class Runner(Protocol):
    """What a :class:`Job` drives (file jobs, one stream, parallel receivers)."""

    def status(self) -> Any: ...

    def partial(self) -> Results | None: ...

    def wait(self, timeout: float | None, series: int | None = None) -> Results | None: ...

    def finished(self) -> bool: ...

    def cancel(self) -> None: ...

    @property
    def results(self) -> Results | None: ...


class Job:
    """A running job: read results while it runs, wait for the end, cancel it.

    Made by :func:`framescope.submit` (a file or a stream); :func:`framescope.run` and
    :func:`framescope.iter_run` use one internally. A stream job starts fresh results with
    each series and runs until cancelled.

    Examples
    --------
    >>> job = fs.submit([ApplyMasks(ring), CenterOfMass()], source)  # doctest: +SKIP
    >>> job.partial()[0]["done"].mean()  # the image so far  # doctest: +SKIP
    >>> images, com = job.result(timeout=60)  # doctest: +SKIP
    >>> job.cancel()  # doctest: +SKIP
    """

    def __init__(self, runner: Runner, description: str = "") -> None:
        self._runner = runner
        self._description = description
        # dropped without cancel(): stop the runner's threads, receivers and sockets
        self._finalizer = weakref.finalize(self, runner.cancel)

    @property
    def status(self) -> Any:
        """Where the job stands: a :class:`framescope.live.Status` (state, counters)."""
        return self._runner.status()

    def partial(self) -> Results | None:
        """Results so far, in the shape of the UDFs given; None before any data came.

        Each Dataset has a ``done`` map; float results per scan position are NaN where not
        done. Thread-safe and cheap enough to poll a few times a second.
        """
        return self._runner.partial()

    def result(self, timeout: float | None = None) -> Results:
        """Final results: of the whole file, or of the current (else next) stream series.

        Raises
        ------
        TimeoutError
            Not finished within ``timeout`` seconds (see :attr:`status` for why, e.g.
            ``stalled``); the job goes on.
        RuntimeError
            The job was cancelled, or failed, before a result.
        """
        out = self._runner.wait(timeout)
        if out is None:
            if self._runner.finished():
                raise RuntimeError(f"{self._description or 'job'}: ended without a result "
                                   f"({self.status.last_error or self.status.state})")
            within = "" if timeout is None else f" within {timeout:g} s"
            raise TimeoutError(f"{self._description or 'job'}: no result{within} "
                               f"(state {self.status.state!r})")
        return out

    @property
    def results(self) -> Results | None:
        """The last final result (a stream: of the last finished series), or None."""
        return self._runner.results

    def update(self, udfs: Any) -> None:
        """Streams in this process: run ``udfs`` from the next series on.

        The current series goes on with the UDFs it started with, so its results stay
        whole; give UDFs in the same shape as before (one, a list or a dict) to keep the
        shape of the results.

        Raises
        ------
        TypeError
            A file job, or parallel receivers (their UDFs are fixed at the start).
        """
        update = getattr(self._runner, "update", None)
        if update is None:
            raise TypeError(f"{self._description}: only a stream job in this process "
                            "can change its UDFs (a file job or parallel receivers cannot)")
        named = named_udfs(udfs)
        update(named, udfs, task_udf(named))

    @property
    def udfs(self) -> dict[str, UDF]:
        """The UDFs whose results :meth:`partial` gives now, by name."""
        return dict(getattr(self._runner, "udfs", {}))

    def done(self) -> bool:
        """True once the job has ended: a file job finished, or any job cancelled."""
        return self._runner.finished()

    def cancel(self) -> None:
        """Stop the job and release what it holds (threads, receivers, sockets)."""
        self._finalizer()

    def latest_frame(self) -> np.ndarray | None:
        """The most recent frame received (streams; None for files or before any)."""
        latest = getattr(self._runner, "latest_frame", None)
        return None if latest is None else latest()

    @property
    def series(self) -> Any:
        """Streams: the current series (a :class:`framescope.live.Series`: ``series`` id,
        ``meta``, ``header``, ``arrays`` such as the detector's ``pixel_mask`` and
        ``flatfield``); None for files or before a series started."""
        merge = getattr(self._runner, "merge", None)
        return None if merge is None else merge.series

    def corrections(self, series: int | None = None) -> Any:
        """Streams: the corrections applied to the frames of series ``series`` (default
        the current one; the last few are kept), a
        :class:`~framescope.corrections.Corrections`; None for raw frames, files, a dark
        series or a series not seen."""
        merge = getattr(self._runner, "merge", None)
        if merge is None:
            return None
        with merge.lock:
            return merge.corrections if series is None else merge.applied.get(series)

    @property
    def receivers(self) -> list[dict[str, Any]]:
        """Where each receiver of a stream job runs and what it received (one dict each)."""
        return list(getattr(self._runner, "receivers", []))

    @property
    def runner(self) -> Runner:
        """What runs the job (e.g. its receivers' launcher, for diagnostics)."""
        return self._runner

    def __enter__(self) -> Job:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()

    def __repr__(self) -> str:
        s = self.status
        return (f"<Job {self._description} {s.state}: {s.frames_processed}"
                f"/{s.frames_expected or '?'} frames>")
