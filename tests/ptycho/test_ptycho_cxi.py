"""CXI 1.6 output of a reconstruction: the layout (h5py paths, units, links) and the round
trip write -> read, bit for bit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from framescope.ptycho import reconstruct
from framescope.ptycho._cxi import read_cxi, write_cxi
from framescope.ptycho._experiment import ptycho_experiment

h5py = pytest.importorskip("h5py")

H, C, EV = 6.62607015e-34, 299792458.0, 1.602176634e-19


@pytest.fixture(scope="module")
def xray() -> tuple:
    exp = ptycho_experiment("xray", scan=(6, 6), det=(32, 32), step=4, dose=1e6)
    ds = reconstruct(exp.frames, iterations=3, defocus=exp.defocus, client="inline")
    return exp, ds


def test_round_trip_is_bit_exact(xray, tmp_path):
    exp, ds = xray
    path = tmp_path / "rec.cxi"
    write_cxi(ds, path, calibration=exp.calibration)
    back = read_cxi(path)
    xr.testing.assert_identical(back, ds)  # values, dims, coords, attrs
    for name in ds.variables:
        assert back[name].dtype == ds[name].dtype, name
        np.testing.assert_array_equal(back[name].values, ds[name].values)


def test_layout_follows_cxi_1_6(xray, tmp_path):
    exp, ds = xray
    path = tmp_path / "rec.cxi"
    write_cxi(ds, path, calibration=exp.calibration, parameters={"note": "test", "n": 3})
    cal = exp.calibration
    with h5py.File(path, "r") as f:
        assert f["cxi_version"][()] == 160
        image = f["entry_1/image_1"]
        obj = image["data"][()]
        assert obj.dtype.kind == "c"
        # h5py's complex compound: the fields "r" and "i" of CXI's convention
        assert image["data"].id.get_type().get_member_name(0) == b"r"
        want = ds["object_amplitude"].values * np.exp(1j * ds["object_phase"].values
                                                      .astype(np.float64))
        np.testing.assert_allclose(obj, want, rtol=1e-6, atol=1e-7)
        assert image["data"].attrs["axes"] == "y:x"
        assert image["data_space"][()] == b"real"
        assert image["is_fft_shifted"][()] == 0
        # the object pixel: wavelength * distance / (n * detector pixel), m
        px = cal.wavelength * cal.camera_length / (32 * cal.pixel_size)
        assert np.isclose(image["x_pixel_size"][()], px)
        assert np.isclose(image["y_pixel_size"][()], px)
        assert image["probe"].shape == (32, 32)
        np.testing.assert_array_equal(f["entry_1/instrument_1/source_1/probe"][()],
                                      image["probe"][()])
        # energy in J: photons, E = h c / lambda
        energy = f["entry_1/instrument_1/source_1/energy"][()]
        assert np.isclose(energy, 8e3 * EV)
        assert np.isclose(energy, H * C / cal.wavelength, rtol=1e-6)
        det = f["entry_1/instrument_1/detector_1"]
        assert np.isclose(det["distance"][()], cal.camera_length)
        assert np.isclose(det["x_pixel_size"][()], 75e-6)
        assert np.isclose(det["y_pixel_size"][()], 75e-6)
        assert image["source_1/energy"][()] == energy  # the links resolve
        assert image["detector_1/distance"][()] == det["distance"][()]
        process = image["process_1"]
        assert process["algorithm"][()] == b"rpie"
        assert process["iterations"][()] == 3
        np.testing.assert_array_equal(process["error"][()], ds["error"].values)
        assert json.loads(process["note_1/data"][()]) == {"note": "test", "n": 3}
        assert process["version"][()].decode()
        # positions (x, y, z) in m, row-major over the scan: 4 object px per step
        t = f["entry_1/sample_1/geometry_1/translation"][()]
        assert t.shape == (36, 3)
        iy, ix = np.divmod(np.arange(36), 6)
        np.testing.assert_allclose(t[:, 0], ix * 4 * px, rtol=1e-9)
        np.testing.assert_allclose(t[:, 1], iy * 4 * px, rtol=1e-9)
        assert np.all(t[:, 2] == 0)
        np.testing.assert_array_equal(f["entry_1/data_1/data"][()], obj)


def test_without_calibration_energy_from_the_wavelength(tmp_path):
    exp = ptycho_experiment("electron", scan=(4, 4), det=(16, 16), step=3, dose=None,
                            semiconv=2.5, defocus=2.0)
    ds = reconstruct(exp.frames, iterations=1, defocus=exp.defocus, client="inline")
    path = tmp_path / "e.cxi"
    write_cxi(ds, path)
    with h5py.File(path, "r") as f:
        # relativistic electrons: 300 keV kinetic energy
        assert np.isclose(f["entry_1/instrument_1/source_1/energy"][()], 300e3 * EV,
                          rtol=1e-6)
        assert "distance" not in f["entry_1/instrument_1/detector_1"]
        assert np.isclose(f["entry_1/instrument_1/beam_1/incident_wavelength"][()],
                          exp.calibration.wavelength)
    xr.testing.assert_identical(read_cxi(path), ds)


def test_bad_input_names_what_is_missing(xray, tmp_path):
    _, ds = xray
    with pytest.raises(ValueError, match="lacks object_phase"):
        write_cxi(ds.drop_vars("object_phase"), tmp_path / "x.cxi")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["cxi_version"] = 150
    with pytest.raises(ValueError, match=r"other\.h5: no /entry_1/image_1/data"):
        read_cxi(tmp_path / "other.h5")
