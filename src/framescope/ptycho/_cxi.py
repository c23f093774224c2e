"""CXI 1.6 files of a ptychographic reconstruction: :func:`write_cxi` and :func:`read_cxi`.

The layout (CXI file format 1.6, F. Maia, cxidb.org; the ptychography example and the
Image/Process/Source/Detector/Geometry classes; SI units throughout, angles in degrees):

``/cxi_version``                                  160
``/entry_1/image_1/data``                         the complex object, axes ``y:x``
``/entry_1/image_1/{x,y}_pixel_size``             object pixel, m; ``image_size`` m
``/entry_1/image_1/{data_space,data_type,...}``   ``"real"``, ``"amplitude"``, ...
``/entry_1/image_1/probe``                        the complex probe, axes ``probe_y:probe_x``
``/entry_1/image_1/process_1/``                   program, version, git commit, date,
                                                  algorithm, iterations, ``error`` per
                                                  iteration, ``note_1`` (parameters JSON)
``/entry_1/image_1/{source_1,detector_1}``        links to the instrument's
``/entry_1/instrument_1/source_1/energy``         J (``probe``: a link to the image's)
``/entry_1/instrument_1/beam_1/incident_wavelength``  m
``/entry_1/instrument_1/detector_1/``             ``distance``, ``x_pixel_size``,
                                                  ``y_pixel_size`` (m) when known
``/entry_1/sample_1/geometry_1/translation``      ``(n, 3)`` probe positions ``x, y, z``, m
``/entry_1/data_1/data``                          a link to the image (CXI's Data class)
``/entry_1/framescope/``                          the rest of the Dataset as it is (dims,
                                                  attrs), so :func:`read_cxi` rebuilds it

Complex arrays are stored as HDF5 compounds ``r``/``i`` (CXI's convention, h5py's default)
in double precision, so the float32 amplitude and phase read back bit for bit.
"""

from __future__ import annotations

import datetime
import json
import math
import os
from typing import Any

import numpy as np
import xarray as xr

__all__ = ["read_cxi", "write_cxi"]

CXI_VERSION = 160
_OBJECT = ("object_amplitude", "object_phase")
_PROBE = ("probe_amplitude", "probe_phase")
_NEEDED = (*_OBJECT, *_PROBE, "position_y", "position_x", "error")
_H = 6.62607015e-34  # J s
_C = 299792458.0  # m/s
_EV = 1.602176634e-19  # J


def _complex(ds: xr.Dataset, amp: str, phase: str) -> np.ndarray:
    a = ds[amp].values.astype(np.float64)
    return a * np.exp(1j * ds[phase].values.astype(np.float64))


def _energy_j(ds: xr.Dataset, calibration: Any, radiation: str | None) -> float | None:
    """Beam energy in J: the calibration's, else from the wavelength (``radiation``, or
    guessed from it as :func:`framescope.calibration` does)."""
    if calibration is not None and calibration.energy is not None:
        return float(calibration.energy) * _EV
    lam = ds.attrs.get("wavelength_m")
    if lam is None or not math.isfinite(lam):
        return None
    from framescope.calibration._beam import beam_energy

    found = beam_energy(wavelength=float(lam), radiation=radiation)  # type: ignore[arg-type]
    return None if found is None else found[0] * _EV


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


def _json_attrs(attrs: dict[str, Any]) -> str:
    return json.dumps({str(k): _plain(v) for k, v in attrs.items()})


