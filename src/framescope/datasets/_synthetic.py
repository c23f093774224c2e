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
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any, ClassVar

import numpy as np
import scipy.fft as sfft
import xarray as xr

from framescope.datasets._physics import (
    NOISE_KEY,
    convergent_probe,
    phase_object,
    probe_smoothed_gradient,
)
from framescope.io._base import FrameReader
from framescope.io._lazy import DEFAULT_PARTITION_MIB, DIMS, to_dataarray

__all__ = ["SyntheticReader", "synthetic"]

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
        ``min(det) / 8``.
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
        self.params: dict[str, Any] = {
            "seed": int(seed), "dose": float(dose), "semiconv": semiconv,
            "defocus": float(defocus), "step": int(step), "atom_phase": float(atom_phase),
            "atom_sigma": float(atom_sigma), "atom_density": float(atom_density),
            "smooth_phase": float(smooth_phase), "noise": bool(noise),
        }
        ny, nx = self.scan_shape
        # the object holds every probe window without wrapping
        self.object_shape = ((ny - 1) * self.params["step"] + h, (nx - 1) * self.params["step"] + w)
        self.path = "<synthetic>"
        self.n_frames = ny * nx
        self.metadata = {
            "simulated": True, **self.params,
            "n_atoms": round(atom_density * self.object_shape[0] * self.object_shape[1]),
            "object_shape": list(self.object_shape),
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
        """Object pixel ``(y, x)`` under the probe centre, each of shape ``scan_shape``."""
        ny, nx = self.scan_shape
        h, w = self.frame_shape
        step = self.params["step"]
        yy, xx = np.meshgrid(np.arange(ny) * step + h // 2, np.arange(nx) * step + w // 2,
                             indexing="ij")
        return yy, xx

    def true_phase(self) -> np.ndarray:
        """Object phase (rad) at each probe centre, shape ``scan_shape``."""
        return self.phase[self.probe_centres()]

    def true_phase_gradient(self) -> tuple[np.ndarray, np.ndarray]:
        """``(<d phi/dy>, <d phi/dx>)`` in rad/px over the probe intensity per position.

        Multiply by ``det_y / (2*pi)`` (``det_x / (2*pi)``) for the expected COM shift in
        detector px.
        """
        gy, gx = probe_smoothed_gradient(self.phase, np.abs(self.probe) ** 2)
        centres = self.probe_centres()
        return gy[centres], gx[centres]

    # -- frames ----------------------------------------------------------------------------

    def expected(self, first: int, stop: int) -> np.ndarray:
        """Expected counts (float32) of frames ``first:stop``: ``dose * |FFT(P * t)|²``."""
        if not 0 <= first <= stop <= self.n_frames:
            raise IndexError(f"frame range {first}:{stop} outside the {self.n_frames} frames")
        model = self._get_model()
        nx = self.scan_shape[1]
        step = self.params["step"]
        iy, ix = np.divmod(np.arange(first, stop), nx)
        waves = model["windows"][iy * step, ix * step]  # (n, h, w) copy
        waves *= model["shifted_probe"]
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


def synthetic(
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
    chunks: Any = None,
    partition_mib: float = DEFAULT_PARTITION_MIB,
) -> xr.DataArray:
    """A lazy synthetic 4D-STEM dataset with its ground truth attached.

    A convergent probe (bright-field disk radius ``semiconv`` detector px) is scanned with
    ``step`` px over a phase object of Gaussian atoms plus long-wavelength phase waves; each
    frame is the diffraction intensity ``dose * |FFT(P * exp(1j*phi))|²`` with Poisson noise.
    Frames are simulated when computed, deterministically from ``seed``. See
    :class:`SyntheticReader` for the parameters and the module docstring for conventions.

    Parameters
    ----------
    chunks, partition_mib
        Passed to :func:`framescope.io.to_dataarray`.

    Returns
    -------
    xarray.DataArray
        ``(scan_y, scan_x, det_y, det_x)`` frames with non-dimension coordinates over
        ``(scan_y, scan_x)``:

        * ``true_phase``: object phase (rad) under the probe centre;
        * ``true_phase_gradient_y``, ``true_phase_gradient_x``: phase gradient (rad/px)
          averaged over the probe intensity, what centre of mass measures:
          ``COM_y - det_y//2 = det_y / (2*pi) * true_phase_gradient_y`` detector px.

    Examples
    --------
    >>> arr = synthetic(scan=(16, 16), det=(64, 64), seed=1)
    >>> arr.sizes["det_y"], str(arr.dtype)
    (64, 'uint16')
    """
    reader = SyntheticReader(
        scan, det, dtype=dtype, dose=dose, semiconv=semiconv, defocus=defocus, step=step,
        atom_phase=atom_phase, atom_sigma=atom_sigma, atom_density=atom_density,
        smooth_phase=smooth_phase, noise=noise, seed=seed,
    )
    arr = to_dataarray(reader, chunks=chunks, partition_mib=partition_mib)
    scan_dims = DIMS[:2]
    gy, gx = reader.true_phase_gradient()
    h, w = reader.frame_shape
    encoding = dict(arr.encoding)
    arr = arr.assign_coords(
        true_phase=(scan_dims, reader.true_phase(), {
            "units": "rad", "long_name": "object phase at the probe centre",
        }),
        true_phase_gradient_y=(scan_dims, gy, {
            "units": "rad/px", "long_name": "probe-averaged phase gradient along y",
            "com_px_per_rad_per_px": h / (2 * np.pi),
        }),
        true_phase_gradient_x=(scan_dims, gx, {
            "units": "rad/px", "long_name": "probe-averaged phase gradient along x",
            "com_px_per_rad_per_px": w / (2 * np.pi),
        }),
    )
    arr.encoding.update(encoding)  # keeps framescope_source if assign_coords dropped it
    return arr
