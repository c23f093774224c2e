"""Polygon virtual detector, rasterised with a vectorised even-odd (crossing-number) test."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from framescope.errors import MaskError
from framescope.masks._spec import MaskSpec, coord, register
from framescope.masks._units import Scale, unit_name

__all__ = ["Polygon", "polygon"]


@register
@dataclass(frozen=True, slots=True, repr=False)
class Polygon(MaskSpec):
    """Pixels whose centre lies inside a polygon (even-odd rule), vertices as ``(y, x)``.

    The polygon is closed implicitly (last vertex joins the first). Self-intersecting
    polygons follow the even-odd rule: regions covered twice are outside. A pixel centre
    exactly on an edge counts as inside on left/top edges and outside on right/bottom ones,
    so polygons sharing an edge do not double-count.

    In physical units (``units="mrad"`` …) the vertices are relative to the beam centre, in
    the detector frame (the scan rotation and flip of a calibration do not apply).

    Examples
    --------
    >>> tri = Polygon([(0, 0), (0, 4), (4, 0)])
    >>> int(tri.rasterize((5, 5)).sum())
    10
    """

    vertices: tuple[tuple[float, float], ...]
    units: str = "px"
    kind = "polygon"

    def __post_init__(self) -> None:
        object.__setattr__(self, "units", unit_name("polygon", self.units))
        try:
            pts = [tuple(v) for v in self.vertices]
        except TypeError:
            raise MaskError(
                f"polygon: expected a sequence of (y, x) vertices, found {self.vertices!r:.200}"
            ) from None
        if len(pts) < 3:
            raise MaskError(f"polygon: expected at least 3 vertices, found {len(pts)}")
        bad = [p for p in pts if len(p) != 2]
        if bad:
            raise MaskError(f"polygon: each vertex must be (y, x), found {bad[0]!r}")
        verts = tuple(
            (coord("polygon", f"vertices[{i}].y", y), coord("polygon", f"vertices[{i}].x", x))
            for i, (y, x) in enumerate(pts)
        )
        object.__setattr__(self, "vertices", verts)

    def _params(self) -> dict[str, Any]:
        return {"vertices": [list(v) for v in self.vertices]}

    def _in_pixels(self, s: Scale) -> Polygon:
        return Polygon(tuple((s.y(y), s.x(x)) for y, x in self.vertices))

    def _raster(self, det_shape: tuple[int, int]) -> np.ndarray:
        ny, nx = det_shape
        v = np.asarray(self.vertices, dtype=np.float64)
        out = np.zeros(det_shape, dtype=bool)
        # only pixel centres inside the vertices' bounding box can be inside
        ya, xa = (max(math.ceil(c), 0) for c in v.min(axis=0))
        yb = min(math.floor(v[:, 0].max()) + 1, ny)
        xb = min(math.floor(v[:, 1].max()) + 1, nx)
        if ya >= yb or xa >= xb:
            return out
        out[ya:yb, xa:xb] = _inside_even_odd(v, np.arange(ya, yb), np.arange(xa, xb))
        return out


def _inside_even_odd(v: np.ndarray, py: np.ndarray, px: np.ndarray) -> np.ndarray:
    """Crossing-number test of the grid ``py x px`` against polygon ``v`` (n, 2) of (y, x).

    A horizontal ray goes from each point towards +x; every edge it crosses flips the
    point's state. Loops over edges (few) and vectorises over pixels (many).
    """
    inside = np.zeros((py.size, px.size), dtype=bool)
    pyf = py.astype(np.float64)
    for (y1, x1), (y2, x2) in zip(v, np.roll(v, -1, axis=0), strict=True):
        # half-open in y: an edge counts for rows with min(y1, y2) <= y < max(y1, y2),
        # so a vertex on the ray is counted once and horizontal edges never
        crosses = (y1 <= pyf) != (y2 <= pyf)
        if not crosses.any():
            continue
        rows = np.flatnonzero(crosses)
        x_at = x1 + (pyf[rows] - y1) * (x2 - x1) / (y2 - y1)
        inside[rows] ^= px[None, :] < x_at[:, None]
    return inside


def polygon(vertices: Iterable[Sequence[float]], *, units: str = "px") -> Polygon:
    """A polygon detector from ``(y, x)`` vertices; see :class:`Polygon`.

    ``units`` as for :func:`~framescope.masks.disk`: physical vertices are relative to the
    beam centre.

    Examples
    --------
    >>> polygon([(10, 10), (10, 50), (40, 30)]).kind
    'polygon'
    >>> polygon([(-5, -5), (-5, 5), (5, 0)], units="mrad").units
    'mrad'
    """
    return Polygon(vertices, units)  # type: ignore[arg-type]  # normalised in __post_init__
