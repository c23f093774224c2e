"""Calibration read from files, merged with the user's in framescope.open, and written out.

References are physical constants and tabulated wavelengths, the values written into the
files here with plain h5py/json, plain numpy on the same bytes (MIB orientation), and
rosettasciio and netCDF4 as independent readers.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr
from test_dectris import FRAME, build_series, make_frames

import framescope
from framescope.calibration import Calibration, CalibrationError
from framescope.io import save, write_netcdf
from framescope.io._lazy import source_of
from framescope.io._mib_write import write_mib

# tabulated relativistic electron wavelengths (pm) and X-ray: E λ = hc = 12398.42 eV Å
LAMBDA_300KV_PM = 1.9687
HC_EV_ANGSTROM = 12398.42


def cal_of(arr: xr.DataArray) -> Calibration:
    return Calibration.from_json(arr.attrs["calibration"])


# ---- DECTRIS ------------------------------------------------------------------------------

def dectris(tmp_path: Path, **instrument) -> Path:
    frames = make_frames(12, "u2")
    return build_series(tmp_path / "series", frames, 5, instrument=instrument)


def test_dectris_electron_geometry_and_energy(tmp_path):
    master = dectris(
        tmp_path,
        **{"detector/x_pixel_size": (75e-6, "m"), "detector/y_pixel_size": (75e-6, "m"),
           "detector/beam_center_y": (2.0, "pixel"),
           "beam/incident_wavelength": (LAMBDA_300KV_PM / 100, "angstrom")})
    arr = framescope.open(master, scan=(3, 4))
    cal = cal_of(arr)
    assert cal.energy == pytest.approx(300e3, rel=2e-4)
    assert cal.radiation == "electron"
    assert (cal.camera_length, cal.pixel_size, cal.center) == (0.25, 75e-6, (2.0, 2.5))
    det = "scan_master.h5: /entry/instrument/detector"
    assert cal.sources["camera_length"] == f"{det}/detector_distance"
    assert cal.sources["pixel_size"] == f"{det}/x_pixel_size"
    assert cal.sources["center"] == (f"{det}/beam_center_y + "
                                     "/entry/instrument/detector/beam_center_x")
    assert cal.sources["energy"] == "scan_master.h5: /entry/instrument/beam/incident_wavelength"
    # coordinates: mrad from the centre, pixel size / distance per pixel
    mrad = 75e-6 / 0.25 * 1e3
    np.testing.assert_allclose(arr.det_y, (np.arange(FRAME[0]) - 2.0) * mrad)
    np.testing.assert_allclose(arr.det_x, (np.arange(FRAME[1]) - 2.5) * mrad)
    assert arr.det_x.attrs["units"] == "mrad"
    np.testing.assert_array_equal(arr.scan_x, np.arange(4))  # no scan step in the file
    assert source_of(arr) is not None  # still read straight from the file
    np.testing.assert_array_equal(arr.values.reshape(12, *FRAME), make_frames(12, "u2"))


def test_dectris_xray_file_gets_photon_energy(tmp_path):
    master = dectris(tmp_path, **{"beam/incident_wavelength": (1.0, "angstrom"),
                                  "detector/detectorSpecific/photon_energy": (12398.4, "eV")})
    cal = cal_of(framescope.open(master, scan=(3, 4)))
    assert cal.radiation == "xray"
    assert cal.energy == pytest.approx(HC_EV_ANGSTROM, rel=1e-5)
    assert cal.wavelength == pytest.approx(1e-10, rel=1e-5)


def test_dectris_units_converted_and_bad_fields_skipped(tmp_path, caplog):
    master = dectris(tmp_path, **{"detector/detector_distance": (250.0, "mm"),
                                  "detector/x_pixel_size": (75.0, "um"),
                                  "detector/y_pixel_size": (150.0, "um"),
                                  "beam/incident_energy": (-1.0, "eV")})
    with caplog.at_level(logging.WARNING):
        cal = cal_of(framescope.open(master, scan=(3, 4)))
    assert cal.camera_length == pytest.approx(0.25)
    assert cal.pixel_size is None  # x and y differ: not square, not used
    assert cal.energy is None
    for field in ("x_pixel_size", "y_pixel_size", "incident_energy"):
        assert field in caplog.text


# ---- HDF5 / NeXus -------------------------------------------------------------------------

def nexus_file(path: Path, *, source_probe: str | None = None) -> dict[str, np.ndarray]:
    """A NeXus 4D-STEM file: NXdetector, NXbeam or NXsource, NXdata with axes in nm/mrad."""
    frames = make_frames(12, "u2").reshape(3, 4, *FRAME)
    axes = {"y": np.arange(3) * 0.5, "x": np.arange(4) * 0.5,
            "ky": (np.arange(FRAME[0]) - 2.5) * 0.3, "kx": (np.arange(FRAME[1]) - 1.0) * 0.3}
    with h5py.File(path, "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        det = entry.create_group("instrument/detector")
        det.attrs["NX_class"] = "NXdetector"
        for key, value, units in [("distance", 150.0, "mm"), ("x_pixel_size", 55.0, "um"),
                                  ("y_pixel_size", 55.0, "um"), ("beam_center_x", 1.0, "pixel"),
                                  ("beam_center_y", 2.5, "pixel")]:
            det[key] = value
            det[key].attrs["units"] = units
        if source_probe is None:
            beam = entry.create_group("instrument/beam")
            beam.attrs["NX_class"] = "NXbeam"
            beam["incident_energy"] = 300.0
            beam["incident_energy"].attrs["units"] = "keV"
        else:
            src = entry.create_group("instrument/source")
            src.attrs["NX_class"] = "NXsource"
            src["probe"] = source_probe
            src["energy"] = 300.0 if source_probe == "electron" else 6.0
            src["energy"].attrs["units"] = "keV" if source_probe == "electron" else "GeV"
        data = entry.create_group("data")
        data.attrs["NX_class"] = "NXdata"
        data.attrs["signal"] = "frames"
        data.attrs["axes"] = ["y", "x", "ky", "kx"]
        data["frames"] = frames
        for name, values in axes.items():
            data[name] = values
            data[name].attrs["units"] = "nm" if name in "yx" else "mrad"
    return axes


def test_nexus_groups_and_axes(tmp_path, caplog):
    path = tmp_path / "scan.nxs"
    axes = nexus_file(path)
    with caplog.at_level(logging.INFO, logger="framescope.io._calibration"):
        arr = framescope.open(path)
    cal = cal_of(arr)
    assert cal.energy == pytest.approx(300e3)
    assert cal.pixel_size == pytest.approx(55e-6)
    # the axes say the detector angle: the camera length below it gives way (logged)
    assert cal.camera_length is None
    assert "camera_length" in caplog.text
    assert cal.angle_per_px == pytest.approx(0.3e-3)
    assert cal.scan_step == pytest.approx((0.5e-9, 0.5e-9))
    assert cal.sources["scan_step"] == "scan.nxs: /entry/data/y + /entry/data/x"
    assert cal.sources["pixel_size"] == "scan.nxs: /entry/instrument/detector/x_pixel_size"
    # the coordinates are the file's own axes
    for dim, name in zip(("scan_y", "scan_x", "det_y", "det_x"), axes, strict=True):
        np.testing.assert_allclose(arr[dim], axes[name], atol=1e-12)


@pytest.mark.parametrize(("probe", "energy"), [("electron", 300e3), ("x-ray", None)])
def test_nexus_source_energy_only_for_electrons(tmp_path, probe, energy):
    path = tmp_path / "src.nxs"
    nexus_file(path, source_probe=probe)
    cal = cal_of(framescope.open(path))
    assert cal.energy == (pytest.approx(energy) if energy else None)


def test_hdf5_without_calibration_is_unchanged(tmp_path):
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f["frames"] = make_frames(12, "u2").reshape(3, 4, *FRAME)
    arr = framescope.open(path)
    assert "calibration" not in arr.attrs
    for dim, n in arr.sizes.items():
        np.testing.assert_array_equal(arr[dim], np.arange(n))
        assert arr[dim].attrs == {"units": "px"}


def test_calibration_json_attribute_on_a_group(tmp_path):
    path = tmp_path / "g.h5"
    with h5py.File(path, "w") as f:
        f.attrs["calibration"] = json.dumps({"energy": 80e3, "scan_step": [2e-9, 1e-9]})
        grp = f.create_group("scan")
        grp.attrs["calibration"] = json.dumps({"energy": "200 kV"})  # nearer: wins
        grp["frames"] = make_frames(12, "u2").reshape(3, 4, *FRAME)
    arr = framescope.open(path)
    cal = cal_of(arr)
    assert cal.energy == 200e3
    assert cal.scan_step == (2e-9, 1e-9)
    assert cal.sources["energy"] == "g.h5: /scan attribute calibration"
    np.testing.assert_allclose(arr.scan_y, [0, 2, 4])


# ---- round trip through framescope's own writers ------------------------------------------

@pytest.mark.parametrize(("fmt", "name"), [("hdf5", "c.h5"), ("raw", "c.raw"),
                                           ("zarr", "c.zarr"), ("dectris", "c_master.h5")])
def test_saved_calibration_comes_back(tmp_path, fmt, name):
    data = make_frames(12, "u2").reshape(3, 4, *FRAME)
    cal = framescope.from_array(data).fs.calibrate(
        energy="300 kV", semiconv="20 mrad", angle_per_px="0.4 mrad", center=(2, 3),
        scan_step="0.5 nm")
    out = save(cal, tmp_path / name, fmt, progress=False)
    back = framescope.open(out)
    got, want = cal_of(back), cal_of(cal)
    for field in ("energy", "semiconv", "angle_per_px", "center", "scan_step"):
        assert getattr(got, field) == pytest.approx(getattr(want, field)), field
        assert got.sources[field].startswith(f"{Path(out).name}: calibration (from user")
    for dim in ("scan_y", "scan_x", "det_y", "det_x"):
        np.testing.assert_allclose(back[dim], cal[dim])
        assert back[dim].attrs == cal[dim].attrs
    np.testing.assert_array_equal(back.values, data)


# ---- raw sidecar --------------------------------------------------------------------------

def raw_with_sidecar(tmp_path: Path, calibration: dict) -> Path:
    path = tmp_path / "s.raw"
    make_frames(12, "u2").tofile(path)
    side = {"shape": [3, 4, *FRAME], "dtype": "uint16", "calibration": calibration}
    (tmp_path / "s.raw.json").write_text(json.dumps(side))
    return path


def test_raw_sidecar_calibration(tmp_path):
    path = raw_with_sidecar(tmp_path, {"energy": "300 kV", "semiconv": "20 mrad",
                                       "angle_per_px": "0.5 mrad", "center": [3, 2],
                                       "scan_step": "0.25 nm"})
    arr = framescope.open(path)
    cal = cal_of(arr)
    assert (cal.energy, cal.semiconv, cal.angle_per_px) == pytest.approx((300e3, 0.02, 5e-4))
    assert cal.scan_step == pytest.approx((0.25e-9, 0.25e-9))
    assert cal.center == (3, 2)
    assert cal.sources["semiconv"] == "s.raw.json: calibration.semiconv"
    np.testing.assert_allclose(arr.det_x, (np.arange(FRAME[1]) - 2) * 0.5)
    np.testing.assert_allclose(arr.scan_x, np.arange(4) * 0.25)


@pytest.mark.parametrize(("field", "value", "match"), [
    ("energy", "300 kg", r"s\.raw\.json: calibration\.energy: .*'kg'"),
    ("semiconv", -0.02, r"s\.raw\.json: calibration\.semiconv: expected a positive"),
    ("voltage", "300 kV", r"s\.raw\.json: calibration\.voltage: unknown field"),
])
def test_raw_sidecar_bad_calibration_names_file_and_field(tmp_path, field, value, match):
    path = raw_with_sidecar(tmp_path, {field: value})
    with pytest.raises(CalibrationError, match=match):
        framescope.open(path)


# ---- the user's calibration ---------------------------------------------------------------

def test_user_wins_and_a_conflict_is_logged_once(tmp_path, caplog):
    path = raw_with_sidecar(tmp_path, {"energy": "300 kV", "semiconv": "20 mrad"})
    with caplog.at_level(logging.WARNING):
        arr = framescope.open(path, calibration={"energy": "200 kV",
                                                 "semiconv": "20.1 mrad"})  # within 1 %
    cal = cal_of(arr)
    assert (cal.energy, cal.semiconv) == pytest.approx((200e3, 0.0201))
    assert cal.sources["energy"] == cal.sources["semiconv"] == "user"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    msg = warnings[0].getMessage()
    for part in ("energy", "200000", "300000"):
        assert part in msg
    assert "s.raw.json: calibration.energy" in msg


@pytest.mark.parametrize("kind", ["calibration", "json"])
def test_user_calibration_object_or_json(tmp_path, kind):
    path = raw_with_sidecar(tmp_path, {"energy": "300 kV"})
    given = Calibration(scan_step="1 nm", semiconv="25 mrad")
    arr = framescope.open(path, calibration=given if kind == "calibration" else
                          given.to_json())
    cal = cal_of(arr)
    assert (cal.energy, cal.semiconv) == pytest.approx((300e3, 0.025))
    assert cal.scan_step == pytest.approx((1e-9, 1e-9))
    assert cal.sources["energy"] == "s.raw.json: calibration.energy"
    assert cal.sources["scan_step"] == "user"
    # the same as calibrating the uncalibrated file afterwards
    plain = framescope.open(path, calibration={"energy": "300 kV"})
    after = plain.fs.calibrate(scan_step="1 nm", semiconv="25 mrad")
    for dim in arr.dims:
        np.testing.assert_array_equal(arr[dim], after[dim])
        assert arr[dim].attrs == after[dim].attrs


def test_given_angle_displaces_the_files_camera_length(tmp_path):
    master = dectris(tmp_path, **{"detector/x_pixel_size": (75e-6, "m")})
    # the file implies 0.3 mrad per pixel (75 um / 0.25 m); the user says 0.5
    arr = framescope.open(master, scan=(3, 4), calibration={"angle_per_px": "0.5 mrad"})
    cal = cal_of(arr)
    assert cal.angle_per_px == 5e-4
    assert cal.camera_length is None
    assert cal.pixel_size == 75e-6
    np.testing.assert_allclose(np.diff(arr.det_x), 0.5)
    # and a given camera length displaces an angle read from the file
    raw = raw_with_sidecar(tmp_path, {"angle_per_px": "0.5 mrad"})
    cal = cal_of(framescope.open(raw, calibration={"camera_length": "0.2 m",
                                                   "pixel_size": "50 um"}))
    assert cal.angle_per_px is None
    assert cal.detector_angle == pytest.approx(2.5e-4)


def test_uncalibrated_open_imports_no_pydantic(tmp_path):
    np.save(tmp_path / "a.npy", make_frames(12, "u2").reshape(3, 4, *FRAME))
    with h5py.File(tmp_path / "b.h5", "w") as f:
        f["frames"] = make_frames(12, "u2").reshape(3, 4, *FRAME)
    write_mib(tmp_path / "c.mib", [make_frames(12, "u2")], n_frames=12, frame_shape=FRAME,
              scan=(3, 4))
    code = (
        "import sys, framescope\n"
        f"for name in ('a.npy', 'b.h5', 'c.mib'):\n"
        f"    arr = framescope.open({str(tmp_path)!r} + '/' + name)\n"
        "    assert 'calibration' not in arr.attrs, name\n"
        "    assert 'pydantic' not in sys.modules, name\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ---- MIB ----------------------------------------------------------------------------------

@pytest.fixture
def mib(tmp_path) -> tuple[Path, np.ndarray]:
    frames = np.random.default_rng(3).integers(0, 60000, (12, 8, 10)).astype("u2")
    path = write_mib(tmp_path / "m.mib", [frames], n_frames=12, frame_shape=(8, 10),
                     scan=(3, 4))
    # the same bytes decoded with plain numpy: 384-byte headers, big-endian pixels
    raw = np.fromfile(path, np.uint8).reshape(12, -1)[:, 384:]
    decoded = raw.copy().view(">u2").reshape(3, 4, 8, 10)
    np.testing.assert_array_equal(decoded, frames.reshape(3, 4, 8, 10))
    return path, decoded


def test_mib_flip_y(mib):
    path, decoded = mib
    plain = framescope.open(path)
    flipped = framescope.open(path, flip_y=True)
    np.testing.assert_array_equal(plain.values, decoded)
    np.testing.assert_array_equal(flipped.values, decoded[:, :, ::-1, :])
    # partial, lazy selections read the flipped rows too
    np.testing.assert_array_equal(flipped[1, 1:3, 2:5].values, decoded[1, 1:3, ::-1][:, 2:5])
    assert flipped.data.name != plain.data.name
    assert flipped.attrs["flip_y"] is True
    # through the xarray backend, with a calibration too
    ds = xr.open_dataset(path, engine="framescope", flip_y=True,
                         calibration={"camera_length": 0.2})
    np.testing.assert_array_equal(ds.frames.values, decoded[:, :, ::-1, :])
    assert cal_of(ds.frames).camera_length == 0.2


def test_mib_flip_y_matches_rosettasciio(mib):
    qd = pytest.importorskip("rsciio.quantumdetector")
    path, _ = mib
    ref = qd.file_reader(str(path))[0]["data"]
    np.testing.assert_array_equal(framescope.open(path, flip_y=True).values, ref)


def test_mib_pixel_pitch_only_with_a_calibration(mib):
    path, _ = mib
    assert "calibration" not in framescope.open(path).attrs
    arr = framescope.open(path, calibration={"camera_length": "0.2 m"})
    cal = cal_of(arr)
    assert cal.pixel_size == 55e-6
    assert "Medipix3" in cal.sources["pixel_size"]
    np.testing.assert_allclose(arr.det_x, (np.arange(10) - 5) * 55e-6 / 0.2 * 1e3)


# ---- NetCDF export ------------------------------------------------------------------------

def test_results_to_netcdf_keep_units_and_calibration(tmp_path):
    netCDF4 = pytest.importorskip("netCDF4")
    data = make_frames(12, "u2").reshape(3, 4, *FRAME)
    arr = framescope.open(raw_with_sidecar(tmp_path, {}), calibration={
        "energy": "300 kV", "angle_per_px": "0.5 mrad", "scan_step": "0.2 nm"})
    ds = framescope.run(framescope.udf.SumFrame(), arr, client="sync")
    out = write_netcdf(ds, tmp_path / "r.nc")
    with netCDF4.Dataset(out) as f:
        assert Calibration.from_json(f.getncattr("calibration")) == cal_of(arr)
        assert (f["det_x"].units, f["det_x"].long_name) == ("mrad", "scattering angle")
        assert (f["scan_y"].units, f["scan_y"].long_name) == ("nm", "scan position")
        assert "_FillValue" not in f["det_x"].ncattrs()
        np.testing.assert_allclose(f["det_x"][:], (np.arange(FRAME[1]) - FRAME[1] // 2) * 0.5)
        np.testing.assert_allclose(f["scan_y"][:], [0, 0.2, 0.4])
        np.testing.assert_array_equal(f["sum"][:], data.sum(axis=(0, 1)))
        assert f.getncattr("complete") == 1  # a bool, as NetCDF can hold it
    with xr.open_dataset(out) as back:
        assert back.det_y.attrs["units"] == "mrad"
        np.testing.assert_array_equal(back["sum"], data.sum(axis=(0, 1)))
    with pytest.raises(FileExistsError, match=r"r\.nc"):
        write_netcdf(ds, out)
    # a DataArray's calibration goes to the global attributes
    write_netcdf(ds["sum"].assign_attrs(calibration=ds.attrs["calibration"]), out,
                 overwrite=True)
    with xr.open_dataset(out) as back:
        assert back.attrs["calibration"] == ds.attrs["calibration"]
        assert back.det_x.attrs["units"] == "mrad"
