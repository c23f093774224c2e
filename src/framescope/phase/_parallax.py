"""``parallax(arr)``: tilt-corrected bright field (tcBF) of a dataset through the engine."""

from __future__ import annotations

from typing import Any

import xarray as xr

from framescope.engine import run
from framescope.udf._parallax import DEFAULT_MAX_BYTES, Parallax

__all__ = ["parallax"]


def parallax(arr: xr.DataArray, *, defocus: float | str | None = None,
             bin: int | None = None, upsample: int = 1, radius: float | None = None,
             center: tuple[float, float] | None = None, rotation: float | None = None,
             flip_y: bool | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
             iterations: int = 2, **run_opts: Any) -> xr.Dataset:
    """Tilt-corrected bright field of ``arr`` (one pass of :class:`framescope.udf.Parallax`).

    Each bright-field detector pixel ``k`` gives a virtual image of the scan, displaced by
    the aberration gradient ``s(k) = grad chi(k) / 2π`` (``λ Δf k`` for a defocus ``Δf``,
    with ``chi(k) = π λ Δf |k|²`` and the probe ``A(k) exp(-i chi(k))``). The images are
    registered, ``s = M k + c`` is fitted, and the images moved back by ``M k`` are summed.

    Parameters
    ----------
    arr : xarray.DataArray
        ``(scan_y, scan_x, det_y, det_x)`` frames. Its calibration (``arr.fs.calibration``)
        gives the BF radius (``semiconv`` over the detector angle), the centre, the scan
        rotation and flip; ``angle_per_px`` and ``scan_step`` give the defocus in nm, and
        ``energy`` as well the phase flip.
    defocus : float or str, optional
        Known defocus (m, or a string with a unit: ``"15 nm"``); the sum then uses it
        instead of the fit (which is still reported).
    bin : int, optional
        Bin ``bin x bin`` BF pixels into one image; default the smallest binning whose
        stack fits ``max_bytes`` (a 128 x 128 scan x the 3,209 pixels of a radius-32 disk
        needs 210 MB; a whole 128 x 128 detector 1 GiB).
    upsample : int
        Also give ``tcbf_upsampled``/``phase_upsampled`` on a grid this many times finer
        than the scan.
    radius, center, rotation, flip_y, max_bytes, iterations
        See :class:`framescope.udf.Parallax` (``rotation`` in degrees).
    **run_opts
        Passed to :func:`framescope.run` (``roi``, ``client``, ``progress``,
        ``corrections``, ...).

    Returns
    -------
    xarray.Dataset
        ``tcbf`` and ``phase`` over the scan coordinates; ``defocus`` (nm),
        ``astigmatism`` (nm), ``astigmatism_angle`` (rad), ``rotation`` (degrees);
        ``shifts`` and ``model_shifts`` (scan px) per BF pixel with its ``bf_k``
        (detector px from the centre); ``shift_matrix``; see :class:`~framescope.udf.
        Parallax`; ``bin``: the binning used.

    Raises
    ------
    ValueError
        Bad parameters, no BF radius (neither ``radius`` nor a calibrated ``semiconv``),
        or ``defocus`` without a calibrated detector angle and scan step.

    See Also
    --------
    framescope.udf.Parallax : the UDF, for :func:`framescope.iter_run` and live streams.

    Examples
    --------
    >>> from framescope.datasets import synthetic
    >>> arr = synthetic(scan=(16, 16), det=(32, 32), semiconv=6, defocus=4, step=2,
    ...                 calibrated=True, dtype="float32")
    >>> ds = parallax(arr, client="inline")
    >>> ds["defocus"].attrs["units"]
    'nm'
    """
    if isinstance(defocus, str):
        from framescope.calibration._quantities import parse_quantity

        defocus = parse_quantity(defocus, "length", "defocus")
    udf = Parallax(radius=radius, center=center, bin=bin, max_bytes=max_bytes,
                   upsample=upsample, rotation=rotation, flip_y=flip_y, defocus=defocus,
                   iterations=iterations)
    return run(udf, arr, **run_opts)
