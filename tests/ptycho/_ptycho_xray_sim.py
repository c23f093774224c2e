"""A small far-field X-ray ptychography experiment in plain numpy (the tests' ground truth).

A zone plate's annular pupil (hard edges), propagated ``DEFOCUS`` past the focus by the
Fresnel transfer function, illuminates a known complex object on a grid of whole-pixel
windows; frames are ``|fftshift(fft2(P O, ortho))|^2`` with Poisson noise.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from framescope.calibration import photon_wavelength

ENERGY = 6200.0  # eV
WAVELENGTH = photon_wavelength(ENERGY)  # 2.0 Å
DISTANCE, DET_PIXEL = 3.0, 75e-6  # m
DIAMETER, OUTER_ZONE, STOP = 100e-6, 300e-9, 40e-6  # m
DEFOCUS = 4.5e-3  # m past the focus
N = 64  # frame
STEP_PX = 6
SCAN = (8, 8)
PIXEL = WAVELENGTH * DISTANCE / (N * DET_PIXEL)  # object pixel, m
NA = WAVELENGTH / (2 * OUTER_ZONE)
ANGLE = DET_PIXEL / DISTANCE


def probe(dose: float = 1e5) -> np.ndarray:
    """The zone plate's probe at the sample, ``sum |P|^2 = dose``, centred at N//2."""
    q = np.hypot(*np.meshgrid(np.fft.fftfreq(N, 1 / N), np.fft.fftfreq(N, 1 / N),
                              indexing="ij"))
    theta = q * ANGLE
    pupil = (theta <= NA) & (theta >= NA * STOP / DIAMETER)
    k2 = (theta / WAVELENGTH) ** 2
    p = np.fft.fftshift(np.fft.ifft2(pupil * np.exp(-1j * np.pi * WAVELENGTH * DEFOCUS * k2)))
    return p * np.sqrt(dose / np.sum(np.abs(p) ** 2))


def make_object(shape: tuple[int, int], seed: int = 1) -> np.ndarray:
    """Smooth random phase (about +-1 rad) and amplitude (0.7..1) with a few sharp disks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.indices(shape)

    def smooth(width: float) -> np.ndarray:
        f = np.fft.fft2(rng.normal(size=shape))
        ky, kx = np.meshgrid(np.fft.fftfreq(shape[0]), np.fft.fftfreq(shape[1]),
                             indexing="ij")
        a = np.fft.ifft2(f * np.exp(-(ky**2 + kx**2) * (2 * np.pi * width) ** 2 / 2)).real
        return (a - a.mean()) / a.std()

    phase = 0.5 * smooth(3.0)
    amp = 0.85 + 0.05 * smooth(4.0)
    for _ in range(12):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(4, 25)
        phase[disk] += 0.8
        amp[disk] -= 0.1
    return (amp * np.exp(1j * phase)).astype(np.complex128)


def grid_corners() -> np.ndarray:
    iy, ix = np.divmod(np.arange(SCAN[0] * SCAN[1]), SCAN[1])
    return np.stack([iy, ix], axis=-1) * STEP_PX


def experiment(corners: np.ndarray | None = None, *, dose: float = 1e5, seed: int = 2,
               ) -> tuple[xr.DataArray, np.ndarray, np.ndarray]:
    """Frames (calibrated: X-ray energy, distance, detector pixel, scan step), the object
    and the probe; windows at whole-pixel ``corners`` (default the grid)."""
    corners = grid_corners() if corners is None else np.asarray(corners, int)
    shape = (int(corners[:, 0].max()) + N, int(corners[:, 1].max()) + N)
    obj = make_object(shape)
    p = probe(dose)
    frames = np.empty((len(corners), N, N))
    for j, (y, x) in enumerate(corners):
        far = np.fft.fft2(p * obj[y:y + N, x:x + N], norm="ortho")
        frames[j] = np.fft.fftshift(np.abs(far) ** 2)
    frames = np.random.default_rng(seed).poisson(frames).astype(np.float32)
    arr = xr.DataArray(frames.reshape(*SCAN, N, N), dims=("scan_y", "scan_x", "det_y", "det_x"))
    arr = arr.fs.calibrate(energy=ENERGY, radiation="xray", camera_length=DISTANCE,
                           pixel_size=DET_PIXEL, scan_step=STEP_PX * PIXEL)
    return arr, obj, p
