"""Phase imaging on ``arr.fs``: iDPC, tilt-corrected bright field and SSB ptychography
(a mixin of :class:`~framescope.accessor.FsAccessor`; the work is in :mod:`framescope.phase`)."""

from __future__ import annotations

from typing import Any

import xarray as xr

__all__ = ["PhaseMixin"]


class PhaseMixin:
    """Phase images of the accessor's array (``self._arr``)."""

    _arr: xr.DataArray

    def idpc(self, **kwargs: Any) -> xr.Dataset:
        """Integrated DPC phase: see :func:`framescope.phase.idpc` for the parameters."""
        from framescope.phase import idpc

        return idpc(self._arr, **kwargs)

    def parallax(self, **kwargs: Any) -> xr.Dataset:
        """Tilt-corrected bright field (``tcbf``, ``phase``, fitted ``defocus``,
        astigmatism, rotation, per-pixel shifts): see :func:`framescope.phase.parallax`."""
        from framescope.phase import parallax

        return parallax(self._arr, **kwargs)

    def ssb(self, **kwargs: Any) -> xr.Dataset:
        """Single-sideband ptychography (``phase``, ``amplitude``, ``bright_field``): see
        :func:`framescope.phase.ssb` for the parameters."""
        from framescope.phase import ssb

        return ssb(self._arr, **kwargs)
