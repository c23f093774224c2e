"""A simulated ptychography experiment with its ground truth, and a detector publishing it.

:func:`ptycho_experiment` simulates an electron (convergent probe, defocused) or X-ray
(annular zone-plate-like pupil, defocused) scan over a complex object with both phase and
amplitude structure; the frames are calibrated like :func:`framescope.datasets.synthetic`'s
and carry Poisson noise, a background, a detector offset and read noise, with dark frames
of the same detector. :func:`~framescope.ptycho.publish_experiment`
(:mod:`framescope.ptycho._publish`) sends them on a stream.

Conventions (those of :mod:`framescope.ptycho`): the probe window has the frame's shape
``(h, w)``; position ``j`` (row-major over the scan) has its window's top-left corner on
object pixel ``truth.corners[j] = (iy * step, ix * step)``; a frame is
``fftshift(|fft2(P * O[window], norm="ortho")|^2)`` (zero frequency at ``(h//2, w//2)``)
with ``sum |P|^2 = dose``, plus ``background`` per pixel, sampled with Poisson noise, plus
the detector's offset map and read noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.fft as sfft
import xarray as xr
from scipy.ndimage import gaussian_filter

from framescope.ptycho._collect import CollectFrames
from framescope.ptycho._problem import Geometry
from framescope.ptycho._setup import initial_probe

__all__ = ["PtychoExperiment", "Truth", "ptycho_experiment"]

_BLOCK = 256  # frames per FFT block


@dataclass(frozen=True)
class Truth:
    """The ground truth of a simulated experiment.

    Attributes
    ----------
    object : complex128 ndarray
        Transmission on the object grid (object pixels of ``geometry.pixel`` m).
    probe : complex128 ndarray
        The probe on the ``(h, w)`` window, centred at ``(h//2, w//2)``; ``sum |P|^2`` is
        the dose (1 for noise-free frames).
    corners : int ndarray, shape (n, 2)
        Top-left ``(y, x)`` object pixel of each position's window (row-major over the
        scan): the corners :func:`framescope.ptycho.scan_positions` gives.
    positions : float ndarray, shape (n, 2)
        Probe displacement from position ``(0, 0)``, m, ``(y, x)``.
    """

    object: np.ndarray
    probe: np.ndarray
    corners: np.ndarray
    positions: np.ndarray


@dataclass(frozen=True)
class PtychoExperiment:
    """What :func:`ptycho_experiment` made: frames, truth, dark frames and geometry.

    Attributes
    ----------
    frames : xarray.DataArray
        ``(scan_y, scan_x, det_y, det_x)`` calibrated frames (``attrs["calibration"]``).
    truth : Truth
    dark : ndarray or None
        ``(dark_frames, h, w)`` frames without beam (offset map and read noise), the
        frames' dtype; None without dark frames.
    geometry : framescope.ptycho._problem.Geometry
        What the solver derives from the calibration (object pixel, scan step, ...).
    kind : {"electron", "xray"}
    params : dict
        The simulation parameters.
    """

    frames: xr.DataArray
    truth: Truth
    dark: np.ndarray | None
    geometry: Geometry
    kind: Literal["electron", "xray"]
    params: dict[str, Any]

    @property
    def calibration(self) -> Any:
        """The frames' :class:`~framescope.calibration.Calibration`."""
        from framescope.calibration import Calibration

        return Calibration.from_json(self.frames.attrs["calibration"])

    @property
    def defocus(self) -> float:
        """Probe defocus, m (``reconstruct(..., defocus=exp.defocus)``)."""
        return float(self.params["defocus_m"])


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int | np.integer) else tuple(value)
    if len(pair) != 2 or any(int(v) != v or v < 1 for v in pair):
        raise ValueError(f"{name}: expected a positive int or a pair of them, found {value!r}")
    return int(pair[0]), int(pair[1])


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float,
                  ) -> np.ndarray:
    """Smooth random features in [0, 1]: Gaussian-filtered white noise, min-max scaled."""
    f = gaussian_filter(rng.normal(size=shape), sigma, mode="wrap")
    return (f - f.min()) / (f.max() - f.min())


