"""``CollectFrames``: the UDF that gathers (cropped, binned) frames for an iterative solver.

An iterative solver visits every frame many times, so it needs them all in memory: this
UDF keeps a float32 ``nav`` buffer of frames, filled by the engine from files or a live
stream alike (the solver reads the job's results, it never receives itself).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from framescope.udf._backend import xp
from framescope.udf._base import UDF, Buffer, Meta, Tile

__all__ = ["CollectFrames", "Window"]


class Window:
    """Where the collected frame lies on the detector.

    ``start``: top-left detector pixel of the crop; ``shape``: the collected (binned)
    frame; ``bin``; ``offset``: the zero frequency's position in collected px from
    ``(h//2, w//2)`` (0 when the centre falls on a binned pixel's centre).
    """

    def __init__(self, frame_shape: tuple[int, int], centre: tuple[float, float],
                 crop: int | tuple[int, int] | None, bin: int) -> None:
        det = frame_shape
        b = int(bin)
        if b < 1:
            raise ValueError(f"bin: expected a positive int, found {bin}")
        if crop is None:  # the largest window around the centre that the detector holds
            crop = tuple(2 * int(min(round(c), n - 1 - round(c))) + 1
                         for c, n in zip(centre, det, strict=True))
            if all(abs(c - n // 2) < 0.5 for c, n in zip(centre, det, strict=True)):
                crop = det
            crop = tuple(n - n % b for n in crop)
        size = (int(crop), int(crop)) if isinstance(crop, int | np.integer) else tuple(
            int(c) for c in crop)
        if len(size) != 2 or min(size) < b or any(s % b for s in size):
            raise ValueError(f"crop {crop!r}: expected a (h, w) of multiples of bin={b} "
                             f"within the {det[0]}x{det[1]} detector")
        self.bin = b
        self.shape = (size[0] // b, size[1] // b)
        start, offset = [], []
        for c, n, m in zip(centre, size, det, strict=True):
            # the zero frequency belongs on the centre of collected pixel (n/b)//2: original
            # pixel ((n/b)//2)*b + (b-1)/2 of the crop
            target = ((n // b) // 2) * b + (b - 1) / 2
            s = math.floor(c - target + 0.5)
            if s < 0 or s + n > m:
                raise ValueError(f"crop {size} around the centre {tuple(centre)} does not "
                                 f"fit the {det[0]}x{det[1]} detector")
            start.append(s)
            offset.append((c - s - target) / b)
        self.start = (start[0], start[1])
        self.offset = (offset[0], offset[1])
        self.size = size


class CollectFrames(UDF):
    """Collect every frame (float32), cropped around the beam centre and binned.

    Parameters
    ----------
    crop : int or (int, int), optional
        Detector pixels to keep around the centre (multiples of ``bin``); default the whole
        detector when the centre is within half a pixel of ``(det_y//2, det_x//2)``, else
        the largest window centred on it.
    bin : int
        Sum ``bin x bin`` pixels into one.
    center : (float, float), optional
        Beam centre in detector px; default the calibration's (else the detector middle).

    Results
    -------
    frames : nav, float32, ``(frame_y, frame_x)``
        The collected frames, the zero frequency at ``(h//2, w//2)`` (``window.offset``
        collected px off when the centre is not on a binned pixel's centre).
    det_shape : single, int64, ``(2,)``
        The detector shape the frames were cut from (what :meth:`window` needs).
    """

    name = "collect frames"

    def __init__(self, crop: int | tuple[int, int] | None = None, bin: int = 1,
                 center: tuple[float, float] | None = None) -> None:
        self.crop = crop if crop is None or isinstance(crop, int) else tuple(crop)
        self.bin = int(bin)
        self.center = None if center is None else (float(center[0]), float(center[1]))

    def window(self, meta: Meta) -> Window:
        """The crop and binning on data of ``meta``."""
        if self.center is not None:
            centre = self.center
        elif meta.calibration is not None:
            centre = meta.calibration.centre(meta.frame_shape)
        else:
            centre = (meta.frame_shape[0] // 2, meta.frame_shape[1] // 2)
        return Window(meta.frame_shape, centre, self.crop, self.bin)

    def buffers(self, meta: Meta) -> dict[str, Buffer]:
        shape = self.window(meta).shape
        return {"frames": Buffer("nav", "float32", extra_shape=shape,
                                 extra_dims=("frame_y", "frame_x"), fill=np.nan,
                                 units="counts"),
                "det_shape": Buffer("single", "int64", extra_shape=(2,),
                                    extra_dims=("axis",))}

    def prepare(self, meta: Meta) -> Window:
        return self.window(meta)

    def process_tile(self, tile: Tile, results: dict[str, Any], state: Window) -> None:
        (y, x), (h, w), b = state.start, state.size, state.bin
        frames = tile.data[:, y:y + h, x:x + w]
        mod = xp(frames)
        if b > 1:
            n = frames.shape[0]
            frames = frames.reshape(n, h // b, b, w // b, b).sum(axis=(2, 4),
                                                                 dtype=mod.float32)
        results["frames"][:] = frames
        results["det_shape"][:] = tile.data.shape[1:]

    def merge(self, dest: dict[str, Any], src: dict[str, Any]) -> None:
        # every task saw the same detector: the shape is not a sum
        dest["det_shape"][:] = np.maximum(dest["det_shape"], src["det_shape"])

    def params(self) -> dict[str, Any]:
        return {"crop": self.crop, "bin": self.bin, "center": self.center}
