"""Single-sideband (SSB) ptychography: the object's phase from the bright-field pixels.

Physics (weak object, Pennycook et al. 2015, Yang et al. 2016; Rodenburg et al. 1993).
The probe in reciprocal space is ``A(k) exp(-i chi(k))`` with ``chi(k) = pi * lambda *
defocus * |k|^2`` (``k`` in 1/m, scattering angle ``lambda * k``) and ``A`` the condenser
aperture (a disk of radius ``alpha / lambda``). For an object ``t = 1 + o`` with ``|o| << 1``
the Fourier transform over the scan positions ``r`` of the frames,
``G(k, Q) = sum_r I(k, r) exp(-2 pi i Q.r)``, is, for ``Q != 0`` and to first order in ``o``,

    G(k, Q) = I0 [ O(Q) p(k - Q) p*(k) + O*(-Q) p(k) p*(k + Q) ],   p = A exp(-i chi),

non-zero only where the shifted aperture overlaps the bright-field disk. In the "left"
double-overlap region ``L(Q) = {|k| < alpha, |k - Q| < alpha}`` outside the right one
``R(Q) = {|k| < alpha, |k + Q| < alpha}`` only the first term lives, so

    O(Q) = sum_{k in L \\ R} G(k, Q) conj(p(k - Q) p*(k)) / (I0 * N(Q))

with ``N(Q)`` the number of pixels of that trotter. With ``object="complex"`` this one
sideband per ``Q`` over the whole ``Q`` plane (the right trotter of ``Q`` is the left one
of ``-Q``) gives the complex object, amplitude and phase, without assuming a pure phase
object; ``o(r)`` is the inverse DFT of ``O`` and the object ``1 + o``. For a weak *phase*
object (the default, ``o = i phi``, ``O*(-Q) = -O(Q)``) both trotters of ``Q`` estimate
``Phi(Q)``: summed with their signs over one half plane, the other half following from
``Phi(-Q) = conj(Phi(Q))``, the same data cost half the product. The conjugate aberration
factor makes a known defocus cancel (aberration-corrected SSB). The images are given at
the scan positions, for the object under the probe centre, like the synthetic data's
``true_phase``.

Computation. Each frame's bright-field pixels (binned when asked) are placed in a stack
over the scan, a ``nav`` buffer like any UDF's, so tasks merge by placement and a scan fills
in on files and live streams alike. ``finalize`` takes ``G`` for every bright-field pixel
at once, one FFT of the stack over the scan axes (``rfft2`` for a phase object), and sums
each frequency's trotter with its weights: ``n_Q x n_bf`` complex products in all, not per
frame. Positions not measured yet count as missing: each pixel's deviation from its mean
over the measured positions is transformed, zero elsewhere. Memory: the stack (``n_pos x
n_bf`` float32), its spectrum over the scan (complex64, half the plane for a phase object)
and the weights (``n_Q x n_bf`` complex64): a 64x64 scan with a BF radius of 10.7 px (357
pixels) ~15 MB; a 128x128 scan with a radius of 21 px (1 433 pixels) ~200 MB, with a
radius of 32 px (3 200 pixels) ~450 MB. The detector is binned automatically when the
total would exceed ``max_memory``.

Scan geometry. Scan position ``(iy, ix)`` sits at ``step * M @ (iy, ix)`` in detector
(object) axes with ``M = F @ R(rotation).T`` (``F`` flips y), the convention of
:class:`~framescope.calibration.Calibration` and :class:`~framescope.udf.CenterOfMass`; a
scan frequency ``f`` (cycles per step) is then ``M @ (f / step)`` on the detector.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import scipy.fft as sfft

from framescope.udf._backend import to_device, xp
from framescope.udf._base import UDF, Buffer, Meta, Tile
from framescope.udf._ssb_plan import (
    DEFAULT_MEMORY,
    SSBGeometry,
    SSBPlan,
    build_plan,
    quantity,
    ssb_geometry,
)

__all__ = ["SSB", "SSBGeometry", "ssb_geometry"]


class SSB(UDF):
    """Single-sideband ptychography: the object's phase at the scan positions.

    Needs a calibration with the beam energy, the detector angle per pixel, the convergence
    semi-angle and the scan step (``arr.fs.calibrate(...)``); the scan rotation and flip are
    taken from it too. See the module docstring for the method and conventions.

    Parameters
    ----------
    defocus : float or str, optional
        Probe defocus (m, or a string such as ``"20 nm"``), corrected by the conjugate
        aberration factor: ``chi(k) = pi * lambda * defocus * |k|^2``. Default 0.
    semiconv : float or str, optional
        Convergence semi-angle (rad or ``"20 mrad"``); default the calibration's.
    rotation : float, optional
        Scan rotation in degrees; default the calibration's.
    flip : bool, optional
        Flip of the detector y axis; default the calibration's.
    bin : int, optional
        Bin the detector ``bin x bin`` before the product; default: the smallest binning
        whose weight matrix fits ``max_memory``.
    max_memory : int
        Bytes the stack, its spectrum and the weights may take (default 1 GiB).
    min_pixels : int
        Scan frequencies whose trotters hold fewer detector pixels are left out (default 1).
    object : {"phase", "complex"}
        ``"phase"`` (default): a weak *phase* object, ``t = 1 + i phi``; both trotters of
        each frequency of one half plane, the other half by symmetry.
        ``"complex"``: any weak object ``t = 1 + o``; one sideband per frequency over the
        whole plane, giving ``amplitude`` as well (twice the spectrum, noisier per
        frequency).

    Outputs per scan position: ``phase`` (rad), ``bright_field`` (the summed bright-field
    disk, NaN where not measured yet) and, for ``object="complex"``, ``amplitude`` of
    ``1 + o``.

    With ``backend="cupy"`` the tiles' bright-field pixels are gathered (and binned) on
    the GPU; ``finalize`` (the FFT over the scan and the trotter sums) runs on the host.
    """

    name = "ssb"
    share_state = True

    def __init__(self, *, defocus: float | str = 0.0, semiconv: float | str | None = None,
                 rotation: float | None = None, flip: bool | None = None,
                 bin: int | None = None, max_memory: int = DEFAULT_MEMORY,
                 min_pixels: int = 1, object: Literal["phase", "complex"] = "phase") -> None:
        if object not in ("phase", "complex"):
            raise ValueError(f"SSB object: expected 'phase' or 'complex', found {object!r}")
        self.defocus = float(quantity(defocus, "length", "defocus") or 0.0)
        self.semiconv = quantity(semiconv, "angle", "semiconv")
        self.rotation = None if rotation is None else float(rotation)
        self.flip = None if flip is None else bool(flip)
        self.bin = None if bin is None else int(bin)
        self.max_memory = int(max_memory)
        self.min_pixels = int(min_pixels)
        self.object = object

    def params(self) -> dict[str, Any]:
        return {"defocus": self.defocus, "semiconv": self.semiconv, "rotation": self.rotation,
                "flip": self.flip, "bin": self.bin, "max_memory": self.max_memory,
                "min_pixels": self.min_pixels, "object": self.object}

    def geometry(self, meta: Meta) -> SSBGeometry:
        """The resolved geometry for data described by ``meta``."""
        return ssb_geometry(meta, defocus=self.defocus, semiconv=self.semiconv,
                            rotation=self.rotation, flip=self.flip, bin=self.bin,
                            max_memory=self.max_memory,
                            complex_object=self.object == "complex")

    def plan(self, geometry: SSBGeometry) -> SSBPlan:
        """Bright-field pixels, trotter weights and phase tables for ``geometry``
        (cached per process)."""
        return build_plan(geometry, self.min_pixels)

    def _plan(self, meta: Meta) -> SSBPlan:
        return build_plan(self.geometry(meta), self.min_pixels)

    def buffers(self, meta: Meta) -> dict[str, Buffer]:
        n_bf = self._plan(meta).pixels.size
        return {"stack": Buffer("nav", "float32", (n_bf,), ("bf_pixel",), fill=np.nan)}

    def outputs(self, meta: Meta) -> dict[str, Buffer]:
        out = {"phase": Buffer("nav", "float32", fill=np.nan, units="rad")}
        if self.object == "complex":
            out["amplitude"] = Buffer("nav", "float32", fill=np.nan)
        out["bright_field"] = Buffer("nav", "float32", fill=np.nan)
        return out

    def prepare(self, meta: Meta) -> tuple[Any, int, tuple[int, int]]:
        # a task only places bright-field pixels: the weights are needed in finalize alone
        plan = self._plan(meta)
        return (to_device(plan.pixels, meta.backend), plan.geometry.bin,
                plan.geometry.frame_shape)

    def process_tile(self, tile: Tile, results: dict[str, np.ndarray],
                     state: tuple[Any, int, tuple[int, int]]) -> None:
        results["stack"][:] = _bright_field_pixels(tile.data, *state)

    def finalize(self, results: dict[str, np.ndarray], meta: Meta) -> dict[str, np.ndarray]:
        plan = self._plan(meta)
        stack = results["stack"]
        measured = ~np.isnan(stack[:, 0])
        out = {k: np.full(meta.n_positions, np.nan, np.float32) for k in self.outputs(meta)}
        n = int(measured.sum())
        if n == 0:
            return out
        complete = n == meta.n_positions
        seen = stack if complete else stack[measured]  # (a copy only while incomplete)
        out["bright_field"][measured] = seen.sum(axis=1)
        # positions not yet measured are missing, not dark: every pixel's deviation from
        # its mean over the measured positions, zero elsewhere
        mean = seen.mean(axis=0, dtype=np.float64)
        i0 = float(mean.mean())
        if complete:
            dev = stack - mean.astype(np.float32)
        else:
            seen -= mean.astype(np.float32)
            dev = np.zeros_like(stack)
            dev[measured] = seen
        del seen
        ny, nx = meta.scan_shape
        dev = dev.reshape(ny, nx, -1)
        # G(k, Q) for every bright-field pixel at once: one FFT of the stack over the scan
        if self.object == "complex":
            g = sfft.fft2(dev, axes=(0, 1), workers=-1)
        else:
            g = sfft.rfft2(dev, axes=(0, 1), workers=-1)
        del dev
        g = g.reshape(-1, g.shape[-1])[plan.q_flat]  # (n_q, n_bf): the frequencies used
        spectrum = np.zeros(plan.geometry.grid[0] * plan.geometry.grid[1], np.complex128)
        if i0 > 0:
            spectrum[plan.q_flat] = np.einsum("qk,qk->q", g, plan.weights) / i0
        spectrum = spectrum.reshape(plan.geometry.grid)
        if self.object == "complex":
            obj = 1 + sfft.ifft2(spectrum).ravel()
            out["phase"][measured] = np.angle(obj)[measured]
            out["amplitude"][measured] = np.abs(obj)[measured]
        else:  # Phi(-Q) = conj(Phi(Q)): the inverse real FFT of the half plane
            out["phase"][measured] = sfft.irfft2(spectrum, s=(ny, nx)).ravel()[measured]
        return out


def _bright_field_pixels(data: Any, pixels: Any, b: int,
                         frame_shape: tuple[int, int]) -> Any:
    """The (binned ``b x b``) bright-field pixels of a tile as float32 ``(n, n_bf)``."""
    n = data.shape[0]
    if b > 1:
        h, w = frame_shape
        hb, wb = h // b, w // b
        data = data[:, :hb * b, :wb * b].reshape(n, hb, b, wb, b).sum(axis=(2, 4),
                                                                        dtype=np.float32)
    flat = data.reshape(n, -1)
    return xp(flat).take(flat, pixels, axis=1).astype(np.float32, copy=False)
