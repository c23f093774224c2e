"""The dashboard's own UDF: mean and max frame in one pass (no panel import: workers load it)."""

from __future__ import annotations

from typing import Any

import numpy as np

from framescope.udf import UDF, Buffer, Meta, Tile

__all__ = ["FrameSummary"]


class FrameSummary(UDF):
    """Sum (``sum``, float64), maximum (``max``) and count (``n``) of the frames.

    One pass gives the detector view both its mean and its max frame.
    """

    def buffers(self, meta: Meta) -> dict[str, Buffer]:
        return {"sum": Buffer("sig", "float64"),
                "max": Buffer("sig", "float64", fill=-np.inf),
                "n": Buffer("single", "int64")}

    def process_tile(self, tile: Tile, results: dict[str, np.ndarray], state: Any) -> None:
        results["sum"] += np.add.reduce(tile.data, axis=0, dtype=np.float64)
        np.maximum(results["max"], tile.data.max(axis=0), out=results["max"])
        results["n"] += len(tile)

    def merge(self, dest: dict[str, np.ndarray], src: dict[str, np.ndarray]) -> None:
        dest["sum"] += src["sum"]
        np.maximum(dest["max"], src["max"], out=dest["max"])
        dest["n"] += src["n"]
