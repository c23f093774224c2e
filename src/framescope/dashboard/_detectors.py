"""Virtual detectors as ``param`` objects: editable numbers on one side, mask specs on the other.

Coordinates are those of :mod:`framescope.masks` (pixel ``(i, j)`` centred at ``y = i``,
``x = j``), which are also the plot's data coordinates: a drawn rectangle or circle is the
mask spec as it is, with no offset. The ``*_table`` functions give the columns that the
draw-tool elements display; the ``read_*`` functions turn what a draw tool sends back into
parameters.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import param

import framescope.masks as fm
from framescope.masks import MaskSpec

__all__ = [
    "COLORS",
    "KINDS",
    "BoxDetector",
    "Detector",
    "DiskDetector",
    "PolygonDetector",
    "RingDetector",
    "boxes_table",
    "centres_table",
    "centroid",
    "default_detectors",
    "detector_from_spec",
    "next_color",
    "outline_paths",
    "outline_segments",
    "polygons_table",
    "read_boxes",
    "read_centres",
    "read_polygons",
    "unique_name",
]

#: colours given to new detectors in turn; all readable on a grey frame
COLORS = ("#e41a1c", "#377eb8", "#4daf4a", "#ff7f00", "#984ea3", "#f781bf", "#17becf",
          "#a65628")
KINDS = ("disk", "ring", "box", "polygon")
_DECIMALS = 2  # drawn coordinates are rounded: readable code, same masks


def _snap(value: Any) -> float:
    return round(float(value), _DECIMALS) + 0.0


class Detector(param.Parameterized):
    """A named, coloured virtual detector; subclasses hold the geometry."""

    name = param.String(default="det", constant=False,
                        doc="Name of the mask and of its virtual image")
    color = param.Color(default=COLORS[0], doc="Colour of its outline and image title")

    kind: ClassVar[str] = ""
    #: parameters that define the mask (a change means a new virtual image)
    geometry: ClassVar[tuple[str, ...]] = ()

    def spec(self) -> MaskSpec:
        """The mask spec; raises :class:`~framescope.errors.MaskError` if invalid."""
        raise NotImplementedError

    def code(self) -> str:
        """The spec as notebook code, e.g. ``fs.masks.disk(cy=64.0, cx=64.0, r=16.0)``."""
        spec = self.spec()
        args = ", ".join(f"{k}={v!r}" for k, v in spec.params.items())
        return f"fs.masks.{spec.kind}({args})"

    def translate(self, dy: float, dx: float) -> None:
        """Move the detector by ``(dy, dx)`` px."""
        raise NotImplementedError


class _Circle(Detector):
    cy = param.Number(default=0.0, label="cy (px)", doc="Centre, detector y (px)")
    cx = param.Number(default=0.0, label="cx (px)", doc="Centre, detector x (px)")

    def translate(self, dy: float, dx: float) -> None:
        self.param.update(cy=_snap(self.cy + dy), cx=_snap(self.cx + dx))


class DiskDetector(_Circle):
    """Disk detector: pixels within ``r`` of ``(cy, cx)``."""

    r = param.Number(default=10.0, label="r (px)", bounds=(0, None), doc="Radius (px)")
    kind = "disk"
    geometry = ("cy", "cx", "r")

    def spec(self) -> MaskSpec:
        return fm.disk(self.cy, self.cx, self.r)

    def radii(self) -> tuple[float, ...]:
        return (self.r,)


class RingDetector(_Circle):
    """Annular detector: pixels between ``r_in`` and ``r_out`` from ``(cy, cx)``."""

    r_in = param.Number(default=20.0, label="r_in (px)", bounds=(0, None),
                        doc="Inner radius (px)")
    r_out = param.Number(default=40.0, label="r_out (px)", bounds=(0, None),
                         doc="Outer radius (px)")
    kind = "ring"
    geometry = ("cy", "cx", "r_in", "r_out")

    def spec(self) -> MaskSpec:
        return fm.ring(self.cy, self.cx, self.r_in, self.r_out)

    def radii(self) -> tuple[float, ...]:
        return (self.r_in, self.r_out)


class BoxDetector(Detector):
    """Box detector: rows ``y0 <= i < y1`` and columns ``x0 <= j < x1``."""

    y0 = param.Number(default=0.0, label="y0 (px)", doc="Top edge (px)")
    x0 = param.Number(default=0.0, label="x0 (px)", doc="Left edge (px)")
    y1 = param.Number(default=10.0, label="y1 (px)", doc="Bottom edge (px)")
    x1 = param.Number(default=10.0, label="x1 (px)", doc="Right edge (px)")
    kind = "box"
    geometry = ("y0", "x0", "y1", "x1")

    def spec(self) -> MaskSpec:
        return fm.box(self.y0, self.x0, self.y1, self.x1)

    def translate(self, dy: float, dx: float) -> None:
        self.param.update(y0=_snap(self.y0 + dy), y1=_snap(self.y1 + dy),
                          x0=_snap(self.x0 + dx), x1=_snap(self.x1 + dx))


class PolygonDetector(Detector):
    """Polygon detector: pixels whose centre lies inside ``vertices`` ((y, x) pairs)."""

    vertices = param.List(default=[(0.0, 0.0), (0.0, 10.0), (10.0, 0.0)],
                          label="vertices (y, x)", doc="Vertices as (y, x) px")
    kind = "polygon"
    geometry = ("vertices",)

    def spec(self) -> MaskSpec:
        return fm.polygon(self.vertices)

    def translate(self, dy: float, dx: float) -> None:
        self.vertices = [(_snap(y + dy), _snap(x + dx)) for y, x in self.vertices]


_CLASSES: dict[str, type[Detector]] = {
    c.kind: c for c in (DiskDetector, RingDetector, BoxDetector, PolygonDetector)
}


def detector_from_spec(name: str, spec: MaskSpec, color: str = COLORS[0]) -> Detector:
    """A detector editing ``spec`` (disk, ring, box or polygon).

    Raises
    ------
    TypeError
        For mask kinds the dashboard cannot draw (point, array).
    """
    cls = _CLASSES.get(spec.kind)
    if cls is None:
        raise TypeError(f"mask {name!r}: the dashboard edits {list(KINDS)} masks, found "
                        f"{spec.kind!r}")
    params = spec.params
    if spec.kind == "polygon":
        params = {"vertices": [tuple(v) for v in params["vertices"]]}
    return cls(name=name, color=color, **params)


def unique_name(kind: str, taken: Iterable[str]) -> str:
    """``kind`` plus the smallest number not yet taken: ``box1``, ``box2`` …"""
    used = set(taken)
    i = 1
    while f"{kind}{i}" in used:
        i += 1
    return f"{kind}{i}"


def next_color(used: Iterable[str]) -> str:
    """The first palette colour not in ``used`` (cycling when all are)."""
    used = list(used)
    for c in COLORS:
        if c not in used:
            return c
    return COLORS[len(used) % len(COLORS)]


def default_detectors(det_shape: tuple[int, int]) -> fm.MaskStack:
    """A bright-field disk and an annular dark-field ring around the detector centre."""
    h, w = det_shape
    cy, cx, m = h // 2, w // 2, min(h, w)
    return fm.MaskStack({"bf": fm.disk(cy, cx, m / 8), "adf": fm.ring(cy, cx, m / 4, 0.45 * m)})


def centroid(det: Detector) -> tuple[float, float]:
    """Centre of a detector: the centre of a circle or box, the mean of polygon vertices."""
    if isinstance(det, DiskDetector | RingDetector):
        return det.cy, det.cx
    if isinstance(det, BoxDetector):
        return (det.y0 + det.y1) / 2, (det.x0 + det.x1) / 2
    v = np.asarray(det.vertices, dtype=float)  # type: ignore[attr-defined]
    return float(v[:, 0].mean()), float(v[:, 1].mean())


# ---- tables for the draw-tool elements -----------------------------------------------------

def centres_table(dets: Iterable[Detector], only: str | None = None) -> dict[str, list[Any]]:
    """Columns ``x, y, name, color`` of the disk and ring centres (PointDraw handles), of
    detector ``only`` if given."""
    circles = [d for d in dets if isinstance(d, _Circle) and only in (None, d.name)]
    return {"x": [d.cx for d in circles], "y": [d.cy for d in circles],
            "name": [d.name for d in circles], "color": [d.color for d in circles]}


def boxes_table(dets: Iterable[Detector]) -> dict[str, list[Any]]:
    """Columns ``x0, y0, x1, y1, name, color`` of the box detectors (BoxEdit)."""
    boxes = [d for d in dets if isinstance(d, BoxDetector)]
    return {"x0": [d.x0 for d in boxes], "y0": [d.y0 for d in boxes],
            "x1": [d.x1 for d in boxes], "y1": [d.y1 for d in boxes],
            "name": [d.name for d in boxes], "color": [d.color for d in boxes]}


def polygons_table(dets: Iterable[Detector]) -> list[dict[str, Any]]:
    """One dict ``x, y, name, color`` per polygon detector (PolyDraw / PolyEdit)."""
    out = []
    for d in dets:
        if isinstance(d, PolygonDetector):
            ys, xs = zip(*d.vertices, strict=True) if d.vertices else ((), ())
            out.append({"x": list(xs), "y": list(ys), "name": d.name, "color": d.color})
    return out


def outline_paths(dets: Iterable[Detector], n: int = 96) -> list[dict[str, Any]]:
    """Closed circles (one per radius) of the disk and ring detectors, for ``hv.Path``."""
    t = np.linspace(0, 2 * math.pi, n)
    out = []
    for d in dets:
        if isinstance(d, DiskDetector | RingDetector):
            for r in d.radii():
                out.append({"x": d.cx + r * np.cos(t), "y": d.cy + r * np.sin(t),
                            "name": d.name, "color": d.color})
    return out


def outline_segments(dets: Iterable[Detector], n: int = 96) -> dict[str, list[Any]]:
    """The circles of :func:`outline_paths` as columns ``x0, y0, x1, y1, name, color`` of
    short segments: one table (``hv.Segments``) renders far faster than one path each."""
    cols: dict[str, list[Any]] = {k: [] for k in ("x0", "y0", "x1", "y1", "name", "color")}
    for p in outline_paths(dets, n):
        x, y = np.asarray(p["x"]), np.asarray(p["y"])
        cols["x0"] += x[:-1].tolist()
        cols["y0"] += y[:-1].tolist()
        cols["x1"] += x[1:].tolist()
        cols["y1"] += y[1:].tolist()
        cols["name"] += [p["name"]] * (len(x) - 1)
        cols["color"] += [p["color"]] * (len(x) - 1)
    return cols


# ---- what the draw tools send back ------------------------------------------------------

def _names(data: Mapping[str, Any], n: int) -> list[str | None]:
    column = data.get("name")
    names = [] if column is None else list(column)  # lists or numpy arrays
    names += [None] * (n - len(names))
    return [v if isinstance(v, str) and v else None for v in names[:n]]


def read_centres(data: Mapping[str, Sequence[Any]] | None) -> dict[str, tuple[float, float]]:
    """``{name: (cy, cx)}`` from PointDraw data (rows without a name are ignored)."""
    if not data:
        return {}
    xs, ys = list(data.get("x", [])), list(data.get("y", []))
    out = {}
    for name, x, y in zip(_names(data, len(xs)), xs, ys, strict=False):
        if (name is not None and x is not None and y is not None
                and math.isfinite(x) and math.isfinite(y)):
            out[name] = (_snap(y), _snap(x))
    return out


def read_boxes(data: Mapping[str, Sequence[Any]] | None
               ) -> list[tuple[str | None, dict[str, float]]]:
    """``[(name or None for a new box, {y0, x0, y1, x1})]`` from BoxEdit data.

    Corners may come in any order (a box drawn upwards); edges are sorted.
    """
    if not data:
        return []
    cols = [list(data.get(k, [])) for k in ("x0", "y0", "x1", "y1")]
    n = min(len(c) for c in cols)
    out = []
    for name, x0, y0, x1, y1 in zip(_names(data, n), *(c[:n] for c in cols), strict=True):
        if None in (x0, y0, x1, y1):
            continue
        out.append((name, {"y0": _snap(min(y0, y1)), "x0": _snap(min(x0, x1)),
                           "y1": _snap(max(y0, y1)), "x1": _snap(max(x0, x1))}))
    return out


def read_polygons(data: Mapping[str, Sequence[Any]] | None
                  ) -> list[tuple[str | None, list[tuple[float, float]]]]:
    """``[(name or None for a new polygon, [(y, x), …])]`` from PolyDraw/PolyEdit data.

    New polygons still being drawn (PolyDraw's trailing copy of the last vertex) and
    polygons with fewer than three vertices are left out.
    """
    if not data:
        return []
    xss, yss = list(data.get("xs", [])), list(data.get("ys", []))
    out = []
    for name, xs, ys in zip(_names(data, len(xss)), xss, yss, strict=False):
        verts = [(_snap(y), _snap(x)) for x, y in zip(list(xs), list(ys), strict=False)
                 if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)]
        if len(verts) > 1 and verts[-1] == verts[-2]:
            # PolyDraw keeps a copy of the last vertex under the pointer until the polygon
            # is finished: a new polygon is not a detector yet, a named one loses the copy
            if name is None:
                continue
            verts = verts[:-1]
        if len(verts) > 1 and verts[0] == verts[-1]:
            verts = verts[:-1]  # some tools repeat the first vertex to close the ring
        if len(verts) >= 3:
            out.append((name, verts))
    return out
