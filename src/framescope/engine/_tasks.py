"""What one task does: read its frames tile by tile, run the UDF, return partial buffers.

Task functions are module-level so dask pickles them by reference; their arguments are the
UDF, a small picklable frame source (reader + scan layout) or one array block, and the scan
positions to process. Frames never travel from the client.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from framescope.io._base import frame_runs
from framescope.io._lazy import ReaderArray
from framescope.udf._backend import array_module, to_device, to_host, xp
from framescope.udf._base import UDF, Events, Meta, Tile
from framescope.udf._kernels import share_cores

__all__ = [
    "Partial",
    "event_tile_frames",
    "events_of",
    "local_source",
    "prepared",
    "run_block",
    "run_frames",
    "run_source",
    "tile_frames",
]

TILE_BYTES = 4 * 2**20
# a tile of events densified for a UDF that needs frames holds at most this many bytes
EVENT_TILE_DENSE_BYTES = 64 * 2**20
# events per tile when every UDF takes events: a tile costs ~40 us in Python (Tile, views,
# checks, kernel launch); the events stream through and need no cache-sized tile
EVENT_TILE_BYTES = 16 * 2**20

# Sources this process has opened, by the reader's token (path, size, mtime, header facts):
# a task's reader arrives unpickled without handles, and mapping the file afresh per task
# pays a page fault per 4 KiB of every partition (a fresh np.memmap reads ~14 GB/s here,
# one whose pages are mapped ~30 GB/s). A changed file has a new token, so never a stale map.
_SOURCES: OrderedDict[tuple[Any, ...], ReaderArray] = OrderedDict()
_SOURCES_MAX = 8
_sources_lock = threading.Lock()


def local_source(source: ReaderArray) -> ReaderArray:
    """This process's open equivalent of ``source`` (itself the first time it is seen)."""
    try:
        key = (*source.reader.token(), source.layout)
    except OSError:  # the reader will raise a clear error when it reads
        return source
    with _sources_lock:
        kept = _SOURCES.get(key)
        if kept is None:
            _SOURCES[key] = kept = source
            while len(_SOURCES) > _SOURCES_MAX:
                _SOURCES.popitem(last=False)
        else:
            _SOURCES.move_to_end(key)
        return kept


@dataclass(slots=True)
class Partial:
    """A task's result: nav values for ``positions`` and its ``sig``/``single`` accumulators."""

    positions: np.ndarray
    nav: dict[str, np.ndarray]
    acc: dict[str, np.ndarray]


