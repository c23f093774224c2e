"""The geometry and the weight matrix of :class:`~framescope.udf.SSB` (see its module for
the physics): which bright-field pixels, which scan frequencies, and each trotter's weights.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from framescope.udf._base import Meta

__all__ = ["DEFAULT_MEMORY", "SSBGeometry", "SSBPlan", "build_plan", "quantity", "ssb_geometry"]

DEFAULT_MEMORY = 1 << 30


def quantity(value: Any, kind: str, field: str) -> float | None:
    if value is None:
        return None
    from framescope.calibration import parse_quantity

    return parse_quantity(value, kind, field)


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
    complex_object: bool = False  # one sideband per Q over the whole plane, else half

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

    @property
    def grid(self) -> tuple[int, int]:
        """Shape of the scan spectrum computed: the ``rfft2`` half plane for a phase object
        (the other half is its complex conjugate), the whole plane for a complex one."""
        ny, nx = self.scan_shape
        return (ny, nx) if self.complex_object else (ny, nx // 2 + 1)

    def scan_q(self) -> tuple[np.ndarray, np.ndarray]:
        """Scan frequencies of :attr:`grid` in detector axes (1/m), ``grid`` shape each."""
        ny, nx = self.scan_shape
        fy = np.fft.fftfreq(ny)[:, None] / self.step[0]
        fx = (np.fft.fftfreq(nx) if self.complex_object else np.fft.rfftfreq(nx))[None, :]
        fx = fx / self.step[1]
        (a, b), (c, d) = self.matrix
        return a * fy + b * fx, c * fy + d * fx

    def memory_bytes(self, n_bf: int, n_q: int) -> int:
        """Bytes SSB needs at its peak (``finalize``): the bright-field stack over the scan
        (float32) and its deviation from the mean (a second float32 stack), the stack's
        spectrum over the scan (complex64), that spectrum at the frequencies used and the
        trotter weights (complex64 each)."""
        n = self.scan_shape[0] * self.scan_shape[1]
        g = self.grid[0] * self.grid[1]
        return 2 * n * n_bf * 4 + g * n_bf * 8 + 2 * n_q * n_bf * 8


def ssb_geometry(meta: Meta, *, defocus: Any = 0.0, semiconv: Any = None,
                 rotation: float | None = None, flip: bool | None = None,
                 bin: int | None = None, max_memory: int = DEFAULT_MEMORY,
                 complex_object: bool = False) -> SSBGeometry:
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
    alpha = quantity(semiconv, "angle", "semiconv")
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
        defocus=float(quantity(defocus, "length", "defocus") or 0.0),
        scan_shape=tuple(meta.scan_shape), frame_shape=(h, w), bin=int(bin or 1),
        complex_object=bool(complex_object),
    )
    if bin is not None:
        if not 1 <= bin <= min(h, w):
            raise ValueError(f"SSB bin: expected 1..{min(h, w)}, found {bin}")
        return base
    for b in range(1, min(h, w) + 1):
        geom = _replace_bin(base, b)
        n_bf, n_q = _sizes(geom)
        if geom.memory_bytes(n_bf, n_q) <= max_memory:
            return geom
    raise ValueError(f"SSB: no detector binning keeps the stack and weights under "
                     f"{max_memory} bytes")


def _replace_bin(g: SSBGeometry, b: int) -> SSBGeometry:
    return replace(g, bin=b)


def _bright_field(g: SSBGeometry) -> np.ndarray:
    ky, kx = g.pixel_k()
    return ky**2 + kx**2 < (g.semiconv / g.wavelength) ** 2


def _frequencies(g: SSBGeometry) -> np.ndarray:
    """Flat indices into :attr:`SSBGeometry.grid` of the scan frequencies with trotters,
    ``0 < |Q| < 2 alpha``."""
    qy, qx = g.scan_q()
    inside = qy**2 + qx**2 < (2 * g.semiconv / g.wavelength) ** 2
    inside.flat[0] = False  # Q = 0 carries the mean, not the object
    return np.flatnonzero(inside)


def _sizes(g: SSBGeometry) -> tuple[int, int]:
    return int(np.count_nonzero(_bright_field(g))), int(_frequencies(g).size)


@dataclass(slots=True)
class SSBPlan:
    """The bright-field pixels and the trotter weights of a geometry (built once)."""

    geometry: SSBGeometry
    pixels: np.ndarray  # (n_bf,) flat indices into the binned frame
    weights: np.ndarray  # (n_q, n_bf) complex64: trotter weights / N(Q)
    q_flat: np.ndarray  # (n_q,) flat indices into geometry.grid


@functools.lru_cache(maxsize=8)
def build_plan(g: SSBGeometry, min_pixels: int = 1) -> SSBPlan:
    """Bright-field pixels and trotter weights of ``g``.

    Complex object: ``W[Q, k] = conj(p(k - Q) p*(k)) / N`` on the left trotter ``L \\ R``
    gives ``O(Q)``. Phase object (``t = 1 + i phi``): both trotters of each frequency of
    the half plane, the right one through ``conj(O(-Q)) = -O(Q)``, give ``Phi(Q)``:
    ``W = -i conj(p(k - Q) p*(k))`` on ``L \\ R`` and ``+i p(k + Q) p*(k)`` on ``R \\ L``,
    over the pixels of both. Frequencies whose trotters hold fewer than ``min_pixels``
    pixels are left out.
    """
    bf = _bright_field(g)
    ky, kx = g.pixel_k()
    ky, kx = ky[bf], kx[bf]
    k_alpha2 = (g.semiconv / g.wavelength) ** 2
    q_flat = _frequencies(g)
    qy, qx = (q.ravel()[q_flat] for q in g.scan_q())
    chi_k = g.chi(ky, kx)[:, None]
    weights = np.zeros((ky.size, q_flat.size), np.complex128)
    counts = np.zeros(q_flat.size, np.int64)
    chunk = max(1, (1 << 22) // max(ky.size, 1))
    for lo in range(0, q_flat.size, chunk):
        sl = slice(lo, lo + chunk)
        my, mx = ky[:, None] - qy[sl], kx[:, None] - qx[sl]  # k - Q
        py, px = ky[:, None] + qy[sl], kx[:, None] + qx[sl]  # k + Q
        left = my**2 + mx**2 < k_alpha2
        right = py**2 + px**2 < k_alpha2
        l_only = left & ~right
        # conj(p(k - Q) p*(k)) = exp(i (chi(k - Q) - chi(k)))
        w = np.where(l_only, np.exp(1j * (g.chi(my, mx) - chi_k)), 0)
        n = l_only.sum(axis=0)
        if not g.complex_object:
            r_only = right & ~left
            w = -1j * w + np.where(r_only, 1j * np.exp(-1j * (g.chi(py, px) - chi_k)), 0)
            n = n + r_only.sum(axis=0)
        weights[:, sl] = w
        counts[sl] = n
    keep = counts >= max(1, min_pixels)
    weights = (weights[:, keep] / counts[keep]).T.astype(np.complex64)
    return SSBPlan(g, np.flatnonzero(bf), np.ascontiguousarray(weights), q_flat[keep])
