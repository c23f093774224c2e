"""Simple virtual detectors: disk, ring, box and point.

A pixel belongs to a shape when its centre does (pixel ``(i, j)`` is centred at ``y = i``,
``x = j``). Disks and rings are closed: ``d <= r`` and ``r_in <= d <= r_out``, so
``ring(cy, cx, 0, r)`` equals ``disk(cy, cx, r)``, and two rings sharing a radius both hold
the pixels lying exactly at that distance.

Each shape also takes ``units`` (default ``"px"``): in ``"mrad"``, ``"rad"``, ``"1/Å"`` or
``"1/nm"`` its coordinates are relative to the beam centre (which is then the default centre)
and it becomes the pixel shape it implies through :meth:`MaskSpec.to_pixels`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from framescope.errors import MaskError
from framescope.masks._spec import MaskSpec, coord, radius, register
from framescope.masks._units import Scale, unit_name

__all__ = ["Box", "Disk", "Point", "Ring", "box", "disk", "point", "ring"]


def _dist2(shape: tuple[int, int], cy: float, cx: float) -> np.ndarray:
    """Squared distance of every pixel centre from ``(cy, cx)``; squares avoid a sqrt."""
    dy = np.arange(shape[0], dtype=np.float64) - cy
    dx = np.arange(shape[1], dtype=np.float64) - cx
    return dy[:, None] ** 2 + dx[None, :] ** 2


@register
@dataclass(frozen=True, slots=True, repr=False)
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
    units: str = "px"
    kind = "disk"

    def __post_init__(self) -> None:
        object.__setattr__(self, "units", unit_name("disk", self.units))
        object.__setattr__(self, "cy", coord("disk", "cy", self.cy))
        object.__setattr__(self, "cx", coord("disk", "cx", self.cx))
        object.__setattr__(self, "r", radius("disk", "r", self.r))

    def _params(self) -> dict[str, Any]:
        return {"cy": self.cy, "cx": self.cx, "r": self.r}

    def _raster(self, det_shape: tuple[int, int]) -> np.ndarray:
        return _dist2(det_shape, self.cy, self.cx) <= self.r * self.r  # no OverflowError

    def _in_pixels(self, s: Scale) -> Disk:
        return Disk(s.y(self.cy), s.x(self.cx), s.r(self.r))


@register
@dataclass(frozen=True, slots=True, repr=False)
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
    units: str = "px"
    kind = "ring"

    def __post_init__(self) -> None:
        object.__setattr__(self, "units", unit_name("ring", self.units))
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

    def _in_pixels(self, s: Scale) -> Ring:
        return Ring(s.y(self.cy), s.x(self.cx), s.r(self.r_in), s.r(self.r_out))


@register
@dataclass(frozen=True, slots=True, repr=False)
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
    units: str = "px"
    kind = "box"

    def __post_init__(self) -> None:
        object.__setattr__(self, "units", unit_name("box", self.units))
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

    def _in_pixels(self, s: Scale) -> Box:
        return Box(s.y(self.y0), s.x(self.x0), s.y(self.y1), s.x(self.x1))


@register
@dataclass(frozen=True, slots=True, repr=False)
class Point(MaskSpec):
    """The single pixel containing ``(y, x)`` (pixel ``i`` covers ``[i - 0.5, i + 0.5)``).

    Examples
    --------
    >>> int(Point(1.4, 2.6).rasterize((4, 4))[1, 3])
    1
    """

    y: float
    x: float
    units: str = "px"
    kind = "point"

    def __post_init__(self) -> None:
        object.__setattr__(self, "units", unit_name("point", self.units))
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

    def _in_pixels(self, s: Scale) -> Point:
        return Point(s.y(self.y), s.x(self.x))


def _centre(kind: str, units: str, cy: float | None, cx: float | None) -> tuple[float, float]:
    """The centre given, or the beam centre ``(0, 0)`` of a physical mask."""
    if cy is not None and cx is not None:
        return cy, cx
    if cy is None and cx is None and unit_name(kind, units) != "px":
        return 0.0, 0.0
    raise MaskError(f"{kind}: expected both cy and cx (in px they are required; in physical "
                    f"units they default to the beam centre), found cy={cy!r}, cx={cx!r}")


def _needed(kind: str, usage: str, **values: float | None) -> None:
    missing = [k for k, v in values.items() if v is None]
    if missing:
        raise MaskError(f"{kind}: missing {', '.join(missing)}; expected {usage}")


def disk(cy: float | None = None, cx: float | None = None, r: float | None = None, *,
         units: str = "px") -> Disk:
    """A disk detector of radius ``r`` centred at ``(cy, cx)``; see :class:`Disk`.

    Parameters
    ----------
    cy, cx : float
        The centre; required in pixels, the beam centre by default in physical units.
    r : float
        The radius.
    units : {"px", "mrad", "rad", "1/Å", "1/nm"}
        Units of every number; physical ones are relative to the beam centre and need a
        calibrated dataset (see :meth:`MaskSpec.to_pixels`).

    Examples
    --------
    >>> disk(cy=128, cx=128, r=30)
    Disk(cy=128.0, cx=128.0, r=30.0)
    >>> disk(r=10, units="mrad")  # the bright-field disk, around the beam centre
    Disk(cy=0.0, cx=0.0, r=10.0, units='mrad')
    """
    _needed("disk", "disk(cy, cx, r) or disk(r=..., units='mrad')", r=r)
    return Disk(*_centre("disk", units, cy, cx), r, units)  # type: ignore[arg-type]


def ring(cy: float | None = None, cx: float | None = None, r_in: float | None = None,
         r_out: float | None = None, *, units: str = "px") -> Ring:
    """An annular detector ``r_in <= d <= r_out`` around ``(cy, cx)``; see :class:`Ring`.

    Parameters
    ----------
    cy, cx : float
        The centre; required in pixels, the beam centre by default in physical units.
    r_in, r_out : float
        Inner and outer radius.
    units : {"px", "mrad", "rad", "1/Å", "1/nm"}
        Units of every number; see :func:`disk`.

    Examples
    --------
    >>> ring(cy=128, cx=128, r_in=40, r_out=90).kind
    'ring'
    >>> ring(r_in=20, r_out=60, units="mrad")  # an ADF detector
    Ring(cy=0.0, cx=0.0, r_in=20.0, r_out=60.0, units='mrad')
    """
    _needed("ring", "ring(cy, cx, r_in, r_out) or ring(r_in=..., r_out=..., units='mrad')",
            r_in=r_in, r_out=r_out)
    return Ring(*_centre("ring", units, cy, cx), r_in, r_out, units)  # type: ignore[arg-type]


def box(y0: float, x0: float, y1: float, x1: float, *, units: str = "px") -> Box:
    """A rectangle of rows ``[y0, y1)`` and columns ``[x0, x1)``; see :class:`Box`.

    In physical units the bounds are relative to the beam centre, ``box(-5, -5, 5, 5,
    units="mrad")`` being a square around it.

    Examples
    --------
    >>> box(0, 0, 16, 256).params
    {'y0': 0.0, 'x0': 0.0, 'y1': 16.0, 'x1': 256.0}
    """
    return Box(y0, x0, y1, x1, units)


def point(y: float | None = None, x: float | None = None, *, units: str = "px") -> Point:
    """The one pixel containing ``(y, x)``; see :class:`Point`. In physical units ``(y, x)``
    is relative to the beam centre (default: the beam centre itself).

    Examples
    --------
    >>> point(10, 20).to_dict()
    {'kind': 'point', 'params': {'y': 10.0, 'x': 20.0}}
    >>> point(units="mrad").to_dict()
    {'kind': 'point', 'params': {'y': 0.0, 'x': 0.0, 'units': 'mrad'}}
    """
    if y is None and x is None and unit_name("point", units) != "px":
        y, x = 0.0, 0.0
    _needed("point", "point(y, x) or point(units='mrad') for the beam centre", y=y, x=x)
    return Point(y, x, units)  # type: ignore[arg-type]
