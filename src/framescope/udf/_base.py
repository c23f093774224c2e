"""The UDF protocol: declare result buffers, process tiles of frames, merge partial results.

A UDF never sees files, partitions or executors: the engine hands it tiles (a stack of whole
frames with their scan positions) and merges what it returns. The same UDF therefore runs on
files, in-memory arrays and live streams, inline or on a dask cluster.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from framescope.udf._kernels import LazyKernel

if TYPE_CHECKING:  # pydantic is imported only by data that carries a calibration
    from framescope.calibration import Calibration
    from framescope.corrections import Corrections

__all__ = ["UDF", "Buffer", "Events", "Meta", "Tile"]

densify_events = LazyKernel("framescope.udf._sparse", "densify_events")


@dataclass(frozen=True, slots=True)
class Buffer:
    """Declaration of one result buffer.

    Parameters
    ----------
    kind : {"nav", "sig", "single"}
        ``nav``: one value (of ``extra_shape``) per scan position, filled by placement;
        ``sig``: one per detector pixel; ``single``: one value (of ``extra_shape``) in all.
        ``sig`` and ``single`` buffers of different tasks are combined by :meth:`UDF.merge`.
    dtype : str
        numpy dtype name.
    extra_shape : tuple of int
        Trailing shape per element (e.g. ``(2,)`` for a COM vector, ``(k,)`` for k masks).
    extra_dims : tuple of str
        Names of the extra dimensions in the xarray result.
    fill : float
        Initial value; nav positions never processed (outside an ROI, missing frames) keep it.
    extra_coords : tuple of sequences
        Coordinate labels for each extra dimension (e.g. mask names), or empty.
    units : str
        Physical units of the values (``attrs["units"]`` of the published variable), or
        empty.
    coord_units : tuple of str
        Units of each extra dimension's coordinate labels (e.g. ``"mrad"`` for radial
        bins), or empty.
    coord : bool
        Publish the output as a coordinate along its dimensions rather than a data
        variable (e.g. the q of radial bins binned in pixels).
    """

    kind: Literal["nav", "sig", "single"]
    dtype: str
    extra_shape: tuple[int, ...] = ()
    extra_dims: tuple[str, ...] = ()
    fill: float = 0.0
    extra_coords: tuple[tuple[Any, ...], ...] = ()
    units: str = ""
    coord_units: tuple[str, ...] = ()
    coord: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("nav", "sig", "single"):
            raise ValueError(f"Buffer kind: expected 'nav', 'sig' or 'single', found {self.kind!r}")
        if self.extra_dims and len(self.extra_dims) != len(self.extra_shape):
            raise ValueError(f"Buffer extra_dims {self.extra_dims} do not match extra_shape "
                             f"{self.extra_shape}")

    def shape(self, meta: Meta, n_nav: int | None = None) -> tuple[int, ...]:
        """Array shape for ``n_nav`` scan positions (nav), the frame (sig) or one value."""
        if self.kind == "nav":
            return (meta.n_positions if n_nav is None else n_nav, *self.extra_shape)
        if self.kind == "sig":
            return (*meta.frame_shape, *self.extra_shape)
        return self.extra_shape

    def allocate(self, meta: Meta, n_nav: int | None = None, xp: Any = np) -> np.ndarray:
        """The buffer, filled with :attr:`fill`, from array module ``xp`` (numpy, cupy)."""
        return xp.full(self.shape(meta, n_nav), self.fill, dtype=self.dtype)


@dataclass(frozen=True, slots=True)
class Meta:
    """What a UDF may know about the data: shapes and dtype, never the data source.

    ``backend`` says where tiles live: ``"numpy"`` (host) or ``"cupy"`` (GPU); a UDF that
    supports cupy builds its state there in :meth:`UDF.prepare`. ``calibration`` is the
    data's physical calibration when it has one (masks given in mrad, results in physical
    units); None otherwise. With ``corrections`` the tiles a UDF sees are corrected
    frames: ``frame_shape`` and ``dtype`` (float32) are theirs, ``raw`` the shape and dtype
    of the frames read, and ``calibration`` describes the corrected frames (crop and
    binning applied).
    """

    scan_shape: tuple[int, int]
    frame_shape: tuple[int, int]
    dtype: np.dtype
    backend: Literal["numpy", "cupy"] = "numpy"
    calibration: Calibration | None = None
    corrections: Corrections | None = None
    raw: tuple[tuple[int, int], np.dtype] | None = None

    @property
    def n_positions(self) -> int:
        return self.scan_shape[0] * self.scan_shape[1]

    @property
    def n_pixels(self) -> int:
        return self.frame_shape[0] * self.frame_shape[1]


@dataclass(frozen=True, slots=True)
class Events:
    """The frames of a tile as events (counted electrons), CSR over the tile's frames.

    The events of frame ``i`` of the tile are ``indices[offsets[i]:offsets[i + 1]]``, flat
    row-major pixel indices ``det_y * frame_shape[1] + det_x``; a pixel may repeat within
    a frame. ``values`` weighs each event (None: one count each).

    Parameters
    ----------
    offsets : ndarray of int64, shape (n + 1,)
        Start of every frame's events in ``indices``, relative to the tile (``offsets[0]``
        is 0).
    indices : ndarray of uint16, uint32 or int32, shape (events,)
        Event pixels.
    frame_shape : (int, int)
        ``(det_y, det_x)`` of the frames.
    values : ndarray, shape (events,), optional
        Counts (or any weight) of every event; None means 1 each.
    bitmap_of : callable, optional
        ``bitmap_of() -> ndarray | None``: the tile's frames as bit planes (uint64, shape
        ``(n, words)``, see ``framescope.udf._bits``) where the source keeps them (frames
        with at most one event per pixel), else None. Called only by a UDF that uses them.
    """

    offsets: np.ndarray
    indices: np.ndarray
    frame_shape: tuple[int, int]
    values: np.ndarray | None = None
    bitmap_of: Callable[[], np.ndarray | None] | None = None

    def __len__(self) -> int:
        return self.offsets.shape[0] - 1

    def bitmap(self) -> np.ndarray | None:
        """The frames as bit planes, or None where the source has none (see
        ``bitmap_of``)."""
        return None if self.bitmap_of is None else self.bitmap_of()

    def densify(self, out: np.ndarray) -> np.ndarray:
        """The frames as dense counts in ``out`` (shape ``(n, *frame_shape)``), returned."""
        if out.shape != (len(self), *self.frame_shape) or not out.flags.c_contiguous:
            raise ValueError(f"Events.densify: expected a C-contiguous out of shape "
                             f"{(len(self), *self.frame_shape)}, found {out.shape}")
        values = self.values if self.values is not None else np.empty(0, out.dtype)
        densify_events(self.offsets, self.indices, values,
                       out.reshape(len(self), -1))
        return out


class Tile:
    """A stack of whole frames and the flat (row-major) scan positions they belong to.

    ``data`` is a reused buffer: copy anything you keep. ``flat`` is the same memory viewed as
    ``(frames, pixels)`` for matrix products.

    A tile of counted data also carries its :class:`Events` (``events``; None for frames).
    Its ``data`` is then densified on first access, once per tile for all UDFs of a job, so
    a UDF that knows nothing of events runs unchanged; one that does reads ``events`` and
    never touches ``data``.

    Parameters
    ----------
    data : ndarray or None
        The frames ``(n, det_y, det_x)``; None for a tile of events.
    positions : ndarray of int
        Flat scan position of every frame.
    events : Events, optional
        The frames as events.
    densify : callable, optional
        ``densify() -> data`` for a tile of events; default :meth:`Events.densify` into
        a new array of ``dtype``.
    dtype : numpy dtype
        dtype of the dense frames of a tile of events (default uint16).
    """

    __slots__ = ("_data", "_densify", "events", "positions")

    def __init__(self, data: np.ndarray | None, positions: np.ndarray,
                 events: Events | None = None, densify: Callable[[], np.ndarray] | None = None,
                 dtype: Any = np.uint16) -> None:
        if data is None and events is None:
            raise ValueError("Tile: expected data or events, found neither")
        self._data = data
        self.positions = positions
        self.events = events
        if data is None and densify is None:
            densify = functools.partial(_dense_of, events, np.dtype(dtype))
        self._densify = densify

    @property
    def data(self) -> np.ndarray:
        data = self._data
        if data is None:  # events: densified once, whichever UDF asks first
            data = self._data = self._densify()
        return data

    @property
    def flat(self) -> np.ndarray:
        return self.data.reshape(len(self), -1)

    def __len__(self) -> int:
        data = self._data
        return data.shape[0] if data is not None else len(self.events)

    def __repr__(self) -> str:
        kind = "events" if self.events is not None else "frames"
        return f"<Tile of {len(self)} {kind}>"


def _dense_of(events: Events, dtype: np.dtype) -> np.ndarray:
    return events.densify(np.empty((len(events), *events.frame_shape), dtype))


class UDF:
    """Base class of user-defined functions (map over tiles, merge partial results).

    Subclasses implement :meth:`buffers` and :meth:`process_tile`; optionally :meth:`prepare`
    (per-task state such as a mask matrix, built once per task and reused for every tile),
    :meth:`merge` (for ``sig``/``single`` buffers; default: add) and :meth:`finalize`
    (turn merged sums into the published result, e.g. a mean).

    A UDF instance is small and picklable: it travels to dask workers with each task.

    Examples
    --------
    A UDF that records each frame's maximum and the summed frame:

    >>> class MaxAndSum(UDF):
    ...     def buffers(self, meta):
    ...         return {"max": Buffer("nav", "float32"), "total": Buffer("sig", "float64")}
    ...     def process_tile(self, tile, results, state):
    ...         results["max"][:] = tile.flat.max(axis=1)
    ...         results["total"] += tile.data.sum(axis=0)
    """

    #: name used in progress bars and cache keys
    name: ClassVar[str] = ""
    #: True if :meth:`prepare`'s state depends only on :meth:`params` and the Meta and
    #: :meth:`process_tile` never modifies it: the engine then builds it once per worker
    #: process and reuses it for every task and job (mask matrices are not rebuilt per task)
    share_state: ClassVar[bool] = False
    #: True if :meth:`process_tile` holds the GIL for most of its time (pure Python loops):
    #: threads of one process would take turns, so without a cluster given the engine runs
    #: it on framescope's ``LocalCluster`` of worker processes instead of in this process
    needs_processes: ClassVar[bool] = False

    def buffers(self, meta: Meta) -> dict[str, Buffer]:
        """Declare the result buffers for data described by ``meta``."""
        raise NotImplementedError

    def takes_events(self, meta: Meta) -> bool:
        """Whether :meth:`process_tile` reads ``tile.events`` instead of ``tile.data`` on
        data of ``meta`` (default False).

        When every UDF of a job does, the engine sizes the tiles of counted data by their
        events rather than by dense bytes (many more frames per tile). A UDF that answers
        False still runs on counted data, on the densified frames.
        """
        return False

    def prepare(self, meta: Meta) -> Any:
        """Build per-task state once (masks as matrices, index arrays …); default None.

        Every tile of a task gets the same state; see :attr:`share_state` to share it
        between tasks.
        """
        return None

    def process_tile(self, tile: Tile, results: dict[str, np.ndarray], state: Any) -> None:
        """Process one tile; ``nav`` buffers in ``results`` are views for the tile's frames."""
        raise NotImplementedError

    def merge(self, dest: dict[str, np.ndarray], src: dict[str, np.ndarray]) -> None:
        """Combine ``src`` partial ``sig``/``single`` buffers into ``dest``; default: add."""
        for key, value in src.items():
            dest[key] += value

    def outputs(self, meta: Meta) -> dict[str, Buffer]:
        """Kinds and dims of what :meth:`finalize` returns; default: :meth:`buffers`."""
        return self.buffers(meta)

    def finalize(self, results: dict[str, np.ndarray], meta: Meta) -> dict[str, np.ndarray]:
        """Turn merged buffers into published results (default: unchanged)."""
        return results

    def params(self) -> dict[str, Any]:
        """JSON-able parameters that, with the class, define the result (for cache keys)."""
        return {}

    @property
    def key(self) -> str:
        """Stable hash of the class and :meth:`params` (same across processes and runs)."""
        blob = json.dumps(
            [type(self).__module__, type(self).__qualname__, self.params()],
            sort_keys=True, default=str,
        )
        return hashlib.blake2b(blob.encode(), digest_size=16).hexdigest()
