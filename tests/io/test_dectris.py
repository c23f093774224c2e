"""DectrisReader: the reader contract on series built with plain h5py, write_dectris, errors."""

from __future__ import annotations

import logging
import pickle
import shutil
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import numpy as np
import pytest

import framescope
from framescope.errors import CompressionPluginError, FormatError, ScanShapeError
from framescope.io import reader_for
from framescope.io._dectris import DataFileMissingError, DectrisReader
from framescope.io._hdf5 import Hdf5Reader
from framescope.io._hdf5_write import write_dectris
from framescope.testing import ReaderContract, file_digest

FRAME = (6, 5)


def make_frames(n: int, dtype: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return rng.normal(100, 30, (n, *FRAME)).astype(dt)
    hi = min(np.iinfo(dt).max, 2**31 - 1) + 1
    return rng.integers(0, hi, (n, *FRAME), dtype=np.int64).astype(dt)


def build_series(
    folder: Path, frames: np.ndarray, frames_per_file: int, *,
    compression: dict[str, Any] | None = None, nimages: int | None = None,
    instrument: dict[str, tuple[Any, str | None] | None] | None = None,
) -> Path:
    """A DECTRIS-like series written with plain h5py, independent of write_dectris.

    ``instrument``: entries under ``/entry/instrument`` as ``path -> (value, units)``
    (``"beam/incident_wavelength": (0.0197, "angstrom")``), added to or replacing the
    defaults; None removes a default.
    """
    folder.mkdir(parents=True, exist_ok=True)
    compression = dict(hdf5plugin.Bitshuffle(cname="lz4")) if compression is None else compression
    master = folder / "scan_master.h5"
    with h5py.File(master, "w") as m:
        for i, first in enumerate(range(0, len(frames), frames_per_file), start=1):
            name = f"scan_data_{i:06d}.h5"
            with h5py.File(folder / name, "w") as d:
                d.create_dataset("/entry/data/data", data=frames[first : first + frames_per_file],
                                 chunks=(1, *FRAME), **compression)
            m[f"/entry/data/data_{i:06d}"] = h5py.ExternalLink(name, "/entry/data/data")
        det = m.create_group("/entry/instrument/detector")
        entries: dict[str, tuple[Any, str | None] | None] = {
            "detector/detector_distance": (0.25, "m"), "detector/count_time": (0.001, "s"),
            "detector/beam_center_x": (2.5, "pixel"), "detector/description": ("EIGER", None),
            **(instrument or {}),
        }
        for key, entry in entries.items():
            if entry is None:
                continue
            value, units = entry
            m[f"/entry/instrument/{key}"] = value
            if units:
                m[f"/entry/instrument/{key}"].attrs["units"] = units
        det["detectorSpecific/nimages"] = len(frames) if nimages is None else nimages
        det["detectorSpecific/ntrigger"] = 1
        det["detectorSpecific/flatfield"] = np.ones(FRAME, np.float32)
    return master


# id: (dtype, frames, scan, frames per file, compression)
CASES = {
    "u16-bslz4-5x7-fpf8": ("u2", 35, (5, 7), 8, None),
    "u32-bslz4-13x17-fpf50": ("u4", 221, (13, 17), 50, None),
    "u8-plain-5x7-onefile": ("u1", 35, (5, 7), 35, {}),
    "f32-gzip-5x7-fpf1": ("f4", 35, (5, 7), 1, {"compression": "gzip"}),
    "u16-lz4-square-fpf5": ("u2", 36, None, 5, dict(hdf5plugin.LZ4())),
}


class TestDectrisContract(ReaderContract):
    @pytest.fixture(params=list(CASES))
    def case(self, request, tmp_path):
        dtype, n, scan, fpf, compression = CASES[request.param]
        frames = make_frames(n, dtype, seed=n)
        master = build_series(tmp_path / "series", frames, fpf, compression=compression)
        side = scan or (6, 6)
        kw = {"scan": scan} if scan else {}
        return master, frames.reshape(*side, *FRAME), kw


def test_reader_facts_and_metadata(tmp_path):
    frames = make_frames(35, "u2")
    master = build_series(tmp_path, frames, 8)
    assert reader_for(master) is DectrisReader
    assert reader_for(tmp_path / "scan_data_000001.h5") is Hdf5Reader
    reader = DectrisReader(str(master))
    assert len(reader.files) == 5
    assert (reader.n_frames, reader.frame_shape, reader.dtype) == (35, FRAME, np.dtype("u2"))
    meta = reader.metadata
    assert meta["detector_distance"] == 0.25
    assert meta["detector_distance_units"] == "m"
    assert meta["description"] == "EIGER"
    assert meta["nimages"] == 35
    assert meta["filters"] == ["bitshuffle+lz4"]
    assert "flatfield" not in meta
    arr = framescope.open(master, scan=(5, 7))
    assert arr.attrs["format"] == "dectris"
    assert arr.attrs["detector_distance_units"] == "m"


def test_reads_spanning_files(tmp_path):
    frames = make_frames(35, "u2")
    reader = DectrisReader(str(build_series(tmp_path, frames, 8)))
    for start, stop in [(0, 35), (7, 9), (8, 16), (3, 30), (34, 35), (15, 17)]:
        np.testing.assert_array_equal(reader.read(start, stop), frames[start:stop])
    clone = pickle.loads(pickle.dumps(reader))
    assert "_handles" not in clone.__dict__
    np.testing.assert_array_equal(clone.read(5, 33), frames[5:33])
    reader.close()


def test_links_resolved_next_to_master(tmp_path, monkeypatch):
    frames = make_frames(20, "u2")
    build_series(tmp_path / "a", frames, 8)
    shutil.copytree(tmp_path / "a", tmp_path / "moved")
    shutil.rmtree(tmp_path / "a")
    monkeypatch.chdir(tmp_path)  # neither the cwd nor the old folder holds the data files
    reader = DectrisReader("moved/scan_master.h5")
    np.testing.assert_array_equal(reader.read(0, 20), frames)


def test_write_dectris_round_trip(tmp_path):
    frames = make_frames(35, "u2")
    blocks = (frames[i : i + 6] for i in range(0, 35, 6))  # blocks cut data files
    master = write_dectris(tmp_path / "sim_master.h5", blocks, n_frames=35, frame_shape=FRAME,
                           dtype="u2", frames_per_file=8,
                           metadata={"detector_distance": 0.3, "operator": "test"})
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f"sim_data_00000{i}.h5" for i in range(1, 6)] + ["sim_master.h5"]
    with h5py.File(master, "r") as m:  # layout as the detector writes it
        link = m["/entry/data"].get("data_000002", getlink=True)
        assert isinstance(link, h5py.ExternalLink)
        assert (link.filename, link.path) == ("sim_data_000002.h5", "/entry/data/data")
        assert m["/entry/instrument/detector/detector_distance"].attrs["units"] == "m"
    with h5py.File(tmp_path / "sim_data_000002.h5", "r") as d:
        dset = d["/entry/data/data"]
        np.testing.assert_array_equal(dset[()], frames[8:16])
        assert dset.chunks == (1, *FRAME)
        assert dset.attrs["image_nr_low"] == 9
        assert dset.attrs["image_nr_high"] == 16
    arr = framescope.open(master, scan=(5, 7))
    np.testing.assert_array_equal(arr.values.reshape(35, *FRAME), frames)
    assert arr.attrs["detector_distance"] == 0.3
    assert arr.attrs["detector_distance_units"] == "m"
    assert arr.attrs["operator"] == "test"
    assert arr.attrs["nimages"] == 35
    assert arr.attrs["x_pixels_in_detector"] == FRAME[1]


