"""Radial profiles (azimuthal integration): intensity per ring around a centre, per frame."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from scipy.sparse import csr_matrix

from framescope.errors import MaskError
from framescope.udf._backend import xp
from framescope.udf._base import UDF, Buffer, Meta, Tile
from framescope.udf._geometry import (
    RADIAL_UNITS,
    RadialUnit,
    ScatteringGeometry,
    check_unit,
    require,
)
from framescope.udf._kernels import LazyKernel, fused_view, share_cores

if TYPE_CHECKING:
    from framescope.calibration import Calibration

__all__ = ["RadialProfile", "RingBins", "RingUDF"]

_NORMALIZE = ("mean", "sum")
# n_bins from a length ratio: absorb rounding such as 10 / 0.1 = 100.00000000000001
_EPS = 1e-9
# bin index tolerance for physical units (see RingBins.bin_map)
_SNAP = 1e-9

radial_sums = LazyKernel("framescope.udf._radial_kernels", "radial_sums")


@dataclass(frozen=True, slots=True)
class RingBins:
    """Equal-width ring bins around a centre on a detector, all parameters resolved.

    Bin ``b`` holds the pixels whose centre lies at a distance ``r`` from ``(cy, cx)`` with
    ``r_min + b * bin_width <= r < r_min + (b + 1) * bin_width``; the centre of pixel
    ``(i, j)`` is at ``(y, x) = (i, j)``, as for :mod:`framescope.masks`. ``r`` and the
    bin parameters are in ``unit``: pixels, or (with ``geometry``) the scattering angle, q
    or k of the pixel centre (see :mod:`framescope.udf._geometry` for the conventions), so
    bins equal in q are not equal in pixels.
    """

    frame_shape: tuple[int, int]
    cy: float
    cx: float
    r_min: float
    bin_width: float
    n_bins: int
    unit: RadialUnit = "px"
    geometry: ScatteringGeometry | None = None

    @property
    def r_max(self) -> float:
        """Outer edge of the last bin (exclusive)."""
        return self.r_min + self.n_bins * self.bin_width

    @property
    def edges(self) -> np.ndarray:
        """The ``n_bins + 1`` bin edges, in :attr:`unit`."""
        return self.r_min + self.bin_width * np.arange(self.n_bins + 1, dtype=np.float64)

    @property
    def radius(self) -> np.ndarray:
        """Bin centres, in :attr:`unit`."""
        return self.r_min + self.bin_width * (np.arange(self.n_bins, dtype=np.float64) + 0.5)

    @property
    def dim(self) -> str:
        """Name of the bin dimension: ``radius`` (px), ``angle``, ``two_theta``, ``q``, ``k``."""
        return RADIAL_UNITS[self.unit].coord

    def coords(self) -> dict[str, tuple[np.ndarray, str]]:
        """The bin centres in every unit the geometry gives: ``{name: (values, units)}``.

        The bin dimension's own values are :attr:`radius`; the others are the same points
        converted (the centre of a bin in q is not the centre of its range in mrad).
        Pixels only without a geometry.
        """
        units = ("px",) if self.geometry is None else self.geometry.units()
        px = self.radius if self.geometry is None else self.geometry.from_unit(self.radius,
                                                                               self.unit)
        out = {}
        for u in units:
            values = self.radius if u == self.unit else self.geometry.to_unit(px, u)
            out[RADIAL_UNITS[u].coord] = (values, RADIAL_UNITS[u].units)
        return out

    def distance(self) -> np.ndarray:
        """Every pixel centre's distance from the centre, in :attr:`unit` (float64 frame)."""
        h, w = self.frame_shape
        r = np.hypot(np.arange(h, dtype=np.float64)[:, None] - self.cy,
                     np.arange(w, dtype=np.float64)[None, :] - self.cx)
        return r if self.unit == "px" else self.geometry.to_unit(r, self.unit)

    def bin_map(self, exclude: np.ndarray | None = None) -> np.ndarray:
        """Bin of every detector pixel, ``-1`` outside the bins or where ``exclude`` is True.

        Returns
        -------
        ndarray of int64, shape ``frame_shape``
        """
        # floor of the float64 ratio: pixels exactly on an edge go to the outer bin; in
        # physical units the conversion rounds (20 mrad at 0.5 mrad/px may come out as
        # 39.99999999999999 px), so a pixel within 1e-9 bins of an edge counts as on it
        b = np.floor((self.distance() - self.r_min) / self.bin_width
                     + (0.0 if self.unit == "px" else _SNAP))
        out = np.where((b >= 0) & (b < self.n_bins), b, -1).astype(np.int64)
        if exclude is not None:
            out[exclude] = -1
        return out

    def counts(self, exclude: np.ndarray | None = None) -> np.ndarray:
        """Pixels per bin (int64, ``(n_bins,)``), excluded pixels not counted."""
        m = self.bin_map(exclude)
        return np.bincount(m[m >= 0], minlength=self.n_bins).astype(np.int64)


