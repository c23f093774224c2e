"""Calibration fields from a series header: DECTRIS detector fields and framescope's own.

DECTRIS detectors send their geometry in the series header (stream2 ``start``: ``beam_center_x/y``
px, ``pixel_size_x/y`` m, ``detector_distance`` m, ``incident_energy`` eV,
``incident_wavelength`` Å; stream v1's detector config: ``x/y_pixel_size``, ``wavelength``).
framescope senders (the simulator replaying a calibrated dataset) add the whole calibration
as ``framescope_calibration``. The result feeds :func:`framescope.calibration.combine` with
the user's ``ZMQSource(calibration=...)``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["HEADER_KEY", "header_calibration"]

log = logging.getLogger(__name__)

HEADER_KEY = "framescope_calibration"


def _number(header: Mapping[str, Any], *keys: str) -> tuple[float, str] | None:
    for key in keys:
        value = header.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) \
                and math.isfinite(value) and value > 0:
            return float(value), key
    return None


def header_calibration(header: Mapping[str, Any]) -> dict[str, tuple[Any, str]]:
    """Calibration field -> ``(value in SI, "header:<key>")`` from a series header."""
    found: dict[str, tuple[Any, str]] = {}
    cx, cy = _number(header, "beam_center_x"), _number(header, "beam_center_y")
    if cx is not None and cy is not None:
        found["center"] = ((cy[0], cx[0]), "header:beam_center_y/x")
    size = _number(header, "pixel_size_x", "x_pixel_size")
    if size is not None:
        other = _number(header, "pixel_size_y", "y_pixel_size")
        if other is not None and abs(other[0] - size[0]) > 1e-3 * size[0]:
            log.warning("header: pixel sizes x %g m and y %g m differ; the calibration "
                        "assumes square pixels and uses x", size[0], other[0])
        found["pixel_size"] = (size[0], f"header:{size[1]}")
    distance = _number(header, "detector_distance")
    if distance is not None:
        found["camera_length"] = (distance[0], "header:detector_distance")
    energy = _number(header, "incident_energy")
    lam = _number(header, "incident_wavelength", "wavelength")
    if energy is not None or lam is not None:
        from framescope.calibration import beam_energy  # pydantic: only when there is one

        beam = beam_energy(energy and energy[0], lam and lam[0] * 1e-10)  # Å -> m
        if beam is not None:
            where = "header:" + "+".join(k for k in (energy and energy[1], lam and lam[1])
                                         if k)
            found["energy"] = (beam[0], where)
            found["radiation"] = (beam[1], where)
    own = header.get(HEADER_KEY)
    if isinstance(own, str):
        try:
            own = json.loads(own)
        except ValueError:
            log.warning("header: %s is not JSON; ignored", HEADER_KEY)
            own = None
    if isinstance(own, Mapping):
        for key, value in own.items():
            if key != "sources" and value is not None:
                found[key] = (value, f"header:{HEADER_KEY}")
    return found