def tile_frames(meta: Meta, tile_bytes: int = TILE_BYTES) -> int:
    """Frames per tile: ~``tile_bytes`` of raw frames, so a tile stays in cache."""
    return max(1, tile_bytes // (meta.n_pixels * meta.dtype.itemsize))


# prepared UDF states (UDF.share_state) of this process, by UDF class, key and Meta
_STATES: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_STATES_MAX = 16


def prepared(udf: UDF, meta: Meta) -> Any:
    """``udf.prepare(meta)``, built once per process for UDFs that declare ``share_state``."""
    if not udf.share_state:
        return udf.prepare(meta)
    key = (type(udf).__module__, type(udf).__qualname__, udf.key, meta)
    with _sources_lock:
        if key in _STATES:
            _STATES.move_to_end(key)
            return _STATES[key]
    state = udf.prepare(meta)  # outside the lock: may take a while, a race only repeats it
    with _sources_lock:
        _STATES[key] = state
        while len(_STATES) > _STATES_MAX:
            _STATES.popitem(last=False)
    return state


def _buffers(udf: UDF, meta: Meta, n: int) -> tuple[dict, dict, dict]:
    decl = udf.buffers(meta)
    mod = array_module(meta.backend)
    nav = {k: b.allocate(meta, n, mod) for k, b in decl.items() if b.kind == "nav"}
    acc = {k: b.allocate(meta, xp=mod) for k, b in decl.items() if b.kind != "nav"}
    return decl, nav, acc


def _check(udf: UDF, decl: dict, results: dict[str, np.ndarray], n: int, meta: Meta) -> None:
    for key, b in decl.items():
        got = results[key]
        want = b.shape(meta, n)
        if got.shape != want:
            raise ValueError(
                f"{type(udf).__name__}: buffer {key!r} ({b.kind}) has shape {got.shape} after "
                f"process_tile, expected {want}; assign into it in place ([...] = / +=)"
            )


def _process(
    udf: UDF, meta: Meta, data: Any, positions: np.ndarray, at: int, nav: dict, acc: dict,
    decl: dict, state: Any,
) -> None:
    """One tile: ``data`` holds the frames of ``positions``, whose nav rows start at ``at``."""
    _process_tile(udf, meta, Tile(to_device(data, meta.backend), positions), at, nav, acc,
                  decl, state)


def _process_tile(
    udf: UDF, meta: Meta, tile: Tile, at: int, nav: dict, acc: dict, decl: dict, state: Any,
) -> None:
    n = len(tile.positions)
    views = {k: v[at : at + n] for k, v in nav.items()}
    views.update(acc)
    udf.process_tile(tile, views, state)
    _check(udf, {k: decl[k] for k in views}, views, n, meta)


def _partial(positions: np.ndarray, nav: dict, acc: dict) -> Partial:
    # device buffers go home before leaving the task: merging and publishing are host-side
    return Partial(positions, {k: to_host(v) for k, v in nav.items()},
                   {k: to_host(v) for k, v in acc.items()})


def _run_tiles(
    udf: UDF, meta: Meta, positions: np.ndarray, read: Any, state: Any = None, split: int = 0,
) -> Partial:
    """Drive ``udf`` over ``positions``; ``read(first, n, out)`` fills a tile or returns a view.

    ``split`` > 0: tiles never cross a multiple of ``split`` positions (a scan row), so a
    reader of row-strided memory can hand out views.
    """
    share_cores()  # one kernel thread per task inside a dask worker
    if state is None:
        state = prepared(udf, meta)
    decl, nav, acc = _buffers(udf, meta, positions.size)
    per = tile_frames(meta)
    correct = _corrector(meta, per)
    raw_shape, raw_dtype = meta.raw or (meta.frame_shape, meta.dtype)
    buf = np.empty((per, *raw_shape), dtype=raw_dtype)
    for at, first, length in frame_runs(positions):
        off = 0
        while off < length:
            n = min(per, length - off)
            if split:
                n = min(n, split - (first + off) % split)
            data = read(first + off, n, buf[:n])
            if correct is not None:
                data = correct(data)
            _process(udf, meta, data, positions[at + off : at + off + n], at + off, nav, acc,
                     decl, state)
            off += n
    return _partial(positions, nav, acc)


def event_tile_frames(meta: Meta, events_per_frame: float,
                      tile_bytes: int = TILE_BYTES) -> int:
    """Frames per tile of events: ~``tile_bytes`` of events (4 bytes each), at least a
    dense tile's frames and at most :data:`EVENT_TILE_DENSE_BYTES` of dense frames."""
    dense = tile_frames(meta, tile_bytes)
    most = max(dense, EVENT_TILE_DENSE_BYTES // (meta.n_pixels * meta.dtype.itemsize))
    return int(min(most, max(dense, tile_bytes // max(4.0, 4.0 * events_per_frame))))


def events_of(source: ReaderArray, first: int, n: int) -> Events:
    """The events of scan positions ``first:first + n`` of an event reader's source.

    Positions that ``layout.sync_offset`` puts before or after the file's frames hold no
    events (they read as blank frames, like the dense path's zeros).
    """
    reader = source.reader
    lo = first + source.layout.sync_offset
    a, b = max(lo, 0), min(lo + n, reader.n_frames)
    if a >= b:
        return Events(np.zeros(n + 1, np.int64), np.empty(0, np.uint32), reader.frame_shape)
    offsets, indices, values = reader.read_events(a, b)
    if a == lo and b == lo + n:
        bits = getattr(reader, "read_bits", None)
        return Events(offsets, indices, reader.frame_shape, values,
                      None if bits is None else functools.partial(bits, a, b))
    rel = np.empty(n + 1, np.int64)
    rel[: a - lo + 1] = 0
    rel[a - lo + 1 : b - lo + 1] = offsets[1:]
    rel[b - lo + 1 :] = offsets[-1]
    return Events(rel, indices, reader.frame_shape, values)


def _run_events(
    udf: UDF, meta: Meta, positions: np.ndarray, source: ReaderArray, state: Any = None,
) -> Partial:
    """Drive ``udf`` over tiles of events; ``tile.data`` densifies only when a UDF asks.

    When every UDF of the task takes events, tiles hold ~16 MiB of events (many more frames
    than a dense tile, at most 64 MiB of them dense); otherwise a dense tile's frames,
    densified into one reused buffer.
    """
    share_cores()
    if state is None:
        state = prepared(udf, meta)
    decl, nav, acc = _buffers(udf, meta, positions.size)
    reader = source.reader
    per = tile_frames(meta)
    if udf.takes_events(meta):
        per = event_tile_frames(meta, getattr(reader, "n_events", 0) / max(1, reader.n_frames),
                                EVENT_TILE_BYTES)
    buf: list[np.ndarray] = []  # the dense buffer, allocated by the first tile that needs it

    def densify(events: Events) -> np.ndarray:
        if not buf:
            buf.append(np.empty((per, *meta.frame_shape), meta.dtype))
        return events.densify(buf[0][: len(events)])

    for at, first, length in frame_runs(positions):
        for off in range(0, length, per):
            n = min(per, length - off)
            events = events_of(source, first + off, n)
            tile = Tile(None, positions[at + off : at + off + n], events,
                        functools.partial(densify, events))
            _process_tile(udf, meta, tile, at + off, nav, acc, decl, state)
    return _partial(positions, nav, acc)


def _corrector(meta: Meta, per: int) -> Any:
    """``correct(raw_tile) -> corrected tile`` for ``meta.corrections`` (None without):
    one float32 buffer of ``per`` frames, reused for every tile of the task."""
    if meta.corrections is None:
        return None
    from framescope.corrections import plan_for

    p = plan_for(meta.corrections, meta.raw[0], meta.backend)
    out = array_module(meta.backend).empty((per, *p.shape), np.float32)

    def correct(data: Any) -> Any:
        return p.apply(to_device(data, meta.backend), out[: len(data)])

    return correct


def run_frames(
    udf: UDF, frames: np.ndarray, positions: np.ndarray, meta: Meta, state: Any = None
) -> Partial:
    """Run ``udf`` over frames already in memory, e.g. a batch received from a stream.

    Parameters
    ----------
    udf : UDF
    frames : ndarray, shape (n, det_y, det_x)
        The frames, of ``meta.dtype``.
    positions : ndarray of int, shape (n,)
        Flat scan position of each frame, unique, in any order (snake scans, out-of-order
        arrival); merge the returned :class:`Partial` into an
        :class:`~framescope.engine.Accumulator`.
    meta : Meta
    state : optional
        The UDF's prepared state; default :func:`prepared` (built once per process for
        ``share_state`` UDFs).
    """
    positions = np.asarray(positions, dtype=np.int64)
    if frames.ndim != 3 or len(frames) != len(positions):
        raise ValueError(f"run_frames: expected frames (n, h, w) for {len(positions)} "
                         f"positions, found shape {frames.shape}")
    if state is None:
        state = prepared(udf, meta)
    decl, nav, acc = _buffers(udf, meta, positions.size)
    per = tile_frames(meta)
    correct = _corrector(meta, per)
    for at in range(0, len(positions), per):
        data = frames[at : at + per]
        if correct is not None:
            data = correct(data)
        _process(udf, meta, data, positions[at : at + per], at, nav, acc, decl, state)
    return _partial(positions, nav, acc)


def run_source(
    udf: UDF, source: ReaderArray, positions: np.ndarray, meta: Meta, state: Any = None
) -> Partial:
    """Task: read ``positions`` (flat, ascending) from a file-backed source and run ``udf``.

    A reader of events (counted electrons: ``read_events``) gives tiles of events; with
    corrections, or on a GPU backend, its frames are densified and run like any others.
    """
    source = local_source(source)
    reader = source.reader
    if (callable(getattr(reader, "read_events", None)) and meta.corrections is None
            and meta.backend == "numpy"):
        return _run_events(udf, meta, positions, source, state)
    view = getattr(reader, "view", None)
    offset = source.layout.sync_offset
    zero_copy = view is not None and np.dtype(reader.dtype).isnative

    def read(first: int, n: int, out: np.ndarray) -> np.ndarray:
        lo = first + offset
        if zero_copy and lo >= 0 and lo + n <= reader.n_frames:
            v = view(lo, lo + n)  # memory-mapped frames: no copy at all
            if v is not None and v.dtype == (meta.raw[1] if meta.raw else meta.dtype):
                return v
        return source.read_positions(first, first + n, out)

    return _run_tiles(udf, meta, positions, read, state)


def run_block(
    udf: UDF,
    block: np.ndarray,
    origin: tuple[int, int],
    positions: np.ndarray,
    meta: Meta,
    state: Any = None,
) -> Partial:
    """Task: run ``udf`` over an in-memory block ``(ry, rx, det_y, det_x)`` at scan ``origin``.

    ``positions`` are the flat scan positions to process, all inside the block (an ROI may
    leave some out).
    """
    rx = block.shape[1]
    y0, x0 = origin
    nx = meta.scan_shape[1]
    if block.flags.c_contiguous:
        frames = block.reshape(-1, *block.shape[2:])

        def read(first: int, n: int, out: np.ndarray) -> np.ndarray:
            # consecutive scan positions are consecutive block frames within a row, and
            # across rows when the block spans whole rows; frame_runs never joins them else
            y, x = divmod(first, nx)
            i = (y - y0) * rx + (x - x0)
            return frames[i : i + n]

        return _run_tiles(udf, meta, positions, read, state)

    # a persisted slice of a larger chunk (e.g. ``isel`` of scan columns) is row-strided:
    # hand out views row by row instead of copying the whole block once per job
    def read_rows(first: int, n: int, out: np.ndarray) -> np.ndarray:
        y, x = divmod(first, nx)
        view = block[y - y0, x - x0 : x - x0 + n]
        if view.flags.c_contiguous:
            return view
        if not isinstance(view, np.ndarray):  # a device block: copy on the device
            return xp(view).ascontiguousarray(view)
        out[...] = view
        return out

    return _run_tiles(udf, meta, positions, read_rows, state, split=nx)
