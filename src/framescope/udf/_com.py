"""Centre of mass (COM) / differential phase contrast (DPC) per scan position."""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from framescope.udf._backend import to_device
from framescope.udf._base import UDF, Buffer, Meta, Tile
from framescope.udf._kernels import LazyKernel, fused_view, mask_runs, share_cores

__all__ = ["CenterOfMass"]

if TYPE_CHECKING:
    from framescope.calibration import Calibration

log = logging.getLogger(__name__)

com_sums = LazyKernel("framescope.udf._fused", "com_sums")
com_events = LazyKernel("framescope.udf._sparse", "com_events")

# events without values: one count each (the kernel takes an empty array for that)
_ONE_EACH = np.empty(0, np.float32)
_ONE_EACH.flags.writeable = False


@dataclass(slots=True)
class _Plan:
    window: tuple[slice, slice]
    weight: np.ndarray  # (wy, wx) float32: 1 inside the COM disk, else 0
    ys: np.ndarray  # (wy,) float64 detector y relative to the centre (on the backend)
    xs: np.ndarray  # (wx,)
    # fused kernel inputs: full-frame coordinates and the disk as pixel runs
    full_ys: np.ndarray
    full_xs: np.ndarray
    runs: tuple[np.ndarray, ...]
    inside: np.ndarray  # (h * w,) uint8: 1 in the disk, for tiles of events
    centre: tuple[float, float]


