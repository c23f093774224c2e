"""Single-sideband (SSB) ptychography: the complex object from one mask product per frame.

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

Computation. ``G`` is linear in the frames, so each frame contributes
``exp(-2 pi i Q.r) * (I(r) @ W)[Q]`` with ``W[k, Q]`` the weights above: a product of the
frame's bright-field pixels with a fixed (pixels x Q) matrix, the shape of framescope's
mask product, accumulated per frame. The image therefore fills in while a scan runs, on
files and live streams alike, and partial results merge by addition. Memory is the weight
matrix: ``n_bf`` bright-field pixels times ``n_Q`` scan frequencies inside ``2 alpha``
(8 bytes each; half as many frequencies for a phase object): for a phase object a 64x64
scan of 64x64 frames with a BF radius of 10.7 px needs ~3 MB; a 128x128 scan of 128x128
frames with a radius of 21 px ~40 MB, with a radius of 32 px (3 200 pixels) ~210 MB. The
detector is binned automatically when the matrix would exceed ``max_memory``.

Scan geometry. Scan position ``(iy, ix)`` sits at ``step * M @ (iy, ix)`` in detector
(object) axes with ``M = F @ R(rotation).T`` (``F`` flips y), the convention of
:class:`~framescope.calibration.Calibration` and :class:`~framescope.udf.CenterOfMass`; a
scan frequency ``f`` (cycles per step) is then ``M @ (f / step)`` on the detector.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any, Literal

import numpy as np

from framescope.udf._backend import to_device, xp
from framescope.udf._base import UDF, Buffer, Meta, Tile
from framescope.udf._kernels import LazyKernel, share_cores
from framescope.udf._ssb_plan import (
    DEFAULT_MEMORY,
    SSBGeometry,
    SSBPlan,
    build_plan,
    quantity,
    ssb_geometry,
)

__all__ = ["SSB", "SSBGeometry", "accumulate_spectrum_xp", "ssb_geometry"]

accumulate_spectrum = LazyKernel("framescope.udf._ssb_kernel", "accumulate_spectrum")


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
        Bytes the weight matrix may take per worker process (default 1 GiB).
    min_pixels : int
        Scan frequencies whose trotters hold fewer detector pixels are left out (default 1).
    object : {"phase", "complex"}
        ``"phase"`` (default): a weak *phase* object, ``t = 1 + i phi``; both trotters of
        each frequency of one half plane, the other half by symmetry (half the work).
        ``"complex"``: any weak object ``t = 1 + o``; one sideband per frequency over the
        whole plane, giving ``amplitude`` as well (twice the work, noisier per frequency).

    Outputs per scan position: ``phase`` (rad), ``bright_field`` (the summed bright-field
    disk, NaN where not measured yet) and, for ``object="complex"``, ``amplitude`` of
    ``1 + o``.

    With ``backend="cupy"`` the product and the phase factors run on the GPU (the weight
    matrix is copied there once per worker process); ``finalize`` runs on the host.
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
        plan = self._plan(meta)
        return {
            "spectrum": Buffer("single", "complex128", (plan.q_flat.size,), ("q",)),
            "bf_sum": Buffer("single", "float64", (plan.pixels.size,), ("bf_pixel",)),
            "bright_field": Buffer("nav", "float32", fill=np.nan),
        }

    def outputs(self, meta: Meta) -> dict[str, Buffer]:
        out = {"phase": Buffer("nav", "float32", fill=np.nan, units="rad")}
        if self.object == "complex":
            out["amplitude"] = Buffer("nav", "float32", fill=np.nan)
        out["bright_field"] = Buffer("nav", "float32", fill=np.nan)
        return out

    def prepare(self, meta: Meta) -> SSBPlan:
        share_cores()
        plan = self._plan(meta)
        if meta.backend == "numpy":
            return plan
        # the matrix and the tables live on the device; the geometry and the host weights
        # (finalize) stay where they are
        dev = functools.partial(to_device, backend=meta.backend)
        return replace(plan, pixels=dev(plan.pixels), w_ri=dev(plan.w_ri),
                       ey_re=dev(plan.ey_re), ey_im=dev(plan.ey_im), ex_re=dev(plan.ex_re),
                       ex_im=dev(plan.ex_im))

    def process_tile(self, tile: Tile, results: dict[str, np.ndarray], state: SSBPlan) -> None:
        x = _bright_field_pixels(tile.data, state)
        t = x @ state.w_ri  # (n, 2 n_q): one real GEMM, the bulk of the work
        ys, xs = np.divmod(tile.positions, state.geometry.scan_shape[1])
        if isinstance(t, np.ndarray):
            accumulate_spectrum(t, ys, xs, state.ey_re, state.ey_im, state.ex_re,
                                state.ex_im, results["spectrum"])
        else:
            mod = xp(t)
            accumulate_spectrum_xp(t, mod.asarray(ys), mod.asarray(xs), state,
                                   results["spectrum"])
        results["bf_sum"] += x.sum(axis=0, dtype=np.float64)
        results["bright_field"][:] = x.sum(axis=1)

    def finalize(self, results: dict[str, np.ndarray], meta: Meta) -> dict[str, np.ndarray]:
        plan = self._plan(meta)
        bf = results["bright_field"]
        measured = ~np.isnan(bf)
        n = int(measured.sum())
        ny, nx = meta.scan_shape
        out = {k: np.full(meta.n_positions, np.nan, np.float32)
               for k in self.outputs(meta) if k != "bright_field"}
        out["bright_field"] = bf
        if n == 0:
            return out
        mean = results["bf_sum"] / n  # mean bright-field frame over the measured positions
        i0 = float(mean.mean())
        spectrum = results["spectrum"].astype(np.complex128)
        if n < meta.n_positions:
            # positions not yet measured are missing, not zero: take out the mean frame's
            # share over the measured positions, or their outline would dominate the image
            covered = np.fft.fft2(measured.reshape(ny, nx).astype(np.float64)).ravel()
            spectrum = spectrum - (mean @ plan.weights) * covered[plan.q_flat]
        spec = np.zeros(ny * nx, np.complex128)
        if i0 > 0:
            spectrum /= i0
            if self.object == "complex":
                spec[plan.q_flat] = spectrum  # O(Q) of t = 1 + o
            else:
                spec[plan.negative()] = np.conj(spectrum)  # Phi(-Q) = conj(Phi(Q)): phi real
                spec[plan.q_flat] = spectrum
        image = np.fft.ifft2(spec.reshape(ny, nx)).ravel()
        if self.object == "complex":
            obj = 1 + image
            out["phase"][measured] = np.angle(obj)[measured]
            out["amplitude"][measured] = np.abs(obj)[measured]
        else:
            out["phase"][measured] = image.real[measured]
        return out


def accumulate_spectrum_xp(t: Any, ys: Any, xs: Any, plan: SSBPlan, out: Any) -> None:
    """What the numba kernel does, with array operations of ``t``'s module (cupy on a
    GPU): ``out[q] += sum_f T[f, q] * ey[ys[f], q] * ex[xs[f], q]``."""
    nq = out.shape[0]
    tc = t[:, :nq] + 1j * t[:, nq:]
    phase = (plan.ey_re[ys] + 1j * plan.ey_im[ys]) * (plan.ex_re[xs] + 1j * plan.ex_im[xs])
    out += (tc * phase).sum(axis=0, dtype=out.dtype)


def _bright_field_pixels(data: Any, plan: SSBPlan) -> np.ndarray:
    """The (binned) bright-field pixels of a tile as float32 ``(n, n_bf)``."""
    b = plan.geometry.bin
    n = data.shape[0]
    if b > 1:
        h, w = plan.geometry.frame_shape
        hb, wb = h // b, w // b
        data = data[:, :hb * b, :wb * b].reshape(n, hb, b, wb, b).sum(axis=(2, 4),
                                                                        dtype=np.float32)
    flat = data.reshape(n, -1)
    return xp(flat).take(flat, plan.pixels, axis=1).astype(np.float32, copy=False)
