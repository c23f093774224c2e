"""Frame statistics over the scan (or an ROI): sum, mean, variance/std, min, max."""

from __future__ import annotations

from typing import Any

import numpy as np

from framescope.udf._backend import xp
from framescope.udf._base import UDF, Buffer, Meta, Tile
from framescope.udf._kernels import LazyKernel, fused_view, share_cores

__all__ = ["FrameStats", "SumFrame"]

sum_frames = LazyKernel("framescope.udf._fused", "sum_frames")
sum_events = LazyKernel("framescope.udf._sparse", "sum_events")

# events without values: one count each (the kernel takes an empty array for that)
_ONE_EACH = np.empty(0, np.float32)
_ONE_EACH.flags.writeable = False


class SumFrame(UDF):
    """The sum of all processed frames (``sum``, float64) and their count (``n``).

    Tiles of uint8/16/32 or float32 frames are summed by the fused ``sum_frames``
    kernel (integer counts exactly, floats in float64), others by numpy in float64.
    Tiles of events (counted data) are a bincount of their pixels, never densified.
    """

    def buffers(self, meta: Meta) -> dict[str, Buffer]:
        return {"sum": Buffer("sig", "float64"), "n": Buffer("single", "int64")}

    def prepare(self, meta: Meta) -> None:
        share_cores()  # prepare runs in the thread that runs the tiles

    def takes_events(self, meta: Meta) -> bool:
        return meta.backend == "numpy"

    def process_tile(self, tile: Tile, results: dict[str, np.ndarray], state: Any) -> None:
        ev = tile.events
        total = results["sum"]
        if ev is not None and isinstance(total, np.ndarray) and total.flags.c_contiguous:
            sum_events(ev.offsets, ev.indices, _ONE_EACH if ev.values is None else ev.values,
                       total.reshape(-1))
            results["n"] += len(tile)
            return
        data = fused_view(tile.data)
        if data is not None and results["sum"].flags.c_contiguous:
            sum_frames(data, results["sum"])
        else:
            results["sum"] += xp(tile.data).sum(tile.data, axis=0, dtype=np.float64)
        results["n"] += len(tile)


class FrameStats(UDF):
    """Per-pixel mean, variance, std, min and max over the processed frames.

    Variance uses per-tile centred sums combined with Chan et al.'s pairwise update, so it
    stays accurate for large counts with a large mean (no ``E[x²] - E[x]²`` cancellation).
    """

    def buffers(self, meta: Meta) -> dict[str, Buffer]:
        return {
            "n": Buffer("single", "int64"),
            "mean": Buffer("sig", "float64"),
            "m2": Buffer("sig", "float64"),
            "min": Buffer("sig", "float64", fill=np.inf),
            "max": Buffer("sig", "float64", fill=-np.inf),
        }

    def outputs(self, meta: Meta) -> dict[str, Buffer]:
        sig = Buffer("sig", "float64")
        return {"n": Buffer("single", "int64"), "mean": sig, "var": sig, "std": sig,
                "min": sig, "max": sig}

    def process_tile(self, tile: Tile, results: dict[str, np.ndarray], state: Any) -> None:
        data = tile.data.astype(np.float64)
        part = {
            "n": np.asarray(len(tile), dtype=np.int64),
            "mean": data.mean(axis=0),
            "min": data.min(axis=0),
            "max": data.max(axis=0),
        }
        part["m2"] = ((data - part["mean"]) ** 2).sum(axis=0)
        self.merge(results, part)

    def merge(self, dest: dict[str, np.ndarray], src: dict[str, np.ndarray]) -> None:
        na, nb = int(dest["n"]), int(src["n"])
        n = na + nb
        if nb == 0:
            return
        delta = src["mean"] - dest["mean"]
        dest["m2"] += src["m2"] + delta**2 * (na * nb / n)
        dest["mean"] += delta * (nb / n)
        m = xp(dest["min"])
        m.minimum(dest["min"], src["min"], out=dest["min"])
        m.maximum(dest["max"], src["max"], out=dest["max"])
        dest["n"][...] = n

    def finalize(self, results: dict[str, np.ndarray], meta: Meta) -> dict[str, np.ndarray]:
        n = int(results["n"])
        var = results["m2"] / n if n else np.full_like(results["m2"], np.nan)
        return {"n": results["n"], "mean": results["mean"], "var": var, "std": np.sqrt(var),
                "min": results["min"], "max": results["max"]}

