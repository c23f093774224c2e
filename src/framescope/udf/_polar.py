"""Polar transform: detector intensities binned in (radius, azimuth χ), like pyFAI's
``integrate2d``, summed over the scan or per scan position."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.sparse import csr_matrix

from framescope.udf._backend import xp
from framescope.udf._base import Buffer, Meta, Tile
from framescope.udf._geometry import RADIAL_UNITS, RadialUnit, azimuth
from framescope.udf._kernels import LazyKernel, fused_view, share_cores
from framescope.udf._radial import RingBins, RingUDF, radial_sums

__all__ = ["PolarTransform"]

sum_frames = LazyKernel("framescope.udf._fused", "sum_frames")

# per-position results are one (n_rad, n_chi) float32 image per scan position, all held in
# memory by the client; above this the caller almost certainly wants the summed pattern
_PER_POSITION_MAX_BYTES = 2 * 2**30


@dataclass(slots=True)
class _Plan:
    runs: tuple[np.ndarray, np.ndarray, np.ndarray]  # ring_runs() of the binned pixels
    bins: np.ndarray  # (pixels,) uint32 flat (radial, chi) bin of each run pixel
    scale: np.ndarray  # (bins,) float64
    index: Any  # (pixels,) flat pixel index of each run pixel (on the tiles' backend)
    matrix: Any  # (bins, pixels) CSR of ones (on the tiles' backend)
    dev_scale: Any


class PolarTransform(RingUDF):
    """Intensities binned in radius × azimuth: the polar (``q``, ``χ``) image of a pattern.

    Each detector pixel goes, whole, to the bin holding its centre (no pixel splitting, as
    pyFAI's ``method=("no", "histogram", ...)``): radial bins exactly as
    :class:`RadialProfile` (``r_min``, ``r_max``, ``n_bins``, ``bin_width`` in ``unit``,
    equal-width), azimuthal bins ``n_chi`` equal sectors of ``[-180°, 180°]``, where
    ``χ = atan2(y - cy, x - cx)``: 0° along ``+det_x``, +90° along ``+det_y`` (pyFAI's
    ``chi`` with its default detector orientation; detector frame, no scan rotation).
    χ = 180° (pixels on the centre row left of the centre) falls in the last sector.

    Outputs: ``polar`` ``(<radial dim>, chi)`` (or ``(scan_y, scan_x, <radial dim>, chi)``
    with ``per_position``), ``counts`` ``(<radial dim>, chi)`` int64 (pixels per bin,
    masked ones excluded), the ``chi`` coordinate (sector centres, deg) and the radial
    bin coordinates of :class:`RadialProfile` (``radius`` px, and on calibrated data
    ``angle`` mrad, ``two_theta`` deg, ``q`` 1/nm, ``k`` 1/Å). The radial dimension is
    named after ``unit``, as there.

    Parameters
    ----------
    cy, cx, n_bins, r_max, bin_width, r_min, mask, unit
        The centre, radial bins and excluded pixels, as for :class:`RadialProfile`.
    n_chi : int
        Number of azimuthal sectors (default 36: 10° each).
    normalize : {"mean", "sum"}
        ``"mean"``: mean intensity per bin pixel (NaN for an empty bin) and, summed over
        the scan, per frame: the polar image of the mean frame. ``"sum"``: summed
        intensity of the bin's pixels (and, over the scan, of all processed frames: the
        polar image of the sum frame).
    per_position : bool
        False (default): one pattern over all processed frames (the ROI), float64; the
        frames are summed first and binned once. True: a float32 ``(n_rad, n_chi)`` image
        per scan position, for small ``n_rad × n_chi`` (a 256 × 256 scan of 100 × 36 bins
        is 24 GB: refused above 2 GiB).

    Raises
    ------
    ValueError
        As :class:`RadialProfile`, a non-positive ``n_chi``, or per-position results above
        2 GiB.

    Examples
    --------
    >>> import framescope
    >>> frames = np.ones((2, 3, 9, 9), np.uint16)
    >>> res = framescope.run(PolarTransform(4, 4, r_max=3, n_chi=4),
    ...                      framescope.from_array(frames), client="inline")
    >>> res["chi"].values.tolist()
    [-135.0, -45.0, 45.0, 135.0]
    >>> res["counts"].values.tolist()  # pixels on a sector edge (0°, ±90°) go up
    [[0, 0, 1, 0], [1, 2, 2, 3], [3, 4, 4, 5]]
    """

    def __init__(
        self,
        cy: float | None = None,
        cx: float | None = None,
        *,
        n_bins: int | None = None,
        r_max: float | None = None,
        bin_width: float | None = None,
        r_min: float = 0.0,
        n_chi: int = 36,
        mask: Any = None,
        normalize: Literal["mean", "sum"] = "mean",
        unit: RadialUnit = "px",
        per_position: bool = False,
    ) -> None:
        super().__init__(cy, cx, n_bins=n_bins, r_max=r_max, bin_width=bin_width,
                         r_min=r_min, mask=mask, normalize=normalize, unit=unit)
        if int(n_chi) != n_chi or n_chi <= 0:
            raise ValueError(f"n_chi: expected a positive integer, found {n_chi!r}")
        self.n_chi = int(n_chi)
        self.per_position = bool(per_position)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "n_chi": self.n_chi, "per_position": self.per_position}

    @property
    def chi(self) -> np.ndarray:
        """Sector centres (degrees)."""
        return -180.0 + 360.0 / self.n_chi * (np.arange(self.n_chi) + 0.5)

    def bin_map(self, rings: RingBins) -> np.ndarray:
        """Flat ``(radial, chi)`` bin ``r * n_chi + c`` of every pixel, -1 where unbinned."""
        radial = rings.bin_map(self.mask)
        chi = azimuth(rings.frame_shape, rings.cy, rings.cx)
        sector = np.minimum(np.floor((chi + 180.0) * (self.n_chi / 360.0)), self.n_chi - 1)
        return np.where(radial >= 0, radial * self.n_chi + sector.astype(np.int64), -1)

    def counts(self, frame_shape: tuple[int, int], calibration: Any = None) -> np.ndarray:
        """Pixels per ``(radial, chi)`` bin (int64), masked ones excluded.

        Raises
        ------
        ValueError
            As :meth:`rings`, and when no pixel lies in any bin.
        """
        rings = self.rings(frame_shape, calibration)
        m = self.bin_map(rings)
        counts = np.bincount(m[m >= 0], minlength=rings.n_bins * self.n_chi)
        if not counts.any():
            raise self._no_pixel(rings)
        return counts.reshape(rings.n_bins, self.n_chi).astype(np.int64)

    def _decl(self, meta: Meta) -> tuple[RingBins, dict[str, Any]]:
        rings = self.rings(meta.frame_shape, meta.calibration)  # validates before any task
        return rings, {"extra_shape": (rings.n_bins, self.n_chi),
                       "extra_dims": (rings.dim, "chi"),
                       "extra_coords": (tuple(rings.radius.tolist()), tuple(self.chi.tolist())),
                       "coord_units": (RADIAL_UNITS[rings.unit].units, "deg")}

    def buffers(self, meta: Meta) -> dict[str, Buffer]:
        rings, d = self._decl(meta)
        if not self.per_position:  # the sum frame, binned once in finalize
            return {"sum": Buffer("sig", "float64"), "n": Buffer("single", "int64")}
        size = meta.n_positions * rings.n_bins * self.n_chi * 4
        if size > _PER_POSITION_MAX_BYTES:
            raise ValueError(
                f"PolarTransform(per_position=True): {meta.n_positions} positions x "
                f"{rings.n_bins} x {self.n_chi} bins is {size / 2**30:.1f} GiB, expected at "
                f"most {_PER_POSITION_MAX_BYTES / 2**30:.0f} GiB: use fewer bins or "
                "per_position=False (one pattern over the scan or an ROI)")
        return {"polar": Buffer("nav", "float32", fill=np.nan, **d)}

    def outputs(self, meta: Meta) -> dict[str, Buffer]:
        rings, d = self._decl(meta)
        polar = (self.buffers(meta)["polar"] if self.per_position
                 else Buffer("single", "float64", **d))
        return {"polar": polar, "counts": Buffer("single", "int64", **d),
                **self._coord_outputs(rings, d["extra_dims"], d["extra_shape"],
                                      d["extra_coords"], d["coord_units"])}

    def _scale(self, counts: np.ndarray) -> np.ndarray:
        if self.normalize == "sum":
            return np.ones(counts.size)
        with np.errstate(divide="ignore"):
            return np.where(counts > 0, 1.0 / counts, np.nan).ravel()

    def prepare(self, meta: Meta) -> _Plan | None:
        share_cores()  # prepare runs in the thread that runs the tiles
        if not self.per_position:
            return None
        from framescope.udf._radial_kernels import ring_runs  # a numba module: not at import

        rings = self.rings(meta.frame_shape, meta.calibration)
        bin_map = self.bin_map(rings)
        scale = self._scale(self.counts(meta.frame_shape, meta.calibration))
        row_index, x0, x1, bins = ring_runs(bin_map)
        index = np.flatnonzero(bin_map >= 0)  # row-major: the run pixel order
        matrix = csr_matrix((np.ones(index.size), (bins, np.arange(index.size))),
                            shape=(scale.size, index.size))
        if meta.backend == "cupy":  # device tiles: the GEMM runs on the GPU
            import cupy
            from cupyx.scipy.sparse import csr_matrix as device_csr

            return _Plan((row_index, x0, x1), bins, scale, cupy.asarray(index),
                         device_csr(matrix), cupy.asarray(scale))
        return _Plan((row_index, x0, x1), bins, scale, index, matrix, scale)

    def process_tile(self, tile: Tile, results: dict[str, np.ndarray],
                     state: _Plan | None) -> None:
        data = fused_view(tile.data)
        if state is None:  # summed: add the frames up, bin once at the end
            if data is not None and results["sum"].flags.c_contiguous:
                sum_frames(data, results["sum"])
            else:
                results["sum"] += xp(tile.data).sum(tile.data, axis=0, dtype=np.float64)
            results["n"] += len(tile)
            return
        out = results["polar"]
        if data is not None and out.flags.c_contiguous:
            radial_sums(data, *state.runs, state.bins, state.scale, out.reshape(len(tile), -1))
            return
        m = xp(tile.data)
        pixels = tile.flat[:, state.index].astype(m.float64, copy=False)
        sums = state.matrix @ pixels.T  # (bins, n): sparse @ dense, float64
        out[...] = (sums.T * state.dev_scale).astype(m.float32).reshape(out.shape)

    def finalize(self, results: dict[str, np.ndarray], meta: Meta) -> dict[str, np.ndarray]:
        rings = self.rings(meta.frame_shape, meta.calibration)
        counts = self.counts(meta.frame_shape, meta.calibration)
        coords = {k: v for k, (v, _) in rings.coords().items() if k != rings.dim}
        if self.per_position:
            return {"polar": results["polar"], "counts": counts, **coords}
        m = self.bin_map(rings).ravel()
        keep = m >= 0
        sums = np.bincount(m[keep], weights=np.asarray(results["sum"]).ravel()[keep],
                           minlength=counts.size)
        n = int(results["n"])  # frames summed (the ROI's)
        if n == 0:
            polar = np.full(counts.size, math.nan)
        else:
            polar = sums * self._scale(counts) / (n if self.normalize == "mean" else 1)
        return {"polar": polar.reshape(counts.shape), "counts": counts, **coords}
