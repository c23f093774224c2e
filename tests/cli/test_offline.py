"""The dataset commands through ``main`` (and ``python -m framescope.cli``)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import framescope
from framescope.cli import main
from framescope.datasets import synthetic


@pytest.mark.parametrize("fmt", ["raw", "npy", "zarr", "mib", "hdf5"])
def test_simulate_writes_the_synthetic_dataset(tmp_path, fmt, capsys):
    out = tmp_path / f"sim.{fmt}"
    assert main(["simulate", str(out), "--scan", "5x7", "--det", "16x16", "--format", fmt,
                 "--seed", "3", "-q"]) == 0
    arr = framescope.open(out, **({"scan": (5, 7)} if fmt == "mib" else {}))
    ref = synthetic(scan=(5, 7), det=(16, 16), seed=3).values
    np.testing.assert_array_equal(arr.values, ref)


def test_info_prints_json(tmp_path, capsys):
    out = tmp_path / "d.npy"
    np.save(out, np.zeros((12, 8, 8), "uint16"))
    assert main(["info", str(out), "--scan", "3x4"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["shape"] == [3, 4, 8, 8]
    assert info["dtype"] == "uint16"
    assert info["format"] == "npy"
    assert info["bytes"] == 12 * 64 * 2
    assert info["chunks"] == [[3], [4], [8], [8]]


def test_convert_roundtrip_and_no_overwrite(tmp_path, capsys):
    src = tmp_path / "s.raw"
    ref = np.random.default_rng(0).integers(0, 999, (4, 6, 8, 8)).astype("uint16")
    src.write_bytes(ref.tobytes())
    for fmt, name in [("zarr", "c.zarr"), ("raw", "c.raw")]:
        dst = tmp_path / name
        assert main(["convert", str(src), str(dst), "--format", fmt, "--shape", "24x8x8",
                     "--dtype", "uint16", "--scan", "4x6", "-q"]) == 0
        np.testing.assert_array_equal(framescope.open(dst).values, ref)
    assert main(["convert", str(src), str(tmp_path / "c.raw"), "--format", "raw",
                 "--shape", "24x8x8", "--dtype", "uint16", "--scan", "4x6", "-q"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_bad_input_is_a_clear_error_not_a_traceback(tmp_path):
    bad = tmp_path / "bad.raw"
    bad.write_bytes(b"\0" * 100)
    proc = subprocess.run(
        [sys.executable, "-m", "framescope.cli", "info", str(bad), "--shape", "4x4x4",
         "--dtype", "uint16"], capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "bad.raw" in proc.stderr
    assert "expected 128 bytes" in proc.stderr


def test_version():
    proc = subprocess.run([sys.executable, "-m", "framescope.cli", "--version"],
                          capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == f"framescope {framescope.__version__}"


def test_virtual_image_and_com_commands(tmp_path, capsys):
    import xarray as xr

    import framescope.masks as fm

    src = tmp_path / "s.npy"
    ref = np.random.default_rng(1).integers(1, 99, (5, 6, 16, 16)).astype("uint16")
    np.save(src, ref)
    out = tmp_path / "vi.nc"
    assert main(["virtual-image", str(src), "--mask", "bf=disk:8,8,3",
                 "--mask", "ring:8,8,4,7", "--out", str(out), "--scheduler", "inline",
                 "-q"]) == 0
    ds = xr.open_dataset(out, engine="h5netcdf")
    assert list(ds["mask"].values) == ["bf", "m1"]
    for name, spec in [("bf", fm.disk(8, 8, 3)), ("m1", fm.ring(8, 8, 4, 7))]:
        expected = np.einsum("ijkl,kl->ij", ref.astype("f8"), spec.rasterize((16, 16)))
        np.testing.assert_allclose(ds["intensity"].sel(mask=name), expected, rtol=1e-6)
    assert fm.MaskStack.from_json(ds.attrs["masks"]).names == ("bf", "m1")
    assert ds.attrs["framescope_version"] == framescope.__version__
    ds.close()
    out = tmp_path / "com.h5"
    assert main(["com", str(src), "--radius", "5", "--out", str(out), "--scheduler", "inline",
                 "-q"]) == 0
    com = xr.open_dataset(out, engine="h5netcdf")
    assert set(com.data_vars) >= {"com_y", "com_x", "divergence", "curl", "magnitude"}
    assert com.attrs["com_radius"] == 5
    com.close()


def test_bad_mask_argument(capsys):
    with pytest.raises(SystemExit):
        main(["virtual-image", "x.npy", "--mask", "ring:1,2", "--out", "o.nc"])
    assert "ring:cy,cx,r_in,r_out" in capsys.readouterr().err


def test_virtual_image_in_mrad_with_calibration_options(tmp_path):
    """The real CLI: --angle-per-px/--center/--scan-step calibrate, --mask ...@mrad selects by
    scattering angle; the file has the masks, their pixels, the calibration and nm coords."""
    import xarray as xr

    import framescope.masks as fm
    from framescope.calibration import Calibration

    src = tmp_path / "s.npy"
    ref = synthetic(scan=(4, 5), det=(32, 32), seed=2).values.astype("f8")
    np.save(src, ref.astype("uint16").reshape(20, 32, 32))
    out = tmp_path / "vi.nc"
    proc = subprocess.run(
        [sys.executable, "-m", "framescope.cli", "virtual-image", str(src), "--scan", "4x5",
         "--angle-per-px", "0.5mrad", "--center", "15.5,16.2", "--scan-step", "0.25nm",
         "--energy", "300kV", "--mask", "adf=ring:2.1,6.3@mrad", "--mask", "bf=disk:8,9,3",
         "--mask", "g=ring:0.15,0.3@1/A", "--mask", "tri=polygon:-5,-4,-4.7,5.2,4.9,0.3@mrad",
         "--out", str(out), "-q"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    ds = xr.open_dataset(out, engine="h5netcdf")
    # the pixel masks by hand: px = centre + mrad / 0.5; 1/Å: theta = k * lambda
    lam_mrad = Calibration(energy=300e3).wavelength * 1e10 * 1e3  # mrad per 1/Å
    by_hand = {"adf": fm.ring(15.5, 16.2, 4.2, 12.6), "bf": fm.disk(8, 9, 3),
               "g": fm.ring(15.5, 16.2, 0.15 * lam_mrad / 0.5, 0.3 * lam_mrad / 0.5),
               "tri": fm.polygon([(15.5 - 10, 16.2 - 8), (15.5 - 9.4, 16.2 + 10.4),
                                  (15.5 + 9.8, 16.2 + 0.6)])}
    for name, spec in by_hand.items():
        expected = (ref * spec.rasterize((32, 32))).sum(axis=(2, 3))
        np.testing.assert_allclose(ds["intensity"].sel(mask=name), expected, rtol=1e-6,
                                   err_msg=name)
    stack = fm.MaskStack.from_json(ds.attrs["masks"])
    assert stack["adf"] == fm.ring(r_in=2.1, r_out=6.3, units="mrad")
    assert stack["g"].units == "1/Å"
    assert not fm.MaskStack.from_json(ds.attrs["masks_px"]).is_physical
    cal = Calibration.from_json(ds.attrs["calibration"])
    assert cal.angle_per_px == pytest.approx(0.5e-3)
    assert cal.center == (15.5, 16.2)
    assert cal.energy == pytest.approx(300e3)
    assert ds["scan_x"].attrs["units"] == "nm"
    np.testing.assert_allclose(ds["scan_x"].values, np.arange(5) * 0.25)
    ds.close()


def test_mrad_mask_without_calibration_and_bare_numbers_are_clear_errors(tmp_path, capsys):
    src = tmp_path / "s.npy"
    np.save(src, np.ones((4, 8, 8), "uint16"))
    args = ["virtual-image", str(src), "--scan", "2x2", "--out", str(tmp_path / "o.nc"), "-q"]
    assert main([*args, "--mask", "adf=ring:2,6@mrad"]) == 2
    err = capsys.readouterr().err
    assert "mask 'adf' is in mrad, found uncalibrated data" in err
    assert "--angle-per-px" in err
    assert not (tmp_path / "o.nc").exists()
    with pytest.raises(SystemExit):  # 0.5 rad per pixel is never meant: a unit is required
        main([*args, "--mask", "adf=ring:2,6@mrad", "--angle-per-px", "0.5"])
    assert "expected a number with a unit such as '0.5mrad', found '0.5'" in \
        capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--mask", "adf=ring:2,6@mrad", "--angle-per-px", "0.5nm"])
    assert "found 'nm' in '0.5nm'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--mask", "ring:2,6@parsec", "--angle-per-px", "0.5mrad"])
    assert "units must be one of ['px', 'mrad', 'rad', '1/Å', '1/nm'], found 'parsec'" in \
        capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--mask", "ring:2,6@mrad", "--center", "3"])
    assert "expected the beam centre cy,cx in detector pixels" in capsys.readouterr().err


def test_com_takes_the_calibration_options(tmp_path):
    import xarray as xr

    from framescope.calibration import Calibration

    src = tmp_path / "s.npy"
    np.save(src, synthetic(scan=(3, 4), det=(16, 16), seed=1).values.reshape(12, 16, 16))
    out = tmp_path / "com.nc"
    assert main(["com", str(src), "--scan", "3x4", "--out", str(out), "--scheduler", "inline",
                 "-q", "--energy", "200kV", "--semiconv", "20mrad", "--angle-per-px",
                 "1mrad", "--scan-step", "0.5nm,0.4nm"]) == 0
    com = xr.open_dataset(out, engine="h5netcdf")
    cal = Calibration.from_json(com.attrs["calibration"])
    assert cal.semiconv == pytest.approx(20e-3)
    assert cal.scan_step == pytest.approx((0.5e-9, 0.4e-9))
    np.testing.assert_allclose(com["scan_y"].values, np.arange(3) * 0.5)
    np.testing.assert_allclose(com["scan_x"].values, np.arange(4) * 0.4)
    com.close()


def test_virtual_image_with_corrections_equals_numpy(tmp_path):
    import xarray as xr

    rng = np.random.default_rng(5)
    frames = rng.poisson(20, (3, 4, 16, 16)).astype(np.uint16)
    dark = rng.normal(2, 0.2, (16, 16)).astype(np.float32)
    bad = np.zeros((16, 16), np.uint8)
    bad[4, 5] = 1
    for name, a in (("f", frames), ("dark", dark), ("bad", bad)):
        np.save(tmp_path / f"{name}.npy", a)
    out = tmp_path / "vi.nc"
    assert main(["virtual-image", str(tmp_path / "f.npy"), "--mask", "disk:4,4,3",
                 "--dark", str(tmp_path / "dark.npy"), "--bad-pixels",
                 str(tmp_path / "bad.npy"), "--bin", "2", "--out", str(out), "-q"]) == 0
    x = frames.astype(np.float32) - dark
    x[..., 4, 5] = 0
    binned = x.reshape(3, 4, 8, 2, 8, 2).sum(axis=(3, 5))
    yy, xx = np.mgrid[:8, :8]
    want = (binned * ((yy - 4) ** 2 + (xx - 4) ** 2 <= 9)).sum(axis=(2, 3))
    with xr.open_dataset(out) as ds:
        np.testing.assert_allclose(ds["intensity"].values.reshape(3, 4), want, rtol=1e-5)
        assert '"bin": 2' in ds.attrs["corrections"]
