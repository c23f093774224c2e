"""Display units: the dashboard keeps pixels inside and shows pixels or physical units.

Detector geometry, the picked position, the ROI and the :class:`~framescope.masks.MaskStack`
stay in pixels, so jobs and the engine never see a unit. What the browser shows (axes,
drawn shapes, the editor's number fields, readouts) goes through an :class:`AxisMap` of
its plane, and what it sends back (drawn shapes, taps, typed values) through the inverse
map. For a calibrated array the physical maps are those of
:meth:`framescope.calibration.Calibration.coords`: the detector as scattering angle in mrad
from the beam centre, the scan in nm from the first position.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from framescope.calibration import Calibration

__all__ = ["UNITS", "AxisMap", "DisplayUnits", "calibration_of", "display_units",
           "physical_maps"]

#: the dashboard's unit choices
UNITS = ("px", "physical")

# which coordinate each detector parameter is (radii are lengths: no origin)
_GEOMETRY_AXIS: dict[str, Literal["y", "x", "length"]] = {
    "cy": "y", "cx": "x", "y0": "y", "y1": "y", "x0": "x", "x1": "x",
    "r": "length", "r_in": "length", "r_out": "length"}


def _affine(value: Any, origin: float, step: float) -> Any:
    """``(value - origin) * step`` for a number, an array or a list (None kept)."""
    if isinstance(value, list | tuple):
        return [None if v is None else (float(v) - origin) * step for v in value]
    if isinstance(value, np.ndarray):
        return (value.astype(np.float64) - origin) * step
    return (float(value) - origin) * step


def _inverse(value: Any, origin: float, step: float) -> Any:
    """Inverse of :func:`_affine`: ``value / step + origin``."""
    if isinstance(value, list | tuple):
        return [None if v is None else float(v) / step + origin for v in value]
    if isinstance(value, np.ndarray):
        return value.astype(np.float64) / step + origin
    return float(value) / step + origin


@dataclass(frozen=True, slots=True)
class AxisMap:
    """Pixel coordinates of one plane → displayed ones: ``shown = (px - origin) * step``.

    Parameters
    ----------
    unit : str
        Unit of the displayed coordinates (``"px"``, ``"mrad"``, ``"nm"``).
    step : (float, float)
        Displayed units per pixel along ``(y, x)``.
    origin : (float, float)
        The pixel position ``(y, x)`` shown as 0 (the beam centre on the detector).

    Examples
    --------
    >>> m = AxisMap("mrad", (0.5, 0.5), (16.0, 16.0))
    >>> m.x(20.0), m.x_px(2.0)
    (2.0, 20.0)
    """

    unit: str = "px"
    step: tuple[float, float] = (1.0, 1.0)
    origin: tuple[float, float] = (0.0, 0.0)

    @property
    def physical(self) -> bool:
        return self.unit != "px"

    @property
    def decimals(self) -> int:
        """Decimals that resolve 0.01 px (drawn coordinates are rounded to that)."""
        finest = min(abs(s) for s in self.step)
        return max(2, 2 + math.ceil(-math.log10(finest))) if finest > 0 else 2

    # ---- coordinates ------------------------------------------------------------------
    def y(self, px: Any) -> Any:
        """Displayed y of pixel y ``px`` (number, array or list)."""
        return _affine(px, self.origin[0], self.step[0])

    def x(self, px: Any) -> Any:
        """Displayed x of pixel x ``px``."""
        return _affine(px, self.origin[1], self.step[1])

    def y_px(self, shown: Any) -> Any:
        """Pixel y of displayed y ``shown``."""
        return _inverse(shown, self.origin[0], self.step[0])

    def x_px(self, shown: Any) -> Any:
        """Pixel x of displayed x ``shown``."""
        return _inverse(shown, self.origin[1], self.step[1])

    def length(self, px: float) -> float:
        """A length (radius) in displayed units; square pixels (the detector's are)."""
        return float(px) * self.step[1]

    def length_px(self, shown: float) -> float:
        return float(shown) / self.step[1]

    def extent(self, n: tuple[int, int]) -> tuple[tuple[float, float], tuple[float, float]]:
        """``(xlim, ylim)`` of an ``(ny, nx)`` pixel grid, to the outer pixel edges."""
        ny, nx = n
        return ((self.x(-0.5), self.x(nx - 0.5)), (self.y(-0.5), self.y(ny - 0.5)))

    # ---- detector parameters ----------------------------------------------------------
    def geometry(self, param: str, px: Any) -> Any:
        """A detector parameter (``cy``, ``r_out``, ``x0``, ``vertices`` …) as displayed,
        rounded to :attr:`decimals` (pixels as they are)."""
        if not self.physical:
            return px
        d = self.decimals
        if param == "vertices":
            return [(round(self.y(y), d), round(self.x(x), d)) for y, x in px]
        axis = _axis(param)
        shown = self.y(px) if axis == "y" else self.x(px) if axis == "x" else self.length(px)
        return round(shown, d) + 0.0

    def geometry_px(self, param: str, shown: Any) -> Any:
        """Inverse of :meth:`geometry`: a typed value in pixels (not rounded)."""
        if param == "vertices":
            return [(self.y_px(y), self.x_px(x)) for y, x in shown]
        axis = _axis(param)
        return (self.y_px(shown) if axis == "y" else self.x_px(shown) if axis == "x"
                else self.length_px(shown))

    # ---- draw-tool tables -------------------------------------------------------------
    def columns(self, table: Mapping[str, Any], xs: Sequence[str] = ("x",),
                ys: Sequence[str] = ("y",), to_px: bool = False) -> dict[str, Any]:
        """``table`` with its x columns ``xs`` and y columns ``ys`` displayed (or, with
        ``to_px``, turned back into pixels); other columns as they are. A column of lists
        (PolyDraw's ``xs``/``ys``) is converted list by list."""
        fx, fy = (self.x_px, self.y_px) if to_px else (self.x, self.y)
        out = dict(table)
        for keys, f in ((xs, fx), (ys, fy)):
            for k in keys:
                if k in out and out[k] is not None:
                    out[k] = _each(out[k], f)
        return out


def _each(column: Any, f: Any) -> Any:
    values = list(column)
    if values and all(isinstance(v, list | tuple | np.ndarray) for v in values):
        return [f(list(v)) for v in values]
    return f(values)


def _axis(param: str) -> Literal["y", "x", "length"]:
    try:
        return _GEOMETRY_AXIS[param]
    except KeyError:
        raise ValueError(f"detector parameter: expected one of {sorted(_GEOMETRY_AXIS)} or "
                         f"'vertices', found {param!r}") from None


@dataclass(frozen=True, slots=True)
class DisplayUnits:
    """The detector and scan maps for one setting of the px/physical choice.

    ``labelled``: the axis labels name the unit (a calibrated array, in either setting);
    an uncalibrated array's axes read ``det_x``, ``scan_x`` as they always have.
    """

    det: AxisMap = AxisMap()
    scan: AxisMap = AxisMap()
    labelled: bool = False

    def label(self, dim: str) -> str:
        """Axis label of ``dim`` (``det_x`` → ``det_x (mrad)``)."""
        unit = (self.det if dim.startswith("det") else self.scan).unit
        return f"{dim} ({unit})" if self.labelled else dim

    def unit(self, dim: str) -> str | None:
        """The unit holoviews puts in the axis label of ``dim`` (None: no unit shown)."""
        if not self.labelled:
            return None
        return (self.det if dim.startswith("det") else self.scan).unit

    def position(self, y: float, x: float) -> str:
        """A scan position given in pixels, as displayed: ``y=20, x=10`` or
        ``y=4 nm, x=2 nm``."""
        if not self.scan.physical:
            return f"y={int(y)}, x={int(x)}"
        u = self.scan.unit
        return f"y={self.scan.y(y):.4g} {u}, x={self.scan.x(x):.4g} {u}"


def calibration_of(attrs: Mapping[str, Any]) -> Calibration | None:
    """The calibration in ``attrs["calibration"]`` (JSON), or None without one."""
    text = attrs.get("calibration")
    if not text:
        return None
    from framescope.calibration import Calibration  # pydantic: only for calibrated data

    return Calibration.from_json(text)


def physical_maps(calibration: Calibration | None, det_shape: tuple[int, int]
                  ) -> tuple[AxisMap, AxisMap]:
    """``(detector, scan)`` maps in physical units, as in ``Calibration.coords``: mrad from
    the beam centre, nm from the first scan position; pixels for an uncalibrated plane."""
    det, scan = AxisMap(), AxisMap()
    if calibration is None:
        return det, scan
    angle = calibration.detector_angle
    if angle is not None:
        mrad = angle * 1e3
        det = AxisMap("mrad", (mrad, mrad), tuple(float(c) for c in
                                                   calibration.centre(det_shape)))
    if calibration.scan_step is not None:
        dy, dx = calibration.scan_step
        scan = AxisMap("nm", (dy * 1e9, dx * 1e9))
    return det, scan


def display_units(calibration: Calibration | None, det_shape: tuple[int, int],
                  units: str = "physical") -> DisplayUnits:
    """What to display for ``units`` (``"px"`` or ``"physical"``).

    Raises
    ------
    ValueError
        If ``units`` is neither.
    """
    if units not in UNITS:
        raise ValueError(f"units: expected one of {list(UNITS)}, found {units!r}")
    det, scan = physical_maps(calibration, det_shape)
    labelled = det.physical or scan.physical
    if units == "px":
        return DisplayUnits(labelled=labelled)
    return DisplayUnits(det, scan, labelled)
