"""Virtual detectors: every frame times every mask, summed (the mask GEMM)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from framescope.masks import MaskStack
from framescope.udf._base import UDF, Buffer, Meta, Tile

__all__ = ["ApplyMasks"]

# below this fraction of the window's pixels, gather the used pixels instead of the window
_GATHER_BELOW = 0.05


@dataclass(slots=True)
class _Plan:
    window: tuple[slice, slice]
    index: np.ndarray | None  # flat pixel indices (gather) or None (window)
    matrix: np.ndarray  # (pixels used, k) float32


class ApplyMasks(UDF):
    """Virtual images: ``intensity[p, k] = sum(frame_p * mask_k)`` for every scan position.

    Only the masks' bounding window of each frame is used; very sparse masks (small disks,
    thin rings) gather just their pixels. Frames are converted to float32 tile by tile, so
    no float copy of a partition ever exists.

    Parameters
    ----------
    masks : MaskStack or anything :meth:`MaskStack.from_any` accepts
        The virtual detectors.
    """

    def __init__(self, masks: Any) -> None:
        self.masks = MaskStack.from_any(masks)

    def params(self) -> dict[str, Any]:
        return {"masks": self.masks.key}

    def buffers(self, meta: Meta) -> dict[str, Buffer]:
        return {"intensity": Buffer("nav", "float32", (len(self.masks),), ("mask",),
                                    extra_coords=(self.masks.names,))}

    def prepare(self, meta: Meta) -> _Plan:
        dense = self.masks.dense(meta.frame_shape)  # (pixels, k), validated (shape, NaN)
        win = self.masks.bounding_box(meta.frame_shape)
        ys, xs = win.slices
        cube = dense.reshape(*meta.frame_shape, -1)[ys, xs]
        used = np.flatnonzero(np.any(cube != 0, axis=-1).ravel())
        matrix = np.ascontiguousarray(cube.reshape(-1, cube.shape[-1]))
        if used.size < _GATHER_BELOW * matrix.shape[0]:
            cols = np.arange(meta.frame_shape[1])[xs]
            rows = np.arange(meta.frame_shape[0])[ys]
            flat = (rows[:, None] * meta.frame_shape[1] + cols[None, :]).ravel()
            return _Plan(win.slices, flat[used], np.ascontiguousarray(matrix[used]))
        return _Plan(win.slices, None, matrix)

    def process_tile(self, tile: Tile, results: dict[str, np.ndarray], state: _Plan) -> None:
        if state.index is not None:
            pixels = tile.flat[:, state.index].astype(np.float32)
        else:
            ys, xs = state.window
            pixels = tile.data[:, ys, xs].astype(np.float32).reshape(len(tile), -1)
        np.matmul(pixels, state.matrix, out=results["intensity"])