def write_cxi(ds: xr.Dataset, path: str | os.PathLike[str], *,
              parameters: dict[str, Any] | None = None, calibration: Any = None,
              radiation: str | None = None) -> None:
    """Write a reconstruction as a CXI 1.6 file (the layout Nanosurveyor/SHARP write).

    Parameters
    ----------
    ds : xarray.Dataset
        What :func:`~framescope.ptycho.reconstruct` returned (``object_amplitude``,
        ``object_phase``, ``probe_amplitude``, ``probe_phase``, ``position_y``,
        ``position_x``, ``error``; any further variables travel too).
    path : str or PathLike
        The file to write (replaced).
    parameters : dict, optional
        Reconstruction parameters for ``process_1/note_1`` (JSON); default the
        Dataset's attrs.
    calibration : framescope.calibration.Calibration, optional
        The frames' calibration: the beam energy, and the detector's distance
        (``camera_length``) and pixel size when it has them. Without it the energy
        follows from ``attrs["wavelength_m"]`` and the detector's fields are left out.
    radiation : {"electron", "xray"}, optional
        What the wavelength is of, without a calibration (default: guessed from it, X-ray
        above 0.1 Å).

    Raises
    ------
    ValueError
        ``ds`` lacks a variable (named, with those found).

    Examples
    --------
    >>> write_cxi(ds, "scan.cxi", calibration=arr.fs.calibration)  # doctest: +SKIP
    >>> read_cxi("scan.cxi")["object_phase"].plot()  # doctest: +SKIP
    """
    import h5py

    from framescope._provenance import git_commit
    from framescope._version import __version__

    missing = [name for name in _NEEDED if name not in ds.variables]
    if missing:
        raise ValueError(f"write_cxi: the Dataset lacks {', '.join(missing)} (found "
                         f"{', '.join(map(str, ds.variables))}); give what "
                         f"framescope.ptycho.reconstruct returned")
    attrs = dict(ds.attrs)
    pixel = attrs.get("pixel_size_m")
    if pixel is None:  # the coordinates are in nm
        pixel = [float(ds.y[1] - ds.y[0]) * 1e-9, float(ds.x[1] - ds.x[0]) * 1e-9]
    obj = _complex(ds, *_OBJECT)
    probe = _complex(ds, *_PROBE)
    commit = git_commit()
    n = ds["position_y"].size
    translation = np.zeros((n, 3))
    translation[:, 0] = ds["position_x"].values.ravel() * 1e-9
    translation[:, 1] = ds["position_y"].values.ravel() * 1e-9
    with h5py.File(path, "w") as f:
        f["cxi_version"] = CXI_VERSION
        f["number_of_entries"] = 1
        entry = f.create_group("entry_1")
        entry["program_name"] = f"framescope {__version__}"
        entry["start_time"] = datetime.datetime.now(datetime.UTC).isoformat()
        image = entry.create_group("image_1")
        image["data"] = obj
        image["data"].attrs["axes"] = "y:x"
        image["data_space"] = "real"
        image["data_type"] = "amplitude"  # a phased (complex) image
        image["dimensionality"] = 2
        image["is_fft_shifted"] = 0
        image["y_pixel_size"] = float(pixel[0])
        image["x_pixel_size"] = float(pixel[1])
        image["image_size"] = [obj.shape[1] * float(pixel[1]), obj.shape[0] * float(pixel[0]),
                               0.0]
        image["probe"] = probe
        image["probe"].attrs["axes"] = "probe_y:probe_x"
        for dim in ("y", "x", "probe_y", "probe_x"):  # dimension scales, as in ds (nm)
            image[dim] = ds[dim].values
            image[dim].attrs.update(ds[dim].attrs)

        process = image.create_group("process_1")
        process["program"] = "framescope.ptycho.reconstruct"
        process["version"] = __version__
        process["date"] = datetime.datetime.now(datetime.UTC).isoformat()
        if commit is not None:
            process["git_commit"] = commit[0] + ("-dirty" if commit[1] else "")
        process["algorithm"] = str(attrs.get("algorithm", ""))
        process["iterations"] = int(attrs.get("iterations", ds.sizes.get("iteration", 0)))
        process["error"] = ds["error"].values
        process["error"].attrs.update(ds["error"].attrs)
        process["comments"] = ("error: normalised Fourier error per iteration "
                               "sum (|Psi| - sqrt(I))^2 / sum I")
        note = process.create_group("note_1")
        note["description"] = "reconstruction parameters"
        note["type"] = "application/json"
        note["data"] = _json_attrs(attrs if parameters is None else parameters)

        instrument = entry.create_group("instrument_1")
        source = instrument.create_group("source_1")
        energy = _energy_j(ds, calibration, radiation)
        if energy is not None:
            source["energy"] = energy
        source["probe"] = h5py.SoftLink("/entry_1/image_1/probe")
        if "wavelength_m" in attrs:
            instrument.create_group("beam_1")["incident_wavelength"] = attrs["wavelength_m"]
        detector = instrument.create_group("detector_1")
        distance = None if calibration is None else calibration.camera_length
        angle = attrs.get("angle_per_px_rad")
        if distance is not None:
            detector["distance"] = float(distance)
            if angle is not None:  # the collected frames' pixel (binning included)
                detector["x_pixel_size"] = detector["y_pixel_size"] = distance * angle
        image["source_1"] = h5py.SoftLink("/entry_1/instrument_1/source_1")
        image["detector_1"] = h5py.SoftLink("/entry_1/instrument_1/detector_1")

        geometry = entry.create_group("sample_1").create_group("geometry_1")
        geometry["translation"] = translation
        entry.create_group("data_1")["data"] = h5py.SoftLink("/entry_1/image_1/data")

        extra = entry.create_group("framescope")
        extra.attrs["attrs"] = _json_attrs(attrs)
        extra.attrs["coords"] = json.dumps([str(c) for c in ds.coords])
        extra.attrs["variable_attrs"] = json.dumps(
            {str(k): {a: _plain(v) for a, v in ds[k].attrs.items()} for k in ds.variables})
        extra.attrs["dims"] = json.dumps({str(k): list(map(str, ds[k].dims))
                                          for k in ds.variables})
        stored = {*_OBJECT, *_PROBE, "error", "y", "x", "probe_y", "probe_x"}
        for name in ds.variables:
            if name not in stored:
                extra[str(name)] = ds[name].values


