"""Tilt-corrected bright field (tcBF, "parallax"): the BF pixels' images, aligned and summed.

Physics (the conventions of :mod:`framescope.datasets`): the probe in reciprocal space is
``A(k) exp(-i chi(k))`` with ``chi(k) = π λ Δf |k|²`` (``k`` in 1/m; the scattering angle is
``λ k``). For a weak phase object the image seen by the BF detector pixel at ``k``, as a
function of the probe position ``u``, is the object's phase filtered by ``2 sin chi(g)``
and *displaced*: the pixel sees the specimen point ``u + s(k)`` with

    s(k) = grad chi(k) / (2π) = λ Δf k = Δf θ        (θ the pixel's angle),

so the images of a defocused probe are shifted copies of one another, linear in ``k``
(defocus: ``s = Δf θ``; two-fold astigmatism makes it a symmetric 2x2 map, a scan rotation
rotates it). The synthetic's ``defocus`` (rad at the aperture rim, ``alpha``) is ``chi`` at
``|k| = alpha/λ``: ``Δf = defocus_rad λ / (π alpha²)``; positive ``Δf`` (chi > 0) is the
sign :func:`framescope.datasets.synthetic` simulates for positive ``defocus``.

Method: the UDF collects the images of the BF pixels (a nav buffer of ``n_bf`` values per
position, binned ``b x b`` when that would not fit ``max_bytes``); :meth:`Parallax.
finalize` measures each image's shift against the mean of the others (cross-correlation,
sub-pixel parabola, growing from the centre outwards and iterating), fits ``s = M k + c``
weighted by intensity, splits ``M`` into defocus, astigmatism and rotation, and sums the
images moved back by the model shifts (Fourier shifts; optionally splatted on a finer
grid, see ``upsample``). The sum keeps the ``sin chi`` transfer; with a calibration the
``phase`` output is phase-flipped (``sign(sin chi)`` applied in Fourier space), so it is
positive where the transfer is, a weak-phase estimate damped by ``|sin chi|``.

Memory: the nav buffer holds ``n_bf x n_positions`` float32 values. A 128 x 128 scan with
a BF disk of radius 32 px (3,209 px) needs 210 MB; every pixel of a 128 x 128 detector
would need 1 GiB. The engine's publish copies the buffers and finalize transposes them, so
the peak is about three times the buffer.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from framescope.udf._backend import to_device, xp
from framescope.udf._base import UDF, Buffer, Meta, Tile
from framescope.udf._parallax_fit import (
    align,
    chi_grid,
    decompose,
    phase_flip,
    rotation_matrix,
    shift_sum,
    splat_sum,
)

if TYPE_CHECKING:
    from framescope.calibration import Calibration

__all__ = ["Parallax"]

log = logging.getLogger(__name__)

#: default budget of the BF image stack (bytes of float32 nav values)
DEFAULT_MAX_BYTES = 256 * 2**20
_AXES = ("y", "x")


@dataclass(frozen=True, slots=True)
class _Plan:
    window: tuple[slice, slice]
    index: np.ndarray  # window-flat pixel indices, sorted by group
    starts: np.ndarray  # first entry of each group in ``index`` (np.add.reduceat)
    k: np.ndarray  # (n, 2) mean detector offset (px) of each group from the centre
    bin: int


class Parallax(UDF):
    """Tilt-corrected bright field: each BF pixel's image aligned by its parallax shift.

    Outputs (see the module docstring for the physics and conventions):

    - ``tcbf`` (nav): the tilt-corrected sum over the BF pixels (units of the frames);
    - ``phase`` (nav, rad): ``(tcbf / mean - 1) / 2``, phase-flipped with the fitted
      aberrations when the data is calibrated (energy, detector angle, scan step), else
      multiplied by the sign of the fitted defocus (right at low frequencies only);
    - ``tcbf_upsampled``, ``phase_upsampled`` (dims ``up_y``, ``up_x``) with
      ``upsample > 1``;
    - ``shifts`` (``bf_pixel`` x ``axis``, scan px): the measured ``s`` of each BF pixel,
      NaN where not measured or rejected; ``model_shifts``: ``M k`` from the fit (or from
      ``defocus``), what the sum used; coordinate ``bf_k`` (detector px from the centre);
      ``bf_weight``: each pixel's mean intensity;
    - ``shift_matrix`` (2x2, scan px per detector px): the fitted ``M``;
    - ``defocus`` and ``astigmatism`` (nm; NaN without a calibrated detector angle and scan
      step), ``astigmatism_angle`` (rad, from detector x towards y), ``rotation``
      (degrees, the fitted scan rotation, the branch nearest the given or calibrated one:
      ``rotation + 180`` with the opposite defocus fits equally); ``fit_rows``: scan rows
      the fit used (0: not fitted yet); ``bin``: the binning of the BF pixels.

    Partly filled scans (progressive results) fit on the longest run of complete rows once
    it holds ``min_rows``; before that the sum is unshifted (or uses ``defocus``).

    Parameters
    ----------
    radius : float, optional
        BF disk radius, detector px; default the calibration's ``semiconv`` over its
        detector angle. Pixels whose centre lies within it are used.
    center : (float, float), optional
        Beam centre (detector px); default the calibration's, else ``(h // 2, w // 2)``.
    bin : int, optional
        Sum ``bin x bin`` blocks of BF pixels into one image; default the smallest that
        fits ``max_bytes``.
    max_bytes : int
        Budget of the image stack (float32 values over the scan).
    upsample : int
        Also splat the aligned samples on a grid this many times finer than the scan
        (each BF pixel's samples sit at their true sub-step positions ``u + s``).
    rotation : float, optional
        Scan rotation, degrees (the :class:`CenterOfMass` convention); default the
        calibration's. Picks the branch of the fitted rotation, and with ``defocus``
        sets the model.
    flip_y : bool, optional
        Detector y mirrored against the scan; default the calibration's.
    defocus : float, optional
        Known defocus, m (``chi = π λ Δf k²``): the sum uses ``s = Δf θ`` rotated into scan
        axes instead of the fit (needs a calibrated detector angle and scan step); the
        shifts are still measured and fitted.
    iterations : int
        Alignment rounds over all pixels after the growing stages.
    min_rows : int
        Complete scan rows needed before fitting.
    """

    def __init__(self, *, radius: float | None = None,
                 center: tuple[float, float] | None = None, bin: int | None = None,
                 max_bytes: int = DEFAULT_MAX_BYTES, upsample: int = 1,
                 rotation: float | None = None, flip_y: bool | None = None,
                 defocus: float | None = None, iterations: int = 2,
                 min_rows: int = 8) -> None:
        if radius is not None and not radius > 0:
            raise ValueError(f"radius: expected a positive number of px, found {radius!r}")
        if bin is not None and (int(bin) != bin or bin < 1):
            raise ValueError(f"bin: expected a positive int, found {bin!r}")
        if int(upsample) != upsample or upsample < 1:
            raise ValueError(f"upsample: expected a positive int, found {upsample!r}")
        if not max_bytes > 0:
            raise ValueError(f"max_bytes: expected a positive number, found {max_bytes!r}")
        if defocus is not None and not math.isfinite(defocus):
            raise ValueError(f"defocus: expected a finite length in m, found {defocus!r}")
        if rotation is not None and not math.isfinite(rotation):
            raise ValueError(f"rotation: expected a finite angle in degrees, found "
                             f"{rotation!r}")
        self.radius = None if radius is None else float(radius)
        self.center = None if center is None else (float(center[0]), float(center[1]))
        self.bin = None if bin is None else int(bin)
        self.max_bytes = int(max_bytes)
        self.upsample = int(upsample)
        self.rotation = None if rotation is None else float(rotation)
        self.flip_y = None if flip_y is None else bool(flip_y)
        self.defocus = None if defocus is None else float(defocus)
        self.iterations = int(iterations)
        self.min_rows = int(min_rows)

    def params(self) -> dict[str, Any]:
        return {"radius": self.radius, "center": self.center, "bin": self.bin,
                "max_bytes": self.max_bytes, "upsample": self.upsample,
                "rotation": self.rotation, "flip_y": self.flip_y, "defocus": self.defocus,
                "iterations": self.iterations, "min_rows": self.min_rows}

    # -- geometry ------------------------------------------------------------------------

    def _radius(self, cal: Calibration | None) -> float:
        if self.radius is not None:
            return self.radius
        angle = None if cal is None else cal.detector_angle
        if cal is None or cal.semiconv is None or angle is None:
            raise ValueError("Parallax: radius: the BF disk radius is needed (found no "
                             "calibration with semiconv and a detector angle); pass "
                             "radius=<px> or calibrate(semiconv=..., angle_per_px=...)")
        return cal.semiconv / angle

    def _orientation(self, cal: Calibration | None) -> tuple[float, bool]:
        """(rotation in rad, flip) given or calibrated."""
        rot = (math.radians(self.rotation) if self.rotation is not None
               else 0.0 if cal is None else cal.rotation)
        flip = self.flip_y if self.flip_y is not None else (False if cal is None
                                                            else cal.flip)
        return rot, flip

    def plan(self, meta: Meta) -> _Plan:
        """Which detector pixels are BF, how they are binned, and their offsets ``k``."""
        h, w = meta.frame_shape
        cal = meta.calibration
        cy, cx = self.center or (cal.centre((h, w)) if cal is not None
                                 else (float(h // 2), float(w // 2)))
        r = self._radius(cal)
        y0, y1 = max(0, math.floor(cy - r)), min(h, math.ceil(cy + r) + 1)
        x0, x1 = max(0, math.floor(cx - r)), min(w, math.ceil(cx + r) + 1)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        dy, dx = (yy - cy).ravel(), (xx - cx).ravel()
        inside = np.flatnonzero(np.hypot(dy, dx) <= r)
        if inside.size < 4:
            raise ValueError(f"Parallax: radius {r:.3g} px around ({cy:.3g}, {cx:.3g}) "
                             f"holds {inside.size} pixels of the {h}x{w} frame; expected "
                             "at least 4 BF pixels")
        b = self.bin or 1
        while self.bin is None:  # the smallest binning that fits the budget
            n = self._groups(dy[inside], dx[inside], b)[1].size
            if n * meta.n_positions * 4 <= self.max_bytes or n <= 4:
                break
            b += 1
        labels, _ = self._groups(dy[inside], dx[inside], b)
        order = np.argsort(labels, kind="stable")
        index = inside[order]
        sorted_labels = labels[order]
        starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
        counts = np.diff(np.r_[starts, index.size])
        k = np.column_stack([np.add.reduceat(dy[index], starts) / counts,
                             np.add.reduceat(dx[index], starts) / counts])
        if b > 1:
            log.info("Parallax: %d BF pixels binned %dx%d into %d images", inside.size,
                     b, b, k.shape[0])
        return _Plan((slice(y0, y1), slice(x0, x1)), index.astype(np.int64), starts, k, b)

    @staticmethod
    def _groups(dy: np.ndarray, dx: np.ndarray, b: int) -> tuple[np.ndarray, np.ndarray]:
        # blocks centred on the beam centre, so the binned disk stays symmetric
        gy = np.floor(dy / b + 0.5).astype(np.int64)
        gx = np.floor(dx / b + 0.5).astype(np.int64)
        labels = (gy - gy.min()) * (gx.max() - gx.min() + 1) + (gx - gx.min())
        return labels, np.unique(labels)

    # -- the UDF -------------------------------------------------------------------------

    def buffers(self, meta: Meta) -> dict[str, Buffer]:
        n = self.plan(meta).k.shape[0]
        if self.defocus is not None:
            self._scales(meta, "defocus=")  # fail early without a calibration
        return {"bf": Buffer("nav", "float32", (n,), ("bf_pixel",), fill=np.nan)}

    def outputs(self, meta: Meta) -> dict[str, Buffer]:
        n = self.plan(meta).k.shape[0]
        pair = Buffer("single", "float64", (n, 2), ("bf_pixel", "axis"),
                      extra_coords=(tuple(range(n)), _AXES), units="px")
        scalar = Buffer("single", "float64")
        out = {
            "tcbf": Buffer("nav", "float32", fill=np.nan),
            "phase": Buffer("nav", "float32", fill=np.nan, units="rad"),
            "shifts": pair, "model_shifts": pair,
            "bf_k": Buffer("single", "float64", (n, 2), ("bf_pixel", "axis"),
                           extra_coords=(tuple(range(n)), _AXES), units="px", coord=True),
            "bf_weight": Buffer("single", "float64", (n,), ("bf_pixel",)),
            "shift_matrix": Buffer("single", "float64", (2, 2), ("axis", "det_axis"),
                                   extra_coords=(_AXES, _AXES)),
            "defocus": Buffer("single", "float64", units="nm"),
            "astigmatism": Buffer("single", "float64", units="nm"),
            "astigmatism_angle": Buffer("single", "float64", units="rad"),
            "rotation": Buffer("single", "float64", units="deg"),
            "fit_rows": scalar,
            "bin": Buffer("single", "int64"),
        }
        if self.upsample > 1:
            up = Buffer("single", "float32", (meta.scan_shape[0] * self.upsample,
                                              meta.scan_shape[1] * self.upsample),
                        ("up_y", "up_x"))
            out["tcbf_upsampled"] = up
            out["phase_upsampled"] = Buffer("single", "float32", up.extra_shape,
                                            up.extra_dims, units="rad")
        return out

    def prepare(self, meta: Meta) -> _Plan:
        plan = self.plan(meta)
        return _Plan(plan.window, to_device(plan.index, meta.backend),
                     to_device(plan.starts, meta.backend), plan.k, plan.bin)

    def process_tile(self, tile: Tile, results: dict[str, np.ndarray], state: Any) -> None:
        plan: _Plan = state
        window = tile.data[:, plan.window[0], plan.window[1]]
        flat = window.reshape(window.shape[0], -1)
        picked = flat[:, plan.index].astype(np.float32, copy=False)
        if plan.bin > 1:
            picked = xp(picked).add.reduceat(picked, plan.starts, axis=1)
        results["bf"][:] = picked

    # -- finalize ------------------------------------------------------------------------

    def _scales(self, meta: Meta, why: str) -> tuple[float, tuple[float, float]]:
        """(detector angle per px in rad, scan step (y, x) in m) of calibrated data."""
        scales = _calibrated_scales(meta)
        if scales is None:
            cal = meta.calibration
            angle = None if cal is None else cal.detector_angle
            step = None if cal is None else cal.scan_step
            raise ValueError(f"Parallax: {why} needs a calibration with a detector angle "
                             f"and a scan step (found angle_per_px={angle!r}, "
                             f"scan_step={step!r}); calibrate(angle_per_px=..., "
                             "scan_step=...) first")
        return scales

    def finalize(self, results: dict[str, np.ndarray], meta: Meta) -> dict[str, np.ndarray]:
        plan = self.plan(meta)
        ny, nx = meta.scan_shape
        n = plan.k.shape[0]
        stack = results["bf"]  # (positions, n), NaN where not yet filled
        images = np.ascontiguousarray(stack.T.reshape(n, ny, nx), dtype=np.float32)
        filled = np.isfinite(images).all(axis=0)
        with np.errstate(invalid="ignore"):
            means = np.nanmean(images.reshape(n, -1), axis=1) if filled.any() else np.ones(n)
        weights = np.clip(np.nan_to_num(means), 0, None)
        images = np.where(filled, images, means[:, None, None]).astype(np.float32)
        cal = meta.calibration
        rot, flip = self._orientation(cal)
        scales = _calibrated_scales(meta)

        shifts = np.full((n, 2), np.nan)
        matrix = np.zeros((2, 2))
        rows = _complete_rows(filled, max(1, min(self.min_rows, ny)))
        known = None
        if self.defocus is not None and scales is not None:
            angle, step = scales
            known = (self.defocus * angle / np.array(step))[:, None] * rotation_matrix(rot,
                                                                                      flip)
        if rows is not None and nx >= 4:
            block = np.ascontiguousarray(images[:, rows[0]:rows[1]])
            measured, matrix, _, used = align(block, plan.k, weights,
                                              iterations=self.iterations, matrix=known)
            shifts = np.where(used[:, None], measured, np.nan)
        model = known if known is not None else matrix
        model_shifts = plan.k @ model.T

        tcbf, _ = shift_sum(images, model_shifts)
        total = float(weights.sum()) or 1.0
        contrast = tcbf / total - 1
        dec = decompose(model, flip=flip, rotation_hint=rot)
        chi_c = self._curvature(model, dec.rotation, flip, meta, scales)
        out = {
            "tcbf": tcbf.astype(np.float32).ravel(),
            "phase": self._phase(contrast, chi_c, dec.defocus).astype(np.float32).ravel(),
            "shifts": shifts, "model_shifts": model_shifts, "bf_k": plan.k,
            "bf_weight": weights.astype(np.float64), "shift_matrix": matrix,
            "rotation": np.float64(math.degrees(dec.rotation) if model.any() else np.nan),
            "fit_rows": np.float64(0 if rows is None else rows[1] - rows[0]),
            "bin": np.int64(plan.bin),
        }
        out.update(self._physical(matrix, rot, flip, scales))
        if self.upsample > 1:
            fine = splat_sum(images, model_shifts, self.upsample)
            fcontrast = np.nan_to_num(fine / total - 1)
            fchi = None if chi_c is None else chi_c * self.upsample**2
            out["tcbf_upsampled"] = fine.astype(np.float32)
            out["phase_upsampled"] = self._phase(fcontrast, fchi,
                                                 dec.defocus).astype(np.float32)
        return out

    @staticmethod
    def _physical(matrix: np.ndarray, rot: float, flip: bool,
                  scales: tuple[float, tuple[float, float]] | None) -> dict[str, Any]:
        """Defocus and astigmatism (nm) of the fitted ``M``, NaN where unknown."""
        if scales is None or not matrix.any():
            nan = np.float64(np.nan)
            return {"defocus": nan, "astigmatism": nan, "astigmatism_angle": nan}
        angle, step = scales
        # s_m = diag(step) M q and θ = angle q, so diag(step) M / angle is Δf (m) per unit
        dec = decompose(np.diag(step) @ matrix / angle, flip=flip, rotation_hint=rot)
        return {"defocus": np.float64(dec.defocus * 1e9),
                "astigmatism": np.float64(dec.astigmatism * 1e9),
                "astigmatism_angle": np.float64(dec.astigmatism_angle)}

    @staticmethod
    def _curvature(model: np.ndarray, rotation: float, flip: bool, meta: Meta,
                   scales: tuple[float, tuple[float, float]] | None) -> np.ndarray | None:
        """``C`` (scan px²) of ``chi(ν) = π ν^T C ν`` on the scan grid, or None.

        With ``s_m = diag(step) M q``, ``θ = angle q`` and the scan-frame frequency ``f =
        R F θ / λ``: ``C = (λ / angle) M (R F)^T diag(1 / step)``.
        """
        cal = meta.calibration
        lam = None if cal is None else cal.wavelength
        if scales is None or lam is None or not model.any():
            return None
        angle, step = scales
        c = (lam / angle) * model @ rotation_matrix(rotation, flip).T @ np.diag(
            1 / np.array(step))
        return 0.5 * (c + c.T)

    @staticmethod
    def _phase(contrast: np.ndarray, curvature: np.ndarray | None,
               defocus: float) -> np.ndarray:
        if curvature is None:  # no chi: fix the low-frequency sign only
            return contrast / 2 * (np.sign(defocus) or 1.0)
        return phase_flip(contrast - contrast.mean(), chi_grid(contrast.shape,
                                                               curvature)) / 2


def _calibrated_scales(meta: Meta) -> tuple[float, tuple[float, float]] | None:
    """(detector angle per px in rad, scan step (y, x) in m), or None where unknown."""
    cal = meta.calibration
    if cal is None or cal.detector_angle is None or cal.scan_step is None:
        return None
    return cal.detector_angle, cal.scan_step


def _complete_rows(filled: np.ndarray, need: int) -> tuple[int, int] | None:
    """The longest run ``[r0, r1)`` of completely filled scan rows, if it has ``need``."""
    full = filled.all(axis=1)
    best, start = (0, 0), None
    for i, ok in enumerate([*full, False]):
        if ok and start is None:
            start = i
        elif not ok and start is not None:
            if i - start > best[1] - best[0]:
                best = (start, i)
            start = None
    return best if best[1] - best[0] >= need else None
