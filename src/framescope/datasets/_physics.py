"""Physics of the synthetic 4D-STEM model: a phase object and a convergent probe.

Units and conventions (shared with :mod:`framescope.datasets._synthetic`):

* Real space is sampled in *real-space pixels* (``px``); the probe window has the detector's
  shape ``(H, W)``, so one detector pixel is one Fourier bin of the window, i.e. a spatial
  frequency of ``1/H`` (``1/W``) cycles per px.
* Array axes are ``(y, x)`` everywhere; detector ``det_y`` is parallel to real-space ``y``
  (no scan rotation, no flip).
* Fourier transforms follow numpy: ``F(q) = sum_r psi(r) exp(-2j*pi*q*r/N)``. A phase ramp
  ``exp(1j*g*y)`` therefore moves intensity to *positive* ``q_y = g*H/(2*pi)``.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft as sfft

__all__ = ["convergent_probe", "phase_object", "probe_smoothed_gradient"]

# spawn keys keep the object's random numbers apart from the per-frame noise streams
OBJECT_KEY = 0
NOISE_KEY = 1


def phase_object(
    shape: tuple[int, int],
    *,
    seed: int = 0,
    atom_phase: float = 0.3,
    atom_sigma: float = 1.5,
    atom_density: float = 0.03,
    smooth_phase: float = 1.0,
    n_waves: int = 3,
    wave_period: float | None = None,
) -> np.ndarray:
    """Phase ``phi(y, x)`` in radians of a periodic, deterministic test object.

    The object's transmission is ``t = exp(1j*phi)`` (a pure phase object; weak for small
    ``phi``, strong otherwise). ``phi`` is the sum of

    * ``round(atom_density * ny * nx)`` Gaussian "atoms" of peak ``atom_phase`` and standard
      deviation ``atom_sigma`` px at uniformly random positions (an amorphous film), and
    * ``n_waves`` plane waves ``smooth_phase * cos(2*pi*(m_y*y/ny + m_x*x/nx) + c)`` with
      periods around ``wave_period`` px (long-range fields such as a mean inner potential
      wedge or a magnetic domain), which give centre-of-mass / DPC a strong, smooth signal.

    Everything wraps around the grid (integer numbers of wave periods, atoms wrapped), so the
    phase is exactly periodic and spectral derivatives of it are exact.

    Parameters
    ----------
    shape : (int, int)
        Grid ``(ny, nx)`` in px.
    seed : int
        Seeds positions, wave directions, periods and offsets.
    atom_phase, atom_sigma, atom_density : float
        Peak phase (rad), width (px) and areal density (atoms per px²) of the atoms.
    smooth_phase : float
        Amplitude (rad) of each long-wavelength wave; 0 switches them off.
    n_waves : int
        Number of long-wavelength waves.
    wave_period : float, optional
        Typical wave period in px; default half the larger grid side.

    Returns
    -------
    numpy.ndarray
        ``float64`` array of ``shape``.
    """
    ny, nx = (int(s) for s in shape)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(OBJECT_KEY,)))
    phase = np.zeros((ny, nx))

    n_atoms = round(atom_density * ny * nx)
    if n_atoms and atom_phase:
        # render each atom on a small separable stencil; bincount sums overlapping atoms
        radius = math.ceil(4 * atom_sigma) + 1
        offsets = np.arange(-radius, radius + 1)
        pos = rng.random((n_atoms, 2)) * (ny, nx)
        base = np.floor(pos).astype(np.int64)
        iy = base[:, :1] + offsets  # (n_atoms, stencil)
        ix = base[:, 1:] + offsets
        gy = np.exp(-((iy - pos[:, :1]) ** 2) / (2 * atom_sigma**2))
        gx = np.exp(-((ix - pos[:, 1:]) ** 2) / (2 * atom_sigma**2))
        flat = (iy % ny)[:, :, None] * nx + (ix % nx)[:, None, :]
        weights = gy[:, :, None] * gx[:, None, :]
        phase += atom_phase * np.bincount(
            flat.ravel(), weights.ravel(), minlength=ny * nx
        ).reshape(ny, nx)

    if n_waves and smooth_phase:
        period = wave_period if wave_period is not None else max(ny, nx) / 2
        y = np.arange(ny)[:, None] / ny
        x = np.arange(nx)[None, :] / nx
        for _ in range(n_waves):
            angle = rng.uniform(0, np.pi)
            length = period * rng.uniform(0.75, 1.5)
            my = round(ny * math.sin(angle) / length)
            mx = round(nx * math.cos(angle) / length)
            if my == 0 and mx == 0:
                mx = 1
            offset = rng.uniform(0, 2 * np.pi)
            phase += smooth_phase * np.cos(2 * np.pi * (my * y + mx * x) + offset)
    return phase


def convergent_probe(
    det: tuple[int, int], semiconv: float, defocus: float = 0.0
) -> np.ndarray:
    """Real-space convergent-beam probe on a ``det``-shaped window, centred at ``det // 2``.

    In reciprocal space the probe is the condenser aperture: a disk of radius ``semiconv``
    detector pixels (anti-aliased over one pixel) times the defocus aberration
    ``exp(-1j * defocus * (q/semiconv)**2)``, so ``defocus`` is the phase in radians at the
    aperture rim. The inverse FFT gives the probe (an Airy disk when in focus) of unit total
    intensity, ``sum |P|² = 1``.

    Returns
    -------
    numpy.ndarray
        ``complex128`` array of shape ``det``.
    """
    h, w = det
    qy = sfft.fftfreq(h, 1 / h)[:, None]
    qx = sfft.fftfreq(w, 1 / w)[None, :]
    q = np.hypot(qy, qx)
    aperture = np.clip(semiconv + 0.5 - q, 0.0, 1.0)
    spectrum = aperture * np.exp(-1j * defocus * (q / semiconv) ** 2)
    probe = sfft.fftshift(sfft.ifft2(spectrum))
    probe /= np.sqrt(np.sum(np.abs(probe) ** 2))
    return probe


def probe_smoothed_gradient(
    phase: np.ndarray, probe_intensity: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``<d phi/dy>`` and ``<d phi/dx>`` (rad/px) averaged over the probe intensity.

    Element ``[cy, cx]`` is ``sum_d |P|²(c0 + d) * grad phi(c + d)`` for a probe whose centre
    ``c0 = det // 2`` sits on object pixel ``c``: the quantity a centre-of-mass detector
    measures. The gradient is spectral (``phase`` is periodic) and the average is a circular
    cross-correlation, both done with FFTs on the object grid.
    """
    ny, nx = phase.shape
    h, w = probe_intensity.shape
    kernel = np.zeros((ny, nx))
    kernel[:h, :w] = probe_intensity
    kernel = np.roll(kernel, (-(h // 2), -(w // 2)), axis=(0, 1))  # probe centre at origin
    spectrum = sfft.fft2(phase) * np.conj(sfft.fft2(kernel))
    fy = sfft.fftfreq(ny)[:, None]
    fx = sfft.fftfreq(nx)[None, :]
    if ny % 2 == 0:  # the Nyquist bin of a real signal has no defined derivative sign
        fy = np.where(np.abs(fy) == 0.5, 0.0, fy)
    if nx % 2 == 0:
        fx = np.where(np.abs(fx) == 0.5, 0.0, fx)
    grad_y = sfft.ifft2(spectrum * (2j * np.pi * fy)).real
    grad_x = sfft.ifft2(spectrum * (2j * np.pi * fx)).real
    return grad_y, grad_x
