"""More formats through rosettasciio (the HyperSpy readers): DM3/DM4, MRC, TVIPS, EMPAD, ...

rosettasciio (``rsciio``) opens a file lazily as a list of signal dicts: ``data`` (a dask
array or a memmap), ``axes`` (navigation vs signal, ``scale``/``offset``/``units``),
``metadata`` and ``original_metadata``. :class:`RsciioReader` takes the first signal that is
a stack of 2D frames (two signal axes, one or two navigation axes), reads tiles straight from
rsciio's lazy array and turns the calibrated axes into ``calibration_fields``.

rsciio is an optional dependency (``pip install 'framescope[formats]'``), imported only when
such a file is opened: the registry imports every reader module to ask ``guess_can_open``.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from framescope.errors import FormatError
from framescope.io._base import FrameReader, row_pieces

__all__ = ["RsciioReader", "axes_calibration"]

log = logging.getLogger(__name__)

# Suffixes of rsciio formats that can hold frame stacks or 4D-STEM data. Suffixes that
# framescope's own readers own (.h5/.hdf5/.hspy/.emd/.nxs, .mib/.hdr, .npy, .zarr, raw) stay
# with them: those readers come first in the registry and are not listed here.
_SUFFIXES = (
    ".dm3", ".dm4",  # Gatan DigitalMicrograph
    ".mrc", ".ali", ".mrcz",  # MRC (FEI/TFS, DE), MRCZ
    ".tvips",  # TVIPS recorder stream (first part, *_000.tvips)
    ".xml",  # EMPAD (the XML next to the .raw)
    ".blo",  # NanoMegas ASTAR blockfile
    ".ser", ".emi",  # FEI TIA
    ".app5",  # NanoMegas Topspin
    ".prz",  # CEOS PantaRhei
    ".zspy",  # HyperSpy zarr
    ".tif", ".tiff",  # image stacks
)

# rsciio plugins whose scan axes carry placeholder units but no scale: rsciio 0.15's TVIPS
# reader labels the scan axes "nm" with scale 1 ("no scale information stored in the scan")
_NO_SCAN_SCALE = frozenset({"TVIPS"})

# unit (lower case, spaces removed) -> metres or radians
_LENGTH = {"m": 1.0, "cm": 1e-2, "mm": 1e-3, "um": 1e-6, "µm": 1e-6, "μm": 1e-6,
           "nm": 1e-9, "å": 1e-10, "a": 1e-10, "angstrom": 1e-10, "pm": 1e-12}
_ANGLE = {"rad": 1.0, "mrad": 1e-3, "urad": 1e-6, "µrad": 1e-6, "μrad": 1e-6,
          "deg": math.pi / 180, "°": math.pi / 180}


def _unit(units: Any) -> tuple[str, float] | None:
    """``(kind, factor to SI)`` of an axis unit: kind is length (m), angle (rad) or
    reciprocal (1/m); None when unknown or absent."""
    if not isinstance(units, str):
        return None
    u = units.replace(" ", "").lower()
    if u in _LENGTH:
        return "length", _LENGTH[u]
    if u in _ANGLE:
        return "angle", _ANGLE[u]
    for head, tail in (("1/", ""), ("", "^-1"), ("", "⁻¹"), ("", "-1")):
        if u.startswith(head) and u.endswith(tail):
            base = u[len(head) : len(u) - len(tail)]
            if base in _LENGTH and base != u:
                return "reciprocal", 1.0 / _LENGTH[base]
    return None


def _named(units: Any) -> bool:
    """Whether an axis names a unit at all (rsciio says "<undefined>" or None when not)."""
    return isinstance(units, str) and units.strip() not in ("", "<undefined>")


def _get(tree: Any, path: str) -> Any:
    """``tree["a"]["b"]`` for ``"a.b"``; None when any step is missing."""
    for key in path.split("."):
        if not isinstance(tree, Mapping) or key not in tree:
            return None
        tree = tree[key]
    return tree


def _number(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _apply_mapping(signal: Mapping[str, Any]) -> dict[str, Any]:
    """``metadata`` completed with rsciio's ``mapping`` (original_metadata path -> (metadata
    path, converter)), which HyperSpy would apply when loading."""
    metadata = _copy_tree(signal.get("metadata") or {})
    original = signal.get("original_metadata") or {}
    for src, target in (signal.get("mapping") or {}).items():
        dst, convert = target if isinstance(target, tuple) else (target, None)
        value = _get(original, src)
        if value is None or _get(metadata, dst) is not None:
            continue
        try:
            value = convert(value) if convert is not None else value
        except Exception as exc:  # a third-party converter: skip the field, keep the file
            log.debug("rsciio mapping %s -> %s failed: %s", src, dst, exc)
            continue
        node = metadata
        *parents, leaf = dst.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                break
        else:
            node[leaf] = value
    return metadata


def _copy_tree(tree: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _copy_tree(v) if isinstance(v, Mapping) else v for k, v in tree.items()}


def axes_calibration(
    name: str,
    plugin: str,
    nav: list[Mapping[str, Any]],
    sig: list[Mapping[str, Any]],
    metadata: Mapping[str, Any],
) -> dict[str, tuple[Any, str]]:
    """Calibration fields (SI) from rsciio ``axes`` and ``metadata``.

    Parameters
    ----------
    name : str
        File name, used in the ``where`` of each field.
    plugin : str
        rsciio plugin that read the file.
    nav, sig : list of dict
        Navigation axes (slow to fast) and the two signal axes ``(det_y, det_x)``.
    metadata : dict
        rsciio metadata (HyperSpy conventions: beam energy in keV, angles in mrad).

    Returns
    -------
    dict
        Field -> ``(value, where)``: ``scan_step`` from two navigation axes in length
        units; ``angle_per_px`` from signal axes in angle units, or in reciprocal length
        units times the electron wavelength of the beam energy; ``pixel_size`` from signal
        axes in length units when the frames are diffraction patterns; ``center`` from the
        signal axes' offsets (``-offset / scale``); ``energy`` and ``semiconv`` from
        ``Acquisition_instrument.TEM``. Axes with unknown units are left out (logged at
        debug).
    """
    out: dict[str, tuple[Any, str]] = {}
    tem = "Acquisition_instrument.TEM"

    def where(axes: list[Mapping[str, Any]], what: str) -> str:
        names = ",".join(repr(str(a.get("name", "?"))) for a in axes)
        return f"{name}: rsciio {plugin} axes[{names}].{what} ({axes[0].get('units')})"

    kev = _number(_get(metadata, f"{tem}.beam_energy"))
    if kev is not None and kev > 0:
        out["energy"] = (kev * 1e3, f"{name}: rsciio {plugin} metadata {tem}.beam_energy (kV)")
    mrad = _number(_get(metadata, f"{tem}.convergence_angle"))
    if mrad is not None and mrad > 0:
        out["semiconv"] = (mrad * 1e-3,
                           f"{name}: rsciio {plugin} metadata {tem}.convergence_angle (mrad)")

    # the scan: two navigation axes with a length unit
    if len(nav) == 2 and plugin not in _NO_SCAN_SCALE:
        units = [_unit(a.get("units")) for a in nav]
        scales = [_number(a.get("scale")) for a in nav]
        if all(u is not None and u[0] == "length" for u in units) and all(
            s is not None and s > 0 for s in scales
        ):
            out["scan_step"] = (tuple(s * u[1] for s, u in zip(scales, units, strict=True)),
                                where(nav, "scale"))
        else:
            log.debug("%s: scan axes %s not calibrated in a length unit; no scan_step", name,
                      [(a.get("scale"), a.get("units")) for a in nav])

    # the detector: both signal axes in one kind of unit, same step
    units = [_unit(a.get("units")) for a in sig]
    scales = [_number(a.get("scale")) for a in sig]
    signal_type = str(_get(metadata, "Signal.signal_type") or "").lower()
    kind = units[0][0] if units[0] is not None and units[0] == units[1] else None
    step = None
    if kind is not None and all(s is not None and s > 0 for s in scales):
        sy, sx = (s * units[0][1] for s in scales)
        if abs(sy - sx) <= 1e-3 * max(sy, sx):
            step = (sy + sx) / 2
        else:
            log.debug("%s: detector axes have different steps %s %s; left out", name, sy, sx)
    elif any(_named(a.get("units")) for a in sig):
        log.debug("%s: detector axes %s not calibrated alike in a known unit; left out",
                  name, [(a.get("scale"), a.get("units")) for a in sig])
    diffraction = kind in ("angle", "reciprocal") or "diffraction" in signal_type
    if step is not None and kind == "angle":
        out["angle_per_px"] = (step, where(sig, "scale"))
    elif step is not None and kind == "reciprocal":
        if "energy" in out:
            from framescope.calibration import electron_wavelength  # pydantic: only here

            # scattering angle 2θ ≈ λ k for k = 1/d (rsciio's 1/nm has no 2π)
            wavelength = electron_wavelength(out["energy"][0])
            out["angle_per_px"] = (step * wavelength,
                                   where(sig, "scale") + f" × λ({kev:g} kV)")
        else:
            log.debug("%s: detector axes in %s but no beam energy in the metadata; "
                      "angle_per_px left out", name, sig[0].get("units"))
    elif step is not None and kind == "length" and diffraction:
        out["pixel_size"] = (step, where(sig, "scale"))

    # the centre: where the signal axes' coordinate is zero, when they are diffraction axes
    offsets = [_number(a.get("offset")) for a in sig]
    raw = [_number(a.get("scale")) for a in sig]
    if diffraction and all(o is not None for o in offsets) and any(offsets) and all(raw):
        centre = tuple(-o / s for o, s in zip(offsets, raw, strict=True))
        sizes = [int(a.get("size", 0)) for a in sig]
        if all(0 <= c <= n for c, n in zip(centre, sizes, strict=True)):
            out["center"] = (centre, where(sig, "offset") + " / scale")
        else:
            log.debug("%s: detector offsets put the centre at %s, outside the %s frame; "
                      "left out", name, centre, sizes)
    return out


class RsciioReader(FrameReader):
    """Frames of any file rosettasciio opens lazily as a 4D signal or a 3D frame stack.

    Parameters
    ----------
    path : str
        The file (for EMPAD the ``.xml``; for TVIPS the ``*_000.tvips`` part).
    plugin : str, optional
        rsciio plugin name (``"DigitalMicrograph"``, ``"MRC"``, ...); default: every plugin
        that claims the suffix, in rsciio's order, the first that reads the file wins.
    signal : int, optional
        Which of the file's signals; default the first stack of 2D frames.
    **rsciio_options
        Passed to the plugin's ``file_reader`` (e.g. EMPAD ``q_calibration``).

    Raises
    ------
    framescope.errors.FormatError
        rosettasciio is missing, no plugin reads the file, or none of its signals is a
        stack of 2D frames (the message names the file and what was found).
    """

    format = "rsciio"
    suffixes = _SUFFIXES
    _handle_attrs: ClassVar[tuple[str, ...]] = ("_data",)

    def __init__(self, path: str, *, plugin: str | None = None, signal: int | None = None,
                 **rsciio_options: Any) -> None:
        self.path = os.fspath(path)
        self._options = rsciio_options
        if not os.path.exists(self.path):
            raise FormatError(self.path, "no such file")
        errors: list[str] = []
        for info in _plugins(self.path, plugin):
            try:
                signals = _reader(info)(self.path, lazy=True, **rsciio_options)
            except Exception as exc:  # third-party readers raise anything; report them all
                errors.append(f"{info['name']}: {type(exc).__name__}: {exc}")
                continue
            index, found = _pick(signals, signal)
            if index is not None:
                break
            errors.append(f"{info['name']}: {found}")
        else:
            raise FormatError(self.path, "rosettasciio cannot read it as a stack of 2D "
                              "frames: " + "; ".join(errors))
        self.plugin: str = info["name"]
        self.signal: int = index
        chosen = signals[index]
        data = chosen["data"]
        nav, sig = _split_axes(chosen["axes"])
        where = [a.get("index_in_array", i) for i, a in enumerate(nav + sig)]
        if where[: len(nav)] != list(range(len(nav))):  # _read slices the leading axes
            raise FormatError(self.path, f"expected the navigation axes first in the array, "
                              f"found them at {where[: len(nav)]}")
        self._shape = tuple(int(n) for n in data.shape)
        dtype = np.dtype(data.dtype)
        if dtype.kind not in "uif" or dtype.fields is not None:
            raise FormatError(self.path, f"expected integer or float frames, found {dtype}")
        if not isinstance(data, np.ndarray) and not hasattr(data, "dask"):
            data = np.asarray(data)
        self._data = data
        self.dtype = dtype.newbyteorder("=")
        self.frame_shape = (self._shape[-2], self._shape[-1])
        self.n_frames = int(np.prod(self._shape[:-2]))
        self.scan_shape = (self._shape[0], self._shape[1]) if len(nav) == 2 else None
        metadata = _apply_mapping(chosen)
        self.calibration_fields = axes_calibration(
            Path(self.path).name, self.plugin, nav, sig, metadata)
        self.metadata = _attrs(self.plugin, index, nav + sig, metadata)

    # ---- reading ------------------------------------------------------------------------
    def _array(self) -> Any:
        """rsciio's lazy array, opened once per process (dropped when pickled)."""
        data = self.__dict__.get("_data")
        if data is None:
            info = next(p for p in _plugins(self.path, self.plugin))
            data = _reader(info)(self.path, lazy=True, **self._options)[self.signal]["data"]
            if tuple(data.shape) != self._shape:
                raise FormatError(self.path, f"changed since opened: expected shape "
                                  f"{self._shape}, found {tuple(data.shape)}")
            self._data = data
        return data

    def _read(self, start: int, stop: int, out: np.ndarray) -> None:
        data = self._array()
        h, w = self.frame_shape
        if data.ndim == 3:
            pieces = [(out, data[start:stop])]
        else:  # at most three boxes of whole or partial scan rows
            pieces = [
                (out[at : at + (y1 - y0) * (x1 - x0)].reshape(y1 - y0, x1 - x0, h, w),
                 data[y0:y1, x0:x1])
                for at, y0, y1, x0, x1 in row_pieces(start, stop, self._shape[1])
            ]
        sources = [src for _, src in pieces]
        if hasattr(data, "dask"):
            import dask

            # only the chunks under these slices are read; we already run inside a task
            sources = dask.compute(*sources, scheduler="synchronous")
        for (target, _), src in zip(pieces, sources, strict=True):
            np.copyto(target, src, casting="unsafe")


