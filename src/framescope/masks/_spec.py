"""The mask-spec base class: validation helpers, canonical JSON, stable keys, rasterising.

Coordinate convention (all specs): detector pixel ``(i, j)`` has its centre at ``y = i``,
``x = j`` and covers ``[i - 0.5, i + 0.5) x [j - 0.5, j + 0.5)``; a geometric mask holds the
pixels whose *centre* lies inside the shape. ``y`` always comes first.

Geometric specs may instead be given in physical units (``units="mrad"``, ``"rad"``,
``"1/Å"``, ``"1/nm"``; see ``framescope.masks._units``), relative to the beam centre; such a
spec rasterises only after :meth:`MaskSpec.to_pixels` / :meth:`MaskSpec.resolved` turned it
into the pixel spec it implies.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

import numpy as np

from framescope.errors import MaskError
from framescope.masks._cache import RASTERS
from framescope.masks._units import UNITS, CalibrationLike, Scale, scale, scale_from

__all__ = ["MaskSpec", "check_det_shape", "coord", "digest", "radius", "register"]

_KINDS: dict[str, type[MaskSpec]] = {}
_T = TypeVar("_T", bound="type[MaskSpec]")


def register(cls: _T) -> _T:
    """Class decorator: make ``MaskSpec.from_dict`` know ``cls.kind``."""
    _KINDS[cls.kind] = cls
    return cls


def digest(data: bytes) -> str:
    """Hex blake2b digest (20 bytes): the same in every process, unlike ``hash()``."""
    return hashlib.blake2b(data, digest_size=20).hexdigest()


def coord(kind: str, name: str, value: Any) -> float:
    """``value`` as a finite float, or a MaskError saying what was expected and found."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise MaskError(f"{kind}: {name} must be a real number, found {value!r}") from None
    if not math.isfinite(out):
        raise MaskError(f"{kind}: {name} must be finite, found {out}")
    return out + 0.0  # -0.0 -> 0.0, so equal shapes get equal keys


def radius(kind: str, name: str, value: Any) -> float:
    """A finite, non-negative radius."""
    out = coord(kind, name, value)
    if out < 0:
        raise MaskError(f"{kind}: {name} must be >= 0, found {out}")
    return out


def check_det_shape(det_shape: Any) -> tuple[int, int]:
    """``det_shape`` as ``(det_y, det_x)`` positive ints."""
    try:
        ny, nx = (int(v) for v in det_shape)
        ok = ny > 0 and nx > 0 and tuple(det_shape) == (ny, nx)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise MaskError(
            f"detector shape must be two positive integers (det_y, det_x), found {det_shape!r}"
        )
    return ny, nx


