"""The ptychography problem of a frames Dataset: calibration, geometry, amplitudes, result.

A :class:`Problem` is built from what :class:`~framescope.ptycho.CollectFrames` published
(the engine's Dataset of a file or a live stream): it turns the calibration (with the
user's overrides) into object pixels, scan positions and an initial probe, keeps the
measured amplitudes on the solver's device, and writes the solver's state as a Dataset.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from framescope._version import __version__
from framescope.ptycho._collect import CollectFrames
from framescope.ptycho._modes import mode_powers
from framescope.ptycho._positions import (
    position_variables,
    problem_positions,
    refine_attrs,
    refine_between_sweeps,
)
from framescope.ptycho._raar import RAAR, make_solver
from framescope.ptycho._setup import ZonePlate, _zone_plate, initial_probe, object_pixel
from framescope.ptycho._solver import RPIE
from framescope.udf._backend import array_module, to_host
from framescope.udf._base import Meta

__all__ = ["Geometry", "Problem", "amplitudes"]


def amplitudes(frames: np.ndarray) -> np.ndarray:
    """``ifftshift(sqrt(max(I, 0)))`` over the last two axes, float32: measured intensities
    with the zero frequency at ``(h//2, w//2)`` as far-field amplitudes in numpy's FFT
    layout (the solver's)."""
    amp = np.sqrt(np.maximum(np.asarray(frames, np.float32), 0))
    return np.fft.ifftshift(amp, axes=(-2, -1))


@dataclass(frozen=True)
class Geometry:
    """Everything the solver needs from the calibration (SI units)."""

    wavelength: float
    angle_per_px: float  # of the collected frames (binning included)
    semiconv: float | None
    scan_step: tuple[float, float]
    rotation: float
    flip: bool
    pixel: tuple[float, float]
    offset: tuple[float, float]  # zero frequency from (h//2, w//2), collected px
    frame_shape: tuple[int, int]
    radiation: str = "electron"

    @classmethod
    def of(cls, calibration: Any, det_shape: tuple[int, int], udf: CollectFrames,
           overrides: dict[str, Any], *, need_step: bool = True) -> Geometry:
        """From the frames' calibration (a :class:`~framescope.calibration.Calibration` or
        None), the detector shape the UDF saw and ``overrides`` (calibration fields);
        ``need_step=False``: measured positions stand in for the scan step."""
        from framescope.calibration import Calibration, CalibrationError

        cal = calibration if calibration is not None else Calibration()
        given = {k: v for k, v in overrides.items() if v is not None}
        if given:
            cal = cal.updated("user", **given)
        missing = [name for name, value in (("energy", cal.energy),
                                            ("angle_per_px", cal.detector_angle),
                                            ("scan_step", cal.scan_step)) if value is None
                   and (need_step or name != "scan_step")]
        if missing:
            raise CalibrationError(
                f"ptychography needs the calibration's {', '.join(missing)} (found "
                f"{cal.to_json()}); calibrate the data (arr.fs.calibrate) or pass them "
                f"to reconstruct(...)")
        window = udf.window(Meta(scan_shape=(1, 1), frame_shape=det_shape,
                                 dtype=np.dtype("float32"), calibration=cal))
        angle = cal.detector_angle * window.bin
        lam = cal.wavelength
        return cls(wavelength=lam, angle_per_px=angle, semiconv=cal.semiconv,
                   scan_step=cal.scan_step, rotation=cal.rotation, flip=cal.flip,
                   pixel=object_pixel(lam, angle, window.shape), offset=window.offset,
                   frame_shape=window.shape, radiation=cal.radiation)


class Problem:
    """Frames, positions and the solver of one reconstruction (offline or live).

    Parameters
    ----------
    geometry : Geometry
    scan_shape : (int, int)
    options : dict
        ``defocus`` (m), ``probe`` (an initial probe, or None), ``alpha``, ``beta``,
        ``probe_start``, ``seed``, ``subpixel``, ``backend``, ``mask``, ``algorithm``.
    """

    def __init__(self, geometry: Geometry, scan_shape: tuple[int, int],
                 options: dict[str, Any]) -> None:
        self.geometry, self.scan_shape, self.options = geometry, scan_shape, options
        self.xp = array_module(options["backend"])
        n = scan_shape[0] * scan_shape[1]
        self.corners, self.moved, self.refiner, self.object_shape = problem_positions(
            geometry, scan_shape, options)
        self.corners_initial = self.corners.copy()
        self.amp = self.xp.zeros((n, *geometry.frame_shape), np.float32)
        self.measured = np.zeros(n, bool)
        self.first_iteration = np.full(n, -1, np.int32)
        self.solver: RPIE | RAAR | None = None
        self.intensity = math.nan
        mask = options.get("mask")
        self.mask = None if mask is None else self.xp.asarray(
            np.fft.ifftshift(np.asarray(mask, bool)))

    def ingest(self, frames: np.ndarray, done: np.ndarray) -> int:
        """Take the frames of positions newly ``done`` (flat bool); returns how many."""
        new = np.flatnonzero(done & ~self.measured)
        if new.size:
            # a device index for cupy (numpy's for numpy: no copy)
            self.amp[self.xp.asarray(new)] = self.xp.asarray(amplitudes(frames[new]))
            self.measured[new] = True
            if self.solver is not None:
                self.first_iteration[new] = self.solver.iteration
        return int(new.size)

    def start(self, frames: np.ndarray) -> None:
        """Build the solver: the probe scaled to the mean measured frame sum so far."""
        g, o = self.geometry, self.options
        self.intensity = float(np.mean(frames[self.measured].sum(axis=(1, 2),
                                                                  dtype=np.float64)))
        if isinstance(o.get("probe"), ZonePlate):
            probe = _zone_plate(g.frame_shape, o["probe"], g.wavelength, g.angle_per_px,
                                o["defocus"], self.intensity, g.offset, self.xp)
        elif o.get("probe") is not None:
            probe = self.xp.asarray(np.asarray(o["probe"], np.complex64))
            if probe.shape != g.frame_shape:
                raise ValueError(f"probe: expected the collected frame shape "
                                 f"{g.frame_shape}, found {probe.shape}")
        else:
            if g.semiconv is None:
                from framescope.calibration import CalibrationError

                raise CalibrationError("ptychography's initial probe needs the "
                                       "calibration's semiconv (or pass semiconv= or probe=)")
            probe = initial_probe(g.frame_shape, wavelength=g.wavelength,
                                  angle_per_px=g.angle_per_px, semiconv=g.semiconv,
                                  defocus=o["defocus"], intensity=self.intensity,
                                  centre_offset=g.offset, xp=self.xp)
        # rpie/epie or raar/dm, with options["modes"] probe modes
        self.solver = make_solver(o)(probe, self.corners, alpha=o["alpha"], beta=o["beta"],
                           probe_start=o["probe_start"], seed=o["seed"],
                           subpixel=o["subpixel"], object_shape=self.object_shape)
        self.first_iteration[self.measured] = 0

    def iterate(self) -> float:
        """One solver sweep over the measured positions."""
        assert self.solver is not None
        error = self.solver.iterate(self.amp, self.measured, self.mask)
        if self.refiner is not None and self.solver.iteration > self.refiner.start:
            # positions move between sweeps: the solver reads them afresh each sweep
            self.corners = refine_between_sweeps(self.refiner, self.solver, self.amp,
                                                 self.measured, self.mask)
        return error

    def result(self, attrs: dict[str, Any] | None = None) -> xr.Dataset:
        """The solver's state as a Dataset (see :func:`framescope.ptycho.reconstruct`)."""
        assert self.solver is not None
        g, s = self.geometry, self.solver
        h, w = g.frame_shape
        obj = to_host(s.object)
        probe = to_host(s.probe)
        pdims = ("probe_y", "probe_x") if probe.ndim == 2 else ("mode", "probe_y", "probe_x")
        py, px = (v * 1e9 for v in g.pixel)
        # probe centre of scan position (0, 0) before any refinement: the origin of y, x
        c0 = self.corners_initial[0] + (h // 2, w // 2)
        y = (np.arange(obj.shape[0]) - c0[0]) * py
        x = (np.arange(obj.shape[1]) - c0[1]) * px
        nm = {"units": "nm"}
        scan = ("scan_y", "scan_x")
        pos = (self.corners - self.corners_initial[0]) * (py, px)  # centres from c0
        shape = self.scan_shape
        its = np.arange(s.iteration)
        ds = xr.Dataset(
            {
                "object_phase": (("y", "x"), np.angle(obj).astype(np.float32),
                                 {"units": "rad"}),
                "object_amplitude": (("y", "x"), np.abs(obj).astype(np.float32)),
                "probe_amplitude": (pdims, np.abs(probe).astype(np.float32)),
                "probe_phase": (pdims, np.angle(probe).astype(np.float32),
                                {"units": "rad"}),
                "position_y": (scan, pos[:, 0].reshape(shape), nm),
                "position_x": (scan, pos[:, 1].reshape(shape), nm),
                "measured": (scan, self.measured.reshape(shape).copy()),
                "first_iteration": (scan, self.first_iteration.reshape(shape).copy(), {
                    "long_name": "iteration from which the position was measured (-1: "
                                 "never)"}),
                "error": ("iteration", np.asarray(s.errors, np.float64),
                          {"long_name": "normalised Fourier error"}),
                "positions_per_iteration": ("iteration", np.asarray(s.measured, np.int64)),
            },
            coords={
                "y": ("y", y, {**nm, "long_name": "object y from the first probe centre"}),
                "x": ("x", x, {**nm, "long_name": "object x from the first probe centre"}),
                "probe_y": ("probe_y", (np.arange(h) - h // 2) * py, nm),
                "probe_x": ("probe_x", (np.arange(w) - w // 2) * px, nm),
                "iteration": ("iteration", its),
            },
        )
        ds = ds.assign(position_variables(self.corners, self.corners_initial, (py, px), shape))
        if probe.ndim == 3:  # mixed state: each mode's share of the intensity
            power = mode_powers(probe)
            ds["probe_power"] = ("mode", power / power.sum(),
                                  {"long_name": "fraction of the probe intensity"})
        o = self.options
        ds.attrs.update({
            "algorithm": o["algorithm"], **s.parameters(), "modes": s.modes,
            "probe_start": s.probe_start, "seed": o["seed"], "subpixel": int(s.subpixel),
            "iterations": s.iteration, "defocus_m": o["defocus"],
            "wavelength_m": g.wavelength, "angle_per_px_rad": g.angle_per_px,
            "semiconv_rad": math.nan if g.semiconv is None else g.semiconv,
            "scan_step_m": list(g.scan_step or (math.nan, math.nan)),
            "rotation_rad": g.rotation, "flip": int(g.flip),
            "pixel_size_m": list(g.pixel), "frame_shape": list(g.frame_shape),
            "zero_frequency_offset_px": list(g.offset),
            "probe_intensity": self.intensity, "backend": o["backend"],
            "collect": json.dumps(o["collect"]), "framescope_version": __version__,
            "radiation": g.radiation, **refine_attrs(o, self.refiner),
            **(attrs or {}),
        })
        return ds