def _plugins(path: str, plugin: str | None) -> list[dict[str, Any]]:
    try:
        import rsciio
    except ImportError:
        raise FormatError(path, "this format is read through rosettasciio, which is not "
                          "installed: pip install 'framescope[formats]'") from None
    if plugin is not None:
        wanted = plugin.lower()
        found = [p for p in rsciio.IO_PLUGINS
                 if wanted in {p["name"].lower(), *(a.lower() for a in p["name_aliases"])}]
        if not found:
            names = ", ".join(sorted(p["name"] for p in rsciio.IO_PLUGINS))
            raise FormatError(path, f"unknown rosettasciio plugin {plugin!r}; installed: "
                              f"{names}")
        return found
    suffix = Path(path).suffix.lower().lstrip(".")
    found = [p for p in rsciio.IO_PLUGINS
             if suffix in {e.lower() for e in p["file_extensions"]}]
    if not found:
        raise FormatError(path, f"no rosettasciio plugin reads {suffix!r} files; pass "
                          "plugin=... (see rsciio.IO_PLUGINS)")
    return found


def _reader(info: Mapping[str, Any]) -> Any:
    return importlib.import_module(info["api"]).file_reader


def _pick(signals: list[dict[str, Any]], signal: int | None) -> tuple[int | None, str]:
    """Index of the first stack of 2D frames (or of ``signal`` if it is one), and what was
    found otherwise."""
    shapes = []
    for i, s in enumerate(signals):
        if signal is not None and i != signal:
            continue
        axes = s.get("axes") or []
        n_sig = sum(not a.get("navigate", False) for a in axes)
        n_nav = len(axes) - n_sig
        shape = tuple(getattr(s.get("data"), "shape", ()))
        if n_sig == 2 and n_nav in (1, 2) and len(shape) == len(axes):
            return i, ""
        shapes.append(f"signal {i}: shape {shape} with {n_nav} navigation and {n_sig} "
                      "signal axes")
    if signal is not None and not shapes:
        return None, f"no signal {signal} (the file has {len(signals)})"
    return None, ("expected 2 signal axes and 1 or 2 navigation axes, found "
                  + ", ".join(shapes) if shapes else "no signals")


