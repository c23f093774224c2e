"""Calibration in HDF5 files: NeXus detector, beam and source groups, NXdata axes.

Read by the HDF5 reader (groups found by ``NX_class`` in the dataset's ``NXentry``) and the
DECTRIS reader (fixed paths of a ``*_master.h5``). Values are converted to SI with their
``units`` attribute; a field whose value or unit does not fit is logged and skipped, never
an error (metadata must not stop a file from opening). See docs/formats.md for the table.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from framescope.io._calibration import (
    OWN_KEY,
    PIXEL_UNITS,
    Found,
    layered,
    own_fields,
    quantity,
    units_text,
)

if TYPE_CHECKING:
    import h5py

__all__ = ["axes_fields", "beam_fields", "detector_fields", "hdf5_fields", "scalar"]

log = logging.getLogger(__name__)

# x and y pixel sizes closer than this are one (square) pixel size
_SQUARE = 1e-3


def nx_class(obj: h5py.HLObject) -> str:
    """The ``NX_class`` attribute of a group or dataset ('' when none)."""
    return units_text(obj.attrs.get("NX_class"))


def scalar(group: h5py.Group | None, name: str) -> tuple[Any, Any, str] | None:
    """``(value, units attribute, path)`` of a numeric or text scalar dataset in ``group``.

    An array whose elements are all equal (a value per frame) counts as its first element.
    """
    if group is None:
        return None
    try:
        obj = group.get(name)
    except (KeyError, OSError):  # a dangling external link
        return None
    if obj is None or not hasattr(obj, "dtype") or obj.size == 0 or obj.size > 2**16 \
            or obj.dtype.kind not in "uifSOU":
        return None
    value = obj[()]
    if isinstance(value, np.ndarray):
        flat = value.ravel()
        if flat.dtype.kind in "uif" and not np.all(flat == flat[0]):
            log.info("%s: values differ along the dataset; not used for the calibration",
                     obj.name)
            return None
        value = flat[0]
    if isinstance(value, np.generic):
        value = value.item()
    return value, obj.attrs.get("units"), obj.name


def detector_fields(group: h5py.Group | None, label: str) -> Found:
    """An NXdetector group (or DECTRIS's ``/entry/instrument/detector``).

    ``detector_distance`` or ``distance`` → ``camera_length``; ``x_pixel_size`` and
    ``y_pixel_size`` → ``pixel_size`` (square pixels only); ``beam_center_x`` and
    ``beam_center_y`` → ``center`` (pixels; a length is divided by the pixel size).
    """
    found: Found = {}
    if group is None:
        return found
    for name in ("detector_distance", "distance"):
        item = scalar(group, name)
        if item is not None:
            where = f"{label}: {item[2]}"
            value = quantity(item[0], item[1], "length", where, default_units="m")
            if value is not None:
                found["camera_length"] = (value, where)
            break
    sizes = {}
    for axis in ("x", "y"):
        item = scalar(group, f"{axis}_pixel_size")
        if item is not None:
            where = f"{label}: {item[2]}"
            value = quantity(item[0], item[1], "length", where, default_units="m")
            if value is not None:
                sizes[axis] = (value, where)
    if "x" in sizes and "y" in sizes and abs(sizes["x"][0] - sizes["y"][0]) \
            > _SQUARE * sizes["x"][0]:
        log.warning("%s: x_pixel_size %g m and y_pixel_size %g m differ; the calibration "
                    "assumes square pixels, so no pixel_size is read", label, sizes["x"][0],
                    sizes["y"][0])
    elif sizes:
        found["pixel_size"] = sizes.get("x", sizes.get("y"))  # type: ignore[assignment]
    centre = [scalar(group, "beam_center_y"), scalar(group, "beam_center_x")]
    if None not in centre:
        found.update(_centre(centre, sizes, label))  # type: ignore[arg-type]
    return found


def _centre(items: list[tuple[Any, Any, str]], sizes: dict[str, tuple[float, str]],
            label: str) -> Found:
    where = f"{label}: {items[0][2]} + {items[1][2]}"
    out = []
    for (value, units, path), axis in zip(items, ("y", "x"), strict=True):
        try:
            number = float(value)
        except (TypeError, ValueError):
            log.warning("%s: %s should be a number, found %r; no center read", label, path,
                        value)
            return {}
        if units_text(units) not in PIXEL_UNITS:  # a length on the detector: in pixels
            metre = quantity(1.0, units, "length", f"{label}: {path}")
            if metre is None or axis not in sizes:
                log.warning("%s: %s is in %r and no pixel size is known; no center read",
                            label, path, units_text(units))
                return {}
            number = number * metre / sizes[axis][0]
        out.append(number)
    if not all(np.isfinite(out)):
        return {}
    if out == [0.0, 0.0]:  # what detectors report when nobody set it
        log.info("%s: beam centre (0, 0) taken as not set", where)
        return {}
    return {"center": ((out[0], out[1]), where)}


def beam_fields(energy: tuple[Any, Any, str] | None, wavelength: tuple[Any, Any, str] | None,
                label: str) -> Found:
    """``energy`` (eV unless its units say) and/or ``wavelength`` (Å unless its units say)
    → ``energy`` and ``radiation``, telling electrons from photons with
    :func:`framescope.calibration.beam_energy`."""
    e = lam = None
    wheres = []
    if energy is not None:
        e = quantity(energy[0], energy[1], "energy", f"{label}: {energy[2]}",
                     default_units="eV")
        if e is not None:
            wheres.append(energy[2])
    if wavelength is not None:
        lam = quantity(wavelength[0], wavelength[1], "length", f"{label}: {wavelength[2]}",
                       default_units="angstrom")
        if lam is not None:
            wheres.append(wavelength[2])
    if e is None and lam is None:
        return {}
    from framescope.calibration import beam_energy

    beam = beam_energy(e, lam)
    if beam is None:
        return {}
    where = f"{label}: {' + '.join(wheres)}"
    return {"energy": (beam[0], where), "radiation": (beam[1], where)}


def _axis(group: h5py.Group, name: str, n: int, label: str
          ) -> tuple[float, float, str, str] | None:
    """``(first value, step, units, path)`` of a uniform 1D axis of ``n`` values."""
    obj = group.get(name) if name and name != "." else None
    if obj is None or not hasattr(obj, "dtype") or obj.shape != (n,) or n < 2 \
            or obj.dtype.kind not in "uif":
        return None
    values = np.asarray(obj[()], dtype=np.float64)
    steps = np.diff(values)
    step = float(steps.mean())
    if not (np.all(np.isfinite(values)) and step != 0
            and np.allclose(steps, step, rtol=1e-3, atol=0)):
        log.info("%s: axis %s is not evenly spaced; not used for the calibration", label,
                 obj.name)
        return None
    return float(values[0]), step, units_text(obj.attrs.get("units")), obj.name


def _axes_names(group: h5py.Group, ndim: int) -> list[str] | None:
    raw = group.attrs.get("axes")
    if raw is None:
        return None
    if isinstance(raw, bytes | str):
        names = [raw.decode(errors="replace") if isinstance(raw, bytes) else raw]
        if len(names) == 1 and ":" in names[0]:  # old NeXus style "y:x"
            names = names[0].split(":")
    else:
        names = [v.decode() if isinstance(v, bytes) else str(v) for v in np.ravel(raw)]
    return names if len(names) == ndim else None


def axes_fields(dset: h5py.Dataset, label: str) -> Found:
    """Scan step and detector angle from the NXdata ``axes`` of a 3D or 4D dataset.

    Scan axes in a length unit give ``scan_step``; detector axes in an angle unit give
    ``angle_per_px`` and ``center`` (the pixel where the angle is 0). Only evenly spaced,
    increasing axes with a ``units`` attribute count.
    """
    group = dset.parent
    names = _axes_names(group, dset.ndim)
    if names is None:
        return {}
    axes = [_axis(group, name, n, label) for name, n in zip(names, dset.shape, strict=True)]
    found: Found = {}
    if dset.ndim == 4 and axes[0] and axes[1]:
        steps = [quantity(a[1], a[2], "length", f"{label}: {a[3]}") if a[2] else None
                 for a in axes[:2]]
        if None not in steps:
            found["scan_step"] = (tuple(steps), f"{label}: {axes[0][3]} + {axes[1][3]}")
    det = axes[-2:]
    if det[0] and det[1] and det[0][2] and det[1][2]:
        per = [quantity(a[1], a[2], "angle", f"{label}: {a[3]}") for a in det]
        if None not in per:
            if abs(per[0] - per[1]) > 0.01 * per[1]:  # type: ignore[operator]
                log.warning("%s: detector axes step %g and %g rad per pixel; the calibration "
                            "assumes square pixels, so no angle is read", label, *per)
            else:
                where = f"{label}: {det[0][3]} + {det[1][3]}"
                found["angle_per_px"] = (per[1], where)
                # the step's conversion factor applies to the first value too
                found["center"] = ((-det[0][0] / det[0][1], -det[1][0] / det[1][1]), where)
    return found


def _entry(dset: h5py.Dataset) -> h5py.Group | None:
    obj = dset.parent
    while True:
        if nx_class(obj) == "nxentry":
            return obj
        if obj.name == "/":
            return None
        obj = obj.parent


def _groups(entry: h5py.Group, label: str) -> dict[str, h5py.Group]:
    """The first NXdetector, NXbeam and NXsource group below ``entry`` (by name)."""
    import h5py  # the file is open: _hdf5 has imported it with its filter plugins
    found: dict[str, list[h5py.Group]] = {}

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Group):
            cls = nx_class(obj)
            if cls in ("nxdetector", "nxbeam", "nxsource"):
                found.setdefault(cls, []).append(obj)

    entry.visititems(visit)
    out = {}
    for cls, groups in found.items():
        groups.sort(key=lambda g: g.name)
        if len(groups) > 1:
            log.info("%s: %d %s groups; the calibration is read from %s", label, len(groups),
                     cls, groups[0].name)
        out[cls] = groups[0]
    return out


def hdf5_fields(f: h5py.File, dset: h5py.Dataset, path: str) -> Found:
    """Everything an HDF5 file says about the calibration of ``dset``, merged.

    Lowest first: the NXentry's NXdetector / NXbeam (or an electron NXsource), the NXdata
    axes, then framescope's calibration JSON in a ``calibration`` attribute of the groups
    above the dataset, nearer ones winning (the dataset's own attribute arrives through the
    reader's metadata and wins over all of these).
    """
    label = os.path.basename(path)
    layers: list[Found] = []
    entry = _entry(dset)
    if entry is not None:
        groups = _groups(entry, label)
        layers.append(detector_fields(groups.get("nxdetector"), label))
        beam = groups.get("nxbeam")
        energy, wavelength = scalar(beam, "incident_energy"), scalar(beam, "incident_wavelength")
        source = groups.get("nxsource")
        if energy is None and wavelength is None and source is not None:
            probe = scalar(source, "probe")
            # NXsource/energy is a storage ring's for photons: only an electron source's counts
            if probe is not None and units_text(probe[0]) == "electron":
                energy = scalar(source, "energy")
        layers.append(beam_fields(energy, wavelength, label))
    layers.append(axes_fields(dset, label))
    parents = []
    obj = dset.parent
    while True:
        parents.append(obj)
        if obj.name == "/":
            break
        obj = obj.parent
    for group in reversed(parents):
        text = group.attrs.get(OWN_KEY)
        if text is not None:
            layers.append(own_fields(text, f"{label}: {group.name} attribute {OWN_KEY}"))
    return layered(*layers)
