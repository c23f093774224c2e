"""UDFs over a framescope DataArray: plan tasks, merge partial results, publish xarray."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import pairwise
from typing import Any

import numpy as np
import xarray as xr

from framescope.corrections import ENCODING_KEY, corrected_coords, corrected_meta
from framescope.engine._connect import get_client, scheduler_address
from framescope.engine._executor import INLINE, SYNC, inline_pool
from framescope.engine._group import Group, named_udfs, task_udf
from framescope.engine._job import Results, shaped
from framescope.engine._merge import Accumulator
from framescope.engine._tasks import Partial, prepared, run_block, run_source
from framescope.errors import ClusterError, DimensionError
from framescope.io._lazy import DEFAULT_PARTITION_MIB, DIMS, default_chunks, source_of
from framescope.udf._backend import resolve_backend
from framescope.udf._base import UDF, Meta

__all__ = ["iter_file", "merged_runs", "run_file", "tiled"]

log = logging.getLogger(__name__)


UDFs = UDF | Sequence[UDF] | Mapping[str, UDF]


def tiled(arr: xr.DataArray) -> xr.DataArray:
    """``arr`` as the engine reads it: file-backed, or dask chunks of whole frames.

    A numpy-backed (or lazily indexed, e.g. from a netCDF file) DataArray becomes dask
    chunks of whole scan rows, about 128 MiB each; dask chunks that split the frames
    (detector axes) are joined, since every UDF sees whole frames. File-backed arrays,
    and dask arrays chunked along the scan only, are returned as they are.
    """
    if source_of(arr) is not None:
        return arr
    if arr.chunks is None:
        rows = default_chunks(arr.shape, arr.dtype.itemsize, None, DEFAULT_PARTITION_MIB)
        # a unique token instead of dask's, which would hash all the bytes on every run
        return arr.chunk(dict(zip(arr.dims, rows, strict=True)), name_prefix="framescope-",
                         token=uuid.uuid4().hex)
    if any(len(c) > 1 for c in arr.chunks[2:]):
        return arr.chunk({"det_y": -1, "det_x": -1})
    return arr


def _meta(arr: xr.DataArray, backend: str | None = None) -> Meta:
    """The Meta UDFs see: the array's, corrected when it carries corrections."""
    return corrected_meta(_raw_meta(arr, backend), arr.encoding.get(ENCODING_KEY))


def _raw_meta(arr: xr.DataArray, backend: str | None = None) -> Meta:
    ny, nx, h, w = arr.shape
    calibration = None
    if "calibration" in arr.attrs:  # pydantic is imported only for calibrated data
        from framescope.calibration import Calibration

        calibration = Calibration.from_json(arr.attrs["calibration"])
    return Meta((ny, nx), (h, w), np.dtype(arr.dtype), resolve_backend(backend, arr.data),
                calibration)


def _roi_positions(roi: Any, meta: Meta) -> np.ndarray | None:
    if roi is None:
        return None
    if isinstance(roi, xr.DataArray) and set(roi.dims) == {"scan_y", "scan_x"}:
        roi = roi.transpose("scan_y", "scan_x")
    mask = np.asarray(roi)
    if mask.shape != meta.scan_shape or mask.dtype != bool:
        raise ValueError(f"roi: expected a bool array of the scan shape {meta.scan_shape}, "
                         f"found {mask.dtype} {mask.shape}")
    return np.flatnonzero(mask)


def _plan(arr: xr.DataArray, meta: Meta, roi: np.ndarray | None):
    """Yield (kind, payload, positions) per partition: file source ranges or array blocks."""
    chunks = arr.data.chunks
    nx = meta.scan_shape[1]
    source = source_of(arr)
    ys = np.cumsum((0, *chunks[0]))
    xs = np.cumsum((0, *chunks[1]))
    for iy in range(len(chunks[0])):
        for ix in range(len(chunks[1])):
            y0, y1, x0, x1 = ys[iy], ys[iy + 1], xs[ix], xs[ix + 1]
            pos = (np.arange(y0, y1)[:, None] * nx + np.arange(x0, x1)[None, :]).ravel()
            if roi is not None:
                pos = pos[np.isin(pos, roi, assume_unique=True)]
                if pos.size == 0:
                    continue
            if source is not None:
                yield "source", source, pos
            else:
                yield "block", (iy, ix, (int(y0), int(x0))), pos


