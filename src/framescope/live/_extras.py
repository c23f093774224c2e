"""framescope's extras in DECTRIS headers: what goes where, and back.

A DECTRIS series header has a documented set of fields. framescope senders have more to
say: the scan shape and order, a dark series flag, a replayed dataset's calibration and
source. They travel in the one place each protocol leaves to the user, as one object::

    {"framescope": {"scan_shape": [ny, nx], "scan_order": "raster", "dark": true,
                    "header": {"source": "...", "framescope_calibration": {...}}}}

- stream v1: the header appendix, a JSON part after the header's last documented part;
- stream2: the start message's ``user_data``.

``header`` holds every header field the protocol has no field for. Decoders lift it back
into the series header (a field the protocol itself sent wins), and keep the rest as
``header["framescope"]``, so the calibration and dark-series readers find the extras where
a native stream has them, whichever protocol carried them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from framescope.live._dark import PART, framescope_part
from framescope.live._messages import SeriesStart, jsonable

__all__ = ["STREAM1_CONFIG", "STREAM2_START", "pack", "unpack"]

#: SIMPLON detector configuration parameters: the fields of a stream v1 header's config part
STREAM1_CONFIG = frozenset({
    "auto_summation", "beam_center_x", "beam_center_y", "bit_depth_image",
    "bit_depth_readout", "chi_increment", "chi_start", "compression", "count_time",
    "countrate_correction_applied", "countrate_correction_count_cutoff",
    "data_collection_date", "description", "detector_distance", "detector_number",
    "detector_readout_time", "detector_translation", "eiger_fw_version", "element",
    "flatfield_correction_applied", "frame_count_time", "frame_time", "incident_energy",
    "kappa_increment", "kappa_start", "nexpi", "nimages", "ntrigger",
    "number_of_excluded_pixels", "omega_increment", "omega_start", "phi_increment",
    "phi_start", "photon_energy", "pixel_mask_applied", "roi_mode", "sensor_material",
    "sensor_thickness", "software_version", "threshold_energy", "trigger_mode",
    "two_theta_increment", "two_theta_start", "virtual_pixel_correction_applied",
    "wavelength", "x_pixel_size", "x_pixels_in_detector", "y_pixel_size",
    "y_pixels_in_detector",
})

#: stream2 start message fields (DECTRIS stream2 documentation; ``image_dtype`` and
#: ``detector_distance`` as the project's protocol reference lists them)
STREAM2_START = frozenset({
    "type", "arm_date", "beam_center_x", "beam_center_y", "channels", "count_time",
    "countrate_correction_enabled", "countrate_correction_lookup_table",
    "detector_description", "detector_distance", "detector_serial_number",
    "detector_translation", "flatfield", "flatfield_enabled", "frame_time", "goniometer",
    "image_dtype", "image_size_x", "image_size_y", "incident_energy", "incident_wavelength",
    "number_of_images", "pixel_mask", "pixel_mask_enabled", "pixel_size_x", "pixel_size_y",
    "saturation_value", "sensor_material", "sensor_thickness", "series_id",
    "series_unique_id", "threshold_energy", "user_data",
    "virtual_pixel_interpolation_enabled",
})


def pack(info: SeriesStart, fields: Iterable[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a series' header: (the protocol's ``fields`` among it, framescope's object).

    The object is ``{"framescope": {...}}`` as the module docstring shows: the header's own
    framescope part (e.g. the dark flag), the series' scan shape and order, and under
    ``header`` every other field (JSON-able values only).
    """
    fields = frozenset(fields)
    own, extra = {}, {}
    for key, value in info.header.items():
        if key != PART:
            (own if key in fields else extra)[key] = value
    part = {k: v for k, v in (framescope_part(info.header) or {}).items() if k != "header"}
    part["scan_shape"] = list(info.scan_shape or ())
    part["scan_order"] = info.scan_order or "raster"
    extra = jsonable(extra)
    if extra:
        part["header"] = extra
    return own, {PART: jsonable(part)}


def unpack(header: dict[str, Any], user: Any) -> dict[str, Any]:
    """``header`` with framescope's object from ``user`` (an appendix, ``user_data``) lifted
    in: its ``header`` fields where the protocol sent none, the rest as
    ``header["framescope"]``. Anything else in ``user`` is left alone."""
    part = framescope_part(user)
    if part is None:
        return header
    extra = part.pop("header", None)
    if isinstance(extra, Mapping):
        for key, value in extra.items():
            header.setdefault(str(key), jsonable(value))
    header[PART] = jsonable(part)
    return header
