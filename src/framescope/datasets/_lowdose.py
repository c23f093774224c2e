"""A simulated low-dose dataset of a direct electron detector, with its true electron events.

Each frame receives ``Poisson(dose * det_y * det_x)`` electrons. An electron's pixel is drawn
from a probability map (uniform, or a bright-field disk over a diffuse background), its
position uniformly inside that pixel. Pixel ``(i, j)`` covers ``[i - 1/2, i + 1/2) x
[j - 1/2, j + 1/2)``, so positions are in detector px with pixel centres on integers, the
convention of the sub-pixel centroids of :func:`framescope.counting.count_electrons`.

An electron deposits a charge cloud: a 2D Gaussian of standard deviation ``blur`` px,
integrated over each pixel, carrying a total signal drawn from a gamma distribution of mean
``gain`` ADU and relative spread ``gain_spread``. Rarely (``xray_rate`` per frame) an X-ray
deposits ``xray_gain`` times that. On top: a fixed per-pixel dark offset (``dark_level`` plus
``dark_spread`` of pixel-to-pixel scatter) and Gaussian read noise of ``read_noise`` ADU; the
sum is rounded and clipped to the dtype.

The defaults (read noise 4 ADU, 160 ADU per electron spread over sigma 0.7 px, so an
electron's brightest pixel holds about 6-13 noise sigmas) make the usual thresholds of 4 noise
sigmas and 10 standard deviations of all values separate electrons from noise and X-rays
from about 0.005 to 0.1 e-/px; at lower doses that X-ray threshold falls into the electron
signal (see docs/counting.md).

Frames are held in memory (the benchmark's 4096 frames of 256 x 256 are 512 MiB).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numba
import numpy as np

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["LowDose", "lowdose"]

_DTYPES = ("uint16", "uint32", "float32")
# the cloud is deposited out to this many blur sigmas (the rest, < 1e-4 of it, is dropped)
_CLOUD_SIGMAS = 4.0


@numba.njit(cache=True, nogil=True)
def _deposit(image: np.ndarray, ys: np.ndarray, xs: np.ndarray, charges: np.ndarray,
             sigma: float, radius: int) -> None:  # pragma: no cover - compiled
    """Add pixel-integrated Gaussian clouds of ``charges`` centred on ``(ys, xs)``."""
    h, w = image.shape
    scale = 1.0 / (sigma * math.sqrt(2.0))
    fy = np.empty(2 * radius + 1)
    fx = np.empty(2 * radius + 1)
    for k in range(ys.shape[0]):
        y, x, q = ys[k], xs[k], charges[k]
        cy, cx = math.floor(y + 0.5), math.floor(x + 0.5)
        for d in range(2 * radius + 1):
            i = cy - radius + d
            fy[d] = 0.5 * (math.erf((i + 0.5 - y) * scale) - math.erf((i - 0.5 - y) * scale))
            j = cx - radius + d
            fx[d] = 0.5 * (math.erf((j + 0.5 - x) * scale) - math.erf((j - 0.5 - x) * scale))
        for a in range(2 * radius + 1):
            i = cy - radius + a
            if i < 0 or i >= h:
                continue
            for b in range(2 * radius + 1):
                j = cx - radius + b
                if 0 <= j < w:
                    image[i, j] += q * fy[a] * fx[b]


@dataclass(frozen=True, eq=False)
class LowDose:
    """A simulated low-dose 4D dataset and its ground truth; made by :func:`lowdose`.

    Attributes
    ----------
    frames : ndarray, shape (scan_y, scan_x, det_y, det_x)
        The detector frames (dark offset, read noise and electron signal, in ADU).
    offsets : ndarray of int64, shape (n_frames + 1,)
        The electrons of flat (row-major) frame ``i`` are ``positions[offsets[i]:
        offsets[i + 1]]``.
    positions : ndarray of float64, shape (n_electrons, 2)
        True ``(y, x)`` of each electron, detector px, pixel centres on integers.
    xray_offsets, xray_positions
        The same for the X-ray events.
    dark_level : ndarray of float32, shape (det_y, det_x)
        The per-pixel dark offset, ADU (what a dark reference estimates).
    read_noise : float
        Standard deviation of the Gaussian read noise, ADU.
    gain : float
        Mean signal of one electron, ADU.
    blur : float
        Standard deviation of an electron's charge cloud, px.
    seed : int
        The seed everything was drawn from.
    """

    frames: np.ndarray
    offsets: np.ndarray
    positions: np.ndarray
    xray_offsets: np.ndarray
    xray_positions: np.ndarray
    dark_level: np.ndarray
    read_noise: float
    gain: float
    blur: float
    seed: int

    @property
    def scan_shape(self) -> tuple[int, int]:
        """``(scan_y, scan_x)``."""
        return self.frames.shape[0], self.frames.shape[1]

    @property
    def frame_shape(self) -> tuple[int, int]:
        """``(det_y, det_x)``."""
        return self.frames.shape[2], self.frames.shape[3]

    @property
    def pixel_indices(self) -> np.ndarray:
        """Flat (row-major) index of the pixel each electron landed in, int64."""
        iy, ix = np.floor(self.positions + 0.5).astype(np.int64).T
        return iy * self.frame_shape[1] + ix

    def dark_frames(self, n: int, *, seed: int | None = None) -> np.ndarray:
        """``n`` dark frames: the same dark offset and read noise, no electrons.

        Parameters
        ----------
        n : int
            Number of frames.
        seed : int, optional
            Seed of their read noise; default derived from the dataset's seed (so they are
            independent of the frames' noise).

        Returns
        -------
        ndarray, shape (n, det_y, det_x), the frames' dtype
        """
        if int(n) != n or n < 1:
            raise ValueError(f"dark_frames: n must be a positive int, found {n!r}")
        rng = np.random.default_rng([self.seed, 1] if seed is None else [seed, 2])
        noise = rng.standard_normal((int(n), *self.frame_shape), dtype=np.float32)
        noise *= np.float32(self.read_noise)
        noise += self.dark_level
        return _to_dtype(noise, self.frames.dtype)

    def to_dataarray(self, chunks: int | None = None) -> xr.DataArray:
        """The frames as a ``(scan_y, scan_x, det_y, det_x)`` DataArray.

        Parameters
        ----------
        chunks : int, optional
            Scan rows per dask chunk; default: a numpy-backed array.
        """
        import dask.array as da
        import xarray as xr

        data = self.frames
        if chunks is not None:
            data = da.from_array(data, chunks=(int(chunks), -1, -1, -1))
        coords = {d: np.arange(n) for d, n in zip(
            ("scan_y", "scan_x", "det_y", "det_x"), self.frames.shape, strict=True)}
        return xr.DataArray(data, dims=("scan_y", "scan_x", "det_y", "det_x"),
                            coords=coords, name="frames")


def _to_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype.kind == "f":
        return values.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.rint(values), info.min, info.max).astype(dtype)


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int | np.integer) else tuple(value)
    if len(pair) != 2 or any(int(v) != v or v < 1 for v in pair):
        raise ValueError(f"lowdose: {name} must be a positive int or a pair of them, "
                         f"found {value!r}")
    return int(pair[0]), int(pair[1])


def _probability(det: tuple[int, int], pattern: Literal["uniform", "disk"] | np.ndarray,
                 disk_radius: float | None, disk_fraction: float) -> np.ndarray | None:
    """Per-pixel probability of an electron (flat), None for uniform."""
    h, w = det
    if isinstance(pattern, str) and pattern == "uniform":
        return None
    if isinstance(pattern, str) and pattern == "disk":
        radius = min(h, w) / 6 if disk_radius is None else float(disk_radius)
        if not 0 < radius < min(h, w) / 2:
            raise ValueError(f"lowdose: disk_radius must lie in (0, {min(h, w) / 2}) px, "
                             f"found {radius}")
        if not 0 <= disk_fraction <= 1:
            raise ValueError(f"lowdose: disk_fraction must lie in [0, 1], found {disk_fraction}")
        yy, xx = np.mgrid[:h, :w]
        inside = (yy - h // 2) ** 2 + (xx - w // 2) ** 2 <= radius**2
        p = np.where(inside, disk_fraction / inside.sum(), 0.0)
        p += (1 - disk_fraction) / (h * w)
    elif isinstance(pattern, np.ndarray):
        if pattern.shape != det:
            raise ValueError(f"lowdose: pattern must have the detector shape {det}, found "
                             f"{pattern.shape}")
        p = np.asarray(pattern, dtype=np.float64)
        if not (np.all(np.isfinite(p)) and np.all(p >= 0) and p.sum() > 0):
            raise ValueError("lowdose: a pattern array must be finite, non-negative and not "
                             "all zero")
    else:
        raise ValueError(f"lowdose: pattern must be 'uniform', 'disk' or a {det} array, "
                         f"found {pattern!r}")
    p = p.ravel()
    return p / p.sum()


def _draw(rng: np.random.Generator, n_frames: int, rate: float, det: tuple[int, int],
          p: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Offsets per frame and sub-pixel (y, x) positions of Poisson(rate) events per frame."""
    counts = rng.poisson(rate, n_frames)
    offsets = np.zeros(n_frames + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    total = int(offsets[-1])
    h, w = det
    flat = (rng.integers(0, h * w, total) if p is None
            else np.searchsorted(np.cumsum(p), rng.random(total), side="right"))
    flat = np.minimum(flat, h * w - 1)  # cumsum may end a hair below 1
    sub = rng.random((total, 2)) - 0.5
    positions = np.stack([flat // w, flat % w], axis=1) + sub
    return offsets, positions


def lowdose(
    scan: int | tuple[int, int] = (8, 8),
    det: int | tuple[int, int] = (64, 64),
    *,
    dose: float = 0.1,
    pattern: Literal["uniform", "disk"] | np.ndarray = "uniform",
    disk_radius: float | None = None,
    disk_fraction: float = 0.8,
    gain: float = 160.0,
    gain_spread: float = 0.1,
    blur: float = 0.7,
    dark_level: float = 100.0,
    dark_spread: float = 5.0,
    read_noise: float = 4.0,
    xray_rate: float = 0.0,
    xray_gain: float = 30.0,
    seed: int = 0,
    dtype: str = "uint16",
) -> LowDose:
    """Simulate low-dose frames of a direct electron detector with their true electrons.

    Parameters
    ----------
    scan : int or (int, int)
        Scan shape ``(scan_y, scan_x)``.
    det : int or (int, int)
        Detector shape ``(det_y, det_x)``.
    dose : float
        Mean electrons per pixel per frame, averaged over the detector.
    pattern : {"uniform", "disk"} or ndarray
        Where electrons land: uniformly, a bright-field disk (``disk_fraction`` of them,
        uniformly in a disk of ``disk_radius`` px, default ``min(det) / 6``, centred on
        ``(det_y // 2, det_x // 2)``) over a uniform background, or any non-negative
        ``det``-shaped weight map.
    disk_radius, disk_fraction : float
        See ``pattern``.
    gain : float
        Mean total signal of one electron, ADU.
    gain_spread : float
        Relative standard deviation of that signal (gamma distributed, so always > 0).
    blur : float
        Standard deviation of the charge cloud, px.
    dark_level, dark_spread : float
        Mean and pixel-to-pixel standard deviation of the fixed dark offset, ADU.
    read_noise : float
        Standard deviation of the Gaussian read noise, ADU.
    xray_rate : float
        Mean X-ray events per frame (uniform over the detector).
    xray_gain : float
        Signal of an X-ray in mean electron signals.
    seed : int
        Seed of every random draw; the same arguments give the same data.
    dtype : {"uint16", "uint32", "float32"}
        Frame dtype; integer frames are rounded and clipped.

    Returns
    -------
    LowDose
        The frames, the true electron and X-ray positions and the dark offset map.

    Examples
    --------
    >>> ds = lowdose(scan=(2, 3), det=(32, 32), dose=0.05, seed=1)
    >>> ds.frames.shape, ds.offsets.shape
    ((2, 3, 32, 32), (7,))
    """
    scan_shape, det_shape = _pair(scan, "scan"), _pair(det, "det")
    if dtype not in _DTYPES:
        raise ValueError(f"lowdose: dtype must be one of {_DTYPES}, found {dtype!r}")
    for name, value in (("dose", dose), ("xray_rate", xray_rate), ("read_noise", read_noise),
                        ("dark_spread", dark_spread), ("gain_spread", gain_spread)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"lowdose: {name} must be a finite number >= 0, found {value}")
    for name, value in (("gain", gain), ("blur", blur), ("xray_gain", xray_gain)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"lowdose: {name} must be a positive number, found {value}")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"lowdose: seed must be a non-negative int, found {seed!r}")
    p = _probability(det_shape, pattern, disk_radius, disk_fraction)
    h, w = det_shape
    n_frames = scan_shape[0] * scan_shape[1]
    rng = np.random.default_rng([int(seed), 0])
    dark = (dark_level + dark_spread * rng.standard_normal(det_shape)).astype(np.float32)
    offsets, positions = _draw(rng, n_frames, dose * h * w, det_shape, p)
    xray_offsets, xray_positions = _draw(rng, n_frames, xray_rate, det_shape, None)
    if gain_spread > 0:
        shape_k = 1.0 / gain_spread**2
        charges = rng.gamma(shape_k, gain / shape_k, len(positions))
    else:
        charges = np.full(len(positions), float(gain))
    xray_charges = np.full(len(xray_positions), gain * xray_gain)
    frames = rng.standard_normal((n_frames, h, w), dtype=np.float32)
    frames *= np.float32(read_noise)
    frames += dark
    radius = max(1, math.ceil(_CLOUD_SIGMAS * blur))
    signal = np.empty(det_shape, dtype=np.float64)
    for i in range(n_frames):
        signal[:] = 0.0
        for offs, pos, q in ((offsets, positions, charges),
                             (xray_offsets, xray_positions, xray_charges)):
            sl = slice(offs[i], offs[i + 1])
            _deposit(signal, pos[sl, 0], pos[sl, 1], q[sl], float(blur), radius)
        frames[i] += signal
    out = _to_dtype(frames, np.dtype(dtype)).reshape(*scan_shape, h, w)
    return LowDose(
        frames=out, offsets=offsets, positions=positions, xray_offsets=xray_offsets,
        xray_positions=xray_positions, dark_level=dark, read_noise=float(read_noise),
        gain=float(gain), blur=float(blur), seed=int(seed),
    )
