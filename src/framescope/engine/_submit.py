"""One run API for files and streams: :func:`run`, :func:`iter_run`, :func:`submit`.

A file (any ``(scan_y, scan_x, det_y, det_x)`` DataArray) runs as a background thread over
the engine's tasks; a live source (:class:`framescope.live.ZMQSource`) runs in this
process (its receiver thread and an analysis thread), in ``processes`` receiver processes,
or as receivers on dask workers (``client=``). Every kind merges into the same
accumulators and publishes the same Datasets.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import xarray as xr

from framescope.engine._executor import INLINE, SYNC
from framescope.engine._group import named_udfs, task_udf
from framescope.engine._job import Job, Results, first
from framescope.engine._run import iter_file, merged_runs, run_file
from framescope.udf._base import UDF

__all__ = ["FileRunner", "is_stream", "iter_run", "run", "submit"]


def is_stream(source: Any) -> bool:
    """True for a live source (anything with the receiver's ``attach`` hook)."""
    return not isinstance(source, xr.DataArray) and hasattr(source, "attach")


class FileRunner:
    """A file job in a background thread: merges as tasks complete, publishes every
    ``interval`` s and at the end."""

    def __init__(self, udfs: Any, arr: xr.DataArray, *, roi: Any, client: Any,
                 progress: bool, backend: str | None, interval: float) -> None:
        self._gen, self._publish, n = merged_runs(udfs, arr, roi=roi, client=client,
                                                  progress=progress, backend=backend)
        self.expected, self.interval = n, interval
        self.udfs = named_udfs(udfs)
        self.source = str(arr.attrs.get("source", ""))
        self._lock = threading.Condition()
        self._latest: Results | None = None
        self._final: Results | None = None
        self._processed = 0
        self._state = "receiving"
        self._error = ""
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="framescope-job", daemon=True)

    def start(self) -> FileRunner:
        self._thread.start()
        return self

    def _loop(self) -> None:
        last = time.monotonic()
        try:
            for accs, complete in self._gen:
                if self._cancel.is_set():
                    self._gen.close()  # cancels the tasks still running
                    break
                if complete or time.monotonic() - last >= self.interval:
                    out = self._publish(accs)
                    done = int(next(iter(accs.values())).done.sum())
                    with self._lock:
                        self._latest, self._processed = out, done
                        if complete:
                            self._final, self._state = out, "finished"
                        self._lock.notify_all()
                    last = time.monotonic()
        except Exception as exc:  # reported by result() and status
            self._error = f"{type(exc).__name__}: {exc}"
        finally:
            with self._lock:
                if self._state != "finished":
                    self._state = "stopped"
                self._lock.notify_all()

    def status(self) -> Any:
        from framescope.live import Status

        return Status(state=self._state, frames_expected=self.expected,
                      frames_processed=self._processed, last_error=self._error)

    def partial(self) -> Results | None:
        return self._latest

    def wait(self, timeout: float | None, series: int | None = None) -> Results | None:
        with self._lock:
            self._lock.wait_for(lambda: self._state != "receiving", timeout)
            return self._final

    def finished(self) -> bool:
        return self._state != "receiving"

    def cancel(self) -> None:
        self._cancel.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join()

    @property
    def results(self) -> Results | None:
        return self._final


