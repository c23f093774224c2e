"""Per-pixel extrema over the processed frames, in the frames' own dtype."""

from __future__ import annotations

from typing import Any

import numpy as np

from framescope.udf._backend import xp
from framescope.udf._base import UDF, Buffer, Meta, Tile

__all__ = ["MaxFrame"]


def _lowest(dtype: np.dtype) -> float:
    """The identity of ``maximum`` for ``dtype``: its lowest value (-inf for floats)."""
    if dtype.kind in "iu":
        return float(np.iinfo(dtype).min)  # -2**63 and 0 are exact as floats
    if dtype.kind == "f":
        return -np.inf
    if dtype.kind == "b":
        return 0.0
    raise TypeError(f"MaxFrame: expected integer, float or bool frames, found {dtype}")


class MaxFrame(UDF):
    """Per-pixel maximum over the processed frames (``max``, ``sig``, the frames' dtype).

    Much cheaper than :class:`FrameStats` when only the maximum is wanted: one vectorised
    ``np.maximum.reduce`` per tile on the raw values (no float64 copy), tiles and tasks
    combined with ``np.maximum`` (cupy's on GPU tiles). The result keeps the frames' dtype
    (native byte order), so counts stay exact. NaN propagates, as in ``ndarray.max``.

    Pixels of a run over no frame at all (an empty ROI) keep the dtype's lowest value.

    Examples
    --------
    >>> import framescope
    >>> frames = np.arange(2 * 3 * 2 * 2, dtype=np.uint16).reshape(2, 3, 2, 2)
    >>> res = framescope.run(MaxFrame(), framescope.from_array(frames), client="inline")
    >>> res["max"].values.tolist()
    [[20, 21], [22, 23]]
    """

    def buffers(self, meta: Meta) -> dict[str, Buffer]:
        dtype = meta.dtype.newbyteorder("=")
        return {"max": Buffer("sig", dtype.name, fill=_lowest(dtype))}

    def process_tile(self, tile: Tile, results: dict[str, np.ndarray], state: Any) -> None:
        acc = results["max"]
        # ndarray.max is np.maximum.reduce (and exists on cupy tiles too)
        xp(acc).maximum(acc, tile.data.max(axis=0), out=acc)

    def merge(self, dest: dict[str, np.ndarray], src: dict[str, np.ndarray]) -> None:
        xp(dest["max"]).maximum(dest["max"], src["max"], out=dest["max"])
