"""The calibration model: beam, detector and scan, as frozen, validated data.

A :class:`Calibration` holds SI numbers (eV, rad, m; the detector centre in pixels), is
validated on construction (units parsed, signs and consistency checked), round-trips
through JSON (kept in ``arr.attrs["calibration"]``) and gives the physical coordinates of
every axis: the scan positions, the detector as scattering angle relative to
the centre (in nm and mrad: what users read and select in). ``arr.fs.calibrate(...)``
applies one to a DataArray.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from framescope.calibration._quantities import (
    CalibrationError,
    displaced,
    electron_wavelength,
    parse_quantity,
    photon_wavelength,
)

__all__ = ["Calibration"]

_QUANTITY = {"energy": "energy", "semiconv": "angle", "angle_per_px": "angle",
             "camera_length": "length", "pixel_size": "length", "rotation": "angle"}


class Calibration(BaseModel):
    """Beam, detector and scan calibration in SI units (frozen; JSON round-trip).

    Every field is optional: a calibration states what is known. Numbers are SI (eV, rad,
    m); strings with units are parsed (``"300 kV"``, ``"20 mrad"``, ``"0.25 Å"``).

    Parameters
    ----------
    energy : float or str, optional
        Beam energy in eV: the electrons' kinetic energy (300 kV → 300e3), or the photon
        energy for ``radiation="xray"``.
    radiation : {"electron", "xray"}
        What ``energy`` is the energy of; sets how :attr:`wavelength` follows from it.
    semiconv : float or str, optional
        Convergence semi-angle (rad).
    angle_per_px : float or str, optional
        Scattering angle per detector pixel (rad); else from ``pixel_size / camera_length``.
    camera_length, pixel_size : float or str, optional
        Effective camera length and the detector's physical pixel size (m).
    center : (float, float), optional
        Detector position of the unscattered beam ``(cy, cx)`` in pixels (pixel centres at
        integers); default ``(det_y // 2, det_x // 2)``, where an FFT-shifted zero
        frequency lies and where COM and radial profiles centre without a calibration.
    scan_step : (float, float) or str, optional
        Distance between scan positions ``(dy, dx)`` (m); one value for both.
    rotation : float or str
        Rotation of the scan axes against the detector axes (rad).
    flip : bool
        The detector axes are mirrored against the scan axes.
    sources : dict of str
        Where each field came from (``"user"``, or the file and field it was read from).

    Examples
    --------
    >>> cal = Calibration(energy="300 kV", semiconv="20 mrad", angle_per_px="0.5 mrad",
    ...                   scan_step="0.25 Å")
    >>> round(cal.wavelength * 1e12, 3)  # pm
    1.969
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    energy: float | None = None
    radiation: Literal["electron", "xray"] = "electron"
    semiconv: float | None = None
    angle_per_px: float | None = None
    camera_length: float | None = None
    pixel_size: float | None = None
    center: tuple[float, float] | None = None
    scan_step: tuple[float, float] | None = None
    rotation: float = 0.0
    flip: bool = False
    sources: dict[str, str] = {}

    def __init__(self, **fields: Any) -> None:
        try:
            super().__init__(**fields)
        except ValidationError as exc:  # one error type, naming the field
            first = exc.errors()[0]
            ctx = first.get("ctx", {}).get("error")
            if isinstance(ctx, CalibrationError):
                raise ctx from None
            where = ".".join(str(p) for p in first["loc"]) or "calibration"
            raise CalibrationError(f"{where}: {first['msg']} (found "
                                   f"{first.get('input')!r})") from None

    @field_validator(*_QUANTITY, mode="before")
    @classmethod
    def _units(cls, value: Any, info: Any) -> Any:
        if value is None:
            return None
        out = parse_quantity(value, _QUANTITY[info.field_name], info.field_name)
        if info.field_name != "rotation" and not out > 0:
            raise CalibrationError(f"{info.field_name}: expected a positive value, found "
                                   f"{value!r}")
        return out

    @field_validator("scan_step", mode="before")
    @classmethod
    def _step(cls, value: Any) -> Any:
        if value is None:
            return None
        pair = (value, value) if isinstance(value, (str, int, float)) else tuple(value)
        if len(pair) != 2:
            raise CalibrationError(f"scan_step: expected (dy, dx) or one value, found "
                                   f"{value!r}")
        out = tuple(parse_quantity(v, "length", "scan_step") for v in pair)
        if not all(v > 0 for v in out):
            raise CalibrationError(f"scan_step: expected positive steps, found {value!r}")
        return out

    @model_validator(mode="after")
    def _consistent(self) -> Calibration:
        if None not in (self.angle_per_px, self.pixel_size, self.camera_length):
            implied = self.pixel_size / self.camera_length
            if abs(implied - self.angle_per_px) > 0.01 * self.angle_per_px:
                raise CalibrationError(
                    f"angle_per_px: {self.angle_per_px * 1e3:.4g} mrad disagrees with "
                    f"pixel_size / camera_length = {implied * 1e3:.4g} mrad (more than 1 %); "
                    "give one of them")
        return self

    def __hash__(self) -> int:  # ``sources`` is a dict: hash the JSON form instead
        return hash(self.to_json())

    # ---- derived ----------------------------------------------------------------------
    @property
    def wavelength(self) -> float | None:
        """Wavelength (m) of the beam: relativistic for electrons, ``hc/E`` for X-rays; None
        without ``energy``."""
        if self.energy is None:
            return None
        if self.radiation == "xray":
            return photon_wavelength(self.energy)
        return electron_wavelength(self.energy)

    @property
    def detector_angle(self) -> float | None:
        """Scattering angle per detector pixel (rad): ``angle_per_px``, else
        ``pixel_size / camera_length``, else None."""
        if self.angle_per_px is not None:
            return self.angle_per_px
        if self.pixel_size is not None and self.camera_length is not None:
            return self.pixel_size / self.camera_length
        return None

    def centre(self, det_shape: tuple[int, int]) -> tuple[float, float]:
        """The beam centre in pixels: ``center``, else ``(det_y // 2, det_x // 2)`` (the
        same default as the analyses' own)."""
        return self.center if self.center is not None else (float(det_shape[0] // 2),
                                                            float(det_shape[1] // 2))

    # ---- coordinates ------------------------------------------------------------------
    def coords(self, shape: tuple[int, int, int, int]) -> dict[str, tuple[str, np.ndarray,
                                                                          dict[str, str]]]:
        """Coordinates of ``(scan_y, scan_x, det_y, det_x)`` for a dataset of ``shape``.

        Calibrated axes: the scan in nm (from 0), the detector as scattering angle in mrad
        from the centre, the units users read and select in (``arr.sel(scan_x=slice(2,
        5))`` in nm); uncalibrated ones stay pixel indices (``units: px``). Each entry is
        ``(dim, values, attrs)`` for ``DataArray.assign_coords``. With a detector angle
        and a wavelength, ``k_y``/``k_x`` along ``det_y``/``det_x`` give the spatial
        frequency ``k = θ / λ`` in 1/Å (``1/d``; the convention of masks in 1/Å).
        """
        ny, nx, h, w = shape
        out = {}
        if self.scan_step is not None:
            dy, dx = self.scan_step
            out["scan_y"] = np.arange(ny) * dy * 1e9
            out["scan_x"] = np.arange(nx) * dx * 1e9
        angle = self.detector_angle
        if angle is not None:
            cy, cx = self.centre((h, w))
            out["det_y"] = (np.arange(h) - cy) * angle * 1e3
            out["det_x"] = (np.arange(w) - cx) * angle * 1e3
        result = {}
        for dim, n in zip(("scan_y", "scan_x", "det_y", "det_x"), shape, strict=True):
            if dim in out:
                name = "scattering angle" if dim.startswith("det") else "scan position"
                result[dim] = (dim, out[dim], {"units": "mrad" if dim.startswith("det")
                                               else "nm", "long_name": name})
            else:
                result[dim] = (dim, np.arange(n), {"units": "px"})
        lam = self.wavelength
        if angle is not None and lam is not None:
            for dim in ("det_y", "det_x"):  # mrad -> rad, / λ in Å
                result["k" + dim[-2:]] = (dim, out[dim] * 1e-3 / (lam * 1e10),
                                          {"units": "1/Å", "long_name": "spatial frequency"})
        return result

    # ---- combining and storing ----------------------------------------------------------
    def updated(self, source: str = "user", **fields: Any) -> Calibration:
        """A new calibration with ``fields`` replaced (None leaves a field), each marked as
        coming from ``source``.

        A new ``angle_per_px`` drops the camera length; a new camera length or pixel size
        drops ``angle_per_px`` (see :func:`displaced`): the newer statement of the
        detector angle wins instead of contradicting the older one.
        """
        given = {k: v for k, v in fields.items() if v is not None}
        unknown = set(given) - set(_FIELDS)
        if unknown:
            raise CalibrationError(f"unknown calibration field(s) {sorted(unknown)}; "
                                   f"expected some of {sorted(_FIELDS)}")
        data = self.model_dump()
        sources = dict(self.sources)
        for field in displaced(given) - set(given):
            data[field] = None
            sources.pop(field, None)
        data.update(given)
        data["sources"] = {**sources, **dict.fromkeys(given, source)}
        return Calibration(**data)

    def to_json(self) -> str:
        """The calibration as JSON (SI numbers), e.g. for ``attrs["calibration"]``."""
        return self.model_dump_json(exclude_defaults=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Calibration:
        """Inverse of :meth:`to_json`."""
        return cls.model_validate_json(text)


_FIELDS = tuple(f for f in Calibration.model_fields if f != "sources")