@pytest.mark.parametrize("compression", [None, "lz4", "gzip"])
def test_write_dectris_compressions(tmp_path, compression):
    frames = make_frames(9, "u4")
    master = write_dectris(tmp_path / "c_master.h5", [frames[:4], frames[4:]], n_frames=9,
                           frame_shape=FRAME, dtype="u4", frames_per_file=4,
                           compression=compression)
    np.testing.assert_array_equal(DectrisReader(str(master)).read(0, 9), frames)


def test_missing_data_file(tmp_path):
    master = build_series(tmp_path, make_frames(35, "u2"), 8)
    missing = tmp_path / "scan_data_000003.h5"
    missing.unlink()
    with pytest.raises(DataFileMissingError) as info:
        framescope.open(master, scan=(5, 7))
    msg = str(info.value)
    assert str(master) in msg
    assert str(missing) in msg
    assert isinstance(info.value, FormatError)
    assert isinstance(info.value, FileNotFoundError)


def test_not_a_master(tmp_path):
    path = tmp_path / "odd_master.h5"
    with h5py.File(path, "w") as f:
        f["/entry/instrument/detector/count_time"] = 0.1
    with pytest.raises(FormatError, match="data_NNNNNN"):
        framescope.open(path)


def test_nimages_mismatch_warns(tmp_path, caplog):
    master = build_series(tmp_path, make_frames(35, "u2"), 8, nimages=40)
    with caplog.at_level(logging.WARNING, logger="framescope.io._dectris"):
        reader = DectrisReader(str(master))
    assert reader.n_frames == 35
    assert "announces 40 frames" in caplog.text