class CenterOfMass(UDF):
    """Centre of mass of each frame relative to a reference centre, and the DPC field.

    Outputs (all per scan position, in detector pixels, ``attrs["units"]`` ``"px"``):

    - ``com_y``, ``com_x``: COM shift on the detector, ``sum(I * (y - cy)) / sum(I)``;
    - ``field_y``, ``field_x``: the shift in scan coordinates: detector y flipped when
      ``flip_y``, then rotated by ``rotation`` degrees (counter-clockwise);
    - ``magnitude``: length of the field vector;
    - ``divergence`` and ``curl`` of the field over the scan grid (central differences, per
      scan step). For a thin phase object the field is proportional to the phase gradient,
      so the divergence is proportional to the phase Laplacian (charge density) and the curl
      should vanish: a non-zero curl flags a wrong rotation.

    On calibrated data (``Meta.calibration`` with a detector angle, e.g. from
    ``arr.fs.calibrate(angle_per_px=...)``) also, in scan coordinates like the field:

    - ``deflection_y``, ``deflection_x`` (mrad): the beam deflection, ``field *
      angle_per_px`` (the linear mapping; ``pixel_size / camera_length`` when those are
      given instead);
    - ``phase_gradient_y``, ``phase_gradient_x`` (rad/Å): the projected phase gradient of
      a thin object, ``dφ/dx = 2π θ_x / λ`` (needs the beam energy; left out, with a debug
      log, without it). It is the probe-intensity-weighted average gradient.

    On counted data (tiles of :class:`~framescope.udf.Events`) the sums are taken over the
    events inside the disk, without densifying; the results are those of the frames.

    Parameters
    ----------
    cy, cx : float, optional
        Reference centre (detector pixels, pixel centres at integers); default the
        calibration's ``center`` when the data has one, else ``(det_y // 2, det_x // 2)``,
        where an FFT-shifted zero frequency lies.
    radius : float, optional
        Only pixels within this distance of the centre count (e.g. the bright-field disk);
        default the whole frame.
    rotation : float, optional
        Scan rotation in degrees between detector and scan axes; default the
        calibration's ``rotation`` (stored in rad), else 0. An explicit value wins.
    flip_y : bool, optional
        Flip the detector y axis before rotating; default the calibration's ``flip``,
        else False. An explicit value wins.
    """

    share_state = True  # the plan depends on params() and Meta only

    def __init__(self, cy: float | None = None, cx: float | None = None,
                 radius: float | None = None, rotation: float | None = None,
                 flip_y: bool | None = None) -> None:
        if radius is not None and not radius > 0:
            raise ValueError(f"radius: expected a positive number, found {radius!r}")
        if rotation is not None and not math.isfinite(rotation):
            raise ValueError(f"rotation: expected a finite angle in degrees, found "
                             f"{rotation!r}")
        self.cy, self.cx, self.radius = cy, cx, radius
        self.rotation = None if rotation is None else float(rotation)
        self.flip_y = None if flip_y is None else bool(flip_y)

    def params(self) -> dict[str, Any]:
        return {"cy": self.cy, "cx": self.cx, "radius": self.radius,
                "rotation": self.rotation, "flip_y": self.flip_y}

    def resolved(self, frame_shape: tuple[int, int],
                 calibration: Calibration | None = None) -> dict[str, Any]:
        """The parameters in effect on frames of ``frame_shape`` with ``calibration``:
        ``cy``, ``cx``, ``radius``, ``rotation`` (degrees) and ``flip_y``, the defaults
        taken from the calibration."""
        cal = calibration
        cy, cx = self._centre(frame_shape, cal)
        rotation = self.rotation
        if rotation is None:
            rotation = 0.0 if cal is None else math.degrees(cal.rotation)
        flip = self.flip_y
        if flip is None:
            flip = False if cal is None else cal.flip
        return {"cy": cy, "cx": cx, "radius": self.radius, "rotation": rotation,
                "flip_y": flip}

    def _centre(self, frame_shape: tuple[int, int],
                calibration: Calibration | None) -> tuple[float, float]:
        h, w = frame_shape
        centre = None if calibration is None else calibration.center
        cy, cx = (h // 2, w // 2) if centre is None else centre
        return (cy if self.cy is None else self.cy, cx if self.cx is None else self.cx)

    @staticmethod
    def _physical(meta: Meta) -> tuple[float | None, float | None]:
        """(rad per detector pixel, wavelength in m) of the data, None where unknown."""
        cal = meta.calibration
        if cal is None:
            return None, None
        return cal.detector_angle, cal.wavelength

    def buffers(self, meta: Meta) -> dict[str, Buffer]:
        # raw sums (I, I*dy, I*dx) merge by placement; the ratios are taken in finalize
        return {"sums": Buffer("nav", "float64", (3,), ("sum",), fill=np.nan)}

    def outputs(self, meta: Meta) -> dict[str, Buffer]:
        px = Buffer("nav", "float32", fill=np.nan, units="px")
        out = {k: px for k in ("com_y", "com_x", "field_y", "field_x", "magnitude")}
        out.update(dict.fromkeys(("divergence", "curl"), Buffer("nav", "float32", fill=np.nan)))
        angle, wavelength = self._physical(meta)
        if angle is not None:
            out.update(dict.fromkeys(("deflection_y", "deflection_x"),
                                     Buffer("nav", "float32", fill=np.nan, units="mrad")))
            if wavelength is not None:
                out.update(dict.fromkeys(("phase_gradient_y", "phase_gradient_x"),
                                         Buffer("nav", "float32", fill=np.nan,
                                                units="rad/Å")))
            else:
                log.debug("CenterOfMass: no beam energy in the calibration, so no "
                          "phase_gradient_y/x (calibrate(energy=...) adds them)")
        return out

    def prepare(self, meta: Meta) -> _Plan:
        h, w = meta.frame_shape
        cy, cx = self._centre(meta.frame_shape, meta.calibration)
        if self.radius is None:
            ys, xs = slice(0, h), slice(0, w)
        else:
            r = self.radius
            ys = slice(max(0, int(np.floor(cy - r))), min(h, int(np.ceil(cy + r)) + 1))
            xs = slice(max(0, int(np.floor(cx - r))), min(w, int(np.ceil(cx + r)) + 1))
        yy = np.arange(h, dtype=np.float64)[ys] - cy
        xx = np.arange(w, dtype=np.float64)[xs] - cx
        weight = np.ones((yy.size, xx.size), np.float32)
        if self.radius is not None:
            weight[yy[:, None] ** 2 + xx[None, :] ** 2 > self.radius**2] = 0
        if not weight.any():
            raise ValueError(f"CenterOfMass: no detector pixel within radius {self.radius} "
                             f"of ({cy}, {cx}) on a {h}x{w} detector")
        full = np.zeros((1, h, w), np.float32)
        full[0, ys, xs] = weight
        row_index, x0, x1, _ = mask_runs(full)
        share_cores()  # prepare runs in the thread that runs the tiles
        dev = functools.partial(to_device, backend=meta.backend)  # the fallback's operands
        return _Plan((ys, xs), dev(weight), dev(yy), dev(xx),
                     np.arange(h, dtype=np.float64) - cy, np.arange(w, dtype=np.float64) - cx,
                     (row_index, x0, x1), (full[0].ravel() != 0).astype(np.uint8),
                     (float(cy), float(cx)))

    def takes_events(self, meta: Meta) -> bool:
        return meta.backend == "numpy"

    def process_tile(self, tile: Tile, results: dict[str, np.ndarray], state: _Plan) -> None:
        ev = tile.events
        if ev is not None and isinstance(results["sums"], np.ndarray):
            com_events(ev.offsets, ev.indices, _ONE_EACH if ev.values is None else ev.values,
                       state.inside, *state.centre, ev.frame_shape[1], results["sums"])
            return
        data = fused_view(tile.data)
        if data is not None:
            com_sums(data, state.full_ys, state.full_xs, *state.runs, results["sums"])
            return
        ys, xs = state.window
        data = tile.data[:, ys, xs].astype(np.float32) * state.weight
        rows = data.sum(axis=2, dtype=np.float64)  # (n, wy)
        cols = data.sum(axis=1, dtype=np.float64)  # (n, wx)
        out = results["sums"]
        out[:, 0] = rows.sum(axis=1)
        out[:, 1] = rows @ state.ys
        out[:, 2] = cols @ state.xs

    def finalize(self, results: dict[str, np.ndarray], meta: Meta) -> dict[str, np.ndarray]:
        sums = results["sums"].reshape(*meta.scan_shape, 3)
        with np.errstate(invalid="ignore", divide="ignore"):
            com_y = sums[..., 1] / sums[..., 0]
            com_x = sums[..., 2] / sums[..., 0]
        params = self.resolved(meta.frame_shape, meta.calibration)
        dy = -com_y if params["flip_y"] else com_y
        t = np.deg2rad(params["rotation"])
        field_y = np.cos(t) * dy + np.sin(t) * com_x
        field_x = -np.sin(t) * dy + np.cos(t) * com_x
        grads = {}
        for name, f in (("y", field_y), ("x", field_x)):
            gy = np.gradient(f, axis=0) if f.shape[0] > 1 else np.zeros_like(f)
            gx = np.gradient(f, axis=1) if f.shape[1] > 1 else np.zeros_like(f)
            grads[name] = (gy, gx)
        out = {
            "com_y": com_y, "com_x": com_x, "field_y": field_y, "field_x": field_x,
            "magnitude": np.hypot(field_y, field_x),
            "divergence": grads["y"][0] + grads["x"][1],
            "curl": grads["x"][0] - grads["y"][1],
        }
        angle, wavelength = self._physical(meta)
        if angle is not None:
            theta = {"y": field_y * angle, "x": field_x * angle}  # rad: small, linear
            out.update({f"deflection_{a}": t * 1e3 for a, t in theta.items()})
            if wavelength is not None:  # dφ/dx = 2π θ / λ, in rad/Å
                out.update({f"phase_gradient_{a}": 2 * np.pi * t / wavelength * 1e-10
                            for a, t in theta.items()})
        return {k: v.astype(np.float32).reshape(meta.n_positions) for k, v in out.items()}
