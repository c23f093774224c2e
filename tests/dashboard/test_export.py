from __future__ import annotations

import numpy as np
import xarray as xr

import framescope as fs
import framescope.masks as fm
from framescope.dashboard._export import (
    notebook_code,
    results_bytes,
    results_dataset,
    write_results,
)
from framescope.engine._cache import results


def _inline(code: str) -> str:
    """The code with ``client='inline'`` added to every ``arr.fs`` call (no cluster here)."""
    out = []
    for line in code.splitlines():
        if "arr.fs." in line and "arr.fs.pick" not in line:
            call, sep, comment = line.partition("  #")
            call = call.rstrip()
            call = call[:-2] + "(client='inline')" if call.endswith("()") else (
                call[:-1] + ", client='inline')")
            line = call + sep + comment
        out.append(line)
    return "\n".join(out)


def _ready(state):
    state.start()
    state.add("polygon", select=False)
    state.detector("bf").param.update(cy=15.5, cx=16.25, r=5.5)
    state.param.update(com_cy=16.0, com_cx=16.0, com_radius=7.0, com_enabled=True)
    assert state.jobs.wait(timeout=120)


def test_code_recomputes_the_same_images(state, small):
    arr, _ = small
    _ready(state)
    code = notebook_code(state)
    assert "'bf': fs.masks.disk(cy=15.5, cx=16.25, r=5.5)" in code
    assert "bf = arr.fs.virtual_image(fs.masks.disk(cy=15.5, cx=16.25, r=5.5))" in code
    assert "com = arr.fs.com(cy=16.0, cx=16.0, radius=7.0, rotation=0.0, flip_y=False)" in code
    results.clear()  # the code must compute, not read what the dashboard cached
    scope = {"arr": arr}
    exec(_inline(code), scope)
    images = scope["images"]
    assert list(images.mask.values) == state.names
    for name in state.names:
        np.testing.assert_allclose(images.sel(mask=name), state.image(name).image, rtol=1e-6)
    np.testing.assert_allclose(scope["com"]["curl"], state.results.get("com").data["curl"],
                               rtol=1e-6, equal_nan=True)
    assert fm.MaskStack.from_json(images.attrs["masks"]) == state.masks()


def test_written_file_holds_images_masks_and_com(state, small, tmp_path):
    _, frames = small
    _ready(state)
    path = write_results(state, tmp_path / "out.nc")
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        ds.load()
    vi = ds["virtual_image"]
    assert list(vi.mask.values) == ["bf", "adf", "polygon1"]
    stack = fm.MaskStack.from_json(vi.attrs["masks"])
    assert stack == state.masks()
    assert vi.attrs["framescope_version"] == fs.__version__
    for name, spec in stack.items():
        ref = np.einsum("ijkl,kl->ij", frames, spec.rasterize((32, 32)))
        np.testing.assert_allclose(vi.sel(mask=name), ref, rtol=1e-5)
    np.testing.assert_array_equal(ds["virtual_image_done"], [1, 1, 1])
    np.testing.assert_allclose(ds["frame"], frames.mean(axis=(0, 1)))
    assert ds["frame"].attrs["mode"] == "mean"
    for key in ("com_x", "com_y", "com_magnitude", "com_divergence", "com_curl"):
        assert ds[key].dims == ("scan_y", "scan_x")
    assert ds.attrs["com_radius"] == 7.0
    assert "arr.fs.virtual_image(masks)" in ds.attrs["code"]
    assert results_bytes(state)[:8] == b"\x89HDF\r\n\x1a\n"  # NetCDF4 is HDF5


def test_writing_needs_no_dask_client(state, tmp_path):
    import dask

    state.start()
    assert state.jobs.wait(timeout=120)
    # as in `framescope serve`: dask set to a distributed scheduler this thread cannot see
    with dask.config.set(scheduler="dask.distributed"):
        path = write_results(state, tmp_path / "out.h5")
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        assert list(ds["mask"].values) == ["bf", "adf"]


def test_dataset_marks_unfinished_images(state):
    state.start()
    ds = results_dataset(state)  # jobs may still run: done fractions say how far
    assert ds["virtual_image_done"].shape == (2,)
    assert ((ds["virtual_image_done"] >= 0) & (ds["virtual_image_done"] <= 1)).all()
    assert state.jobs.wait(timeout=120)
