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

with ``N(Q)`` the number of pixels of that trotter: one sideband per ``Q`` over the whole
``Q`` plane uses both trotters' information (the right trotter of ``Q`` is the left one of
``-Q``) and gives the complex object, amplitude and phase, without assuming a pure phase
object. The conjugate aberration factor makes a known defocus cancel (aberration-corrected
SSB). ``o(r)`` is the inverse DFT of ``O``; the published object is ``1 + o`` at the scan
positions: the object under the probe centre, like the synthetic data's ``true_phase``.

Computation. ``G`` is linear in the frames, so each frame contributes
``exp(-2 pi i Q.r) * (I(r) @ W)[Q]`` with ``W[k, Q]`` the weights above: a product of the
frame's bright-field pixels with a fixed (pixels x Q) matrix, the shape of framescope's
mask product, accumulated per frame. The image therefore fills in while a scan runs, on
files and live streams alike, and partial results merge by addition. Memory is the weight
matrix: ``n_bf`` bright-field pixels times ``n_Q`` scan frequencies inside ``2 alpha``
(8 bytes each): a 64x64 scan with a 800-pixel disk needs ~20 MB; a 128x128 scan with a
3 200-pixel disk (128x128 detector, disk radius 32 px) ~420 MB, ~100 MB binned 2x2. The
detector is binned automatically when the matrix would exceed ``max_memory``.

Scan geometry. Scan position ``(iy, ix)`` sits at ``step * M @ (iy, ix)`` in detector
(object) axes with ``M = F @ R(rotation).T`` (``F`` flips y), the convention of
:class:`~framescope.calibration.Calibration` and :class:`~framescope.udf.CenterOfMass`; a
scan frequency ``f`` (cycles per step) is then ``M @ (f / step)`` on the detector.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from framescope.udf._backend import to_device, xp
from framescope.udf._base import UDF, Buffer, Meta, Tile
from framescope.udf._kernels import LazyKernel, share_cores

__all__ = ["SSB", "SSBGeometry", "accumulate_spectrum_xp", "ssb_geometry"]

accumulate_spectrum = LazyKernel("framescope.udf._ssb_kernel", "accumulate_spectrum")

_DEFAULT_MEMORY = 1 << 30


def _quantity(value: Any, quantity: str, field: str) -> float | None:
    if value is None:
        return None
    from framescope.calibration import parse_quantity

    return parse_quantity(value, quantity, field)


@dataclass(frozen=True, slots=True)
class SSBGeometry:
    """Resolved SSB geometry (SI units) and the detector binning it runs with."""

    wavelength: float  # m
    semiconv: float  # rad
    angle_per_px: float  # rad per raw detector pixel
    center: tuple[float, float]  # raw detector px
    step: tuple[float, float]  # m per scan step (y, x)
    rotation: float  # rad
    flip: bool
    defocus: float  # m
    scan_shape: tuple[int, int]
    frame_shape: tuple[int, int]
    bin: int

    @property
    def matrix(self) -> np.ndarray:
        """``F @ R(rotation).T``: detector (object) displacement per scan displacement."""
        c, s = math.cos(self.rotation), math.sin(self.rotation)
        m = np.array([[c, -s], [s, c]])
        if self.flip:
            m[0] *= -1
        return m

    def chi(self, ky: np.ndarray, kx: np.ndarray) -> np.ndarray:
        """Aberration phase ``pi * lambda * defocus * |k|^2`` (rad) for ``k`` in 1/m."""
        return math.pi * self.wavelength * self.defocus * (ky**2 + kx**2)

    def pixel_k(self) -> tuple[np.ndarray, np.ndarray]:
        """``k`` (1/m) at the centres of the binned detector pixels, ``(hb, wb)`` each."""
        b = self.bin
        hb, wb = self.frame_shape[0] // b, self.frame_shape[1] // b
        cy, cx = self.center
        per = self.angle_per_px / self.wavelength
        ky = (np.arange(hb) * b + (b - 1) / 2 - cy) * per
        kx = (np.arange(wb) * b + (b - 1) / 2 - cx) * per
        return np.broadcast_to(ky[:, None], (hb, wb)), np.broadcast_to(kx[None, :], (hb, wb))

    def scan_q(self) -> tuple[np.ndarray, np.ndarray]:
        """Scan frequencies of the DFT grid in detector axes (1/m), ``scan_shape`` each."""
        ny, nx = self.scan_shape
        fy = np.fft.fftfreq(ny)[:, None] / self.step[0]
        fx = np.fft.fftfreq(nx)[None, :] / self.step[1]
        (a, b), (c, d) = self.matrix
        return a * fy + b * fx, c * fy + d * fx

    def weight_bytes(self, n_bf: int, n_q: int) -> int:
        """Bytes of the weight matrix and the per-row phase tables."""
        return n_bf * n_q * 8 + (sum(self.scan_shape)) * n_q * 8