class MaskSpec:
    """Base of all virtual-detector specs: a value that rasterises itself on a detector.

    Subclasses are frozen, slotted dataclasses holding only parameters, so specs are small
    to pickle and ship to workers; rasters are built on demand and cached by
    ``(key, det_shape)``.

    Attributes
    ----------
    kind : str
        Name of the shape (``"disk"``, ``"ring"``, ``"box"``, ``"polygon"``, ``"point"``,
        ``"array"``), the tag used by :meth:`to_dict`.
    units : str
        ``"px"`` (detector pixels), or the physical units of a geometric spec (``"mrad"``,
        ``"rad"``, ``"1/Å"``, ``"1/nm"``) whose coordinates are relative to the beam centre.
    """

    __slots__ = ()
    kind: ClassVar[str] = ""
    units: str  # a dataclass field of geometric specs; "px" for array masks

    # ---- to be provided by subclasses -------------------------------------------------
    def _params(self) -> dict[str, Any]:
        raise NotImplementedError

    def _raster(self, det_shape: tuple[int, int]) -> np.ndarray:
        """Bool or float array of ``det_shape``; emptiness is checked by the caller."""
        raise NotImplementedError

    def _in_pixels(self, s: Scale) -> MaskSpec:
        """The pixel spec of a physical one, its numbers mapped by ``s``."""
        raise NotImplementedError

    @classmethod
    def _from_params(cls, params: Mapping[str, Any]) -> MaskSpec:
        try:
            return cls(**params)
        except TypeError:
            names = [n for n in getattr(cls, "__match_args__", ()) if n != "units"]
            raise MaskError(
                f"{cls.kind}: expected parameters {names}, found {sorted(params)} "
                f"(optional: 'units', one of {list(UNITS)})"
            ) from None

    # ---- public API --------------------------------------------------------------------
    @property
    def params(self) -> dict[str, Any]:
        """The parameters as a JSON-ready dict (a fresh copy); ``units`` unless pixels."""
        out = self._params()
        if self.units != "px":  # pixel specs keep the keys and JSON they always had
            out["units"] = self.units
        return out

    def to_dict(self) -> dict[str, Any]:
        """``{"kind": ..., "params": {...}}``, JSON-serialisable; see :meth:`from_dict`."""
        return {"kind": self.kind, "params": self.params}

    @property
    def is_physical(self) -> bool:
        """True for a spec in physical units, which needs a calibration to rasterise."""
        return self.units != "px"

    def to_pixels(self, angle_per_px: float, center: tuple[float, float],
                  wavelength: float | None = None) -> MaskSpec:
        """The pixel spec this one implies (a pixel spec is returned as it is).

        Each coordinate maps as ``px = centre + value / angle_per_px`` (``y`` first), each
        radius as ``value / angle_per_px``; spatial frequencies first become angles,
        ``theta = k * wavelength``. Angles are in the detector frame: no scan rotation or
        flip applies.

        Parameters
        ----------
        angle_per_px : float
            Scattering angle per detector pixel (rad).
        center : (float, float)
            Detector position ``(cy, cx)`` of the unscattered beam (px): ``(0, 0)`` in
            physical units.
        wavelength : float, optional
            Beam wavelength (m), needed for masks in ``1/Å`` or ``1/nm``.

        Raises
        ------
        MaskError
            A non-positive angle, a bad centre, or a spatial frequency without wavelength.

        Examples
        --------
        >>> from framescope.masks import ring
        >>> ring(r_in=20, r_out=60, units="mrad").to_pixels(0.5e-3, (127.5, 128))
        Ring(cy=127.5, cx=128.0, r_in=40.0, r_out=120.0)
        """
        if not self.is_physical:
            return self
        return self._in_pixels(scale(self.units, angle_per_px, center, wavelength))

    def resolved(self, calibration: CalibrationLike | None, det_shape: tuple[int, int],
                 name: str | None = None) -> MaskSpec:
        """The pixel spec on a detector of ``det_shape`` with ``calibration`` (a
        :class:`~framescope.calibration.Calibration`, or None for uncalibrated data); see
        :meth:`to_pixels`. A pixel spec is returned as it is.

        Raises
        ------
        MaskError
            A physical spec and no calibration (or no angle per pixel, or no energy for a
            spatial frequency); the message names the mask, its units and how to calibrate.
        """
        if not self.is_physical:
            return self
        what = f"mask {name!r}" if name is not None else repr(self)
        s = scale_from(self.units, calibration, check_det_shape(det_shape), what)
        return self._in_pixels(s)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MaskSpec:
        """Rebuild a spec from :meth:`to_dict` output.

        Called on :class:`MaskSpec` it dispatches on ``data["kind"]``; called on a subclass it
        also checks that the kind matches.

        Raises
        ------
        MaskError
            Unknown kind, wrong parameters, or a kind other than the subclass's.
        """
        if not isinstance(data, Mapping) or not isinstance(data.get("params"), Mapping):
            raise MaskError(
                f"expected a mask dict {{'kind': ..., 'params': {{...}}}}, found {data!r:.200}"
            )
        kind = data.get("kind")
        target = _KINDS.get(kind)  # type: ignore[arg-type]
        if target is None:
            raise MaskError(f"unknown mask kind {kind!r}; known kinds: {sorted(_KINDS)}")
        if cls is not MaskSpec and target is not cls:
            raise MaskError(f"expected a {cls.kind!r} mask, found kind {kind!r}")
        return target._from_params(data["params"])

    @property
    def key(self) -> str:
        """Stable content hash (hex), equal for equal specs in any process or run."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"),
                          allow_nan=False)
        return digest(text.encode())

    def rasterize(self, det_shape: tuple[int, int]) -> np.ndarray:
        """The mask on a detector of ``det_shape = (det_y, det_x)``, as float32.

        The result is cached by ``(key, det_shape)`` and read-only: copy it to modify it.

        Raises
        ------
        MaskError
            Bad detector shape, an array mask of another shape, or a mask with no nonzero
            pixel on this detector.
        """
        shape = check_det_shape(det_shape)
        if self.is_physical:
            raise MaskError(
                f"{self!r} is in {self.units}: rasterising needs detector pixels; calibrate "
                "the data (arr.fs.calibrate(angle_per_px=...)) and analyse it, or convert "
                "the mask with to_pixels(angle_per_px, center, wavelength) / "
                "resolved(calibration, det_shape)")
        return RASTERS.get_or_make(("spec", self.key, shape), lambda: self._build(shape))

    def _build(self, shape: tuple[int, int]) -> np.ndarray:
        out = np.ascontiguousarray(self._raster(shape), dtype=np.float32)
        if not out.any():
            raise MaskError(
                f"{self!r} is empty on detector {shape}: it has no nonzero pixel there"
            )
        out.flags.writeable = False
        return out

    def __repr__(self) -> str:
        # geometric specs: the dataclass fields, with units only when not pixels
        names = [n for n in getattr(self, "__match_args__", ()) if n != "units"]
        if self.is_physical:
            names.append("units")
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in names)
        return f"{type(self).__name__}({inner})"