def test_missing_filter_plugin(tmp_path):
    master = build_series(tmp_path, make_frames(8, "u2"), 4)
    data = tmp_path / "scan_data_000002.h5"
    with h5py.File(data, "w") as d:
        dset = d.create_dataset("/entry/data/data", shape=(4, *FRAME), dtype="u2",
                                chunks=(1, *FRAME), compression=32999, allow_unknown_filter=True)
        for i in range(4):  # claim the unknown filter was applied to each chunk
            dset.id.write_direct_chunk((i, 0, 0), bytes(2 * FRAME[0] * FRAME[1]), filter_mask=0)
    with pytest.raises(CompressionPluginError) as info:
        framescope.open(master, scan=(2, 4))
    msg = str(info.value)
    assert str(data) in msg
    assert "32999" in msg
    assert "pip install hdf5plugin" in msg


def test_scan_shape_not_fitting(tmp_path):
    master = build_series(tmp_path, make_frames(35, "u2"), 8)
    with pytest.raises(ScanShapeError, match="cannot infer"):
        framescope.open(master)
    with pytest.raises(ScanShapeError, match="needs 36 frames"):
        framescope.open(master, scan=(6, 6))


def test_series_untouched(tmp_path):
    frames = make_frames(35, "u2")
    master = build_series(tmp_path, frames, 8)
    before = file_digest(tmp_path)  # master and every data file
    arr = framescope.open(master, scan=(5, 7))
    np.testing.assert_array_equal(arr.values.reshape(35, *FRAME), frames)
    assert file_digest(tmp_path) == before


def test_token_tracks_data_files(tmp_path):
    # a series no reader has read: no process holds it open, so it can be rewritten
    master = build_series(tmp_path, make_frames(35, "u2"), 8)
    token = DectrisReader(str(master)).token()
    with h5py.File(tmp_path / "scan_data_000005.h5", "r+") as d:  # touch a data file only
        d["/entry/data/data"][0] = 0
    assert DectrisReader(str(master)).token() != token


def test_write_dectris_scan_and_overwrite(tmp_path):
    frames = make_frames(35, "u2")
    kw = {"n_frames": 35, "frame_shape": FRAME, "dtype": "u2", "frames_per_file": 8}
    master = write_dectris(tmp_path / "s_master.h5", [frames], scan=(5, 7), **kw)
    arr = framescope.open(master)  # the recorded scan shape needs no scan=
    assert arr.shape == (5, 7, *FRAME)
    np.testing.assert_array_equal(arr.values.reshape(35, *FRAME), frames)
    with pytest.raises(FileExistsError):
        write_dectris(master, [frames], **kw)
    write_dectris(master, [frames[::-1]], overwrite=True, **kw)
    np.testing.assert_array_equal(DectrisReader(str(master)).read(0, 35), frames[::-1])


def test_save_as_dectris(tmp_path):
    from framescope.io._export import save

    frames = make_frames(35, "u2")
    out = save(framescope.from_array(frames, scan=(5, 7)), tmp_path / "x_master.h5", "dectris",
               progress=False, frames_per_file=8)
    arr = framescope.open(out)
    assert arr.attrs["format"] == "dectris"
    np.testing.assert_array_equal(arr.values.reshape(35, *FRAME), frames)