class _Blocks:
    """The in-memory blocks of ``arr``, each computed in the calling thread when asked.

    Through ``to_delayed`` (one graph optimisation per job): a block of a persisted array is
    then handed over as it is, where ``arr.data.blocks[i, j].compute()`` copied it (tens of
    milliseconds per 128 MiB block, most of a new mask's latency).
    """

    def __init__(self, arr: xr.DataArray) -> None:
        self._delayed = arr.data.to_delayed()

    def __call__(self, iy: int, ix: int) -> np.ndarray:
        return self._delayed[iy, ix, 0, 0].compute(scheduler="sync")


def _sync(udf: UDF, arr: xr.DataArray, meta: Meta, plan: list) -> Iterator[list[Partial]]:
    """One task after another in the calling thread."""
    state = prepared(udf, meta)  # built once for all partitions in this process
    block = _Blocks(arr) if any(kind == "block" for kind, _, _ in plan) else None
    for kind, payload, pos in plan:
        if kind == "source":
            yield [run_source(udf, payload, pos, meta, state)]
        else:
            iy, ix, origin = payload
            yield [run_block(udf, block(iy, ix), origin, pos, meta, state)]


# counted data on the inline pool: at least this many bytes of events (4 each) per task
_EVENT_TASK_BYTES = 64 * 2**20


