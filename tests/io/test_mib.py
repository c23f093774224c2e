"""Merlin ``.mib`` reader and writer.

References are decoded with plain numpy from the file bytes (or the bytes are built here), so
they do not depend on the reader.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest

import framescope
from framescope.errors import FileSizeError, FormatError, HeaderError, ScanShapeError
from framescope.io._mib import MibReader
from framescope.io._mib_write import header_bytes, write_mib
from framescope.testing import ReaderContract

CODES = {"uint8": "U08", "uint16": "U16", "uint32": "U32"}
LAYOUTS = {"1x1": (1, (16, 16)), "2x2": (4, (32, 32))}


def make_frames(n: int, shape: tuple[int, int], dtype: str, seed: int = 0) -> np.ndarray:
    info = np.iinfo(dtype)
    rng = np.random.default_rng(seed)
    return rng.integers(0, info.max, size=(n, *shape), dtype=dtype, endpoint=True)


def mib_bytes(
    frames: np.ndarray, *, n_chips: int = 1, layout: str = "  1x1", seq0: int = 1,
    pad: bytes = b" ", header_len: int | None = None,
) -> bytes:
    """Frames as .mib bytes, built here without the writer (space padding, short header)."""
    _, h, w = frames.shape
    header_len = header_len or header_bytes(n_chips)
    code = CODES[frames.dtype.name]
    out = bytearray()
    for i, frame in enumerate(frames):
        text = (
            f"MQ1,{seq0 + i:06d},{header_len:05d},{n_chips:02d},{w:04d},{h:04d},{code},"
            f"{layout},{(1 << n_chips) - 1:02X},2024-03-01 12:00:00.{i:06d},0.000500,0,0,1,"
            "8.0E+0,5.11E+2,0,0,0,0,0,0,3RX,"
        ).encode()
        out += text.ljust(header_len, pad) + frame.astype(frame.dtype.newbyteorder(">")).tobytes()
    return bytes(out)


def numpy_decode(path: Path, header_len: int, shape: tuple[int, int], dtype: str) -> np.ndarray:
    """Frames of a .mib file read with plain numpy: fixed-size records, big-endian pixels."""
    be = np.dtype(dtype).newbyteorder(">")
    record = header_len + shape[0] * shape[1] * be.itemsize
    raw = np.fromfile(path, dtype=np.uint8).reshape(-1, record)
    assert all(bytes(r[:4]) == b"MQ1," for r in raw)
    return raw[:, header_len:].copy().view(be).reshape(-1, *shape).astype(dtype)


def hdr_text(n_frames: int, fpt: int) -> str:
    return (
        "HDR,\t\nTime and Date Stamp (day, mnth, yr, hr min s):\t01/03/2024 12:00:00\n"
        f"Counter Depth (number):\t12\nFrames in Acquisition (Number):\t{n_frames}\n"
        f"Frames per Trigger (Number):\t{fpt}\nEnd\t\n"
    )


def sha256(*paths: Path) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


CASES = [
    *({"src": "writer", "dtype": dt, "layout": lay, "scan": (5, 7), "hdr": lay == "1x1"}
      for dt in CODES for lay in LAYOUTS),
    {"src": "bytes", "dtype": "uint16", "layout": "1x1", "scan": (13, 17)},
    {"src": "bytes", "dtype": "uint32", "layout": "2x2", "scan": (5, 7)},
    {"src": "multi", "dtype": "uint16", "layout": "1x1", "scan": (13, 17)},
]


def _case_id(c: dict) -> str:
    return f"{c['src']}-{c['dtype']}-{c['layout']}-{c['scan'][0]}x{c['scan'][1]}"


class TestMibContract(ReaderContract):
    @pytest.fixture(params=CASES, ids=_case_id)
    def case(self, request, tmp_path):
        c = request.param
        n_chips, shape = LAYOUTS[c["layout"]]
        scan = c["scan"]
        n = scan[0] * scan[1]
        frames = make_frames(n, shape, c["dtype"])
        layout = f"{c['layout']:>6}"
        if c["src"] == "writer":
            path = write_mib(
                tmp_path / "scan.mib", (frames[i : i + 4] for i in range(0, n, 4)), n_frames=n,
                frame_shape=shape, dtype=c["dtype"], layout=c["layout"], scan=scan,
                hdr=c["hdr"],
            )
            ref = numpy_decode(path, header_bytes(n_chips), shape, c["dtype"])
            np.testing.assert_array_equal(ref, frames)  # the writer wrote what it was given
            kw = {} if c["hdr"] else {"scan": scan}  # with a .hdr the scan shape is read
        elif c["src"] == "bytes":
            path = tmp_path / "scan.mib"
            path.write_bytes(mib_bytes(frames, n_chips=n_chips, layout=layout))
            ref, kw = frames, {"scan": scan}
        else:  # one acquisition in uneven files, named by a .hdr, scan from Frames per Trigger
            cuts = [0, 50, 51, 120, n]
            for k, (a, b) in enumerate(itertools.pairwise(cuts), start=1):
                (tmp_path / f"scan_{k}.mib").write_bytes(mib_bytes(frames[a:b], seq0=a + 1))
            path = tmp_path / "scan.hdr"
            path.write_text(hdr_text(n, scan[1]))
            ref, kw = frames, {}
        return path, ref.reshape(*scan, *shape), kw


@pytest.fixture
def quad_file(tmp_path) -> tuple[Path, np.ndarray]:
    frames = make_frames(40, (32, 32), "uint16", seed=1)
    path = write_mib(tmp_path / "quad.mib", [frames], n_frames=40, frame_shape=(32, 32),
                     layout="2x2", hdr=False)
    return path, frames


def test_hdr_scan_shape_and_metadata(tmp_path):
    frames = make_frames(35, (16, 16), "uint16")
    path = write_mib(tmp_path / "a.mib", [frames], n_frames=35, frame_shape=(16, 16),
                     scan=(5, 7))
    for opened in (path, path.with_suffix(".hdr")):
        reader = MibReader(os.fspath(opened))
        assert reader.scan_shape == (5, 7)
        assert reader.metadata["frames_per_trigger"] == 7
        assert reader.metadata["counter_depth"] == 12
        assert reader.metadata["n_chips"] == 1
        assert reader.metadata["header_bytes"] == 384
        assert len(reader.metadata["thresholds"]) == 8
    arr = framescope.open(path.with_suffix(".hdr"))
    assert arr.shape == (5, 7, 16, 16)
    assert arr.attrs["format"] == "mib"
    assert arr.attrs["frames_in_acquisition"] == 35


@pytest.mark.parametrize(("fpt", "expected"), [(1, None), (6, None), (35, None), (5, (7, 5))])
def test_hdr_frames_per_trigger(tmp_path, fpt, expected):
    path = tmp_path / "b.mib"
    path.write_bytes(mib_bytes(make_frames(35, (16, 16), "uint8")))
    path.with_suffix(".hdr").write_text(hdr_text(35, fpt))
    assert MibReader(os.fspath(path)).scan_shape == expected


def test_multi_file_natural_order(tmp_path):
    # one file per frame: name_10 must come after name_9
    frames = make_frames(12, (16, 16), "uint16")
    for i in range(12):
        (tmp_path / f"run_{i + 1}.mib").write_bytes(mib_bytes(frames[i : i + 1], seq0=i + 1))
    hdr = tmp_path / "run.hdr"
    hdr.write_text(hdr_text(12, 4))
    arr = framescope.open(hdr)
    assert arr.shape == (3, 4, 16, 16)
    assert arr.attrs["n_files"] == 12
    files = sorted(tmp_path.glob("*.mib"))
    before = sha256(*files)
    np.testing.assert_array_equal(arr.values.reshape(12, 16, 16), frames)
    assert sha256(*files) == before


def test_multi_file_token_sees_every_file(tmp_path):
    frames = make_frames(4, (16, 16), "uint16")
    for i in range(2):
        (tmp_path / f"t_{i + 1}.mib").write_bytes(mib_bytes(frames[2 * i : 2 * i + 2]))
    (tmp_path / "t.hdr").write_text(hdr_text(4, 2))
    reader = MibReader(os.fspath(tmp_path / "t.hdr"))
    token = reader.token()
    (tmp_path / "t_2.mib").write_bytes(mib_bytes(frames[:2][::-1]))
    os.utime(tmp_path / "t_2.mib", ns=(1, 1))
    assert MibReader(os.fspath(tmp_path / "t.hdr")).token() != token


def test_multi_file_gap_and_missing(tmp_path):
    frames = make_frames(2, (16, 16), "uint8")
    hdr = tmp_path / "g.hdr"
    hdr.write_text(hdr_text(3, 1))
    with pytest.raises(FormatError, match=r"g\.hdr.*no data file"):
        MibReader(os.fspath(hdr))
    for k in (1, 3):
        (tmp_path / f"g_{k}.mib").write_bytes(mib_bytes(frames[:1]))
    with pytest.raises(FormatError, match=r"g_2\.mib is missing"):
        MibReader(os.fspath(hdr))


@pytest.mark.parametrize("offset", [0, 3, -2])
def test_scan_and_sync_offset(quad_file, offset):
    path, frames = quad_file
    arr = framescope.open(path, scan=(5, 7), sync_offset=offset)
    padded = np.concatenate([np.zeros((max(-offset, 0), 32, 32), "uint16"), frames])
    expected = padded[max(offset, 0) :][:35].reshape(5, 7, 32, 32)
    np.testing.assert_array_equal(arr.values, expected)
    np.testing.assert_array_equal(arr[4, 2:5].values, expected[4, 2:5])


def test_scan_needs_more_frames(quad_file):
    path, _ = quad_file
    with pytest.raises(ScanShapeError, match=r"7x7 needs 49 frames, found 40"):
        framescope.open(path, scan=(7, 7))
    with pytest.raises(ScanShapeError, match=r"sync_offset 6"):
        framescope.open(path, scan=(5, 7), sync_offset=6)


def test_truncated_file(quad_file, tmp_path):
    path, _ = quad_file
    record = 768 + 32 * 32 * 2
    cut = tmp_path / "cut.mib"
    cut.write_bytes(path.read_bytes()[: 40 * record - 100])
    with pytest.raises(FileSizeError, match="truncated") as info:
        MibReader(os.fspath(cut))
    message = str(info.value)
    assert os.fspath(cut) in message
    assert str(40 * record) in message
    assert str(40 * record - 100) in message


def _patch(path: Path, at: int, data: bytes) -> None:
    raw = bytearray(path.read_bytes())
    raw[at : at + len(data)] = data
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    ("at", "data", "match"),
    [
        (0, b"XQ1,", "starting with 'MQ1,'"),
        (20, b"00x6", r"field 4 \(width\) should be an integer, found '00x6'"),
        (30, b"U12", r"field 6 \(dtype\) 'U12' is not supported; expected one of U08, U16"),
        (30, b"R64", r"raw mode \(R64"),
        (11, b"00064", "data offset 64 is smaller than the header text"),
        (17, b"\x00", "4 comma-separated fields"),
    ],
)
def test_corrupt_first_header(tmp_path, at, data, match):
    path = tmp_path / "bad.mib"
    path.write_bytes(mib_bytes(make_frames(4, (16, 16), "uint16"), pad=b"\x00"))
    _patch(path, at, data)
    with pytest.raises(HeaderError, match=match) as info:
        MibReader(os.fspath(path))
    assert os.fspath(path) in str(info.value)


def test_too_few_fields(tmp_path):
    path = tmp_path / "short.mib"
    path.write_bytes(b"MQ1,000001,00384,01,0016,0016,U16,".ljust(384, b"\x00") + bytes(512))
    with pytest.raises(HeaderError, match="8 comma-separated fields, expected at least 14"):
        MibReader(os.fspath(path))


def test_corrupt_last_header(quad_file, tmp_path):
    path, _ = quad_file
    record = 768 + 32 * 32 * 2
    bad = tmp_path / "bad_last.mib"
    bad.write_bytes(path.read_bytes())
    _patch(bad, 39 * record, b"\x00\x00\x00\x00")
    with pytest.raises(HeaderError, match=rf"last frame \(39\) at byte {39 * record}.*'MQ1,'"):
        MibReader(os.fspath(bad))
    # a last frame of another type: same size, but the header disagrees with frame 0
    bad.write_bytes(path.read_bytes())
    _patch(bad, 39 * record + 30, b"U08")
    with pytest.raises(HeaderError, match=r"expected data offset 768, 32x32 U16.*found .*U08"):
        MibReader(os.fspath(bad))


def test_misaligned_frames(tmp_path):
    # a frame of another size in the middle shifts the last header off its expected place
    a = mib_bytes(make_frames(3, (16, 16), "uint16"))
    b = mib_bytes(make_frames(1, (16, 8), "uint16"))
    path = tmp_path / "mixed.mib"
    path.write_bytes(a + b + a[: len(a) - len(b)])
    with pytest.raises(FormatError, match=re.escape(os.fspath(path))):
        MibReader(os.fspath(path))


def test_reader_pickles_without_maps(quad_file):
    path, frames = quad_file
    reader = MibReader(os.fspath(path))
    np.testing.assert_array_equal(reader.read(38, 40), frames[38:40])
    assert "_maps" in reader.__dict__
    clone = pickle.loads(pickle.dumps(reader))
    assert "_maps" not in clone.__dict__
    np.testing.assert_array_equal(clone.read(0, 3), frames[:3])
    assert reader.dtype == np.dtype("uint16")
    assert reader.dtype.isnative


def test_guess_can_open(tmp_path):
    envi = tmp_path / "image.hdr"
    envi.write_text("ENVI\nsamples = 10\n")
    merlin = tmp_path / "scan.hdr"
    merlin.write_text(hdr_text(4, 2))
    assert MibReader.guess_can_open(tmp_path / "x.MIB")
    assert MibReader.guess_can_open(merlin)
    assert not MibReader.guess_can_open(envi)
    assert not MibReader.guess_can_open(tmp_path / "x.raw")


def test_writer_checks_counts_and_shapes(tmp_path):
    frames = make_frames(4, (16, 16), "uint16")
    path = tmp_path / "w.mib"
    with pytest.raises(ValueError, match="expected 5 frames, the blocks held 4"):
        write_mib(path, [frames], n_frames=5, frame_shape=(16, 16))
    assert not path.exists()
    with pytest.raises(ValueError, match="frames 16x8"):
        write_mib(path, [frames], n_frames=4, frame_shape=(16, 8))
    with pytest.raises(ValueError, match="dtype"):
        write_mib(path, [frames], n_frames=4, frame_shape=(16, 16), dtype="float32")
    with pytest.raises(ValueError, match="layout"):
        write_mib(path, [frames], n_frames=4, frame_shape=(16, 16), layout="quad")


def test_writer_headers(tmp_path):
    frames = make_frames(3, (16, 16), "uint8")
    path = write_mib(tmp_path / "h.mib", iter(frames), n_frames=3, frame_shape=(16, 16),
                     dtype="uint8", scan=(1, 3))
    raw = path.read_bytes()
    record = 384 + 256
    assert len(raw) == 3 * record
    for i in range(3):
        fields = raw[i * record : (i + 1) * record].split(b"\x00")[0].split(b",")
        assert fields[:9] == [b"MQ1", f"{i + 1:06d}".encode(), b"00384", b"01", b"0016",
                              b"0016", b"U08", b"   1x1", b"01"]
        assert b"MQ1A" in fields
    assert "Frames per Trigger (Number):\t3" in path.with_suffix(".hdr").read_text()


def test_writer_small_buffer_uint64(tmp_path, monkeypatch):
    from framescope.io import _mib_write

    monkeypatch.setattr(_mib_write, "_BUFFER_BYTES", 5000)  # 2 frames per write
    frames = make_frames(7, (16, 16), "uint64")
    path = write_mib(tmp_path / "u64.mib", [frames[:3], frames[3:]], n_frames=7,
                     frame_shape=(16, 16), dtype="uint64", layout="4x1", hdr=False)
    np.testing.assert_array_equal(numpy_decode(path, 768, (16, 16), "uint64"), frames)
    reader = MibReader(os.fspath(path))
    assert reader.metadata["layout"] == "4x1"
    np.testing.assert_array_equal(reader.read(0, 7), frames)


def test_long_header_and_frame_count_warning(tmp_path, caplog):
    frames = make_frames(6, (16, 16), "uint16")
    path = tmp_path / "long.mib"
    path.write_bytes(mib_bytes(frames, header_len=4096, seq0=10))
    path.with_suffix(".hdr").write_text(hdr_text(8, 3))
    with caplog.at_level("WARNING", logger="framescope.io._mib"):
        reader = MibReader(os.fspath(path))
    assert "the .hdr says 8 frames, the files hold 6" in caplog.text
    assert reader.scan_shape == (2, 3)
    np.testing.assert_array_equal(reader.read(1, 5), frames[1:5])
