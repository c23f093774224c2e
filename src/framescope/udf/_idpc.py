"""Integrated DPC (iDPC): the projected phase from the centre-of-mass field.

For a thin phase object the centre of mass of each frame is the probe-averaged phase
gradient, ``grad phi = 2 pi theta / lambda`` (see :class:`~framescope.udf.CenterOfMass`).
Integrating that field gives the phase. On a periodic grid of scan positions with
``phi_hat(k) = sum_r phi(r) exp(-2 pi i k.r)`` (numpy's FFT, ``k`` in cycles per scan step)
the gradient is ``G_hat = 2 pi i k phi_hat``, so the least-squares phase is

    phi_hat(k) = (k_y G_y_hat + k_x G_x_hat) / (2 pi i (|k|^2 + k_hp^2)),

exact for a gradient field, with ``phi_hat(0) = 0`` (the mean phase is not measured) and
``k_hp`` a high-pass that damps frequencies below it (transfer ``|k|^2 / (|k|^2 + k_hp^2)``)
where noise and scan distortions would grow as ``1 / |k|``. The gradient is taken per scan
step (``rad/Å * Å``), so the phase comes out in rad for any (non-square) step.

A real scan is not periodic: ``boundary="mirror"`` integrates the even extension of the
phase (the gradient mirrored, its normal component negated), which has no jump at the
edges, instead of the periodic one, whose jumps ring over the whole image.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from framescope.udf._base import Buffer, Meta
from framescope.udf._com import CenterOfMass

if TYPE_CHECKING:
    from framescope.calibration import Calibration

__all__ = ["IDPC", "integrate_gradient"]

log = logging.getLogger(__name__)

BOUNDARIES = ("mirror", "periodic")


def _frequencies(n: int) -> np.ndarray:
    """numpy's FFT frequencies (cycles per sample), the Nyquist bin of an even ``n`` set to
    0: a real signal's derivative has no defined sign there."""
    k = np.fft.fftfreq(n)
    if n % 2 == 0:
        k[n // 2] = 0.0
    return k


def integrate_gradient(grad_y: np.ndarray, grad_x: np.ndarray, *,
                       step: tuple[float, float] = (1.0, 1.0), highpass: float = 0.0,
                       boundary: Literal["mirror", "periodic"] = "mirror") -> np.ndarray:
    """The function whose gradient is ``(grad_y, grad_x)``, by Fourier integration.

    Parameters
    ----------
    grad_y, grad_x : numpy.ndarray
        Gradient along the two axes of a ``(ny, nx)`` grid, per unit of ``step`` (e.g.
        rad/Å with ``step`` in Å). NaN (positions not measured yet) counts as zero.
    step : (float, float)
        Grid spacing ``(dy, dx)`` in the gradient's length unit.
    highpass : float
        Frequency (cycles per grid step, ``0 <= highpass``) below which the result is damped:
        the transfer is ``|k|^2 / (|k|^2 + highpass^2)``. 0 keeps every frequency but zero.
    boundary : {"mirror", "periodic"}
        ``"periodic"``: the grid wraps (exact for periodic fields); ``"mirror"`` (default):
        the field is extended by mirroring, as the gradient of the evenly extended
        function, so a non-periodic field has no edge jumps.

    Returns
    -------
    numpy.ndarray
        float64 ``(ny, nx)``, in the gradient's unit times ``step``'s; mean zero over the
        (extended) grid.

    Raises
    ------
    ValueError
        Shapes that differ or are not 2D, a negative ``highpass``, an unknown ``boundary``,
        a non-positive ``step``.

    Examples
    --------
    >>> y, x = np.mgrid[:16, :16] * 2 * np.pi / 16
    >>> phi = np.cos(y) + np.sin(2 * x)
    >>> gy, gx = -np.sin(y) * 2 * np.pi / 16, 2 * np.cos(2 * x) * 2 * np.pi / 16
    >>> got = integrate_gradient(gy, gx, boundary="periodic")
    >>> bool(np.allclose(got, phi - phi.mean(), atol=0.02))
    True
    """
    gy = np.nan_to_num(np.asarray(grad_y, np.float64), nan=0.0)
    gx = np.nan_to_num(np.asarray(grad_x, np.float64), nan=0.0)
    if gy.ndim != 2 or gy.shape != gx.shape:
        raise ValueError(f"integrate_gradient: expected grad_y and grad_x as 2D maps of one "
                         f"shape, found {gy.shape} and {gx.shape}")
    if not (np.isfinite(highpass) and highpass >= 0):
        raise ValueError(f"highpass: expected a frequency >= 0 in cycles per scan step, "
                         f"found {highpass!r}")
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary: expected one of {BOUNDARIES}, found {boundary!r}")
    dy, dx = (float(s) for s in step)
    if not (dy > 0 and dx > 0):
        raise ValueError(f"step: expected positive (dy, dx), found {step!r}")
    ny, nx = gy.shape
    gy, gx = gy * dy, gx * dx  # per grid step
    if boundary == "mirror":
        # even extension of phi: d/dy is odd along y and even along x (and vice versa)
        gy = np.concatenate([gy, -gy[::-1]], axis=0)
        gy = np.concatenate([gy, gy[:, ::-1]], axis=1)
        gx = np.concatenate([gx, gx[::-1]], axis=0)
        gx = np.concatenate([gx, -gx[:, ::-1]], axis=1)
    ky = _frequencies(gy.shape[0])[:, None]
    kx = _frequencies(gy.shape[1])[None, :]
    k2 = ky**2 + kx**2
    # k = 0 (and Nyquist-only bins): no gradient measures them, the mean phase among them
    unmeasured = k2 == 0
    spectrum = (ky * np.fft.fft2(gy) + kx * np.fft.fft2(gx)) / (
        2j * np.pi * np.where(unmeasured, 1.0, k2 + highpass**2))
    spectrum[unmeasured] = 0.0
    return np.fft.ifft2(spectrum).real[:ny, :nx]


class IDPC(CenterOfMass):
    """Integrated differential phase contrast: the phase from the COM field in one pass.

    Runs :class:`CenterOfMass` over the frames (its outputs are all published too) and
    integrates the field in :meth:`finalize` (module docstring; :func:`integrate_gradient`).

    Output ``phase`` per scan position:

    - in rad on data whose calibration has the beam energy, the detector angle per pixel
      and the scan step: the integral of ``phase_gradient_y/x`` (rad/Å) times the step (Å).
      It is the object phase smoothed by the probe intensity (COM measures the probe-
      averaged gradient), with its mean set to zero;
    - otherwise in arbitrary units (``"a.u."``): the integral of ``field_y/x`` (detector px)
      over scan steps.

    Positive phase gradient moves the pattern to larger detector coordinates (after
    rotation and flip into scan axes), so the phase has the object's sign.

    Progressive results: positions not processed yet (NaN COM) count as zero gradient, so
    the phase of a partly filled scan is that of the filled part with the rest flat; the
    published ``phase`` is NaN there like every per-position result.

    Parameters
    ----------
    cy, cx, radius, rotation, flip_y
        As :class:`CenterOfMass`: the rotation (degrees) and flip default to the
        calibration's (scan rotation between detector and scan axes); explicit values win.
    highpass : float
        Frequency in cycles per scan step below which the phase is damped (transfer
        ``|k|^2 / (|k|^2 + highpass^2)``); default 0: only the mean is dropped. A few
        hundredths suppress slow drifts and low-frequency noise.
    boundary : {"mirror", "periodic"}
        How the scan is extended for the FFT (:func:`integrate_gradient`).

    Examples
    --------
    >>> ds = framescope.run(IDPC(radius=12), arr)  # doctest: +SKIP
    >>> ds["phase"].plot()  # doctest: +SKIP
    """

    def __init__(self, cy: float | None = None, cx: float | None = None,
                 radius: float | None = None, rotation: float | None = None,
                 flip_y: bool | None = None, highpass: float = 0.0,
                 boundary: Literal["mirror", "periodic"] = "mirror") -> None:
        super().__init__(cy=cy, cx=cx, radius=radius, rotation=rotation, flip_y=flip_y)
        if not (np.isfinite(highpass) and highpass >= 0):
            raise ValueError(f"highpass: expected a frequency >= 0 in cycles per scan step, "
                             f"found {highpass!r}")
        if boundary not in BOUNDARIES:
            raise ValueError(f"boundary: expected one of {BOUNDARIES}, found {boundary!r}")
        self.highpass, self.boundary = float(highpass), boundary

    def params(self) -> dict[str, Any]:
        return {**super().params(), "highpass": self.highpass, "boundary": self.boundary}

    @staticmethod
    def step_angstrom(calibration: Calibration | None) -> tuple[float, float] | None:
        """Scan step ``(dy, dx)`` in Å when the phase can be in rad (energy, detector
        angle and scan step known), else None."""
        cal = calibration
        if (cal is None or cal.scan_step is None or cal.wavelength is None
                or cal.detector_angle is None):
            return None
        return (cal.scan_step[0] * 1e10, cal.scan_step[1] * 1e10)

    def outputs(self, meta: Meta) -> dict[str, Buffer]:
        out = super().outputs(meta)
        step = self.step_angstrom(meta.calibration)
        if step is None:
            log.debug("IDPC: phase in arbitrary units (the calibration needs energy, "
                      "angle_per_px and scan_step for rad)")
        out["phase"] = Buffer("nav", "float32", fill=np.nan,
                              units="a.u." if step is None else "rad")
        return out

    def finalize(self, results: dict[str, np.ndarray], meta: Meta) -> dict[str, np.ndarray]:
        out = super().finalize(results, meta)
        step = self.step_angstrom(meta.calibration)
        keys = ("field_y", "field_x") if step is None else ("phase_gradient_y",
                                                             "phase_gradient_x")
        gy, gx = (out[k].astype(np.float64).reshape(meta.scan_shape) for k in keys)
        phase = integrate_gradient(gy, gx, step=step or (1.0, 1.0), highpass=self.highpass,
                                   boundary=self.boundary)
        out["phase"] = phase.astype(np.float32).reshape(meta.n_positions)
        return out
