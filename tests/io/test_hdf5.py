"""Hdf5Reader: the reader contract on files written with plain h5py, plus bad input."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import numpy as np
import pytest

import framescope
from framescope.errors import CompressionPluginError, DatasetNotFoundError, ScanShapeError
from framescope.io import reader_for
from framescope.io._hdf5 import Hdf5Reader, row_pieces
from framescope.io._hdf5_write import write_hdf5
from framescope.testing import ReaderContract, file_digest

FRAME = (6, 5)


def make_frames(shape: tuple[int, ...], dtype: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return rng.normal(100, 30, shape).astype(dt)
    hi = min(np.iinfo(dt).max, 2**31 - 1) + 1
    return rng.integers(0, hi, shape, dtype=np.int64).astype(dt)


COMPRESSION = {
    None: {},
    "bslz4": dict(hdf5plugin.Bitshuffle(cname="lz4")),
    "gzip": {"compression": "gzip"},
}

# id: (dtype, layout, scan, compression, chunk frames along the flat/scan_x axis)
CASES = {
    "u8-3d-plain-5x7": ("u1", "3d", (5, 7), None, 4),
    "u16-4d-bslz4-13x17": ("u2", "4d", (13, 17), "bslz4", 5),
    "u32-3d-gzip-13x17": ("u4", "3d", (13, 17), "gzip", 3),
    "f32-4d-contiguous-5x7": ("f4", "4d", (5, 7), None, None),
    "be-u2-4d-gzip-5x7": (">u2", "4d", (5, 7), "gzip", 2),
    "be-u2-3d-plain-5x7": (">u2", "3d", (5, 7), None, 1),
    "u16-3d-bslz4-square": ("u2", "3d-square", (6, 6), "bslz4", 1),
    "u16-3d-named": ("u2", "3d-named", (5, 7), None, 7),
}


def write_case(path: Path, case_id: str) -> tuple[np.ndarray, dict[str, Any]]:
    """Write one case with plain h5py; return the 4D reference and the open kwargs."""
    dtype, layout, scan, compression, chunk = CASES[case_id]
    ref = make_frames((*scan, *FRAME), dtype, seed=len(case_id))
    flat = ref.reshape(-1, *FRAME)
    kw: dict[str, Any] = {}
    with h5py.File(path, "w") as f:
        f["/entry/axis"] = np.arange(10)  # 1D and 2D distractors
        f["/entry/mask"] = np.ones(FRAME, np.uint8)
        if layout == "4d":
            chunks = (1, chunk, *FRAME) if chunk else None
            f.create_dataset("/entry/data/frames", data=ref, chunks=chunks,
                             **COMPRESSION[compression])
            # a larger 3D dataset loses against the 4D one
            f.create_dataset("/entry/other/stack", data=np.zeros((300, *FRAME), np.uint16))
        else:
            f.create_dataset("/entry/data/frames", data=flat, chunks=(chunk, *FRAME),
                             **COMPRESSION[compression])
            # a smaller 3D dataset loses against the larger one…
            f.create_dataset("/entry/other/small", data=np.zeros((2, *FRAME), np.uint16))
            if layout == "3d":
                kw["scan"] = scan
        if layout == "3d-named":
            # …unless the caller names the dataset
            f.create_dataset("/entry/other/bigger", data=np.zeros((500, *FRAME), np.uint16))
            kw["dataset"] = "/entry/data/frames"
            kw["scan"] = scan
        f["/entry/data/frames"].attrs["exposure_s"] = 0.001
        f["/entry/data/frames"].attrs["big"] = np.zeros(1000)
    return ref, kw


class TestHdf5Contract(ReaderContract):
    @pytest.fixture(params=list(CASES))
    def case(self, request, tmp_path):
        path = tmp_path / "frames.h5"
        ref, kw = write_case(path, request.param)
        return path, ref, kw


def test_reader_facts_and_metadata(tmp_path):
    path = tmp_path / "frames.h5"
    write_case(path, "u16-4d-bslz4-13x17")
    assert reader_for(path) is Hdf5Reader
    reader = Hdf5Reader(str(path))
    assert reader.scan_shape == (13, 17)
    assert (reader.n_frames, reader.frame_shape) == (13 * 17, FRAME)
    assert reader.metadata["dataset"] == "/entry/data/frames"
    assert reader.metadata["filters"] == ["bitshuffle+lz4"]
    assert reader.metadata["chunks"] == [1, 5, *FRAME]
    assert reader.metadata["exposure_s"] == 0.001
    assert "big" not in reader.metadata
    arr = framescope.open(path)
    assert arr.attrs["format"] == "hdf5"
    assert arr.attrs["exposure_s"] == 0.001


def test_big_endian_reads_native(tmp_path):
    path = tmp_path / "frames.h5"
    ref, _ = write_case(path, "be-u2-4d-gzip-5x7")
    reader = Hdf5Reader(str(path))
    assert reader.dtype == np.dtype("u2")
    assert reader.dtype.isnative
    got = reader.read(3, 20)
    assert got.dtype.isnative
    np.testing.assert_array_equal(got, ref.reshape(-1, *FRAME)[3:20])


def test_pickle_drops_handle_and_token_names_dataset(tmp_path):
    path = tmp_path / "two.h5"
    a = make_frames((12, *FRAME), "u2", 1)
    b = make_frames((12, *FRAME), "u2", 2)
    with h5py.File(path, "w") as f:
        f["a"], f["b"] = a, b
    ra, rb = Hdf5Reader(str(path), dataset="a"), Hdf5Reader(str(path), dataset="/b")
    ra.read(0, 3)
    assert "_h5" in ra.__dict__
    clone = pickle.loads(pickle.dumps(ra))
    assert "_h5" not in clone.__dict__
    np.testing.assert_array_equal(clone.read(0, 12), a)
    np.testing.assert_array_equal(rb.read(0, 12), b)
    assert ra.token() != rb.token()
    xa = framescope.open(path, dataset="a", scan=(3, 4))
    xb = framescope.open(path, dataset="b", scan=(3, 4))
    assert xa.data.name != xb.data.name
    ra.close()


@pytest.mark.parametrize(("start", "stop"), [(0, 35), (3, 5), (7, 14), (6, 8), (2, 30), (0, 0)])
def test_row_pieces_cover_range(start, stop):
    nx = 7
    pieces = list(row_pieces(start, stop, nx))
    assert len(pieces) <= 3
    frames = []
    for pos, y0, y1, x0, x1 in pieces:
        assert pos == len(frames)
        frames += [y * nx + x for y in range(y0, y1) for x in range(x0, x1)]
    assert frames == list(range(start, stop))


@pytest.mark.parametrize("compression", [None, "bslz4", "lz4", "gzip"])
@pytest.mark.parametrize("scan", [None, (5, 7)])
def test_write_hdf5_round_trip(tmp_path, compression, scan):
    frames = make_frames((35, *FRAME), ">u2" if compression == "gzip" else "u2")
    blocks = (frames[i : i + 6] for i in range(0, 35, 6))  # blocks cut scan rows
    path = write_hdf5(tmp_path / "w.h5", blocks, n_frames=35, frame_shape=FRAME,
                      dtype=frames.dtype, scan=scan, compression=compression,
                      metadata={"note": "sim"})
    with h5py.File(path, "r") as f:  # read back with plain h5py
        dset = f["/data/frames"]
        assert dset.shape == ((*scan, *FRAME) if scan else (35, *FRAME))
        assert dset.dtype == frames.dtype
        np.testing.assert_array_equal(dset[()].reshape(35, *FRAME), frames)
        assert dset.attrs["note"] == "sim"
    arr = framescope.open(path, scan=(5, 7))
    np.testing.assert_array_equal(arr.values.reshape(35, *FRAME), frames)


def test_write_hdf5_rejects_wrong_frame_count(tmp_path):
    frames = make_frames((10, *FRAME), "u2")
    with pytest.raises(ValueError, match="expected n_frames=12"):
        write_hdf5(tmp_path / "w.h5", [frames], n_frames=12, frame_shape=FRAME, dtype="u2")
    assert not (tmp_path / "w.h5").exists()


def test_no_suitable_dataset(tmp_path):
    path = tmp_path / "flat.h5"
    with h5py.File(path, "w") as f:
        f["/spectrum"] = np.arange(100)
        f["/image"] = np.zeros((8, 8))
    with pytest.raises(DatasetNotFoundError) as info:
        framescope.open(path)
    msg = str(info.value)
    assert str(path) in msg
    assert "/spectrum (100,)" in msg
    assert "/image (8, 8)" in msg


def test_named_dataset_missing(tmp_path):
    path = tmp_path / "frames.h5"
    write_case(path, "u8-3d-plain-5x7")
    with pytest.raises(DatasetNotFoundError, match="'/nope' is missing") as info:
        framescope.open(path, dataset="/nope", scan=(5, 7))
    assert "/entry/data/frames" in str(info.value)  # lists what is usable
    assert isinstance(info.value, KeyError)
    with pytest.raises(DatasetNotFoundError, match="expected a non-empty 3D or 4D"):
        framescope.open(path, dataset="/entry/mask")


def test_external_links_not_followed(tmp_path):
    target = tmp_path / "target.h5"
    with h5py.File(target, "w") as f:
        f["frames"] = np.zeros((40, *FRAME), np.uint16)  # larger, but behind a link
    path = tmp_path / "links.h5"
    with h5py.File(path, "w") as f:
        f["ext"] = h5py.ExternalLink(target.name, "/frames")
        f["data/frames"] = np.ones((9, *FRAME), np.uint16)
        f["soft"] = h5py.SoftLink("/data/frames")
    assert Hdf5Reader(str(path)).dataset == "/data/frames"
    assert Hdf5Reader(str(path), dataset="/soft").n_frames == 9


def _unknown_filter_file(path: Path, *, filtered: bool) -> np.ndarray:
    frames = make_frames((4, *FRAME), "u2")
    with h5py.File(path, "w") as f:
        dset = f.create_dataset("frames", shape=frames.shape, dtype="u2", chunks=(1, *FRAME),
                                compression=32999, allow_unknown_filter=True)
        for i, frame in enumerate(frames):
            # filter_mask 0 claims filter 32999 was applied, as if written with the plugin
            dset.id.write_direct_chunk((i, 0, 0), frame.tobytes(),
                                       filter_mask=0 if filtered else 1)
    return frames


def test_missing_filter_plugin(tmp_path):
    assert not h5py.h5z.filter_avail(32999)
    path = tmp_path / "plugin.h5"
    _unknown_filter_file(path, filtered=True)
    with pytest.raises(CompressionPluginError) as info:
        framescope.open(path, scan=(2, 2))
    msg = str(info.value)
    assert str(path) in msg
    assert "32999" in msg
    assert "/frames" in msg
    assert "pip install hdf5plugin" in msg


def test_optional_filter_skipped_on_write_reads(tmp_path):
    # h5py marks unknown filters optional: HDF5 skipped it, the chunks are stored raw
    path = tmp_path / "skipped.h5"
    frames = _unknown_filter_file(path, filtered=False)
    arr = framescope.open(path, scan=(2, 2))
    np.testing.assert_array_equal(arr.values.reshape(4, *FRAME), frames)


def test_scan_shape_not_fitting(tmp_path):
    path = tmp_path / "frames.h5"
    write_case(path, "u8-3d-plain-5x7")
    with pytest.raises(ScanShapeError, match="cannot infer"):
        framescope.open(path)  # 35 frames are not a square
    with pytest.raises(ScanShapeError, match="needs 36 frames"):
        framescope.open(path, scan=(6, 6))


def test_bad_inputs_leave_file_untouched(tmp_path):
    path = tmp_path / "plugin.h5"
    _unknown_filter_file(path, filtered=True)
    before = file_digest(path)
    with pytest.raises(CompressionPluginError):
        framescope.open(path, scan=(2, 2))
    with pytest.raises(DatasetNotFoundError):
        framescope.open(path, dataset="/nope")
    assert file_digest(path) == before


def test_write_hdf5_overwrite(tmp_path):
    frames = make_frames((12, *FRAME), "u2")
    kw = {"n_frames": 12, "frame_shape": FRAME, "dtype": "u2", "scan": (3, 4)}
    path = write_hdf5(tmp_path / "w.h5", [frames], **kw)
    with pytest.raises(FileExistsError):
        write_hdf5(path, [frames], **kw)
    reader = Hdf5Reader(str(path))
    reader.read(0, 12)  # holds the file open
    write_hdf5(path, [frames[::-1]], overwrite=True, **kw)
    np.testing.assert_array_equal(Hdf5Reader(str(path)).read(0, 12), frames[::-1])
    np.testing.assert_array_equal(reader.read(0, 12), frames)  # still the old file
    reader.close()


def test_save_as_hdf5(tmp_path):
    from framescope.io._export import save

    ref = make_frames((5, 7, *FRAME), "u2")
    out = save(framescope.from_array(ref), tmp_path / "out.h5", "hdf5", progress=False,
               compression="bslz4")
    arr = framescope.open(out)
    assert arr.sizes["scan_y"] == 5
    np.testing.assert_array_equal(arr.values, ref)