def read_cxi(path: str | os.PathLike[str]) -> xr.Dataset:
    """Read a :func:`write_cxi` file back as the Dataset that was written.

    The object and probe come from ``image_1/data`` and ``image_1/probe`` (``|data|`` and
    ``angle(data)`` as float32), the error curve from ``process_1/error``, everything else
    from ``/entry_1/framescope``.

    Raises
    ------
    ValueError
        The file is not a CXI file of a framescope reconstruction (names what is missing).
    """
    import h5py

    with h5py.File(path, "r") as f:
        for where in ("cxi_version", "entry_1/image_1/data", "entry_1/image_1/probe",
                      "entry_1/framescope"):
            if where not in f:
                raise ValueError(f"{os.fspath(path)}: no /{where}: not a CXI file that "
                                 f"framescope.ptycho.write_cxi wrote")
        image = f["entry_1/image_1"]
        extra = f["entry_1/framescope"]
        dims = json.loads(extra.attrs["dims"])
        var_attrs = json.loads(extra.attrs["variable_attrs"])
        coords = set(json.loads(extra.attrs["coords"]))
        values: dict[str, np.ndarray] = {}
        obj, probe = image["data"][()], image["probe"][()]
        values["object_amplitude"] = np.abs(obj).astype(np.float32)
        values["object_phase"] = np.angle(obj).astype(np.float32)
        values["probe_amplitude"] = np.abs(probe).astype(np.float32)
        values["probe_phase"] = np.angle(probe).astype(np.float32)
        values["error"] = image["process_1/error"][()]
        for dim in ("y", "x", "probe_y", "probe_x"):
            values[dim] = image[dim][()]
        for name in extra:
            values[name] = extra[name][()]
        attrs = json.loads(extra.attrs["attrs"])
    names = [n for n in dims if n in values]
    data_vars = {n: (dims[n], values[n], var_attrs.get(n, {})) for n in names
                 if n not in coords}
    coord_vars = {n: (dims[n], values[n], var_attrs.get(n, {})) for n in names if n in coords}
    return xr.Dataset(data_vars, coords=coord_vars, attrs=attrs)