def ssb_geometry(meta: Meta, *, defocus: Any = 0.0, semiconv: Any = None,
                 rotation: float | None = None, flip: bool | None = None,
                 bin: int | None = None, max_memory: int = _DEFAULT_MEMORY) -> SSBGeometry:
    """The SSB geometry of data described by ``meta`` (calibration plus overrides).

    Raises
    ------
    ValueError
        A calibration field SSB needs (energy, detector angle, convergence semi-angle, scan
        step) is missing, or no binning keeps the weights under ``max_memory``.
    """
    cal = meta.calibration
    missing = []
    wavelength = None if cal is None else cal.wavelength
    angle = None if cal is None else cal.detector_angle
    alpha = _quantity(semiconv, "angle", "semiconv")
    if alpha is None and cal is not None:
        alpha = cal.semiconv
    step = None if cal is None else cal.scan_step
    for name, value in (("energy", wavelength), ("angle_per_px (or camera_length and "
                        "pixel_size)", angle), ("semiconv", alpha), ("scan_step", step)):
        if value is None:
            missing.append(name)
    if missing:
        raise ValueError(f"SSB: the calibration lacks {', '.join(missing)}; give them with "
                         f"arr.fs.calibrate(...) (found {cal!r})")
    h, w = meta.frame_shape
    center = cal.center if cal.center is not None else (h // 2, w // 2)
    base = SSBGeometry(
        wavelength=float(wavelength), semiconv=float(alpha), angle_per_px=float(angle),
        center=(float(center[0]), float(center[1])), step=(float(step[0]), float(step[1])),
        rotation=float(cal.rotation if rotation is None else math.radians(rotation)),
        flip=bool(cal.flip if flip is None else flip),
        defocus=float(_quantity(defocus, "length", "defocus") or 0.0),
        scan_shape=tuple(meta.scan_shape), frame_shape=(h, w), bin=int(bin or 1),
    )
    if bin is not None:
        if not 1 <= bin <= min(h, w):
            raise ValueError(f"SSB bin: expected 1..{min(h, w)}, found {bin}")
        return base
    for b in range(1, min(h, w) + 1):
        geom = _replace_bin(base, b)
        n_bf, n_q = _sizes(geom)
        if geom.weight_bytes(n_bf, n_q) <= max_memory:
            return geom
    raise ValueError(f"SSB: no detector binning keeps the weights under {max_memory} bytes")


def _replace_bin(g: SSBGeometry, b: int) -> SSBGeometry:
    return replace(g, bin=b)


def _bright_field(g: SSBGeometry) -> np.ndarray:
    ky, kx = g.pixel_k()
    return ky**2 + kx**2 < (g.semiconv / g.wavelength) ** 2


def _sizes(g: SSBGeometry) -> tuple[int, int]:
    qy, qx = g.scan_q()
    n_q = int(np.count_nonzero(qy**2 + qx**2 < (2 * g.semiconv / g.wavelength) ** 2)) - 1
    return int(np.count_nonzero(_bright_field(g))), max(n_q, 0)


@dataclass(slots=True)
class _Plan:
    geometry: SSBGeometry
    pixels: np.ndarray  # (n_bf,) flat indices into the binned frame
    weights: np.ndarray  # (n_bf, n_q) complex128: conj aberration factor / N(Q)
    w_ri: np.ndarray  # (n_bf, 2 n_q) float32: [Re W | Im W] for one real GEMM
    q_flat: np.ndarray  # (n_q,) flat indices into the scan DFT grid
    ey_re: np.ndarray  # (ny, n_q) float32: cos/sin of -2 pi fy y
    ey_im: np.ndarray
    ex_re: np.ndarray  # (nx, n_q)
    ex_im: np.ndarray


@functools.lru_cache(maxsize=8)
def _plan(g: SSBGeometry, min_pixels: int) -> _Plan:
    bf = _bright_field(g)
    ky, kx = g.pixel_k()
    ky, kx = ky[bf], kx[bf]
    k_alpha2 = (g.semiconv / g.wavelength) ** 2
    qy, qx = g.scan_q()
    inside = (qy**2 + qx**2 < 4 * k_alpha2)
    inside.flat[0] = False  # Q = 0 carries the mean, not the object
    q_flat = np.flatnonzero(inside)
    qy, qx = qy.ravel()[q_flat], qx.ravel()[q_flat]
    chi_k = g.chi(ky, kx)
    weights = np.zeros((ky.size, q_flat.size), np.complex128)
    counts = np.zeros(q_flat.size, np.int64)
    chunk = max(1, (1 << 22) // max(ky.size, 1))
    for lo in range(0, q_flat.size, chunk):
        sy, sx = qy[lo:lo + chunk], qx[lo:lo + chunk]
        my, mx = ky[:, None] - sy, kx[:, None] - sx
        left = my**2 + mx**2 < k_alpha2
        right = (ky[:, None] + sy) ** 2 + (kx[:, None] + sx) ** 2 < k_alpha2
        trotter = left & ~right
        counts[lo:lo + chunk] = trotter.sum(axis=0)
        # conj(p(k - Q) p*(k)) = exp(i (chi(k - Q) - chi(k))) on the trotter
        weights[:, lo:lo + chunk] = np.where(trotter, np.exp(1j * (g.chi(my, mx) - chi_k[:, None])),
                                             0)
    keep = counts >= max(1, min_pixels)
    weights = weights[:, keep] / counts[keep]
    q_flat = q_flat[keep]
    ny, nx = g.scan_shape
    fy = np.fft.fftfreq(ny)[np.unravel_index(q_flat, (ny, nx))[0]]
    fx = np.fft.fftfreq(nx)[np.unravel_index(q_flat, (ny, nx))[1]]
    ang_y = -2 * np.pi * np.arange(ny)[:, None] * fy[None, :]
    ang_x = -2 * np.pi * np.arange(nx)[:, None] * fx[None, :]
    w_ri = np.ascontiguousarray(np.concatenate([weights.real, weights.imag], axis=1),
                                dtype=np.float32)
    f32 = functools.partial(np.ascontiguousarray, dtype=np.float32)
    return _Plan(g, np.flatnonzero(bf), weights, w_ri, q_flat, f32(np.cos(ang_y)),
                 f32(np.sin(ang_y)), f32(np.cos(ang_x)), f32(np.sin(ang_x)))


class SSB(UDF):
    """Single-sideband ptychography: the complex object at the scan positions.

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
        Scan frequencies whose trotter has fewer detector pixels are left out (default 1).

    Outputs per scan position: ``phase`` (rad), ``amplitude`` of ``1 + o``, and
    ``bright_field`` (the summed bright-field disk: which positions have been measured).

    With ``backend="cupy"`` the product and the phase factors run on the GPU (the weight
    matrix is copied there once per worker process); ``finalize`` runs on the host.
    """

    name = "ssb"
    share_state = True

    def __init__(self, *, defocus: float | str = 0.0, semiconv: float | str | None = None,
                 rotation: float | None = None, flip: bool | None = None,
                 bin: int | None = None, max_memory: int = _DEFAULT_MEMORY,
                 min_pixels: int = 1) -> None:
        self.defocus = float(_quantity(defocus, "length", "defocus") or 0.0)
        self.semiconv = _quantity(semiconv, "angle", "semiconv")
        self.rotation = None if rotation is None else float(rotation)
        self.flip = None if flip is None else bool(flip)
        self.bin = None if bin is None else int(bin)
        self.max_memory = int(max_memory)
        self.min_pixels = int(min_pixels)

    def params(self) -> dict[str, Any]:
        return {"defocus": self.defocus, "semiconv": self.semiconv, "rotation": self.rotation,
                "flip": self.flip, "bin": self.bin, "max_memory": self.max_memory,
                "min_pixels": self.min_pixels}

    def geometry(self, meta: Meta) -> SSBGeometry:
        """The resolved geometry for data described by ``meta``."""
        return ssb_geometry(meta, defocus=self.defocus, semiconv=self.semiconv,
                            rotation=self.rotation, flip=self.flip, bin=self.bin,
                            max_memory=self.max_memory)

    def plan(self, geometry: SSBGeometry) -> _Plan:
        """Bright-field pixels, trotter weights and phase tables for ``geometry``
        (cached per process)."""
        return _plan(geometry, self.min_pixels)

    def _plan(self, meta: Meta) -> _Plan:
        return _plan(self.geometry(meta), self.min_pixels)

    def buffers(self, meta: Meta) -> dict[str, Buffer]:
        plan = self._plan(meta)
        return {
            "spectrum": Buffer("single", "complex128", (plan.q_flat.size,), ("q",)),
            "bf_sum": Buffer("single", "float64", (plan.pixels.size,), ("bf_pixel",)),
            "bright_field": Buffer("nav", "float32", fill=np.nan),
        }

    def outputs(self, meta: Meta) -> dict[str, Buffer]:
        return {
            "phase": Buffer("nav", "float32", fill=np.nan, units="rad"),
            "amplitude": Buffer("nav", "float32", fill=np.nan),
            "bright_field": Buffer("nav", "float32", fill=np.nan),
        }

    def prepare(self, meta: Meta) -> _Plan:
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

    def process_tile(self, tile: Tile, results: dict[str, np.ndarray], state: _Plan) -> None:
        x = _bright_field_pixels(tile.data, state)
        t = x @ state.w_ri  # (n, 2 n_q): one real GEMM, the bulk of the work
        nx = state.geometry.scan_shape[1]
        positions = tile.positions
        if isinstance(t, np.ndarray):
            ys, xs = np.divmod(positions, nx)
            accumulate_spectrum(t, ys, xs, state.ey_re, state.ey_im, state.ex_re,
                                state.ex_im, results["spectrum"])
        else:
            ys, xs = np.divmod(positions, nx)
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
        phase = np.full(meta.n_positions, np.nan, np.float32)
        amplitude = np.full(meta.n_positions, np.nan, np.float32)
        if n == 0:
            return {"phase": phase, "amplitude": amplitude, "bright_field": bf}
        mean = results["bf_sum"] / n  # mean bright-field frame over the measured positions
        i0 = float(mean.mean())
        spectrum = results["spectrum"].astype(np.complex128)
        if n < meta.n_positions:
            # positions not yet measured are missing, not zero: take out the mean frame's
            # share over the measured positions, or their outline would dominate the image
            covered = np.fft.fft2(measured.reshape(ny, nx).astype(np.float64)).ravel()
            spectrum = spectrum - (mean @ plan.weights) * covered[plan.q_flat]
        o_spec = np.zeros(ny * nx, np.complex128)
        if i0 > 0:
            o_spec[plan.q_flat] = spectrum / i0
        obj = 1 + np.fft.ifft2(o_spec.reshape(ny, nx)).ravel()
        phase[measured] = np.angle(obj)[measured]
        amplitude[measured] = np.abs(obj)[measured]
        return {"phase": phase, "amplitude": amplitude, "bright_field": bf}


def accumulate_spectrum_xp(t: Any, ys: Any, xs: Any, plan: _Plan, out: Any) -> None:
    """What the numba kernel does, with array operations of ``t``'s module (cupy on a
    GPU): ``out[q] += sum_f T[f, q] * ey[ys[f], q] * ex[xs[f], q]``."""
    nq = out.shape[0]
    tc = t[:, :nq] + 1j * t[:, nq:]
    phase = (plan.ey_re[ys] + 1j * plan.ey_im[ys]) * (plan.ex_re[xs] + 1j * plan.ex_im[xs])
    out += (tc * phase).sum(axis=0, dtype=out.dtype)


def _bright_field_pixels(data: Any, plan: _Plan) -> np.ndarray:
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
