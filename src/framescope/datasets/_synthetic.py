"""A deterministic, physically meaningful synthetic 4D-STEM dataset.

A convergent probe is scanned over a phase object (see :mod:`framescope.datasets._physics`).
For scan position ``(iy, ix)`` the probe window's top-left corner sits on object pixel
``(iy*step, ix*step)`` and the probe centre on ``(iy*step + H//2, ix*step + W//2)``; the
frame is the far-field intensity ``|FFT(P * t)|²`` with the zero frequency at detector pixel
``(H//2, W//2)`` (numpy's ``fftshift`` layout), scaled to ``dose`` expected electrons and
sampled with Poisson noise.

Centre of mass (the sign/axis convention to check DPC against): for a pure phase object
``t = exp(1j*phi)``,

    COM_y - H//2 = H / (2*pi) * <d phi / d y>,     COM_x - W//2 = W / (2*pi) * <d phi / d x>,

in detector pixels, where ``<.>`` is the average over the probe intensity ``|P|²`` (exact in
the continuum for any probe with a centrosymmetric aperture, so defocus does not bias it).
Positive phase gradient along ``y`` moves the pattern towards larger ``det_y``. The
``true_phase_gradient_y/x`` coordinates of :func:`synthetic` hold ``<grad phi>`` in rad/px.

Scan rotation and flip move the scan over the object (the detector axes stay the object's),
see :mod:`framescope.datasets._geometry`; the ground truth is then given in *scan* axes,
so ``CenterOfMass(rotation=degrees(rotation), flip_y=flip)`` turns the COM into
``det / (2*pi) * true_phase_gradient`` (square detectors). Descan adds
``descan @ (iy, ix) + descan_offset`` detector px to every COM.

Physical units: a real-space pixel is ``pixel_size`` metres and the beam has ``energy`` eV,
so one detector pixel is ``wavelength / (W * pixel_size)`` rad; :meth:`SyntheticReader.
calibration` gives the exact :class:`~framescope.calibration.Calibration`.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import scipy.fft as sfft

from framescope.datasets._geometry import (
    as_descan,
    descan_ramps,
    placement,
    sample_periodic,
    scan_extent,
    scan_matrix,
    shifted_probes,
)
from framescope.datasets._physics import (
    NOISE_KEY,
    convergent_probe,
    phase_object,
    probe_smoothed_gradient,
)
from framescope.io._base import FrameReader

if TYPE_CHECKING:
    from framescope.calibration import Calibration

__all__ = ["SyntheticReader"]

log = logging.getLogger(__name__)

DTYPES = ("uint8", "uint16", "uint32", "float32")
# bytes of complex64 work buffer per FFT block; also fixes the block layout (see _read)
_BLOCK_BYTES = 8 * 2**20
_model_lock = threading.Lock()


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int | np.integer) else tuple(value)
    if len(pair) != 2 or any(int(v) != v or v < 1 for v in pair):
        raise ValueError(f"{name} must be a positive int or a pair of them, found {value!r}")
    return int(pair[0]), int(pair[1])


class SyntheticReader(FrameReader):
    """Frames of a convergent probe scanned over a phase object, simulated on read.

    Only the parameters are stored (and pickled); the object transmission and the probe are
    rebuilt on first use in each process. Frame ``i`` depends only on the parameters and
    ``i``: its noise comes from ``SeedSequence(seed, spawn_key=(1, i))`` and its FFT is always
    computed in the same fixed block of frames, so any read range gives identical values.

    Parameters
    ----------
    scan : int or (int, int)
        Scan shape ``(scan_y, scan_x)``.
    det : int or (int, int)
        Detector shape ``(det_y, det_x)``; also the real-space probe window in px.
    dtype : {"uint8", "uint16", "uint32", "float32"}
        Frame dtype; integer counts are clipped to the dtype's range.
    dose : float
        Expected electrons per frame (exact in expectation: a phase object absorbs nothing).
    semiconv : float, optional
        Convergence semi-angle as the bright-field disk radius in detector pixels; default
        ``min(det) / 8``. The aperture's amplitude is anti-aliased over one pixel, so the
        disk's intensity (amplitude squared) covers the area of a radius about
        ``semiconv - 1/6``.
    defocus : float
        Defocus phase at the aperture rim, rad. The defocused probe (radius about
        ``defocus * det / (pi * semiconv)`` px) must fit the ``det`` window; a warning is
        logged when it spills onto the window border.
    step : int
        Scan step in real-space px.
    atom_phase, atom_sigma, atom_density, smooth_phase : float
        Object parameters, see :func:`~framescope.datasets.phase_object`.
    noise : bool
        Poisson noise (default). When False frames hold the expectation (rounded to
        integers for integer dtypes).
    seed : int
        Non-negative seed of the object and of the noise.
    energy : float
        Beam energy, eV (default 300 keV); only enters the calibration.
    pixel_size : float
        Real-space pixel of the object and probe window, m (default 0.2 Å); only enters the
        calibration.
    rotation : float
        Scan rotation, rad, in the :class:`~framescope.calibration.Calibration` convention
        (see :mod:`framescope.datasets._geometry`); needs a square detector.
    flip : bool
        Detector y mirrored against the scan axes.
    descan : 2x2 array-like, optional
        Pattern shift in detector px per scan step: row 0 (1) the ``det_y`` (``det_x``)
        shift, column 0 (1) per step along ``scan_y`` (``scan_x``).
    descan_offset : (float, float)
        Pattern shift ``(dy, dx)`` in detector px at scan position ``(0, 0)``.
    """

    format: ClassVar[str] = "synthetic"
    _handle_attrs: ClassVar[tuple[str, ...]] = ("_model",)

    def __init__(
        self,
        scan: int | tuple[int, int] = (64, 64),
        det: int | tuple[int, int] = (128, 128),
        *,
        dtype: str | np.dtype = "uint16",
        dose: float = 1e5,
        semiconv: float | None = None,
        defocus: float = 0.0,
        step: int = 1,
        atom_phase: float = 0.3,
        atom_sigma: float = 1.5,
        atom_density: float = 0.03,
        smooth_phase: float = 1.0,
        noise: bool = True,
        seed: int = 0,
        energy: float = 300e3,
        pixel_size: float = 0.2e-10,
        rotation: float = 0.0,
        flip: bool = False,
        descan: Sequence[Sequence[float]] | np.ndarray | None = None,
        descan_offset: Sequence[float] = (0.0, 0.0),
    ) -> None:
        self.scan_shape = _pair(scan, "scan")
        self.frame_shape = _pair(det, "det")
        self.dtype = np.dtype(dtype)
        if self.dtype.name not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, found {self.dtype}")
        h, w = self.frame_shape
        semiconv = min(h, w) / 8 if semiconv is None else float(semiconv)
        if not 0 < semiconv < min(h, w) / 2:
            raise ValueError(
                f"semiconv must lie in (0, {min(h, w) / 2}) detector px so the bright-field "
                f"disk fits the {h}x{w} detector, found {semiconv}"
            )
        if not (math.isfinite(dose) and dose > 0):
            raise ValueError(f"dose must be a positive number, found {dose}")
        if int(step) != step or step < 1:
            raise ValueError(f"step must be a positive int, found {step}")
        if int(seed) != seed or seed < 0:
            raise ValueError(f"seed must be a non-negative int, found {seed}")
        for name, value in (("energy", energy), ("pixel_size", pixel_size)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, found {value}")
        if not math.isfinite(rotation):
            raise ValueError(f"rotation must be a finite angle in rad, found {rotation}")
        if rotation % (2 * math.pi) and h != w:  # COM scales h/2pi and w/2pi would not rotate
            raise ValueError(f"a scan rotation needs a square detector, found {h}x{w}")
        matrix_d, offset_d = as_descan(descan, descan_offset)
        self.params: dict[str, Any] = {
            "seed": int(seed), "dose": float(dose), "semiconv": semiconv,
            "defocus": float(defocus), "step": int(step), "atom_phase": float(atom_phase),
            "atom_sigma": float(atom_sigma), "atom_density": float(atom_density),
            "smooth_phase": float(smooth_phase), "noise": bool(noise),
            "energy": float(energy), "pixel_size": float(pixel_size),
            "rotation": float(rotation), "flip": bool(flip), "descan": matrix_d,
            "descan_offset": offset_d,
        }
        ny, nx = self.scan_shape
        # scan displacement -> object displacement; None: the plain integer scan
        self._matrix = None if rotation == 0 and not flip else scan_matrix(rotation, flip)
        self._descan = (None if matrix_d == ((0.0, 0.0), (0.0, 0.0)) and offset_d == (0.0, 0.0)
                        else (np.array(matrix_d), np.array(offset_d)))
        # the object holds every probe window without wrapping
        if self._matrix is None:
            self._low = np.zeros(2)
            span = ((ny - 1) * self.params["step"], (nx - 1) * self.params["step"])
        else:
            self._low, span = scan_extent(self._matrix, self.params["step"], self.scan_shape)
        self.object_shape = (int(span[0]) + h, int(span[1]) + w)
        self.path = "<synthetic>"
        self.n_frames = ny * nx
        self.metadata = {
            "simulated": True, **self.params,
            "n_atoms": round(atom_density * self.object_shape[0] * self.object_shape[1]),
            "object_shape": list(self.object_shape),
            # attrs hold 1D lists (NetCDF): the matrix row-major
            "descan": [*matrix_d[0], *matrix_d[1]], "descan_offset": list(offset_d),
        }
        # frames per FFT block: a function of the frame shape only, so blocks never move
        self.block = max(1, min(64, _BLOCK_BYTES // (h * w * 8)))

    # -- identity --------------------------------------------------------------------------

    def token(self) -> tuple[Any, ...]:
        """Parameters only: no file to stat."""
        return (
            type(self).__qualname__, self.path, self.scan_shape, self.frame_shape,
            self.dtype.str, tuple(sorted(self.params.items())),
        )

    # -- model -----------------------------------------------------------------------------

    def _get_model(self) -> dict[str, np.ndarray]:
        model = self.__dict__.get("_model")
        if model is None:
            with _model_lock:
                model = self.__dict__.get("_model")
                if model is None:
                    model = self._build_model()
                    self._model = model
        return model

    def _build_model(self) -> dict[str, np.ndarray]:
        p = self.params
        h, w = self.frame_shape
        log.debug("building synthetic object %s and %dx%d probe", self.object_shape, h, w)
        phase = phase_object(
            self.object_shape, seed=p["seed"], atom_phase=p["atom_phase"],
            atom_sigma=p["atom_sigma"], atom_density=p["atom_density"],
            smooth_phase=p["smooth_phase"],
        )
        probe = convergent_probe((h, w), p["semiconv"], p["defocus"])
        intensity = np.abs(probe) ** 2
        rim = intensity[[0, -1], :].sum() + intensity[1:-1, [0, -1]].sum()
        if rim > 0.01:  # the window cuts the probe: frames wrap, COM loses its meaning
            log.warning(
                "synthetic probe (semiconv %g, defocus %g rad) does not fit the %dx%d "
                "window: %.1f%% of its intensity lies on the border; reduce defocus or "
                "enlarge det", p["semiconv"], p["defocus"], h, w, 100 * rim,
            )
        # a phase ramp of half the window moves q = 0 to pixel (h//2, w//2): a free fftshift
        ramp = np.exp(
            2j * np.pi * ((h // 2) * np.arange(h)[:, None] / h + (w // 2) * np.arange(w) / w)
        )
        transmission = np.exp(1j * phase).astype(np.complex64)
        return {
            "phase": phase,
            "probe": probe,
            "ramp": ramp,
            "spectrum": sfft.fft2(probe),  # for sub-pixel probe positions
            "shifted_probe": (probe * ramp).astype(np.complex64),
            "windows": np.lib.stride_tricks.sliding_window_view(transmission, (h, w)),
        }

    @property
    def phase(self) -> np.ndarray:
        """Object phase (rad) on the whole ``object_shape`` grid."""
        return self._get_model()["phase"]

    @property
    def probe(self) -> np.ndarray:
        """Real-space probe (unit intensity) on the ``frame_shape`` window."""
        return self._get_model()["probe"]

    def probe_centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Object pixel ``(y, x)`` under the probe centre, each of shape ``scan_shape``.

        Integers for an unrotated scan, else fractional (the probe sits between pixels).
        """
        ny, nx = self.scan_shape
        h, w = self.frame_shape
        step = self.params["step"]
        if self._matrix is None:
            yy, xx = np.meshgrid(np.arange(ny) * step + h // 2, np.arange(nx) * step + w // 2,
                                 indexing="ij")
            return yy, xx
        iy, ix = np.divmod(np.arange(self.n_frames), nx)
        top, frac = placement(self._matrix, step, iy, ix, self._low)
        centre = top + frac + (h // 2, w // 2)
        return centre[:, 0].reshape(ny, nx), centre[:, 1].reshape(ny, nx)

    def true_phase(self) -> np.ndarray:
        """Object phase (rad) at each probe centre, shape ``scan_shape`` (cubic-spline
        interpolated between object pixels for a rotated scan)."""
        return sample_periodic(self.phase, *self.probe_centres())

    def true_phase_gradient(self) -> tuple[np.ndarray, np.ndarray]:
        """``(<d phi/dy>, <d phi/dx>)`` in rad/px over the probe intensity per position,
        along the scan axes (``A.T`` times the object-axes gradient, see
        :mod:`~framescope.datasets._geometry`).

        Multiply by ``det_y / (2*pi)`` (``det_x / (2*pi)``) for the expected COM shift in
        detector px (after rotating the COM into scan axes when the scan is rotated or
        flipped; descan not included). Between object pixels the smooth, probe-averaged
        gradient is interpolated with a cubic spline.
        """
        gy, gx = probe_smoothed_gradient(self.phase, np.abs(self.probe) ** 2)
        centres = self.probe_centres()
        gy, gx = sample_periodic(gy, *centres), sample_periodic(gx, *centres)
        if self._matrix is None:
            return gy, gx
        (a, b), (c, d) = self._matrix
        # d(phi)/d(scan) = A.T @ d(phi)/d(object)
        return a * gy + c * gx, b * gy + d * gx

    def descan_shift(self) -> tuple[np.ndarray, np.ndarray]:
        """Pattern shift ``(dy, dx)`` (detector px) from descan per scan position."""
        ny, nx = self.scan_shape
        iy, ix = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        (a, b), (c, d) = self.params["descan"]
        oy, ox = self.params["descan_offset"]
        return a * iy + b * ix + oy, c * iy + d * ix + ox

    def calibration(self) -> Calibration:
        """The exact physical calibration of these frames.

        One detector pixel is ``wavelength / (W * pixel_size)`` rad (the Fourier bin of the
        probe window); the convergence semi-angle is ``semiconv`` of those; the scan step is
        ``step * pixel_size``; the centre is ``(H//2, W//2)`` plus ``descan_offset``;
        ``rotation`` and ``flip`` as given. Every field's source is ``"synthetic"``.

        Raises
        ------
        framescope.calibration.CalibrationError
            The detector is not square (a calibration has one angle per pixel).
        """
        from framescope.calibration import Calibration, CalibrationError, electron_wavelength

        h, w = self.frame_shape
        if h != w:
            raise CalibrationError(f"synthetic: angle_per_px needs a square detector (one "
                                   f"angle per pixel), found {h}x{w}")
        p = self.params
        angle = electron_wavelength(p["energy"]) / (w * p["pixel_size"])
        oy, ox = p["descan_offset"]
        fields = {
            "energy": p["energy"], "semiconv": p["semiconv"] * angle, "angle_per_px": angle,
            "center": (h // 2 + oy, w // 2 + ox),
            "scan_step": (p["step"] * p["pixel_size"],) * 2,
            "rotation": p["rotation"], "flip": p["flip"],
        }
        return Calibration(**fields, sources=dict.fromkeys(fields, "synthetic"))

    # -- frames ----------------------------------------------------------------------------

    def expected(self, first: int, stop: int) -> np.ndarray:
        """Expected counts (float32) of frames ``first:stop``: ``dose * |FFT(P * t)|²``."""
        if not 0 <= first <= stop <= self.n_frames:
            raise IndexError(f"frame range {first}:{stop} outside the {self.n_frames} frames")
        model = self._get_model()
        nx = self.scan_shape[1]
        step = self.params["step"]
        iy, ix = np.divmod(np.arange(first, stop), nx)
        if self._matrix is None:
            waves = model["windows"][iy * step, ix * step]  # (n, h, w) copy
            waves *= model["shifted_probe"]
        else:
            top, frac = placement(self._matrix, step, iy, ix, self._low)
            waves = model["windows"][top[:, 0], top[:, 1]]
            if frac.any():  # the probe sits between object pixels: move it inside its window
                waves *= shifted_probes(model["spectrum"], frac) * model["ramp"]
            else:
                waves *= model["shifted_probe"]
        if self._descan is not None:
            matrix, offset = self._descan
            ramp_y, ramp_x = descan_ramps(np.stack([iy, ix], -1) @ matrix.T + offset,
                                          self.frame_shape)
            waves *= ramp_y
            waves *= ramp_x
        # per-frame FFTs are independent, so threads only split the work
        spectra = sfft.fft2(waves, norm="ortho", workers=-1, overwrite_x=True)
        lam = np.square(spectra.real)
        lam += np.square(spectra.imag)
        lam *= np.float32(self.params["dose"])
        return lam

    def _read(self, start: int, stop: int, out: np.ndarray) -> None:
        b = self.block
        integer = self.dtype.kind == "u"
        top = np.iinfo(self.dtype).max if integer else None
        noise = self.params["noise"]
        # FFTs run on fixed blocks [k*b, (k+1)*b) so each frame's float arithmetic (SIMD
        # grouping of transforms) is the same whatever range it is read in
        for block_start in range(start - start % b, stop, b):
            block_stop = min(block_start + b, self.n_frames)
            lam = self.expected(block_start, block_stop)
            for i in range(max(start, block_start), min(stop, block_stop)):
                self._sample(lam[i - block_start], i, noise, top, out[i - start])

    def _sample(
        self, lam: np.ndarray, index: int, noise: bool, top: int | None, out: np.ndarray
    ) -> None:
        if noise:
            # exact Poisson for every pixel: numpy's sampler costs ~15 ns per pixel (most
            # pixels are dark, where it is cheapest); approximations were not faster here
            rng = np.random.default_rng(
                np.random.SeedSequence(self.params["seed"], spawn_key=(NOISE_KEY, index))
            )
            counts = rng.poisson(lam)
        else:
            counts = np.rint(lam) if top is not None else lam
        if top is not None:
            np.minimum(counts, top, out=counts)
        np.copyto(out, counts, casting="unsafe")