def _split(plan: list, pieces: int) -> list:
    """Cut file partitions into about ``pieces`` tasks so every thread has work."""
    if len(plan) >= pieces:
        return plan
    per = -(-pieces // max(1, len(plan)))
    out = []
    for kind, payload, pos in plan:
        if kind == "source":  # reads by position: any contiguous share is a task
            out += [(kind, payload, p) for p in np.array_split(pos, min(per, pos.size))]
        else:  # an in-memory block is computed once per task: keep it whole
            out.append((kind, payload, pos))
    return out


def _threads(udf: UDF, arr: xr.DataArray, meta: Meta, plan: list):
    """Tasks on the inline thread pool, a task per core at a time."""
    from concurrent.futures import FIRST_COMPLETED, wait

    pool = inline_pool()
    # a shared state is read-only by contract; any other UDF prepares per task, as on a cluster
    state = prepared(udf, meta) if udf.share_state else None
    tasks = _split(plan, 2 * pool._max_workers)
    reader = getattr(source_of(arr), "reader", None)
    if callable(getattr(reader, "read_events", None)) and len(tasks) > 2 * pool._max_workers:
        # counted data: a partition sized for dense frames holds little work in events
        # (a ring over 1024 frames at 0.05 e-/px: ~0.3 ms), about what a task's own Python
        # costs; join them into tasks of ~_EVENT_TASK_BYTES of events, at least two a thread
        positions = sum(pos.size for _, _, pos in tasks)
        work = 4 * getattr(reader, "n_events", 0) * positions / max(1, reader.n_frames)
        tasks = _coalesce(tasks, max(2 * pool._max_workers, int(work // _EVENT_TASK_BYTES)))
    block = _Blocks(arr) if any(kind == "block" for kind, _, _ in plan) else None

    def block_task(iy: int, ix: int, origin: tuple[int, int], pos: np.ndarray) -> Partial:
        return run_block(udf, block(iy, ix), origin, pos, meta, state)

    futures = [
        pool.submit(run_source, udf, payload, pos, meta, state) if kind == "source"
        else pool.submit(block_task, *payload, pos)
        for kind, payload, pos in tasks
    ]

    def results() -> Iterator[list[Partial]]:
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            yield [f.result() for f in done]

    return len(tasks), results(), futures


def _coalesce(plan: list, tasks: int) -> list:
    """Join file partitions into about ``tasks`` tasks (two per worker thread).

    A task costs the cluster a round trip of a few milliseconds, as long as a cheap UDF
    (a disk, a sum) takes on a 128 MiB partition; two tasks per thread keep every worker
    busy while the next one is on its way, and bound the imbalance to half a task.
    In-memory blocks stay one task each: they are used where they live.
    """
    src = [entry for entry in plan if entry[0] == "source"]
    if len(src) <= tasks:
        return plan
    sizes = np.cumsum([pos.size for _, _, pos in src])
    cut = np.searchsorted(sizes, np.linspace(0, sizes[-1], tasks + 1)[1:-1], side="right")
    bounds = [0, *cut.tolist(), len(src)]
    joined = [("source", src[a][1], np.concatenate([pos for _, _, pos in src[a:b]]))
              for a, b in pairwise(bounds) if b > a]
    return joined + [entry for entry in plan if entry[0] != "source"]


def _cluster_lost(client: Any, address: str) -> ClusterError:
    return ClusterError(address, f"lost the connection to the scheduler (client "
                        f"{client.status}); the job's partial results are discarded, "
                        "run it again once the scheduler is back")


def _submit(udf: UDF, arr: xr.DataArray, meta: Meta, roi: np.ndarray | None, client: Any):
    """Start every partition; return an iterator of Partial results as they complete."""
    plan = list(_plan(arr, meta, roi))
    if client == SYNC:
        return len(plan), _sync(udf, arr, meta, plan), None
    if client == INLINE:
        return _threads(udf, arr, meta, plan)
    from distributed import as_completed, futures_of

    address = scheduler_address(client)
    if client.status != "running":  # a lost scheduler: fail now, not after a reconnect wait
        raise _cluster_lost(client, address)
    if sum(kind == "source" for kind, _, _ in plan) > 2:  # asking for threads is a round trip
        plan = _coalesce(plan, 2 * max(1, sum(client.nthreads().values())))
    # client.map submits each kind in one message (a submit per task costs a round trip)
    futures = []
    src = [(payload, pos) for kind, payload, pos in plan if kind == "source"]
    if src:
        futures += client.map(run_source, [udf] * len(src), [p for p, _ in src],
                              [pos for _, pos in src], [meta] * len(src), pure=False)
    blk = [(payload, pos) for kind, payload, pos in plan if kind == "block"]
    if blk:
        # persisted partitions are used where they live; others are computed for the job
        held = {f.key: f for f in futures_of(arr.data)}
        keys = arr.data.__dask_keys__()
        wanted = [keys[iy][ix][0][0] for (iy, ix, _), _ in blk]
        todo = [i for i, k in enumerate(wanted) if k not in held]
        if todo:
            delayed = arr.data.to_delayed()
            got = client.compute([delayed[blk[i][0][0], blk[i][0][1], 0, 0] for i in todo])
            held.update({wanted[i]: f for i, f in zip(todo, got, strict=True)})
        inputs = [held.pop(k) for k in wanted]  # no reference kept: blocks free as they finish
        futures += client.map(run_block, [udf] * len(blk), inputs,
                              [origin for (_, _, origin), _ in blk], [pos for _, pos in blk],
                              [meta] * len(blk), pure=False)
        del inputs, held

    def results() -> Iterator[list[Partial]]:
        # with_results fetches in the client's event loop: no blocking round trip per task;
        # batches() hands over every result that arrived while the consumer was busy.
        # Each future is yielded once, even when a dead worker made dask run it again.
        done = as_completed(futures, with_results=True, loop=client.loop)
        for batch in done.batches():
            parts = []
            for fut, part in batch:
                if fut.status == "cancelled":
                    # a lost scheduler connection cancels every future at once (the client
                    # goes on reconnecting for its timeout): fail now with the address
                    if client.status != "running":
                        raise _cluster_lost(client, address)
                    raise part
                # merged: release the result, so that losing the worker that holds it does
                # not make the scheduler compute it again (a batched message, no round trip)
                fut.release()
                parts.append(part)
            yield parts

    return len(plan), results(), futures


def _prepare(udfs: UDFs, arr: xr.DataArray, backend: str | None,
             ) -> tuple[dict[str, UDF], UDF, xr.DataArray, Meta]:
    """Name the UDFs, make the one the tasks run (a :class:`Group` for several), check ``arr``."""
    if tuple(arr.dims) != DIMS:
        raise DimensionError(f"framescope needs dims {DIMS}, found {tuple(arr.dims)}")
    named = named_udfs(udfs)
    arr = tiled(arr)
    raw = _raw_meta(arr, backend)
    meta = corrected_meta(raw, arr.encoding.get(ENCODING_KEY))
    if meta.corrections is not None:
        named, meta = _folded(named, meta, raw)
    return named, task_udf(named), arr, meta


def _folded(named: dict[str, UDF], meta: Meta, raw: Meta) -> tuple[dict[str, UDF], Meta]:
    """Linear corrections folded into UDFs that can take them (virtual detectors): they
    then read the raw frames, no corrected copy of each tile; unchanged unless every UDF
    of the job can."""
    folded = {}
    for name, u in named.items():
        fold = getattr(u, "folded", None)
        f = fold(meta) if fold is not None else None
        if f is None:
            return named, meta
        folded[name] = f
    return folded, raw


def _merged(
    named: dict[str, UDF], task: UDF, arr: xr.DataArray, meta: Meta, roi: Any,
    client: Any, progress: bool,
) -> Iterator[tuple[dict[str, Accumulator], bool]]:
    """Yield the accumulators (one per UDF), and whether all tasks are in, as tasks complete."""
    roi_pos = _roi_positions(roi, meta)
    accs = {name: Accumulator(u, meta) for name, u in named.items()}
    first = next(iter(accs.values()))
    client = get_client(client, processes=task.needs_processes)
    n, partials, futures = _submit(task, arr, meta, roi_pos, client)
    desc = "+".join(type(u).__name__ for u in named.values())
    if progress:
        from tqdm.auto import tqdm  # loads ipywidgets in Jupyter: only when a bar is wanted

        bar = tqdm(total=n, desc=desc, unit="task")
    merged = 0
    try:
        for parts in partials:  # the tasks that completed since the last yield
            fresh = 0
            for part in parts:
                seen = first.done[part.positions]
                if seen.any():
                    # sig/single buffers are sums: a partition merged twice would count twice
                    if not seen.all():
                        raise RuntimeError(f"{desc}: a partial result overlaps merged scan "
                                           f"positions {part.positions[seen][:5]}")
                    log.warning("%s: skipped a repeated partial result (%d positions from "
                                "%d)", desc, part.positions.size, part.positions[0])
                    continue
                pieces = (task.split(part) if isinstance(task, Group)
                          else dict.fromkeys(accs, part))
                for name, acc in accs.items():
                    acc.add(pieces[name])
                fresh += 1
            if fresh:
                merged += fresh
                if progress:
                    bar.update(fresh)
                yield accs, merged == n
    finally:
        if progress:
            bar.close()
        stale = [f for f in futures or () if not f.done()]
        if stale:  # a closed generator (user break, newer job) stops stale work
            if hasattr(stale[0], "client"):
                if client.status == "running":  # else the scheduler cannot be told
                    client.cancel(stale)
            else:  # the inline pool: tasks not started yet are dropped
                for f in stale:
                    f.cancel()
    if n == 0:
        yield accs, True


def _publish(accs: dict[str, Accumulator], arr: xr.DataArray, udfs: UDFs) -> Results:
    attrs = {"source": arr.attrs.get("source", "")}
    corrections = arr.encoding.get(ENCODING_KEY)
    if corrections is not None:
        attrs["corrections"] = json.dumps(corrections.params())
    coords = corrected_coords(arr.coords, corrections)
    return shaped({name: acc.publish(coords, attrs) for name, acc in accs.items()}, udfs)


def merged_runs(udfs: UDFs, arr: xr.DataArray, *, roi: Any = None, client: Any = None,
                progress: bool = False, backend: str | None = None,
                ) -> tuple[Iterator[tuple[dict[str, Accumulator], bool]],
                           Callable[[dict[str, Accumulator]], Results], int]:
    """A file job's merged accumulators as tasks complete, how to publish them, and the
    number of scan positions it covers (for a :class:`~framescope.engine.Job`)."""
    named, task, arr, meta = _prepare(udfs, arr, backend)
    roi_pos = _roi_positions(roi, meta)
    n = meta.n_positions if roi_pos is None else int(roi_pos.size)
    gen = _merged(named, task, arr, meta, roi, client, progress)
    return gen, lambda accs: _publish(accs, arr, udfs), n


def iter_file(udf: UDFs, arr: xr.DataArray, *, roi: Any = None, client: Any = None,
              progress: bool = False, backend: str | None = None, interval: float = 0.0,
              ) -> Iterator[Results]:
    """:func:`framescope.iter_run` on a DataArray."""
    named, task, arr, meta = _prepare(udf, arr, backend)
    last = time.monotonic()
    for accs, complete in _merged(named, task, arr, meta, roi, client, progress):
        if complete or time.monotonic() - last >= interval:
            yield _publish(accs, arr, udf)
            last = time.monotonic()


def run_file(udf: UDFs, arr: xr.DataArray, *, roi: Any = None, client: Any = None,
             progress: bool = False, backend: str | None = None) -> Results:
    """:func:`framescope.run` on a DataArray."""
    named, task, arr, meta = _prepare(udf, arr, backend)
    # buffers are merged in place: only the last state matters
    ((accs, _),) = deque(_merged(named, task, arr, meta, roi, client, progress),
                         maxlen=1)
    return _publish(accs, arr, udf)
