"""``arr.fs``: framescope's analyses on any ``(scan_y, scan_x, det_y, det_x)`` DataArray."""

from __future__ import annotations

from typing import Any

import xarray as xr

from framescope.engine import iter_run, run
from framescope.errors import DimensionError
from framescope.io._lazy import DIMS
from framescope.udf import UDF, FrameStats, SumFrame

__all__ = ["FsAccessor"]


@xr.register_dataarray_accessor("fs")
class FsAccessor:
    """Analyses of 4D-STEM frames, run tile by tile by the framescope engine.

    Every method takes ``roi=`` (bool array over the scan), ``client=`` (None for the default
    cluster, ``"inline"``, a scheduler address or a ``distributed.Client``) and
    ``progress=``.
    """

    def __init__(self, arr: xr.DataArray) -> None:
        if tuple(arr.dims) != DIMS:
            raise DimensionError(f"framescope needs dims {DIMS}, found {tuple(arr.dims)}")
        self._arr = arr

    def run(self, udf: UDF, **opts: Any) -> xr.Dataset:
        """Run any UDF; see :func:`framescope.engine.run`."""
        return run(udf, self._arr, **opts)

    def iter_run(self, udf: UDF, **opts: Any):
        """Progressive results of any UDF; see :func:`framescope.engine.iter_run`."""
        return iter_run(udf, self._arr, **opts)

    def sum_frame(self, **opts: Any) -> xr.DataArray:
        """Sum of the frames (of the ROI), float64."""
        return run(SumFrame(), self._arr, **opts)["sum"]

    def mean_frame(self, **opts: Any) -> xr.DataArray:
        """Mean frame (of the ROI)."""
        res = run(SumFrame(), self._arr, **opts)
        return res["sum"] / res["n"]

    def frame_stats(self, **opts: Any) -> xr.Dataset:
        """Per-pixel ``mean``, ``var``, ``std``, ``min``, ``max`` and count ``n``."""
        return run(FrameStats(), self._arr, **opts).drop_vars("done")

    def pick(self, scan_y: int, scan_x: int) -> xr.DataArray:
        """The frame at one scan position (read directly, no job)."""
        return self._arr.isel(scan_y=scan_y, scan_x=scan_x).compute()

    def persist(self, client: Any = None) -> xr.DataArray:
        """Keep the partitions in the cluster's memory; later analyses skip the reads."""
        from framescope.engine import get_client

        c = get_client(client)
        if c == "inline":
            return self._arr.copy(data=self._arr.data.persist(scheduler="threads"))
        return self._arr.copy(data=c.persist(self._arr.data))