def star_object(shape: tuple[int, int], *, phase: float = 1.0, absorption: float = 0.3,
                spokes: int = 12, seed: int = 0) -> np.ndarray:
    """A complex test object: a Siemens star and smooth random features in phase and
    amplitude.

    The phase is ``phase * (0.6 * star + 0.4 * smooth)`` (rad), the amplitude
    ``1 - absorption * (0.5 * star + 0.5 * other smooth)``: both have edges at every angle
    (the star's spokes, smoothed over a pixel) and long-range structure, and they differ, so
    a phase leaking into the amplitude shows.
    """
    ny, nx = shape
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    yy, xx = np.mgrid[:ny, :nx]
    theta = np.arctan2(yy - ny / 2, xx - nx / 2)
    radius = np.hypot(yy - ny / 2, xx - nx / 2)
    star = (np.sin(spokes * theta) > 0).astype(float)
    star[radius > 0.45 * min(ny, nx)] = 0.0  # a disk of spokes, flat outside
    star = gaussian_filter(star, 0.7)
    scale = max(2.0, min(ny, nx) / 16)
    ph = phase * (0.6 * star + 0.4 * _smooth_field(rng, shape, scale))
    amp = 1.0 - absorption * (0.5 * star + 0.5 * _smooth_field(rng, shape, scale * 1.5))
    return amp * np.exp(1j * ph)


def annular_probe(frame_shape: tuple[int, int], *, outer: float, inner: float,
                  rim_phase: float) -> np.ndarray:
    """A zone-plate-like probe: an annular pupil (``inner``..``outer`` px radius, the
    central stop's shadow; anti-aliased over one pixel) defocused by ``rim_phase`` rad at
    the outer rim (``exp(-i rim_phase (q / outer)^2)``), centred at ``(h//2, w//2)``, unit
    ``sum |P|^2``."""
    h, w = frame_shape
    q = np.hypot(np.fft.fftfreq(h, 1 / h)[:, None], np.fft.fftfreq(w, 1 / w)[None, :])
    pupil = np.clip(outer + 0.5 - q, 0, 1) - np.clip(inner + 0.5 - q, 0, 1)
    probe = np.fft.fftshift(np.fft.ifft2(pupil * np.exp(-1j * rim_phase * (q / outer) ** 2)))
    return probe / math.sqrt(np.sum(np.abs(probe) ** 2))


def _xray_probe(shape: tuple[int, int], lam: float, angle: float, semiconv: float,
                rim_phase: float, defocus_m: float) -> np.ndarray:
    """A zone plate of NA ``semiconv * angle`` with a central stop half its diameter:
    :func:`~framescope.ptycho.zone_plate_probe` where it exists, else
    :func:`annular_probe` (the same pupil and defocus)."""
    try:
        from framescope.ptycho._setup import zone_plate_probe
    except ImportError:
        return annular_probe(shape, outer=semiconv, inner=semiconv / 2, rim_phase=rim_phase)
    na = semiconv * angle
    diameter = 100e-6  # the probe depends on NA and the stop's fraction only
    probe = zone_plate_probe(shape, wavelength=lam, pixel_size_det=angle, distance=1.0,
                             diameter=diameter, outer_zone_width=lam / (2 * na),
                             central_stop=diameter / 2, defocus=defocus_m)
    return np.asarray(probe, np.complex128)


