"""Frame number → flat scan position, and the per-series scan description."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from framescope.live._calibration import header_calibration
from framescope.live._dark import header_dark
from framescope.live._messages import ScanOrder, SeriesStart
from framescope.udf._base import Meta

__all__ = ["Series", "positions_of", "resolve_series"]

log = logging.getLogger(__name__)


def positions_of(indices: np.ndarray, scan_shape: tuple[int, int], order: ScanOrder,
                 ) -> np.ndarray:
    """Flat row-major scan positions of frame numbers ``indices``.

    ``raster``: frame ``i`` is position ``i``. ``snake``: odd scan rows run right to left.
    """
    indices = np.asarray(indices, dtype=np.int64)
    if order == "raster":
        return indices
    nx = scan_shape[1]
    y, x = np.divmod(indices, nx)
    return y * nx + np.where(y % 2 == 1, nx - 1 - x, x)


@dataclass(slots=True)
class Series:
    """What the receiver and the analysis know about the series being received.

    ``header`` holds the JSON-able header fields; ``arrays`` the large header arrays
    (``pixel_mask``, ``flatfield``, … see :class:`SeriesStart`) for the corrections stage.
    """

    series: int
    meta: Meta
    order: ScanOrder
    n_frames: int  # frame numbers 0..n_frames-1 are accepted (= scan positions)
    header: dict[str, Any] = field(default_factory=dict)
    from_header: bool = True  # False: started from a frame (header not seen)
    # (last and defaulted: a Series rebuilt from JSON in another process has none yet)
    arrays: dict[str, np.ndarray] = field(default_factory=dict, compare=False)
    #: a dark series: its header says so (:func:`header_dark`) or the user asked for it
    #: (:meth:`ZMQSource.take_dark`); a stream job reduces it to dark statistics
    dark: bool = False
    #: the :class:`~framescope.corrections.DarkStats` this series is corrected with (set by
    #: the stream job's analysis when it begins the series; None: no dark series yet)
    dark_stats: Any = field(default=None, compare=False)

    def positions(self, indices: np.ndarray) -> np.ndarray:
        return positions_of(indices, self.meta.scan_shape, self.order)


def resolve_series(start: SeriesStart, scan: tuple[int, int] | None,
                   order: ScanOrder | None, calibration: str | None = None) -> Series | str:
    """The series to receive, or why it cannot be (a message for the log).

    The user's ``scan``/``order`` win over the header's; without either the frames form one
    scan row. The series' calibration combines the header's fields (see
    :func:`header_calibration`) with the user's (``calibration``, JSON), the user's winning.
    """
    if start.frame_shape is None or start.dtype is None:
        return (f"series {start.series}: header carries no frame shape/dtype (e.g. stream1 "
                f"header_detail none)")
    shape = scan or start.scan_shape
    if shape is None:
        if not start.n_frames:
            return f"series {start.series}: no scan shape given and none in the header"
        shape = (1, start.n_frames)
        log.warning("series %d: no scan shape given or in the header; using one row of %d "
                    "frames", start.series, start.n_frames)
    if start.n_frames is not None and start.n_frames != shape[0] * shape[1]:
        log.warning("series %d: header announces %d frames, the %dx%d scan has %d positions; "
                    "frames beyond the scan are rejected", start.series, start.n_frames,
                    *shape, shape[0] * shape[1])
    found = header_calibration(start.header)
    cal = None
    if found or calibration is not None:
        from framescope.calibration import CalibrationError, combine

        try:
            cal = combine(found, calibration)
        except CalibrationError as exc:
            return f"series {start.series}: {exc}"
    meta = Meta((int(shape[0]), int(shape[1])), start.frame_shape, np.dtype(start.dtype),
                calibration=cal)
    return Series(start.series, meta, order or start.scan_order or "raster",
                  meta.n_positions, dict(start.header), arrays=dict(start.arrays),
                  dark=header_dark(start.header))
