"""Run a UDF over a framescope DataArray: plan tasks, merge partial results, publish xarray."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from framescope.engine._connect import scheduler_address
from framescope.engine._executor import INLINE, SYNC, get_client, inline_pool
from framescope.engine._merge import Accumulator
from framescope.engine._tasks import Partial, prepared, run_block, run_source
from framescope.errors import ClusterError
from framescope.io._lazy import source_of
from framescope.udf._backend import resolve_backend
from framescope.udf._base import UDF, Meta

__all__ = ["iter_run", "run"]

log = logging.getLogger(__name__)


def _meta(arr: xr.DataArray, backend: str | None = None) -> Meta:
    ny, nx, h, w = arr.shape
    return Meta((ny, nx), (h, w), np.dtype(arr.dtype), resolve_backend(backend, arr.data))


def _roi_positions(roi: Any, meta: Meta) -> np.ndarray | None:
    if roi is None:
        return None
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


def _block(arr: xr.DataArray, iy: int, ix: int) -> np.ndarray:
    return arr.data.blocks[iy, ix].compute(scheduler="sync")


def _sync(udf: UDF, arr: xr.DataArray, meta: Meta, plan: list) -> Iterator[Partial]:
    """One task after another in the calling thread."""
    state = prepared(udf, meta)  # built once for all partitions in this process
    for kind, payload, pos in plan:
        if kind == "source":
            yield run_source(udf, payload, pos, meta, state)
        else:
            iy, ix, origin = payload
            yield run_block(udf, _block(arr, iy, ix), origin, pos, meta, state)


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
    from concurrent.futures import as_completed

    pool = inline_pool()
    # a shared state is read-only by contract; any other UDF prepares per task, as on a cluster
    state = prepared(udf, meta) if udf.share_state else None
    tasks = _split(plan, 2 * pool._max_workers)

    def block_task(iy: int, ix: int, origin: tuple[int, int], pos: np.ndarray) -> Partial:
        return run_block(udf, _block(arr, iy, ix), origin, pos, meta, state)

    futures = [
        pool.submit(run_source, udf, payload, pos, meta, state) if kind == "source"
        else pool.submit(block_task, *payload, pos)
        for kind, payload, pos in tasks
    ]

    def results() -> Iterator[Partial]:
        for fut in as_completed(futures):
            yield fut.result()

    return len(tasks), results(), futures


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

    def results() -> Iterator[Partial]:
        # with_results fetches in the client's event loop: no blocking round trip per task.
        # Each future is yielded once, even when a dead worker made dask run it again.
        for fut, part in as_completed(futures, with_results=True, loop=client.loop):
            if fut.status == "cancelled":
                # a lost scheduler connection cancels every future at once (the client
                # goes on reconnecting for its timeout): fail now with the address
                if client.status != "running":
                    raise _cluster_lost(client, address)
                raise part
            # merged: release the result, so that losing the worker that holds it does not
            # make the scheduler compute it again (a batched message, no round trip)
            fut.release()
            yield part

    return len(plan), results(), futures


def _merged(
    udf: UDF, arr: xr.DataArray, meta: Meta, roi: Any, client: Any, progress: bool
) -> Iterator[Accumulator]:
    """Yield the accumulator after every completed partition."""
    roi_pos = _roi_positions(roi, meta)
    acc = Accumulator(udf, meta)
    client = get_client(client)
    n, partials, futures = _submit(udf, arr, meta, roi_pos, client)
    bar = tqdm(total=n, desc=type(udf).__name__, unit="part", disable=not progress)
    try:
        for part in partials:
            seen = acc.done[part.positions]
            if seen.any():
                # sig/single buffers are sums: a partition merged twice would count twice
                if not seen.all():
                    raise RuntimeError(f"{type(udf).__name__}: a partial result overlaps "
                                       f"merged scan positions {part.positions[seen][:5]}")
                log.warning("%s: skipped a repeated partial result (%d positions from %d)",
                            type(udf).__name__, part.positions.size, part.positions[0])
                continue
            acc.add(part)
            bar.update(1)
            yield acc
    finally:
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
        yield acc


def _publish(acc: Accumulator, arr: xr.DataArray) -> xr.Dataset:
    return acc.publish(arr.coords, {"source": arr.attrs.get("source", "")})


def iter_run(
    udf: UDF,
    arr: xr.DataArray,
    *,
    roi: Any = None,
    client: Any = None,
    progress: bool = False,
    backend: str | None = None,
) -> Iterator[xr.Dataset]:
    """Run ``udf`` over ``arr`` and yield the merged result after each partition completes.

    Each yielded Dataset holds the UDF's results so far and a boolean ``done`` map over the
    scan. Closing the generator early (``break``) cancels the partitions still running.

    Parameters
    ----------
    udf : UDF
        What to compute.
    arr : xarray.DataArray
        ``(scan_y, scan_x, det_y, det_x)`` frames from :func:`framescope.open` or
        :func:`framescope.from_array` (or any such DataArray, persisted or not).
    roi : array of bool, optional
        Scan positions to process (scan shape); the others keep the buffers' fill value.
    client : None, "inline", "sync", str or distributed.Client
        Where to run; see :func:`framescope.engine.get_client`.
    progress : bool
        Show a ``tqdm.auto`` progress bar.
    backend : {None, "numpy", "cupy"}
        Array backend of the tiles; None: cupy if ``arr`` holds cupy blocks, else numpy.
        With "cupy" each tile is copied to the GPU and the UDF runs there; without cupy
        and a CUDA device it raises ``RuntimeError`` before any frame is read.
    """
    meta = _meta(arr, backend)
    for acc in _merged(udf, arr, meta, roi, client, progress):
        yield _publish(acc, arr)


def run(
    udf: UDF,
    arr: xr.DataArray,
    *,
    roi: Any = None,
    client: Any = None,
    progress: bool = False,
    backend: str | None = None,
) -> xr.Dataset:
    """Run ``udf`` over ``arr`` and return the final result as an ``xarray.Dataset``.

    See :func:`iter_run` for the parameters.
    """
    meta = _meta(arr, backend)
    # buffers are merged in place: only the last state matters
    (acc,) = deque(_merged(udf, arr, meta, roi, client, progress), maxlen=1)
    return _publish(acc, arr)
