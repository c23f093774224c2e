"""Simple virtual detectors: disk, ring, box and point.

A pixel belongs to a shape when its centre does (pixel ``(i, j)`` is centred at ``y = i``,
``x = j``). Disks and rings are closed: ``d <= r`` and ``r_in <= d <= r_out``, so
``ring(cy, cx, 0, r)`` equals ``disk(cy, cx, r)``, and two rings sharing a radius both hold
the pixels lying exactly at that distance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from framescope.errors import MaskError
from framescope.masks._spec import MaskSpec, coord, radius, register

__all__ = ["Box", "Disk", "Point", "Ring", "box", "disk", "point", "ring"]


def _dist2(shape: tuple[int, int], cy: float, cx: float) -> np.ndarray:
    """Squared distance of every pixel centre from ``(cy, cx)``; squares avoid a sqrt."""
    dy = np.arange(shape[0], dtype=np.float64) - cy
    dx = np.arange(shape[1], dtype=np.float64) - cx
    return dy[:, None] ** 2 + dx[None, :] ** 2


@register
@dataclass(frozen=True, slots=True)
class Disk(MaskSpec):
    """Pixels whose centre lies at distance ``d <= r`` from ``(cy, cx)``.

    Examples
    --------
    >>> int(Disk(2, 2, 1).rasterize((5, 5)).sum())
    5
    """

    cy: float
    cx: float
    r: float
    kind = "disk"

    def __post_init__(self) -> None:
        object.__setattr__(self, "cy", coord("disk", "cy", self.cy))
        object.__setattr__(self, "cx", coord("disk", "cx", self.cx))
        object.__setattr__(self, "r", radius("disk", "r", self.r))

    def _params(self) -> dict[str, Any]:
        return {"cy": self.cy, "cx": self.cx, "r": self.r}

    def _raster(self, det_shape: tuple[int, int]) -> np.ndarray:
        return _dist2(det_shape, self.cy, self.cx) <= self.r * self.r  # no OverflowError


@register
@dataclass(frozen=True, slots=True)
class Ring(MaskSpec):
    """Pixels whose centre lies at distance ``r_in <= d <= r_out`` from ``(cy, cx)``.

    Examples
    --------
    >>> int(Ring(4, 4, 1, 2).rasterize((9, 9)).sum())  # 13 within r=2, minus the centre
    12
    """

    cy: float
    cx: float
    r_in: float
    r_out: float
    kind = "ring"

    def __post_init__(self) -> None:
        object.__setattr__(self, "cy", coord("ring", "cy", self.cy))
        object.__setattr__(self, "cx", coord("ring", "cx", self.cx))
        object.__setattr__(self, "r_in", radius("ring", "r_in", self.r_in))
        object.__setattr__(self, "r_out", radius("ring", "r_out", self.r_out))
        if self.r_in > self.r_out:
            raise MaskError(
                f"ring: expected r_in <= r_out, found r_in={self.r_in} > r_out={self.r_out}"
            )

    def _params(self) -> dict[str, Any]:
        return {"cy": self.cy, "cx": self.cx, "r_in": self.r_in, "r_out": self.r_out}

    def _raster(self, det_shape: tuple[int, int]) -> np.ndarray:
        d2 = _dist2(det_shape, self.cy, self.cx)
        return (d2 >= self.r_in * self.r_in) & (d2 <= self.r_out * self.r_out)


@register
@dataclass(frozen=True, slots=True)
class Box(MaskSpec):
    """Pixels with ``y0 <= i < y1`` and ``x0 <= j < x1``, clipped to the detector.

    With integer bounds this is the slice ``[y0:y1, x0:x1]``.

    Examples
    --------
    >>> int(Box(1, 1, 3, 4).rasterize((5, 5)).sum())
    6
    """

    y0: float
    x0: float
    y1: float
    x1: float
    kind = "box"

    def __post_init__(self) -> None:
        for name in ("y0", "x0", "y1", "x1"):
            object.__setattr__(self, name, coord("box", name, getattr(self, name)))
        for lo, hi in (("y0", "y1"), ("x0", "x1")):
            if getattr(self, lo) > getattr(self, hi):
                raise MaskError(
                    f"box: expected {lo} <= {hi}, found {lo}={getattr(self, lo)} > "
                    f"{hi}={getattr(self, hi)}"
                )

    def _params(self) -> dict[str, Any]:
        return {"y0": self.y0, "x0": self.x0, "y1": self.y1, "x1": self.x1}

    def _raster(self, det_shape: tuple[int, int]) -> np.ndarray:
        ny, nx = det_shape
        # i >= y0  <=>  i >= ceil(y0);  i < y1  <=>  i < ceil(y1)
        ya, yb = (min(max(math.ceil(v), 0), ny) for v in (self.y0, self.y1))
        xa, xb = (min(max(math.ceil(v), 0), nx) for v in (self.x0, self.x1))
        out = np.zeros(det_shape, dtype=bool)
        out[ya:yb, xa:xb] = True
        return out


@register
@dataclass(frozen=True, slots=True)
class Point(MaskSpec):
    """The single pixel containing ``(y, x)`` (pixel ``i`` covers ``[i - 0.5, i + 0.5)``).

    Examples
    --------
    >>> int(Point(1.4, 2.6).rasterize((4, 4))[1, 3])
    1
    """

    y: float
    x: float
    kind = "point"

    def __post_init__(self) -> None:
        object.__setattr__(self, "y", coord("point", "y", self.y))
        object.__setattr__(self, "x", coord("point", "x", self.x))

    def _params(self) -> dict[str, Any]:
        return {"y": self.y, "x": self.x}

    def _raster(self, det_shape: tuple[int, int]) -> np.ndarray:
        out = np.zeros(det_shape, dtype=bool)
        i, j = math.floor(self.y + 0.5), math.floor(self.x + 0.5)
        if 0 <= i < det_shape[0] and 0 <= j < det_shape[1]:
            out[i, j] = True
        return out


def disk(cy: float, cx: float, r: float) -> Disk:
    """A disk detector of radius ``r`` px centred at ``(cy, cx)``; see :class:`Disk`.

    Examples
    --------
    >>> disk(cy=128, cx=128, r=30)
    Disk(cy=128.0, cx=128.0, r=30.0)
    """
    return Disk(cy, cx, r)


def ring(cy: float, cx: float, r_in: float, r_out: float) -> Ring:
    """An annular detector ``r_in <= d <= r_out`` px around ``(cy, cx)``; see :class:`Ring`.

    Examples
    --------
    >>> ring(cy=128, cx=128, r_in=40, r_out=90).kind
    'ring'
    """
    return Ring(cy, cx, r_in, r_out)


def box(y0: float, x0: float, y1: float, x1: float) -> Box:
    """A rectangle of rows ``[y0, y1)`` and columns ``[x0, x1)``; see :class:`Box`.

    Examples
    --------
    >>> box(0, 0, 16, 256).params
    {'y0': 0.0, 'x0': 0.0, 'y1': 16.0, 'x1': 256.0}
    """
    return Box(y0, x0, y1, x1)


def point(y: float, x: float) -> Point:
    """The one pixel containing ``(y, x)``; see :class:`Point`.

    Examples
    --------
    >>> point(10, 20).to_dict()
    {'kind': 'point', 'params': {'y': 10.0, 'x': 20.0}}
    """
    return Point(y, x)
