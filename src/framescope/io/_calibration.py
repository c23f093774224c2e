"""Calibration read from files, and how ``framescope.open`` merges it with the user's.

Readers report what their file says in ``FrameReader.calibration_fields`` (field ->
``(value, where)``). On top of that comes framescope's own convention: a ``calibration``
metadata entry holding the JSON of a :class:`~framescope.calibration.Calibration` (what
``arr.attrs["calibration"]`` holds and what ``framescope.io.save`` writes into HDF5
attributes, raw sidecars, Zarr attributes and DECTRIS masters). The precedence, lowest
first: known detector properties (``calibration_defaults``, used only when some calibration
is read or given), the format's own fields, framescope's JSON, the user's calibration.

Nothing here imports pydantic unless a calibration is found or given: opening an
uncalibrated file stays as cheap as before.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from framescope.calibration import displaced  # no pydantic: see framescope.calibration

if TYPE_CHECKING:
    import xarray as xr

    from framescope.calibration import Calibration
    from framescope.io._base import FrameReader

__all__ = ["OWN_KEY", "Found", "calibrate_opened", "file_fields", "layered", "own_fields",
           "quantity"]

log = logging.getLogger(__name__)

#: field -> (value, where it was read)
Found = dict[str, tuple[Any, str]]

#: metadata/attribute name of framescope's calibration JSON in a file
OWN_KEY = "calibration"

# spellings of units attributes seen in HDF5/NeXus files -> what parse_quantity knows
_UNIT_ALIASES = {
    "meter": "m", "meters": "m", "metre": "m", "metres": "m", "millimeter": "mm",
    "millimetre": "mm", "micrometer": "um", "micrometre": "um", "micron": "um",
    "microns": "um", "μm": "um", "nanometer": "nm", "nanometre": "nm", "angstroms": "a",
    "ang": "a", "radian": "rad", "radians": "rad", "milliradian": "mrad",
    "milliradians": "mrad", "degree": "deg", "degrees": "deg", "electronvolt": "ev",
    "electron_volt": "ev", "kiloelectronvolt": "kev", "volt": "v", "volts": "v",
    "kilovolt": "kv", "kilovolts": "kv",
}
PIXEL_UNITS = frozenset({"", "pixel", "pixels", "px", "pix"})


def units_text(units: Any) -> str:
    """A units attribute (str, bytes, 1-element array) as lower-case text."""
    if isinstance(units, bytes):
        units = units.decode(errors="replace")
    elif hasattr(units, "tolist"):
        units = units.tolist()
        if isinstance(units, list):
            units = units[0] if len(units) == 1 else ""
        if isinstance(units, bytes):
            units = units.decode(errors="replace")
    return str(units).strip().lower() if units is not None else ""


def quantity(value: Any, units: Any, kind: str, where: str, *,
             default_units: str = "") -> float | None:
    """``value`` with its ``units`` attribute in SI units, or None (logged) if unusable.

    Parameters
    ----------
    value : number
        The file's value.
    units : str, bytes or None
        The file's ``units`` attribute; ``default_units`` when missing.
    kind : {"energy", "angle", "length"}
        The quantity the field must be.
    default_units : str
        The unit of a value without a ``units`` attribute (SI when empty).
    where : str
        File and field, for the log.

    Returns
    -------
    float or None
        None for a non-positive or non-finite value or a unit of another quantity: a
        strange metadata entry must not stop a file from opening.
    """
    from framescope.calibration import CalibrationError, parse_quantity

    try:
        number = float(value)
    except (TypeError, ValueError):
        log.warning("%s: expected a number, found %r; not used for the calibration", where,
                    value)
        return None
    if not (math.isfinite(number) and number > 0):
        log.warning("%s: %r is not a positive number; not used for the calibration", where,
                    value)
        return None
    unit = units_text(units) or default_units.lower()
    unit = _UNIT_ALIASES.get(unit, unit)
    try:
        return parse_quantity(f"{number!r} {unit}".strip(), kind, where)
    except CalibrationError as exc:
        log.warning("%s; not used for the calibration", exc)
        return None


def own_fields(text: Any, where: str) -> Found:
    """The fields of framescope's calibration JSON (``arr.attrs["calibration"]``) as found.

    Values are kept as written (SI numbers, or strings with units); validation happens when
    they are combined. A value that is not JSON of an object is logged and ignored.
    """
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    try:
        data = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        log.warning("%s: not JSON; ignored (expected a framescope calibration)", where)
        return {}
    if not isinstance(data, Mapping):
        log.warning("%s: expected a JSON object of calibration fields, found %r; ignored",
                    where, text)
        return {}
    sources = data.get("sources") if isinstance(data.get("sources"), Mapping) else {}
    out: Found = {}
    for key, value in data.items():
        if key == "sources" or value is None:
            continue
        origin = sources.get(key)
        out[key] = (value, f"{where} (from {origin})" if origin else where)
    return out


def layered(*layers: Mapping[str, tuple[Any, str]]) -> Found:
    """Merge found fields, lowest precedence first (see
    :func:`~framescope.calibration.displaced`)."""
    out: Found = {}
    for layer in layers:
        drop = displaced(layer) - set(layer)
        for field in drop & set(out):
            log.info("calibration %s read from %s is not used: %s sets the detector angle",
                     field, out[field][1], ", ".join(sorted(set(layer) & {
                         "angle_per_px", "camera_length", "pixel_size"})))
        out = {k: v for k, v in out.items() if k not in drop}
        out.update(layer)
    return out


def file_fields(reader: FrameReader) -> Found:
    """What ``reader``'s file says: its format fields, then framescope's JSON above them."""
    fields = dict(reader.calibration_fields)
    own = reader.metadata.get(OWN_KEY)
    if own is not None:
        where = f"{os.path.basename(reader.path)}: {OWN_KEY}"
        fields = layered(fields, own_fields(own, where))
    return fields


def _given_fields(given: Calibration | Mapping[str, Any]) -> list[str]:
    from framescope.calibration import Calibration

    if isinstance(given, Calibration):
        return list(given.model_dump(exclude_defaults=True, exclude={"sources"}))
    return [k for k, v in given.items() if v is not None]


def calibrate_opened(arr: xr.DataArray, reader: FrameReader,
                     given: Calibration | Mapping[str, Any] | str | None) -> xr.DataArray:
    """``arr`` with the calibration its file says, overridden by ``given`` (the user's).

    Returns ``arr`` unchanged (and imports nothing) when neither the file nor the user
    gives a calibration. Conflicts between the user and the file are logged once by
    :func:`framescope.calibration.combine`; the user's value is used.
    """
    found = file_fields(reader)
    if not found and given is None:
        arr.attrs.pop(OWN_KEY, None)
        return arr
    from framescope.calibration import Calibration, combine, with_calibration

    if isinstance(given, str):
        given = Calibration.from_json(given)
    defaults = getattr(reader, "calibration_defaults", None) or {}
    found = layered(defaults, found)
    if given is not None:
        user = _given_fields(given)
        # only what the user replaces indirectly is dropped here; fields the user gives
        # stay in `found` so that combine() can log a contradiction
        drop = displaced(user) - set(user)
        found = dict(found)
        for field in drop & set(found):
            log.info("calibration %s read from %s is not used: the given %s sets the "
                     "detector angle", field, found[field][1],
                     ", ".join(sorted(set(user) & {"angle_per_px", "camera_length",
                                                    "pixel_size"})))
            del found[field]
    cal = combine(found, given)
    if cal is None:  # unreachable: something was found or given
        return arr
    return with_calibration(arr, cal)
