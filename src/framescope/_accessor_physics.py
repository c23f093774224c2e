"""The physical side of ``arr.fs``: calibration, detector corrections, measuring the
bright-field disk and counting electrons (a mixin of :class:`~framescope.accessor.FsAccessor`)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import xarray as xr

from framescope.corrections import (
    ENCODING_KEY,
    Corrections,
    corrected_calibration,
    with_corrections,
)

if TYPE_CHECKING:  # pydantic takes ~80 ms to import: only when calibrating
    from framescope.calibration import Calibration, DiskFit
    from framescope.counting import CountedData

__all__ = ["PhysicsMixin", "corrections_attrs"]


class PhysicsMixin:
    """Calibration and corrections of the accessor's array (``self._arr``)."""

    _arr: xr.DataArray

    def bf_disk(self, semiconv: float | str | None = None, *, roi: Any = None,
                smooth: float = 1.0, **opts: Any) -> DiskFit:
        """The bright-field disk's centre and radius (sub-pixel) in the mean frame.

        One pass for the mean frame (of ``roi``), then
        :func:`framescope.calibration.bf_disk`. With the known convergence semi-angle it
        gives the angle per pixel.

        Examples
        --------
        >>> fit = arr.fs.bf_disk(semiconv="20 mrad")  # doctest: +SKIP
        >>> arr = arr.fs.calibrate(fit.calibration(arr.fs.calibration))  # doctest: +SKIP
        >>> fit.overlay()  # the disk drawn on the mean frame  # doctest: +SKIP
        """
        from framescope.calibration import bf_disk

        mean = self.summary("mean", roi=roi, **opts)[0]  # type: ignore[attr-defined]
        return bf_disk(mean.values, semiconv, smooth=smooth)

    def _use(self, opts: dict[str, Any]) -> xr.DataArray:
        """The array with ``opts``' ``corrections`` (popped) attached, else as it is."""
        corrections = opts.pop("corrections", None)
        return self._arr if corrections is None else with_corrections(self._arr, corrections)

    def _geometry(self, arr: xr.DataArray) -> tuple[tuple[int, int], Calibration | None]:
        """The detector shape and calibration the analyses of ``arr`` see (after the crop
        and binning of its corrections)."""
        raw = tuple(arr.shape[2:])
        cal = self._calibration_or_none()
        corrections = arr.encoding.get(ENCODING_KEY)
        if corrections is None:
            return raw, cal
        return corrections.output_shape(raw), corrected_calibration(cal, corrections, raw)

    def count_electrons(self, **options: Any) -> CountedData:
        """Electron counting of the frames: events between the background and X-ray
        thresholds that are local maxima, stored sparse (see
        :func:`framescope.counting.count_electrons` for the options: ``dark=``,
        ``corrections=``, ``background_threshold=``, ``xray_threshold=``,
        ``k_background=``, ``k_xray=``, ``centroids=``; ``method="fit"`` with ``electron=``
        and ``blur=`` fits charge clouds and resolves pile-ups). The array's attached corrections
        (:meth:`with_corrections`) are applied unless ``corrections=`` says otherwise
        (False: none): dark, offset, gain, and bad pixels zeroed, which then hold no event;
        ones that crop, bin, FFT-downsample or threshold are refused.

        Examples
        --------
        >>> counted = arr.fs.count_electrons(dark=stats.mean)  # doctest: +SKIP
        >>> fs.counting.save_counted(counted, "counted.h5")  # stempy's layout; doctest: +SKIP
        """
        from framescope.counting import count_electrons

        return count_electrons(self._arr, **options)

    def with_corrections(self, corrections: Corrections | None = None,
                         **params: Any) -> xr.DataArray:
        """The same lazy array with detector corrections every later analysis applies.

        Parameters
        ----------
        corrections : framescope.corrections.Corrections, optional
            The corrections; else built from ``params`` (``dark=``, ``gain=``, ``bad=``,
            ``bad_fill=``, ``offset=``, ``threshold=``, ``crop=``, ``bin=``). None with no
            params detaches them.

        Examples
        --------
        >>> stats = fs.corrections.from_dark(dark_arr)  # doctest: +SKIP
        >>> clean = arr.fs.with_corrections(stats.corrections(bad_fill="neighbours"))
        ... # doctest: +SKIP
        >>> clean.fs.virtual_image(ring)  # doctest: +SKIP
        """
        if corrections is None and params:
            corrections = Corrections(**params)
        return with_corrections(self._arr, corrections)

    @property
    def corrections(self) -> Corrections | None:
        """The corrections attached to the array (:meth:`with_corrections`), or None."""
        return self._arr.encoding.get(ENCODING_KEY)

    def _calibration_or_none(self) -> Calibration | None:
        """The array's calibration, None (and no pydantic import) when it has none."""
        if not self._arr.attrs.get("calibration"):
            return None
        return self.calibration

    @property
    def calibration(self) -> Calibration:
        """The array's calibration (``attrs["calibration"]``); empty when none was set."""
        from framescope.calibration import Calibration

        text = self._arr.attrs.get("calibration")
        return Calibration.from_json(text) if text else Calibration()

    def calibrate(self, calibration: Calibration | None = None, **fields: Any,
                  ) -> xr.DataArray:
        """The same lazy array with a calibration and physical coordinates.

        Parameters
        ----------
        calibration : Calibration, optional
            Start from this one instead of the array's own.
        **fields
            :class:`~framescope.calibration.Calibration` fields to set: numbers in SI (eV,
            rad, m; ``center`` in detector pixels) or strings with units (``"300 kV"``,
            ``"20 mrad"``, ``"0.25 Å"``); each is marked as given by the user in
            ``sources``.

        Returns
        -------
        xarray.DataArray
            No data is read or copied. The scan axes in nm and the detector axes as
            scattering angle in mrad from the centre where calibrated (pixel indices
            otherwise), ``attrs["calibration"]`` the calibration as JSON.

        Raises
        ------
        framescope.calibration.CalibrationError
            A field that does not parse, is out of range, or contradicts another.

        Examples
        --------
        >>> cal = arr.fs.calibrate(energy="300 kV", semiconv="20 mrad",  # doctest: +SKIP
        ...                        angle_per_px="0.4 mrad", scan_step="0.5 nm")
        >>> cal.sel(scan_x=slice(2, 5))  # nm  # doctest: +SKIP
        """
        from framescope.calibration import with_calibration

        base = calibration if calibration is not None else self.calibration
        return with_calibration(self._arr, base.updated("user", **fields))


def corrections_attrs(arr: xr.DataArray) -> dict[str, str]:
    """``{"corrections": JSON}`` when ``arr`` carries corrections, for results' attrs."""
    c = arr.encoding.get(ENCODING_KEY)
    return {} if c is None else {"corrections": json.dumps(c.params())}