def submit(
    udfs: UDF | Any,
    source: Any,
    *,
    roi: Any = None,
    client: Any = None,
    processes: int = 1,
    backend: str | None = None,
    progress: bool = False,
    interval: float = 0.1,
    on_series_end: Callable[[Results], None] | None = None,
    on_frames: Callable[[Any, np.ndarray, np.ndarray], None] | None = None,
    kernel_threads: int = 1,
    mp_context: Any = "spawn",
    merge_host: str = "127.0.0.1",
    lost_after: float = 5.0,
    corrections: Any = None,
) -> Job:
    """Start ``udfs`` on a file or a live stream and return its :class:`Job` at once.

    Parameters
    ----------
    udfs : UDF, list of UDF or dict of name → UDF
        Results come in the same shape: a Dataset, a list or a dict of Datasets.
    source : xarray.DataArray or framescope.live.ZMQSource
        A ``(scan_y, scan_x, det_y, det_x)`` DataArray (see :func:`framescope.run`), or a
        live source (not started yet, or started by an earlier job). A stream job starts
        fresh results with each series and runs until :meth:`Job.cancel`.
    roi : array of bool, optional
        Files: scan positions to process.
    client : None, "inline", "sync", "local", str or distributed.Client
        Files: where tasks run (see :func:`framescope.engine.get_client`). Streams: None or
        "inline" receives in this process (``processes=1``) or in ``processes`` child
        processes; a dask ``Client``, ``"default"`` or a scheduler address runs
        ``processes`` receivers as long-running tasks on as many distinct dask workers.
    processes : int
        Streams: receivers sharing the stream (PUSH deals frames round-robin); more than
        one needs the source's ``scan=``. Their partial results merge in this process.
    backend : {None, "numpy", "cupy"}
        Files: array backend of the tiles.
    progress : bool
        Files: a ``tqdm`` progress bar.
    interval : float
        Files: seconds between published partial results.
    on_series_end : callable, optional
        Streams: called with each series' final results (keep it short: it runs in the
        analysis or merging thread).
    on_frames : callable, optional
        Streams in this process: called before the UDFs with ``(series, frames,
        positions)`` of every batch (the frames are a reused buffer: copy what you keep).
    kernel_threads : int
        Streams: numba threads of each analysis thread (default 1: the receiver needs a
        core of its own).
    mp_context : str or multiprocessing context
        Streams with ``processes`` > 1: how receiver processes start.
    merge_host : str
        Parallel receivers: the address they send results to (the merging sockets bind
        it). 127.0.0.1 serves receivers on this machine; dask workers on other hosts need
        an address of this machine they can reach.
    lost_after : float
        Parallel receivers: seconds without a message after which a receiver is lost.
    corrections : framescope.corrections.Corrections or False, optional
        Applied to every frame (file tiles, received batches, in every receiver) before
        the UDFs see it; for files ``arr.fs.with_corrections`` attaches them instead.
        Streams, one receiver: by default what the series header states (a DECTRIS
        ``pixel_mask``, a ``flatfield`` the detector did not apply); False: none. Several
        receivers apply only given corrections (one of them sees the header).

    Returns
    -------
    Job
        Running; see :class:`Job` (``status``, ``partial()``, ``result()``, ``cancel()``).

    Raises
    ------
    ValueError
        Options that do not fit the source (``on_frames`` with several receivers, more
        ``processes`` than the cluster has workers, ``processes`` > 1 without a scan
        shape).
    RuntimeError
        A stream's receivers could not start (e.g. a bad endpoint).

    Examples
    --------
    >>> job = fs.submit({"vd": ApplyMasks(ring), "com": CenterOfMass()},
    ...                 fs.live.ZMQSource(endpoint, scan=(256, 256)))  # doctest: +SKIP
    >>> job.partial()["vd"]["intensity"].plot()  # doctest: +SKIP
    """
    named = named_udfs(udfs)
    desc = "+".join(type(u).__name__ for u in named.values())
    if not is_stream(source):
        if not isinstance(source, xr.DataArray):
            raise TypeError(f"source: expected an xarray.DataArray or a live source "
                            f"(framescope.live.ZMQSource), found {type(source).__name__}")
        runner = FileRunner(udfs, _corrected(source, corrections), roi=roi, client=client,
                            progress=progress, backend=backend, interval=interval)
        return Job(runner.start(), desc)
    if roi is not None or backend not in (None, "numpy"):
        raise ValueError("roi= and backend= apply to files; a stream job analyses every "
                         "frame that arrives, on the CPU")
    task = task_udf(named)
    if processes == 1 and client in (None, INLINE, SYNC):
        from framescope.engine._stream import StreamRunner

        runner = StreamRunner(source, named, udfs, task, on_series_end=on_series_end,
                              on_frames=on_frames, kernel_threads=kernel_threads,
                              corrections=corrections)
        return Job(runner.start(), f"{desc} on {source.endpoint}")
    from framescope.engine._receivers import ReceiversRunner

    if on_frames is not None:
        raise ValueError("on_frames= sees the frames of a receiver in this process: not "
                         "with several receivers (processes > 1) or a dask client=")
    if getattr(source, "record", None):
        raise ValueError(f"record={source.record!r}: a source records what arrives on its "
                         "own socket, in this process; receivers in other processes "
                         "(processes > 1, client=) do not record")
    launcher = None
    if client not in (None, INLINE, SYNC):
        from framescope.engine._dask_receivers import DaskLauncher

        launcher = DaskLauncher(client, processes)
    runner = ReceiversRunner(
        source.endpoint, source.protocol, named, udfs, task, processes=processes,
        scan=source.scan, order=source.order, source_options=source.options,
        mp_context=mp_context, launcher=launcher, merge_host=merge_host,
        kernel_threads=kernel_threads, on_series_end=on_series_end, lost_after=lost_after,
        corrections=corrections)
    return Job(runner.start(), f"{desc} on {source.endpoint} ({processes} receivers)")


def stream_results(job: Job, interval: float) -> Iterator[Results]:
    """Yield a stream job's partial results every ``interval`` s, then the final results
    of the series they belong to (the first one the job sees)."""
    last_done, target = -1, None
    while True:
        final = job.runner.wait(interval, target)
        if final is not None:
            yield final
            return
        if target is None and job.series is not None:
            target = job.series.series
        part = job.partial()
        if part is not None:
            head = first(part)
            n = int(head["done"].sum())
            if n != last_done and head.attrs.get("series") == target:
                last_done = n
                yield part
        if job.done():
            raise RuntimeError(f"stream job ended before its series did "
                               f"({job.status.last_error or job.status.state})")


