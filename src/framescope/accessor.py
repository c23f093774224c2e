"""``arr.fs``: framescope's analyses on any ``(scan_y, scan_x, det_y, det_x)`` DataArray."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import xarray as xr

from framescope._accessor_phase import PhaseMixin
from framescope._accessor_physics import PhysicsMixin, corrections_attrs
from framescope._version import __version__
from framescope.corrections import ENCODING_KEY, corrected_coords
from framescope.engine import iter_run, run
from framescope.engine._cache import data_key, results, roi_key
from framescope.errors import DimensionError
from framescope.io._lazy import DIMS
from framescope.masks import MaskSpec, MaskStack
from framescope.udf import (
    UDF,
    ApplyMasks,
    CenterOfMass,
    FrameStats,
    MaxFrame,
    PolarTransform,
    RadialProfile,
    SumFrame,
)

__all__ = ["FsAccessor"]

# summary frame -> the cheapest UDF that gives it ("stats": FrameStats gives them all)
_SUMMARY = {"sum": "sum", "mean": "sum", "max": "max", "std": "stats", "var": "stats",
            "min": "stats"}


@xr.register_dataarray_accessor("fs")
class FsAccessor(PhysicsMixin, PhaseMixin):
    """Analyses of 4D-STEM frames, run tile by tile by the framescope engine.

    Every method takes ``roi=`` (bool array over the scan), ``client=`` (None for the default
    cluster, ``"inline"`` for threads of this process, ``"sync"``, a scheduler address or a
    ``distributed.Client``) and ``progress=``.
    """

    def __init__(self, arr: xr.DataArray) -> None:
        if tuple(arr.dims) != DIMS:
            raise DimensionError(f"framescope needs dims {DIMS}, found {tuple(arr.dims)}")
        self._arr = arr

    def run(self, udf: UDF | list[UDF] | dict[str, UDF], **opts: Any) -> Any:
        """Run any UDF, or several in one pass; see :func:`framescope.engine.run`."""
        return run(udf, self._arr, **opts)

    def iter_run(self, udf: UDF | list[UDF] | dict[str, UDF], **opts: Any):
        """Progressive results of any UDF(s); see :func:`framescope.engine.iter_run`."""
        return iter_run(udf, self._arr, **opts)

    def summary(self, *which: str, roi: Any = None, **opts: Any) -> list[xr.DataArray]:
        """Summary frames over the scan (or the ROI), all in one pass over the data.

        Parameters
        ----------
        *which : {"sum", "mean", "max", "std", "var", "min"}
            The frames wanted, in this order; default ``("mean", "max")``.
        roi : array of bool, optional
            Scan positions to include.
        **opts
            ``client=``, ``progress=`` as for :func:`framescope.run`.

        Returns
        -------
        list of xarray.DataArray
            One ``(det_y, det_x)`` frame per name. Each is also kept (by data and ROI) for
            :meth:`mean_frame`, :meth:`max_frame`, :meth:`std_frame`, ..., which then
            read nothing.

        Examples
        --------
        >>> mean, mx, std = arr.fs.summary("mean", "max", "std")  # doctest: +SKIP
        """
        which = which or ("mean", "max")
        bad = [w for w in which if w not in _SUMMARY]
        if bad:
            raise ValueError(f"summary: unknown frame(s) {bad}; expected {sorted(_SUMMARY)}")
        arr = self._use(opts)
        base = (data_key(arr), roi_key(roi), "summary")
        missing = [w for w in which if results.get((*base, w)) is None]
        if missing:
            # the cheapest UDFs that give every missing frame, in one pass
            stats = any(_SUMMARY[w] == "stats" for w in missing)
            udfs: dict[str, UDF] = {"stats": FrameStats()} if stats else {}
            if "max" in missing and not stats:
                udfs["max"] = MaxFrame()
            if {"sum", "mean"} & set(missing):
                udfs["sum"] = SumFrame()
            res = run(udfs, arr, roi=roi, **opts)
            got = {}
            if "sum" in res:
                total = res["sum"]["sum"]
                got.update(sum=total, mean=total / res["sum"]["n"])
            if "max" in res:
                got["max"] = res["max"]["max"]
            if "stats" in res:
                st = res["stats"]
                got.update({k: st[k] for k in ("mean", "std", "var", "min")})
                got["max"] = st["max"].astype(self._arr.dtype)  # as MaxFrame gives it
            for name, frame in got.items():
                results.put((*base, name), np.asarray(frame))
        raw = {k: arr[k].variable for k in ("det_y", "det_x", "k_y", "k_x")
               if k in arr.coords}
        coords = corrected_coords(raw, arr.encoding.get(ENCODING_KEY))
        return [xr.DataArray(results.get((*base, w)).copy(), dims=("det_y", "det_x"),
                             coords=coords, name=f"{w}_frame") for w in which]

    def sum_frame(self, **opts: Any) -> xr.DataArray:
        """Sum of the frames (of the ROI), float64."""
        return self.summary("sum", **opts)[0].rename("sum")

    def mean_frame(self, **opts: Any) -> xr.DataArray:
        """Mean frame (of the ROI); see :meth:`summary` for several frames in one pass."""
        return self.summary("mean", **opts)[0]

    def frame_stats(self, **opts: Any) -> xr.Dataset:
        """Per-pixel ``mean``, ``var``, ``std``, ``min``, ``max`` and count ``n``."""
        return run(FrameStats(), self._use(opts), **opts).drop_vars("done")

    def std_frame(self, **opts: Any) -> xr.DataArray:
        """Per-pixel standard deviation over the frames (of the ROI); see :meth:`summary`."""
        return self.summary("std", **opts)[0]

    def var_frame(self, **opts: Any) -> xr.DataArray:
        """Per-pixel (population) variance over the frames (of the ROI)."""
        return self.summary("var", **opts)[0]

    def max_frame(self, **opts: Any) -> xr.DataArray:
        """Per-pixel maximum over the frames (of the ROI), in the frames' dtype.

        One pass of ``np.maximum`` over the raw values (:class:`framescope.udf.MaxFrame`),
        much cheaper than :meth:`frame_stats`; see :meth:`summary`.
        """
        return self.summary("max", **opts)[0]

    def virtual_image(self, masks: Any, *, roi: Any = None, cache: bool = True,
                      **opts: Any) -> xr.DataArray:
        """Virtual images: the sum of every frame times each mask.

        Parameters
        ----------
        masks : mask spec, MaskStack, dict/list of specs, or a 2D/3D array
            The virtual detectors (see :mod:`framescope.masks`); masks in mrad or 1/Å
            need a calibrated array (:meth:`calibrate`).
        roi : array of bool, optional
            Scan positions to compute; others are NaN.
        cache : bool
            Reuse images computed before for the same data, mask and ROI; only masks not
            seen yet are computed.
        **opts
            ``client=``, ``progress=`` as for :func:`framescope.run`.

        Returns
        -------
        xarray.DataArray
            ``(scan_y, scan_x)`` for a single mask spec or 2D array, else
            ``(scan_y, scan_x, mask)`` with the mask names as coordinate. The mask
            definitions (JSON) are in ``attrs["masks"]``; for masks in physical units the
            pixel masks they implied in ``attrs["masks_px"]``, and the array's calibration
            in ``attrs["calibration"]``.

        Raises
        ------
        framescope.errors.MaskError
            A mask in physical units on an array without the calibration it needs.

        Examples
        --------
        >>> adf = arr.fs.virtual_image(fs.masks.ring(128, 128, 40, 90))  # doctest: +SKIP
        >>> cal = arr.fs.calibrate(angle_per_px="0.5 mrad")  # doctest: +SKIP
        >>> haadf = cal.fs.virtual_image(fs.masks.ring(r_in=60, r_out=150,  # doctest: +SKIP
        ...                                            units="mrad"))
        """
        stack = MaskStack.from_any(masks)
        single = len(stack) == 1 and (isinstance(masks, MaskSpec)
                                      or getattr(masks, "ndim", 0) == 2)
        # masks in mrad/1/Å become pixels here: cached images are keyed by the pixel masks
        # (the data key ignores the calibration, so a recalibrated array must miss)
        arr = self._use(opts)
        det_shape, cal = self._geometry(arr)
        pixels = stack.resolved(cal if stack.is_physical else None, det_shape)
        base = (data_key(arr), roi_key(roi))
        keys = {name: (*base, spec.key) for name, spec in pixels.items()}
        missing = [n for n in stack.names if not cache or results.get(keys[n]) is None]
        images: dict[str, np.ndarray] = {}
        if missing:
            res = run(ApplyMasks(pixels.subset(missing)), arr, roi=roi,
                      **opts)["intensity"]
            for name in missing:
                images[name] = img = res.sel(mask=name).values  # NaN outside the ROI
                if cache:
                    results.put(keys[name], img)
        for name in stack.names:
            if name not in images:
                images[name] = results.get(keys[name])
        data = np.stack([images[n] for n in stack.names], axis=-1)
        out = xr.DataArray(
            data, dims=("scan_y", "scan_x", "mask"),
            coords={"scan_y": self._arr.scan_y, "scan_x": self._arr.scan_x,
                    "mask": list(stack.names)},
            name="virtual_image",
            attrs={"masks": stack.to_json(), "framescope_version": __version__,
                   "source": self._arr.attrs.get("source", "")},
        )
        if stack.is_physical:  # what the masks in mrad/1/Å were on this detector
            out.attrs["masks_px"] = pixels.to_json()
        if "calibration" in self._arr.attrs:
            out.attrs["calibration"] = self._arr.attrs["calibration"]
        out.attrs.update(corrections_attrs(arr))
        return out.isel(mask=0, drop=True) if single else out

    def com(self, *, cy: float | None = None, cx: float | None = None,
            radius: float | None = None, rotation: float | None = None,
            flip_y: bool | None = None, roi: Any = None, **opts: Any) -> xr.Dataset:
        """Centre of mass / DPC: ``com_y``, ``com_x``, ``field_y``, ``field_x``,
        ``magnitude``, ``divergence`` and ``curl`` over the scan (px); on calibrated data
        also ``deflection_y/x`` (mrad) and, with the beam energy, ``phase_gradient_y/x``
        (rad/Å).

        The centre, ``rotation`` (degrees) and ``flip_y`` default to the calibration's
        (``center``, ``rotation``, ``flip``), else the detector middle, 0 and False; the
        values in effect are in ``attrs`` (``com_cy``, ``com_rotation``, ...). See
        :class:`framescope.udf.CenterOfMass` for the conventions.
        """
        udf = CenterOfMass(cy=cy, cx=cx, radius=radius, rotation=rotation, flip_y=flip_y)
        arr = self._use(opts)
        res = run(udf, arr, roi=roi, **opts)
        used = udf.resolved(*self._geometry(arr))
        res.attrs.update({f"com_{k}": ("none" if v is None else v) for k, v in used.items()})
        res.attrs["framescope_version"] = __version__
        return res

    def radial_profile(
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
        unit: str = "px",
        roi: Any = None,
        **opts: Any,
    ) -> xr.DataArray:
        """Radial profile (azimuthal integration) of every frame around ``(cy, cx)``.

        Distances run from the centre to pixel centres (pixel ``(i, j)`` at ``(y, x) =
        (i, j)``); bin ``b`` holds ``r_min + b * bin_width <= r < r_min + (b + 1) *
        bin_width``. See :class:`framescope.udf.RadialProfile` for every parameter.

        Parameters
        ----------
        cy, cx : float, optional
            Centre in detector pixels; default the calibration's ``center``, else
            ``(det_y // 2, det_x // 2)``.
        n_bins, r_max, bin_width, r_min : optional
            The equal-width bins, in ``unit``: two of ``n_bins``, ``r_max``,
            ``bin_width`` (default ``bin_width`` 1 px, out to the farthest pixel).
        mask : array of bool, optional
            Detector pixels to exclude (True), shape ``(det_y, det_x)``.
        normalize : {"mean", "sum"}
            Mean intensity per ring pixel, or the ring's summed intensity.
        unit : {"px", "mrad", "2th_deg", "q_nm^-1", "k_A^-1"}
            Unit of the bins (pixels; scattering angle 2θ in mrad or degrees; q in 1/nm;
            k in 1/Å); all but pixels need a calibration (``arr.fs.calibrate``).
        roi : array of bool, optional
            Scan positions to compute; others are NaN.
        **opts
            ``client=``, ``progress=`` as for :func:`framescope.run`.

        Returns
        -------
        xarray.DataArray
            ``(scan_y, scan_x, radius)`` float32; ``radius`` holds the bin centres (px) and
            the non-index coordinate ``counts`` the pixels per bin. Binned in another
            ``unit`` the last dimension is ``angle``, ``two_theta``, ``q`` or ``k``. On
            calibrated data the bin centres are also coordinates in the other units
            (``radius`` px, ``angle`` mrad, ``two_theta`` deg, ``q`` 1/nm, ``k`` 1/Å).
            The resolved bins (``cy``, ``cx``, ``r_min``, ``r_max``, ``bin_width``,
            ``n_bins``, ``unit``), ``normalize``, the number of ``masked_pixels`` and
            ``framescope_version`` are in ``attrs``.

        Raises
        ------
        ValueError
            Bad parameters, a centre off the frame, a mask of the wrong shape or dtype,
            or no pixel in any bin; raised before any frame is read.

        Examples
        --------
        >>> prof = arr.fs.radial_profile(r_max=100, mask=hot_pixels)  # doctest: +SKIP
        >>> prof.mean(("scan_y", "scan_x")).plot()  # doctest: +SKIP
        """
        udf = RadialProfile(cy, cx, n_bins=n_bins, r_max=r_max, bin_width=bin_width,
                            r_min=r_min, mask=mask, normalize=normalize, unit=unit)
        return self._binned(udf, "profile", (), roi, opts)

    def polar(
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
        unit: str = "px",
        per_position: bool = False,
        roi: Any = None,
        **opts: Any,
    ) -> xr.DataArray:
        """Polar transform: intensities binned in radius (or 2θ, q, k) × azimuth χ.

        The radial bins, centre, mask and ``unit`` are those of :meth:`radial_profile`;
        ``n_chi`` equal sectors of χ = atan2(y - cy, x - cx) in degrees (pyFAI's
        convention). By default one pattern over the scan (or ``roi``): the polar image
        of the mean frame (``normalize="mean"``) or of the sum frame (``"sum"``);
        ``per_position=True`` gives one per scan position (small bin counts only). See
        :class:`framescope.udf.PolarTransform`.

        Returns
        -------
        xarray.DataArray
            ``(<radial>, chi)`` float64, or ``(scan_y, scan_x, <radial>, chi)`` float32
            with ``per_position``; ``counts`` (pixels per bin) and the radial coordinates
            of :meth:`radial_profile` as coordinates; the resolved bins in ``attrs``.

        Examples
        --------
        >>> cal = arr.fs.calibrate(energy="200 kV", angle_per_px="0.5 mrad")  # doctest: +SKIP
        >>> cal.fs.polar(unit="q_nm^-1", n_chi=72).plot()  # doctest: +SKIP
        """
        udf = PolarTransform(cy, cx, n_bins=n_bins, r_max=r_max, bin_width=bin_width,
                             r_min=r_min, n_chi=n_chi, mask=mask, normalize=normalize,
                             unit=unit, per_position=per_position)
        return self._binned(udf, "polar", ("chi",), roi, opts,
                            n_chi=udf.n_chi, per_position=udf.per_position)

    def _binned(self, udf: RadialProfile | PolarTransform, key: str,
                extra_dims: tuple[str, ...], roi: Any, opts: dict[str, Any],
                **attrs: Any) -> xr.DataArray:
        """Run a ring-binning UDF (radial profile, polar) and label its result: the pixel
        counts per bin as a coordinate, the resolved bins in attrs."""
        arr = self._use(opts)
        det_shape, cal = self._geometry(arr)
        rings = udf.rings(det_shape, cal)
        udf.counts(rings.frame_shape, cal)  # raise here, not in a worker after reads start
        res = run(udf, arr, roi=roi, **opts)
        out = res[key].assign_coords(counts=((rings.dim, *extra_dims), res["counts"].values))
        out.name = "radial_profile" if key == "profile" else key
        out.attrs = {
            "cy": rings.cy, "cx": rings.cx, "r_min": rings.r_min, "r_max": rings.r_max,
            "bin_width": rings.bin_width, "n_bins": rings.n_bins, "unit": rings.unit,
            **attrs, "normalize": udf.normalize,
            "masked_pixels": 0 if udf.mask is None else int(udf.mask.sum()),
            "framescope_version": __version__, "source": self._arr.attrs.get("source", ""),
            **corrections_attrs(arr),
        }
        return out

    def pick(self, scan_y: int, scan_x: int) -> xr.DataArray:
        """The frame at one scan position (read directly, no job)."""
        return self._arr.isel(scan_y=scan_y, scan_x=scan_x).compute()

    def persist(self, client: Any = None) -> xr.DataArray:
        """Keep the partitions in the cluster's memory; later analyses skip the reads."""
        from framescope.engine import get_client
        from framescope.engine._run import tiled

        c = get_client(client)
        arr = tiled(self._arr)
        if c in ("inline", "sync"):
            kept = arr.copy(data=arr.data.persist(scheduler="threads"))
        else:
            kept = arr.copy(data=c.persist(arr.data))
        # analyses must use the blocks held in memory, not read the file again
        kept.encoding.pop("framescope_source", None)
        return kept
