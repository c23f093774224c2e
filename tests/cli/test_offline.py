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