def far_field(probe: np.ndarray, obj: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """``fftshift(|fft2(P * O[window], norm="ortho")|^2)`` of each corner, float64."""
    h, w = probe.shape
    out = np.empty((len(corners), h, w))
    iy = corners[:, :1, None] + np.arange(h)[None, :, None]
    ix = corners[:, None, 1:2] + np.arange(w)[None, None, :]
    for s in range(0, len(corners), _BLOCK):
        sl = slice(s, s + _BLOCK)
        exit_wave = probe * obj[iy[sl], ix[sl]]
        spec = sfft.fft2(exit_wave, norm="ortho", workers=-1)
        out[sl] = np.fft.fftshift(np.abs(spec) ** 2, axes=(-2, -1))
    return out


def ptycho_experiment(
    kind: Literal["electron", "xray"] = "electron",
    scan: int | tuple[int, int] = (16, 16),
    det: int | tuple[int, int] = (64, 64),
    *,
    dose: float | None = 1e6,
    background: float = 0.0,
    dark_frames: int = 0,
    offset: float | None = None,
    read_noise: float | None = None,
    step: int = 4,
    semiconv: float | None = None,
    defocus: float = 6.0,
    phase: float = 1.0,
    absorption: float = 0.3,
    energy: float | None = None,
    pixel_size: float | None = None,
    dtype: str | None = None,
    seed: int = 0,
) -> PtychoExperiment:
    """Simulate a ptychography scan with its ground truth (and a detector's dark frames).

    Parameters
    ----------
    kind : {"electron", "xray"}
        ``"electron"``: a convergent probe (:func:`framescope.ptycho.initial_probe`: the
        aperture of ``semiconv``, defocused); ``"xray"``: an annular zone-plate-like pupil
        (outer radius ``semiconv``, central stop half of it), defocused, with the
        detector's distance and pixel size in the calibration (8 keV, 75 µm pixels).
    scan, det : int or (int, int)
        Scan shape and frame shape (the probe window).
    dose : float or None
        Expected counts per frame without absorption (``sum |P|^2``), Poisson sampled;
        None: noise-free frames (float32), ``sum |P|^2 = 1``.
    background : float
        Expected extra counts per pixel (diffuse scattering, stray light), flat.
    dark_frames : int
        Frames without beam to simulate (``exp.dark``): the detector's offset map plus
        read noise, which every frame carries too.
    offset, read_noise : float, optional
        Mean detector offset and read noise (std), counts; default 100 and 2 with dark
        frames, else 0. The offset map varies by 5 % from pixel to pixel.
    step : int
        Object pixels per scan step (both axes).
    semiconv : float, optional
        Aperture (pupil) radius in detector pixels; default ``min(det) / 8``.
    defocus : float
        Defocus phase at the aperture rim, rad (the probe spreads over about ``defocus *
        det / (pi * semiconv)`` px; ``exp.defocus`` is the same in m).
    phase, absorption : float
        Peak phase (rad) and absorption (0..1) of the test object.
    energy : float, optional
        eV; default 300 keV (electrons) or 8 keV (X-rays).
    pixel_size : float, optional
        Object pixel, m; default 0.2 Å (electrons) or 50 nm (X-rays; sets the distance).
    dtype : str, optional
        Default ``"uint16"`` with a dose (counts, clipped), else ``"float32"``.
    seed : int
        Seeds object, noise and offset map.

    Returns
    -------
    PtychoExperiment

    Examples
    --------
    >>> exp = ptycho_experiment(scan=(8, 8), det=(32, 32), dose=None)
    >>> exp.frames.dims, exp.truth.object.dtype
    (('scan_y', 'scan_x', 'det_y', 'det_x'), dtype('complex128'))
    """
    from framescope import from_array
    from framescope.calibration import Calibration, electron_wavelength, photon_wavelength

    if kind not in ("electron", "xray"):
        raise ValueError(f"kind: expected 'electron' or 'xray', found {kind!r}")
    ny, nx = _pair(scan, "scan")
    h, w = _pair(det, "det")
    if h != w:
        raise ValueError(f"det: the calibration has one angle per pixel, so frames must be "
                         f"square; found {h}x{w}")
    if int(step) != step or step < 1:
        raise ValueError(f"step: expected a positive int (object px), found {step!r}")
    if dose is not None and not (math.isfinite(dose) and dose > 0):
        raise ValueError(f"dose: expected a positive number or None, found {dose!r}")
    if int(dark_frames) != dark_frames or dark_frames < 0:
        raise ValueError(f"dark_frames: expected an int >= 0, found {dark_frames!r}")
    offset = (100.0 if dark_frames else 0.0) if offset is None else float(offset)
    read_noise = (2.0 if dark_frames else 0.0) if read_noise is None else float(read_noise)
    if dark_frames and read_noise <= 0:
        raise ValueError("read_noise: dark frames without read noise have std 0 at every "
                         "pixel, which a dark analysis marks dead; give read_noise > 0")
    dtype = np.dtype(dtype or ("uint16" if dose is not None else "float32"))
    semiconv = min(h, w) / 8 if semiconv is None else float(semiconv)
    if not 0 < semiconv < min(h, w) / 2:
        raise ValueError(f"semiconv: expected (0, {min(h, w) / 2}) detector px, found "
                         f"{semiconv}")
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))

    if kind == "electron":
        energy = 300e3 if energy is None else float(energy)
        pixel = 0.2e-10 if pixel_size is None else float(pixel_size)
        lam = electron_wavelength(energy)
        angle = lam / (w * pixel)
        cal_fields: dict[str, Any] = {"energy": energy, "angle_per_px": angle}
    else:
        energy = 8e3 if energy is None else float(energy)
        pixel = 50e-9 if pixel_size is None else float(pixel_size)
        lam = photon_wavelength(energy)
        det_pixel = 75e-6
        angle = lam / (w * pixel)
        cal_fields = {"energy": energy, "radiation": "xray", "pixel_size": det_pixel,
                      "camera_length": det_pixel / angle}
    defocus_m = defocus * lam / (math.pi * (semiconv * angle) ** 2)
    if kind == "electron":
        probe = initial_probe((h, w), wavelength=lam, angle_per_px=angle,
                              semiconv=semiconv * angle, defocus=defocus_m).astype(complex)
    else:
        probe = _xray_probe((h, w), lam, angle, semiconv, defocus, defocus_m)
    probe *= math.sqrt(dose if dose is not None else 1.0) / math.sqrt(
        np.sum(np.abs(probe) ** 2))

    iy, ix = np.divmod(np.arange(ny * nx), nx)
    corners = np.stack([iy * step, ix * step], axis=-1)
    obj = star_object(((ny - 1) * step + h, (nx - 1) * step + w), phase=phase,
                      absorption=absorption, seed=seed)
    offset_map = offset * (1 + 0.05 * rng.standard_normal((h, w))) if offset else 0.0
    frames = np.empty((ny * nx, h, w), dtype)
    for s in range(0, ny * nx, _BLOCK):  # block by block: no float64 copy of the scan
        expected = far_field(probe, obj, corners[s:s + _BLOCK]) + background
        counts = rng.poisson(expected).astype(np.float64) if dose is not None else expected
        counts += offset_map
        if read_noise:
            counts += rng.normal(0.0, read_noise, counts.shape)
        frames[s:s + _BLOCK] = _cast(counts, dtype)
    dark = None
    if dark_frames:
        d = offset_map + rng.normal(0.0, read_noise, (int(dark_frames), h, w))
        dark = _cast(d, dtype)

    cal = Calibration(**cal_fields, semiconv=semiconv * angle, scan_step=(step * pixel,) * 2,
                      sources=dict.fromkeys([*cal_fields, "semiconv", "scan_step"],
                                                   "ptycho_experiment"))
    arr = from_array(frames.reshape(ny, nx, h, w), attrs={"source": f"ptycho_experiment "
                                                          f"({kind})"})
    arr = arr.fs.calibrate(cal)
    geometry = Geometry.of(cal, (h, w), CollectFrames(), {})
    truth = Truth(object=obj, probe=probe, corners=corners,
                  positions=corners * pixel)
    params = {"kind": kind, "scan": (ny, nx), "det": (h, w), "dose": dose,
              "background": background, "dark_frames": int(dark_frames), "offset": offset,
              "read_noise": read_noise, "step": int(step), "semiconv_px": semiconv,
              "defocus_rad": defocus, "defocus_m": defocus_m, "phase": phase,
              "absorption": absorption, "energy_eV": energy, "pixel_size_m": pixel,
              "dtype": dtype.name, "seed": seed}
    return PtychoExperiment(arr, truth, dark, geometry, kind, params)


def _cast(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)