def _split_axes(axes: list[Mapping[str, Any]]) -> tuple[list[Mapping[str, Any]],
                                                        list[Mapping[str, Any]]]:
    """Navigation axes then signal axes, in array order (HyperSpy keeps them so)."""
    if all("index_in_array" in a for a in axes):
        axes = sorted(axes, key=lambda a: a["index_in_array"])
    nav = [a for a in axes if a.get("navigate", False)]
    sig = [a for a in axes if not a.get("navigate", False)]
    return nav, sig


def _attrs(plugin: str, index: int, axes: list[Mapping[str, Any]],
           metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The rsciio facts the calibration was read from, as flat JSON-able attrs."""
    def num(value: Any) -> float:
        out = _number(value)
        return out if out is not None else float("nan")

    attrs: dict[str, Any] = {
        "rsciio_plugin": plugin,
        "rsciio_signal": index,
        "rsciio_axes_name": [str(a.get("name") or "") for a in axes],
        "rsciio_axes_units": [str(a.get("units") or "") for a in axes],
        "rsciio_axes_scale": [num(a.get("scale", 1.0)) for a in axes],
        "rsciio_axes_offset": [num(a.get("offset", 0.0)) for a in axes],
    }
    signal_type = _get(metadata, "Signal.signal_type")
    if signal_type:
        attrs["rsciio_signal_type"] = str(signal_type)
    # HyperSpy metadata conventions: keV, mrad, mm
    for key, path in (("rsciio_beam_energy_kv", "Acquisition_instrument.TEM.beam_energy"),
                      ("rsciio_convergence_angle_mrad",
                       "Acquisition_instrument.TEM.convergence_angle"),
                      ("rsciio_camera_length_mm", "Acquisition_instrument.TEM.camera_length")):
        value = _number(_get(metadata, path))
        if value:  # 0 is how several formats say "not recorded"
            attrs[key] = value
    return attrs