def iter_run(
    udf: UDF | Any,
    source: Any,
    *,
    roi: Any = None,
    client: Any = None,
    progress: bool = False,
    backend: str | None = None,
    interval: float = 0.0,
    corrections: Any = None,
    **stream_options: Any,
) -> Iterator[Results]:
    """Run ``udf`` over a file or a stream series and yield the merged result as it grows.

    Tasks (or received batches) merged while the consumer was busy are merged into one
    yield, so a slow consumer (a dashboard drawing) never works through stale intermediate
    states; the last yield is always the complete result. Each yielded Dataset holds the
    UDF's results so far and a boolean ``done`` map over the scan; float results per scan
    position are NaN where not done (outside ``roi``, or not computed yet). Closing the
    generator early (``break``) cancels the tasks still running (stops the receivers).

    Parameters
    ----------
    udf : UDF, list of UDF or dict of name → UDF
        What to compute. Several UDFs run in one pass: each tile is read once and given to
        every UDF; a list yields a list of Datasets (in order), a dict a dict by name.
    source : xarray.DataArray or framescope.live.ZMQSource
        Any ``(scan_y, scan_x, det_y, det_x)`` DataArray: from :func:`framescope.open` or
        :func:`framescope.from_array`, numpy- or dask-backed with any chunks (frames split
        across detector chunks are joined), persisted or not, sliced with ``isel``/``sel``.
        Or a live source: results of its next (or current) series, until it ends.
    roi : array of bool, optional
        Scan positions to process (scan shape; numpy or a ``(scan_y, scan_x)`` DataArray).
    client : None, "inline", "sync", "local", str or distributed.Client
        Where to run; see :func:`framescope.engine.get_client` (streams: see
        :func:`submit`). Default: a cluster you connected to (:func:`framescope.connect`)
        or made the default, else threads of this process.
    progress : bool
        Show a ``tqdm.auto`` progress bar.
    backend : {None, "numpy", "cupy"}
        Array backend of the tiles; None: cupy if ``arr`` holds cupy blocks, else numpy.
        With "cupy" each tile is copied to the GPU and the UDF runs there; without cupy
        and a CUDA device it raises ``RuntimeError`` before any frame is read.
    interval : float
        Yield partial results at most every ``interval`` seconds, the first one no sooner
        than ``interval`` after the start (tasks go on merging in between); the complete
        result is always yielded. A display that redraws every 0.1 s passes 0.1: a job
        that is done sooner costs it no partial Dataset. Streams: at least 0.05 s.
    corrections : framescope.corrections.Corrections, optional
        Detector corrections applied to every frame (in the tile loop) before the UDFs see
        it; results then describe the corrected frames and name them in
        ``attrs["corrections"]``.
    **stream_options
        Streams: ``processes``, ``on_frames``, ... as for :func:`submit`.

    Examples
    --------
    >>> for ds in fs.iter_run(fs.udf.SumFrame(), arr):  # doctest: +SKIP
    ...     print(float(ds["done"].mean()))
    """
    if not is_stream(source):
        if stream_options:
            raise TypeError(f"iter_run: {', '.join(stream_options)} apply to live sources")
        yield from iter_file(udf, _corrected(source, corrections), roi=roi, client=client,
                             progress=progress, backend=backend, interval=interval)
        return
    job = submit(udf, source, client=client, roi=roi, backend=backend,
                 corrections=corrections, **_no_progress(progress), **stream_options)
    try:
        yield from stream_results(job, max(interval, 0.05))
    finally:
        job.cancel()


def run(
    udf: UDF | Any,
    source: Any,
    *,
    roi: Any = None,
    client: Any = None,
    progress: bool = False,
    backend: str | None = None,
    timeout: float | None = None,
    corrections: Any = None,
    **stream_options: Any,
) -> Results:
    """Run ``udf`` over a file, or a stream's next series, and return the final result.

    Several UDFs (a list or a dict) run in one pass over the data and give a list or a
    dict of Datasets. See :func:`iter_run` for the parameters; ``timeout`` (streams)
    bounds the wait for the series' end (``TimeoutError``).

    Examples
    --------
    >>> from framescope.udf import MaxFrame, SumFrame
    >>> total, brightest = fs.run([SumFrame(), MaxFrame()], arr)  # doctest: +SKIP
    """
    if not is_stream(source):
        if stream_options or timeout is not None:
            given = [*stream_options, *(["timeout"] if timeout is not None else [])]
            raise TypeError(f"run: {', '.join(given)} apply to live sources")
        return run_file(udf, _corrected(source, corrections), roi=roi, client=client,
                        progress=progress, backend=backend)
    with submit(udf, source, client=client, roi=roi, backend=backend,
                corrections=corrections, **_no_progress(progress),
                **stream_options) as job:
        return job.result(timeout)


def _corrected(arr: Any, corrections: Any) -> Any:
    """``arr`` with ``corrections`` attached (those given win over attached ones)."""
    if corrections is None or not isinstance(arr, xr.DataArray):
        return arr
    from framescope.corrections import with_corrections

    return with_corrections(arr, corrections)


def _no_progress(progress: bool) -> dict[str, Any]:
    if progress:
        raise ValueError("progress= applies to files; a stream job's progress is its "
                         "status (frames_processed of frames_expected)")
    return {}
