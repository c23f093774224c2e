"""``framescope ssb`` and ``framescope idpc`` on a file equal the library calls."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import framescope
from framescope.cli import main
from framescope.datasets import synthetic


@pytest.fixture
def calibrated_file(tmp_path):
    arr = synthetic(scan=(8, 10), det=(32, 32), semiconv=6, calibrated=True, seed=2)
    cal = arr.fs.calibration
    src = tmp_path / "s.npy"
    np.save(src, arr.values.reshape(80, 32, 32))
    opts = ["--scan", "8x10", "--energy", "300kV", "--semiconv",
            f"{cal.semiconv * 1e3!r}mrad", "--angle-per-px", f"{cal.angle_per_px * 1e3!r}mrad",
            "--scan-step", f"{cal.scan_step[0] * 1e9!r}nm", "--scheduler", "inline", "-q"]
    return src, opts


def test_ssb_command_writes_the_library_result(calibrated_file, tmp_path):
    src, opts = calibrated_file
    out = tmp_path / "ssb.nc"
    assert main(["ssb", str(src), "--out", str(out), "--defocus", "3nm", *opts]) == 0
    got = xr.open_dataset(out, engine="h5netcdf")
    arr = framescope.open(src, scan=(8, 10)).fs.calibrate(
        energy="300kV", **{k: v for k, v in _cal(opts).items()})
    want = arr.fs.ssb(defocus="3nm", progress=False)
    np.testing.assert_allclose(got["phase"].values, want["phase"].values, atol=1e-6)
    assert got.attrs["ssb_defocus_m"] == pytest.approx(3e-9)
    assert got["phase"].attrs["units"] == "rad"
    got.close()


def test_idpc_command_writes_the_library_result(calibrated_file, tmp_path):
    src, opts = calibrated_file
    out = tmp_path / "idpc.nc"
    assert main(["idpc", str(src), "--out", str(out), "--highpass", "0.05", *opts]) == 0
    got = xr.open_dataset(out, engine="h5netcdf")
    arr = framescope.open(src, scan=(8, 10)).fs.calibrate(**_cal(opts), energy="300kV")
    want = arr.fs.idpc(highpass=0.05, progress=False)
    np.testing.assert_allclose(got["phase"].values, want["phase"].values, atol=1e-6)
    got.close()


def _cal(opts: list[str]) -> dict[str, str]:
    pairs = dict(zip(opts[::2], opts[1::2], strict=False))
    return {"semiconv": pairs["--semiconv"], "angle_per_px": pairs["--angle-per-px"],
            "scan_step": pairs["--scan-step"]}


def test_ssb_command_names_the_missing_calibration(calibrated_file, tmp_path):
    src, _ = calibrated_file
    with pytest.raises(ValueError, match="semiconv"):
        main(["ssb", str(src), "--scan", "8x10", "--out", str(tmp_path / "x.nc"), "-q",
              "--energy", "300kV", "--angle-per-px", "1mrad", "--scan-step", "0.2nm"])


def test_parallax_command_writes_the_library_result(calibrated_file, tmp_path):
    src, opts = calibrated_file
    out = tmp_path / "tcbf.nc"
    assert main(["parallax", str(src), "--out", str(out), *opts]) == 0
    got = xr.open_dataset(out, engine="h5netcdf")
    arr = framescope.open(src, scan=(8, 10)).fs.calibrate(**_cal(opts), energy="300kV")
    want = arr.fs.parallax(progress=False)
    np.testing.assert_allclose(got["tcbf"].values, want["tcbf"].values, rtol=1e-6)
    np.testing.assert_allclose(got["defocus"].values, want["defocus"].values, rtol=1e-6)
    got.close()
