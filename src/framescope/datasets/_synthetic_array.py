"""``synthetic()``: the simulated dataset as a lazy DataArray with its ground truth (object
phase and probe-averaged phase gradient per scan position) and, optionally, its exact
calibration. The simulation itself is :class:`~framescope.datasets._synthetic.SyntheticReader`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from framescope.datasets._synthetic import SyntheticReader
from framescope.io._lazy import DEFAULT_PARTITION_MIB, DIMS, to_dataarray

__all__ = ["synthetic"]


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
    energy: float = 300e3,
    pixel_size: float = 0.2e-10,
    rotation: float = 0.0,
    flip: bool = False,
    descan: Sequence[Sequence[float]] | np.ndarray | None = None,
    descan_offset: Sequence[float] = (0.0, 0.0),
    calibrated: bool = False,
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
    calibrated : bool
        Give the array its exact calibration (:meth:`SyntheticReader.calibration`) as
        ``arr.fs.calibrate`` does: scan coordinates in nm, detector in mrad,
        ``attrs["calibration"]``. Off by default: pixel coordinates, as before.
    chunks, partition_mib
        Passed to :func:`framescope.io.to_dataarray`.

    Returns
    -------
    xarray.DataArray
        ``(scan_y, scan_x, det_y, det_x)`` frames with non-dimension coordinates over
        ``(scan_y, scan_x)``:

        * ``true_phase``: object phase (rad) under the probe centre;
        * ``true_phase_gradient_y``, ``true_phase_gradient_x``: phase gradient (rad/px)
          along the scan axes, averaged over the probe intensity, what centre of mass
          measures: ``COM_y - det_y//2 = det_y / (2*pi) * true_phase_gradient_y`` detector
          px (without rotation, flip and descan).

        The simulation parameters are in ``attrs`` (``rotation``, ``flip``, ``descan`` as
        the row-major 2x2 matrix, ``descan_offset``).

    Examples
    --------
    >>> arr = synthetic(scan=(16, 16), det=(64, 64), seed=1)
    >>> arr.sizes["det_y"], str(arr.dtype)
    (64, 'uint16')
    """
    reader = SyntheticReader(
        scan, det, dtype=dtype, dose=dose, semiconv=semiconv, defocus=defocus, step=step,
        atom_phase=atom_phase, atom_sigma=atom_sigma, atom_density=atom_density,
        smooth_phase=smooth_phase, noise=noise, seed=seed, energy=energy,
        pixel_size=pixel_size, rotation=rotation, flip=flip, descan=descan,
        descan_offset=descan_offset,
    )
    calibration = reader.calibration() if calibrated else None
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
    if calibration is not None:
        arr = arr.fs.calibrate(calibration)
    arr.encoding.update(encoding)  # keeps framescope_source if assign_coords dropped it
    return arr