@dataclass(slots=True)
class _Plan:
    runs: tuple[np.ndarray, np.ndarray, np.ndarray]  # ring_runs(): the pixels read
    bins: np.ndarray  # (pixels,) uint32, bin of each run pixel
    scale: np.ndarray  # (n_bins,) float64 factor per bin sum
    # the sparse GEMM of other tiles, on the tiles' backend (numpy/scipy or cupy/cupyx):
    index: Any  # (pixels,) flat pixel index of each run pixel, to gather them
    matrix: Any  # (n_bins, pixels) CSR of ones
    dev_scale: Any  # scale on the backend


class RingUDF(UDF):
    """Base of the analyses that bin detector pixels in rings (:class:`RadialProfile`,
    :class:`~framescope.udf.PolarTransform`): validates and resolves the radial bins."""

    def __init__(
        self,
        cy: float | None = None,
        cx: float | None = None,
        *,
        n_bins: int | None = None,
        r_max: float | None = None,
        bin_width: float | None = None,
        r_min: float = 0.0,
        mask: Any = None,
        normalize: Literal["mean", "sum"] = "mean",
        unit: RadialUnit = "px",
    ) -> None:
        check_unit(unit)
        per = "pixels" if unit == "px" else RADIAL_UNITS[unit].units
        if n_bins is not None and (int(n_bins) != n_bins or n_bins <= 0):
            raise ValueError(f"n_bins: expected a positive integer, found {n_bins!r}")
        if bin_width is not None and not (math.isfinite(bin_width) and bin_width > 0):
            raise ValueError(f"bin_width: expected a positive number of {per}, found "
                             f"{bin_width!r}")
        if not (math.isfinite(r_min) and r_min >= 0):
            raise ValueError(f"r_min: expected a number >= 0, found {r_min!r}")
        if r_max is not None and not (math.isfinite(r_max) and r_max > r_min):
            raise ValueError(f"r_max: expected a number > r_min = {r_min}, found {r_max!r}")
        if n_bins is not None and r_max is not None and bin_width is not None:
            raise ValueError(f"give at most two of n_bins, r_max and bin_width, found all "
                             f"three: n_bins={n_bins}, r_max={r_max}, bin_width={bin_width}")
        if normalize not in _NORMALIZE:
            raise ValueError(f"normalize: expected one of {_NORMALIZE}, found {normalize!r}")
        if mask is not None:
            mask = np.array(mask, copy=True)
            if mask.dtype != bool or mask.ndim != 2:
                raise MaskError(f"mask: expected a 2D bool array (True = exclude), found "
                                f"{mask.dtype} shape {mask.shape}")
            mask.flags.writeable = False
        self.cy = None if cy is None else float(cy)
        self.cx = None if cx is None else float(cx)
        self.n_bins = None if n_bins is None else int(n_bins)
        self.r_max = None if r_max is None else float(r_max)
        self.bin_width = None if bin_width is None else float(bin_width)
        self.r_min = float(r_min)
        self.mask: np.ndarray | None = mask
        self.normalize = normalize
        self.unit = unit

    def params(self) -> dict[str, Any]:
        mask = None
        if self.mask is not None:  # content hash: the key must not depend on identity
            blob = repr(self.mask.shape).encode() + np.packbits(self.mask).tobytes()
            mask = hashlib.blake2b(blob, digest_size=16).hexdigest()
        return {"cy": self.cy, "cx": self.cx, "n_bins": self.n_bins, "r_max": self.r_max,
                "bin_width": self.bin_width, "r_min": self.r_min, "mask": mask,
                "normalize": self.normalize, "unit": self.unit}

    def rings(self, frame_shape: tuple[int, int],
              calibration: Calibration | None = None) -> RingBins:
        """The bins on a detector of ``frame_shape``, every parameter resolved.

        ``calibration`` (the data's, ``Meta.calibration``) gives the default centre (its
        ``center`` when set) and the physical units.

        Raises
        ------
        ValueError
            The centre is off the frame, or (MaskError) the mask does not have the frame
            shape, or (CalibrationError) ``unit`` needs calibration fields the data lacks.
        """
        name = type(self).__name__
        h, w = (int(v) for v in frame_shape)
        centre = None if calibration is None else calibration.center
        cy = self.cy if self.cy is not None else float(h // 2) if centre is None else centre[0]
        cx = self.cx if self.cx is not None else float(w // 2) if centre is None else centre[1]
        if not (-0.5 <= cy <= h - 0.5 and -0.5 <= cx <= w - 0.5):
            raise ValueError(f"{name}: centre (cy, cx) = ({cy}, {cx}) is off the {h}x{w} "
                             f"frame: expected -0.5 <= cy <= {h - 0.5} and "
                             f"-0.5 <= cx <= {w - 0.5}")
        if self.mask is not None and self.mask.shape != (h, w):
            raise MaskError(f"{name} mask: expected the frame shape {(h, w)}, found "
                            f"{self.mask.shape}")
        geometry = require(calibration, self.unit)
        width = self.bin_width
        if width is None:  # one pixel next to the centre
            width = 1.0 if self.unit == "px" else float(geometry.to_unit(1.0, self.unit))
        if self.n_bins is not None and self.r_max is not None:
            width = (self.r_max - self.r_min) / self.n_bins
            n_bins = self.n_bins
        elif self.n_bins is not None:
            n_bins = self.n_bins
        elif self.r_max is not None:
            n_bins = max(1, math.ceil((self.r_max - self.r_min) / width - _EPS))
        else:  # up to the farthest pixel centre, which then lies inside the last bin
            far = math.hypot(max(cy, h - 1 - cy), max(cx, w - 1 - cx))
            if self.unit != "px":
                far = float(geometry.to_unit(far, self.unit))
            n_bins = max(1, math.floor((far - self.r_min) / width) + 1)
        return RingBins((h, w), cy, cx, self.r_min, width, n_bins, self.unit, geometry)

    def _no_pixel(self, rings: RingBins) -> ValueError:
        masked = f", {int(self.mask.sum())} pixels masked" if self.mask is not None else ""
        unit = "" if rings.unit == "px" else f" {RADIAL_UNITS[rings.unit].units}"
        return ValueError(
            f"{type(self).__name__}: no detector pixel in any bin: radii {rings.r_min} to "
            f"{rings.r_max}{unit} around ({rings.cy}, {rings.cx}) on a "
            f"{rings.frame_shape[0]}x{rings.frame_shape[1]} frame{masked}")

    def _coord_outputs(self, rings: RingBins, dims: tuple[str, ...], shape: tuple[int, ...],
                       labels: tuple[tuple[Any, ...], ...], units: tuple[str, ...],
                       ) -> dict[str, Buffer]:
        """The bin centres in the other units, published as coordinates along ``rings.dim``
        (``dims``/``shape``/``labels`` the bin dimension's declaration)."""
        i = dims.index(rings.dim)
        return {name: Buffer("single", "float64", (shape[i],), (rings.dim,),
                             extra_coords=(labels[i],), units=u, coord_units=(units[i],),
                             coord=True)
                for name, (_, u) in rings.coords().items() if name != rings.dim}


class RadialProfile(RingUDF):
    """Radial profile of every frame: summed or mean intensity in rings around a centre.

    Distances are measured from ``(cy, cx)`` to pixel centres (pixel ``(i, j)`` is at
    ``(y, x) = (i, j)``, as in :mod:`framescope.masks`), without sub-pixel splitting: bin
    ``b`` holds the pixels with ``r_min + b * bin_width <= r < r_min + (b + 1) *
    bin_width``. The bins are equal-width in ``unit``; two of ``n_bins``, ``r_max`` and
    ``bin_width`` fix them (``bin_width`` defaults to 1 pixel).

    Outputs: ``profile`` ``(scan, radius)`` float32, the ``radius`` coordinate holding the
    bin centres in pixels; ``counts`` ``(radius,)`` int64, the detector pixels per bin
    (masked pixels excluded). Binning in another ``unit`` names the bin dimension after
    it (``angle``, ``two_theta``, ``q``, ``k``). On calibrated data (``Meta.calibration``
    with a detector angle) every bin centre is also given in the other units, as
    coordinates along the bin dimension: ``radius`` (px), ``angle`` (scattering angle 2θ,
    mrad), ``two_theta`` (2θ, deg), and with the beam energy ``q`` (``4π sin(θ)/λ``, 1/nm,
    pyFAI's ``q_nm^-1``) and ``k`` (``2 sin(θ)/λ = 1/d``, 1/Å); each with
    ``attrs["units"]``. 2θ is ``atan(r p / L)`` when the calibration gives ``camera_length``
    and ``pixel_size`` (a flat detector, as pyFAI), ``r * angle_per_px`` otherwise; see
    :mod:`framescope.udf._geometry`.

    Parameters
    ----------
    cy, cx : float, optional
        Centre in detector pixels; default the calibration's ``center`` when it has one,
        else ``(det_y // 2, det_x // 2)`` (where an FFT-shifted zero frequency lies, as for
        :class:`CenterOfMass`). Must lie on the frame: ``-0.5 <= cy <= det_y - 0.5``,
        likewise ``cx``.
    n_bins : int, optional
        Number of bins. Default: enough to reach ``r_max``, or every pixel of the frame
        when ``r_max`` is not given either.
    r_max : float, optional
        Outer radius (in ``unit``). With ``bin_width`` (not ``n_bins``) it is rounded up to
        a whole number of bins; the resolved value is in :meth:`rings` and the accessor's
        attrs.
    bin_width : float, optional
        Ring width in ``unit``; default 1 pixel (in other units: the width of the pixel
        next to the centre), or ``(r_max - r_min) / n_bins`` when both are given (then
        ``bin_width`` must not be).
    r_min : float
        Inner radius of the first bin (e.g. to skip the bright-field disk); default 0.
    mask : array of bool, optional
        Detector pixels to exclude (True = excluded: hot pixels, a beam stop), shape
        ``(det_y, det_x)``.
    normalize : {"mean", "sum"}
        ``"mean"``: mean intensity per ring pixel (sum / count; NaN for a bin without
        pixels); ``"sum"``: summed intensity.
    unit : {"px", "mrad", "2th_deg", "q_nm^-1", "k_A^-1"}
        Unit of ``r_min``, ``r_max`` and ``bin_width``, in which the bins are equal-width:
        pixels (default), scattering angle 2θ in mrad or degrees, q in 1/nm or k in 1/Å.
        All but pixels need a calibrated detector angle, q and k also the beam energy.

    Raises
    ------
    ValueError
        Non-positive ``n_bins`` or ``bin_width``, ``r_max <= r_min``, negative ``r_min``,
        all three of ``n_bins``, ``r_max``, ``bin_width`` given, an unknown ``normalize``
        or ``unit``; on a detector (:meth:`rings`, :meth:`buffers`): a centre off the
        frame, or no pixel in any bin. :class:`~framescope.errors.MaskError` (a ValueError)
        for a mask that is not bool or not of the frame shape;
        :class:`~framescope.calibration.CalibrationError` (a ValueError) for a ``unit``
        the data's calibration cannot give.

    Notes
    -----
    Per task, :meth:`prepare` turns the bins into runs of the binned pixels and a bin index
    per pixel; a fused numba kernel (:func:`~framescope.udf._radial_kernels.radial_sums`)
    then scatter-adds uint8/16/32 and float32 tiles in place, reading only binned pixels.
    Other dtypes and non-contiguous tiles take a float64 sparse GEMM (scipy CSR
    ``(bins, pixels)``) of the gathered pixels; tiles on the GPU (``backend="cupy"``) the
    same GEMM with cupy / cupyx.

    Examples
    --------
    >>> import framescope
    >>> frames = np.ones((2, 3, 9, 9), np.uint16)
    >>> res = framescope.run(RadialProfile(4, 4, r_max=3), framescope.from_array(frames),
    ...                      client="inline")
    >>> res["counts"].values.tolist(), res["radius"].values.tolist()
    ([1, 8, 16], [0.5, 1.5, 2.5])
    """

    def counts(self, frame_shape: tuple[int, int],
               calibration: Calibration | None = None) -> np.ndarray:
        """Detector pixels per bin on a detector of ``frame_shape`` (masked ones excluded).

        Raises
        ------
        ValueError
            As :meth:`rings`, and when no pixel lies in any bin.
        """
        rings = self.rings(frame_shape, calibration)
        counts = rings.counts(self.mask)
        if not counts.any():
            raise self._no_pixel(rings)
        return counts

    def buffers(self, meta: Meta) -> dict[str, Buffer]:
        rings = self.rings(meta.frame_shape, meta.calibration)  # validates before any task
        coords = (tuple(rings.radius.tolist()),)
        return {"profile": Buffer("nav", "float32", (rings.n_bins,), (rings.dim,),
                                  fill=np.nan, extra_coords=coords,
                                  coord_units=(RADIAL_UNITS[rings.unit].units,))}

    def outputs(self, meta: Meta) -> dict[str, Buffer]:
        decl = self.buffers(meta)
        b = decl["profile"]
        rings = self.rings(meta.frame_shape, meta.calibration)
        # the counts depend on geometry only, so finalize adds them (merging would sum them)
        return {**decl, "counts": Buffer("single", "int64", b.extra_shape, b.extra_dims,
                                         extra_coords=b.extra_coords,
                                         coord_units=b.coord_units),
                **self._coord_outputs(rings, b.extra_dims, b.extra_shape, b.extra_coords,
                                      b.coord_units)}

    def prepare(self, meta: Meta) -> _Plan:
        from framescope.udf._radial_kernels import ring_runs  # a numba module: not at import

        rings = self.rings(meta.frame_shape, meta.calibration)
        counts = self.counts(meta.frame_shape, meta.calibration)
        bin_map = rings.bin_map(self.mask)
        row_index, x0, x1, bins = ring_runs(bin_map)
        index = np.flatnonzero(bin_map >= 0)  # row-major: the run pixel order
        matrix = csr_matrix((np.ones(index.size), (bins, np.arange(index.size))),
                            shape=(rings.n_bins, index.size))
        if self.normalize == "mean":
            with np.errstate(divide="ignore"):
                scale = np.where(counts > 0, 1.0 / counts, np.nan)
        else:
            scale = np.ones(rings.n_bins)
        share_cores()  # prepare runs in the thread that runs the tiles
        if meta.backend == "cupy":  # device tiles: the GEMM runs on the GPU
            import cupy
            from cupyx.scipy.sparse import csr_matrix as device_csr

            return _Plan((row_index, x0, x1), bins, scale, cupy.asarray(index),
                         device_csr(matrix), cupy.asarray(scale))
        return _Plan((row_index, x0, x1), bins, scale, index, matrix, scale)

    def process_tile(self, tile: Tile, results: dict[str, np.ndarray], state: _Plan) -> None:
        out = results["profile"]
        data = fused_view(tile.data)
        if data is not None and out.flags.c_contiguous:
            radial_sums(data, *state.runs, state.bins, state.scale, out)
            return
        m = xp(tile.data)
        pixels = tile.flat[:, state.index].astype(m.float64, copy=False)
        sums = state.matrix @ pixels.T  # (bins, n): sparse @ dense, float64
        out[...] = (sums.T * state.dev_scale).astype(m.float32)

    def finalize(self, results: dict[str, np.ndarray], meta: Meta) -> dict[str, np.ndarray]:
        rings = self.rings(meta.frame_shape, meta.calibration)
        coords = {k: v for k, (v, _) in rings.coords().items() if k != rings.dim}
        return {"profile": results["profile"],
                "counts": self.counts(meta.frame_shape, meta.calibration), **coords}
