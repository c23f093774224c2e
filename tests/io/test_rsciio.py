"""Formats through rosettasciio: files written by rsciio's own writers (blockfile, TVIPS) or
byte by byte (EMPAD), read back through ``framescope.open``."""

from __future__ import annotations

import logging
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

import framescope
from framescope.calibration import Calibration, combine
from framescope.errors import FormatError, FramescopeError
from framescope.io import reader_for
from framescope.io._rsciio import RsciioReader, axes_calibration
from framescope.testing import ReaderContract

rsciio = pytest.importorskip("rsciio")  # the 'formats' extra

# relativistic electron wavelength at 200 kV, tabulated (e.g. Williams & Carter, table 1.1)
LAMBDA_200KV = 2.5079e-12


def _axis(name, size, scale=1.0, offset=0.0, units=None, navigate=False):
    return {"name": name, "size": size, "scale": scale, "offset": offset, "units": units,
            "navigate": navigate}


def _signal(data, axes, metadata=None, original_metadata=None):
    return {"data": data, "axes": axes, "metadata": metadata or {},
            "original_metadata": original_metadata or {}, "attributes": {"_lazy": False}}


def _reader(arr) -> RsciioReader:
    return arr.encoding["framescope_source"].reader


# ---- blockfile: 4D, scan in nm, detector in cm, beam energy in the header ---------------

@pytest.fixture
def blockfile(tmp_path):
    pytest.importorskip("skimage")  # rsciio's blockfile module imports it
    from rsciio.blockfile import file_writer

    ref = np.random.default_rng(3).integers(0, 256, (3, 5, 8, 8), dtype=np.uint8)
    axes = [_axis("y", 3, 2.0, units="nm", navigate=True),
            _axis("x", 5, 25.0, units="Å", navigate=True),
            _axis("dy", 8, 0.01, units="cm"), _axis("dx", 8, 0.01, units="cm")]
    # header fields as ASTAR writes them: beam energy in V
    header = {"Beam_energy": 200_000, "Note": "framescope test"}
    path = tmp_path / "sped.blo"
    file_writer(str(path), _signal(ref, axes, original_metadata={"blockfile_header": header}))
    return path, ref


def test_blockfile_frames_and_calibration(blockfile):
    path, ref = blockfile
    assert reader_for(path) is RsciioReader
    arr = framescope.open(path, chunks=1)
    assert arr.attrs["format"] == "rsciio"
    assert arr.attrs["rsciio_plugin"] == "Blockfile"
    assert arr.shape == ref.shape
    assert arr.dtype == np.uint8
    np.testing.assert_array_equal(arr.values, ref)
    np.testing.assert_array_equal(arr[1:, 2:4].values, ref[1:, 2:4])

    fields = _reader(arr).calibration_fields
    assert set(fields) == {"scan_step", "pixel_size", "energy"}
    np.testing.assert_allclose(fields["scan_step"][0], (2.0e-9, 2.5e-9), rtol=1e-12)
    assert "sped.blo" in fields["scan_step"][1]
    assert "(nm)" in fields["scan_step"][1]
    assert fields["pixel_size"][0] == pytest.approx(1e-4)  # 0.01 cm
    assert fields["energy"][0] == pytest.approx(200e3)
    assert "beam_energy" in fields["energy"][1]
    cal = combine(fields)
    assert cal.scan_step == pytest.approx((2.0e-9, 2.5e-9))
    assert cal.energy == pytest.approx(200e3)
    assert cal.sources["scan_step"] == fields["scan_step"][1]
    # framescope.open applies what the file says: scan coords in nm, attrs["calibration"]
    np.testing.assert_allclose(arr.scan_y.values, np.arange(3) * 2.0)
    np.testing.assert_allclose(arr.scan_x.values, np.arange(5) * 2.5)
    assert arr.scan_x.attrs["units"] == "nm"
    assert Calibration.from_json(arr.attrs["calibration"]) == cal
    # the rsciio facts are in attrs, JSON-able
    assert arr.attrs["rsciio_axes_units"] == ["nm", "nm", "cm", "cm"]
    assert arr.attrs["rsciio_beam_energy_kv"] == pytest.approx(200.0)


def test_blockfile_analysis_equals_numpy(blockfile):
    path, ref = blockfile
    arr = framescope.open(path, chunks=2)
    np.testing.assert_array_equal(arr.fs.sum_frame().values, ref.sum(axis=(0, 1)))
    yy, xx = np.mgrid[:8, :8]
    mask = ((yy - 4) ** 2 + (xx - 3) ** 2 <= 6).astype(np.float32)
    vi = arr.fs.virtual_image(mask).values
    np.testing.assert_allclose(vi, np.einsum("ijkl,kl->ij", ref.astype(np.float64), mask))


def test_blockfile_reader_pickles_without_the_array(blockfile):
    path, ref = blockfile
    reader = _reader(framescope.open(path))
    reader.read(0, 2)  # opens rsciio's lazy array in this process
    clone = pickle.loads(pickle.dumps(reader))
    assert "_data" not in clone.__dict__  # reopened where it is used
    np.testing.assert_array_equal(clone.read(4, 11), ref.reshape(15, 8, 8)[4:11])


# ---- TVIPS: a 3D frame stack + scan=, detector in 1/nm, beam energy in kV ---------------

def _write_tvips(path, ref, *, energy_kv: float | None, recip_per_px: int = 2):
    from rsciio.tvips import file_writer

    # rsciio 0.15's writer stores axes[0].scale as the pixel size (in 1/nm, an integer)
    axes = [_axis("time", ref.shape[0], float(recip_per_px), units="1/nm", navigate=True),
            _axis("dy", ref.shape[1], float(recip_per_px), units="1/nm"),
            _axis("dx", ref.shape[2], float(recip_per_px), units="1/nm")]
    md = {"Acquisition_instrument": {"TEM": {"beam_energy": energy_kv}}} if energy_kv else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        file_writer(str(path), _signal(ref, axes, md), show_progressbar=False)


class TestTvips(ReaderContract):
    @pytest.fixture
    def case(self, tmp_path):
        ref = np.random.default_rng(5).integers(0, 60000, (4, 3, 6, 7), dtype=np.uint16)
        path = tmp_path / "movie_000.tvips"
        _write_tvips(path, ref.reshape(12, 6, 7), energy_kv=None)
        assert _reader(framescope.open(path, scan=(4, 3))).calibration_fields == {}
        return path, ref, {"scan": (4, 3)}


def test_tvips_reciprocal_axes_become_mrad(tmp_path):
    ref = np.random.default_rng(6).integers(0, 4000, (6, 16, 16), dtype=np.uint16)
    path = tmp_path / "dp_000.tvips"
    _write_tvips(path, ref, energy_kv=200)
    arr = framescope.open(path, scan=(2, 3))
    np.testing.assert_array_equal(arr.values, ref.reshape(2, 3, 16, 16))
    fields = _reader(arr).calibration_fields
    assert set(fields) == {"energy", "angle_per_px"}  # a frame stack has no scan step
    assert fields["energy"][0] == pytest.approx(200e3)
    # 2 nm⁻¹ per pixel × λ(200 kV) = 5.016 mrad per pixel
    assert fields["angle_per_px"][0] == pytest.approx(2e9 * LAMBDA_200KV, rel=1e-4)
    assert "1/nm" in fields["angle_per_px"][1]
    # opened with the file's calibration: the detector in mrad from the middle
    assert arr.det_x.attrs["units"] == "mrad"
    np.testing.assert_allclose(arr.det_x.values, (np.arange(16) - 8) * 2e9 * LAMBDA_200KV * 1e3,
                               rtol=1e-4)
    assert Calibration.from_json(arr.attrs["calibration"]).sources == {
        k: where for k, (_, where) in fields.items()}


# ---- EMPAD: XML + raw written byte by byte (rsciio has no EMPAD writer) -------------------

def _write_empad(tmp_path, scan=(3, 4), fov_m=None):
    rng = np.random.default_rng(7)
    # 128 x 128 float32 frames, each followed by two footer rows
    raw = rng.random((*scan, 130, 128), dtype=np.float32)
    raw_name = f"scan_x{scan[1]}_y{scan[0]}.raw"
    raw.tofile(tmp_path / raw_name)
    fov = ""
    if fov_m is not None:  # the field of view is stored times its scale factor
        fov = (f"<iom_measurements><full_scan_field_of_view><x>{fov_m * 0.72!r}</x>"
               "<scale_factor>0.72</scale_factor></full_scan_field_of_view></iom_measurements>")
    # no whitespace between elements: rsciio's XML parser takes it for text
    xml = (f'<root><raw_file filename="{raw_name}"/><pix_x>{scan[1]}</pix_x>'
           f"<pix_y>{scan[0]}</pix_y>{fov}</root>")
    path = tmp_path / "acquisition.xml"
    path.write_text(xml)
    return path, raw[..., :128, :]


def test_empad_frames_scan_step_and_centre(tmp_path, caplog):
    path, ref = _write_empad(tmp_path, fov_m=4 * 2.5e-9)  # 4 px along the longer side
    with caplog.at_level(logging.DEBUG, logger="framescope.io._rsciio"):
        arr = framescope.open(path, q_calibration=0.5, chunks=1)
    assert arr.attrs["rsciio_plugin"] == "EMPAD"  # after JobinYvon, which also takes .xml
    assert arr.dtype == np.float32
    np.testing.assert_array_equal(arr.values, ref)
    fields = _reader(arr).calibration_fields
    assert fields["scan_step"][0] == pytest.approx((2.5e-9, 2.5e-9), rel=1e-9)
    # EMPAD puts the axes' origin 64 px before the first pixel
    assert fields["center"][0] == pytest.approx((64.0, 64.0))
    # 1/nm without a beam energy cannot become an angle: left out, said at debug
    assert "angle_per_px" not in fields
    assert "energy" not in fields
    assert any("no beam energy" in r.getMessage() for r in caplog.records)
    np.testing.assert_allclose(arr.fs.sum_frame().values, ref.sum(axis=(0, 1), dtype=np.float64),
                               rtol=1e-5)


def test_empad_uncalibrated_detector_still_gives_the_centre(tmp_path):
    path, ref = _write_empad(tmp_path, scan=(2, 2))
    arr = framescope.open(path)
    np.testing.assert_array_equal(arr[1, 0].values, ref[1, 0])
    # no field of view: the scan axes have no length unit; the detector has no unit but
    # the frames are diffraction patterns, so its origin is still the centre
    assert set(_reader(arr).calibration_fields) == {"center"}


# ---- mapping rsciio axes, without files ---------------------------------------------

NAV = [_axis("y", 4, 0.5, units="Å", navigate=True), _axis("x", 6, 0.25, units="nm",
                                                             navigate=True)]


def test_axes_calibration_angles_and_centre():
    sig = [_axis("ky", 32, 0.5, -8.0, "mrad"), _axis("kx", 32, 0.5, -6.0, "mrad")]
    md = {"Acquisition_instrument": {"TEM": {"beam_energy": 300, "convergence_angle": 20}}}
    out = axes_calibration("f.dm4", "DigitalMicrograph", NAV, sig, md)
    assert out["scan_step"][0] == pytest.approx((0.5e-10, 0.25e-9))
    assert out["angle_per_px"][0] == pytest.approx(0.5e-3)
    assert out["center"][0] == pytest.approx((16.0, 12.0))
    assert out["energy"][0] == pytest.approx(300e3)
    assert out["semiconv"][0] == pytest.approx(20e-3)
    assert out["angle_per_px"][1] == "f.dm4: rsciio DigitalMicrograph axes['ky','kx'].scale (mrad)"


@pytest.mark.parametrize("units", ["1/Å", "Å^-1", "1 / A", "nm⁻¹"])
def test_axes_calibration_reciprocal_units(units):
    per_m = 0.02e10 if "a" in units.lower() or "å" in units.lower() else 0.02e9
    sig = [_axis("ky", 8, 0.02, units=units), _axis("kx", 8, 0.02, units=units)]
    md = {"Acquisition_instrument": {"TEM": {"beam_energy": 200}}}
    out = axes_calibration("f", "p", [], sig, md)
    assert out["angle_per_px"][0] == pytest.approx(per_m * LAMBDA_200KV, rel=1e-4)


def test_axes_calibration_leaves_out_what_it_cannot_read(caplog):
    sig = [_axis("ky", 8, 1.0, -4.0, "px"), _axis("kx", 8, 1.0, -4.0, "px")]
    nav = [_axis("y", 3, 1.0, units="<undefined>", navigate=True),
           _axis("x", 3, 1.0, units=None, navigate=True)]
    with caplog.at_level(logging.DEBUG, logger="framescope.io._rsciio"):
        assert axes_calibration("f", "p", nav, sig, {}) == {}
    assert len(caplog.records) == 2  # the scan and the detector, each said once
    # the two detector axes disagree: no single angle per pixel
    uneven = [_axis("ky", 8, 0.5, units="mrad"), _axis("kx", 8, 0.6, units="mrad")]
    assert "angle_per_px" not in axes_calibration("f", "p", [], uneven, {})
    # offsets that put the centre off the detector are not a centre
    off = [_axis("ky", 8, 0.5, 2.0, "mrad"), _axis("kx", 8, 0.5, 2.0, "mrad")]
    assert "center" not in axes_calibration("f", "p", [], off, {})
    # TVIPS labels an uncalibrated scan "nm" with scale 1
    assert "scan_step" not in axes_calibration("f", "TVIPS", NAV, off, {})
    # real-space image stacks: a length on the frames is not a detector pixel size
    img = [_axis("y", 8, 0.1, units="nm"), _axis("x", 8, 0.1, units="nm")]
    assert axes_calibration("f", "p", [], img, {"Signal": {"signal_type": "image"}}) == {}


# ---- errors and the registry -----------------------------------------------------------

def test_bad_file_names_the_file(tmp_path):
    bad = tmp_path / "broken.dm4"
    bad.write_bytes(b"not a DigitalMicrograph file" * 10)
    with pytest.raises(FormatError, match=r"broken\.dm4.*DigitalMicrograph") as info:
        framescope.open(bad)
    assert isinstance(info.value, FramescopeError)


def test_not_frames_names_what_was_found(tmp_path):
    # a 1 x 1 EMPAD scan reads as one 2D image: no navigation axis
    path, _ = _write_empad(tmp_path, scan=(1, 1))
    with pytest.raises(FormatError, match=r"acquisition\.xml.*EMPAD: expected 2 signal axes "
                       r"and 1 or 2 navigation axes, found signal 0: shape \(128, 128\)"):
        framescope.open(path)


def test_unknown_plugin_and_suffix(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("hello")
    with pytest.raises(FormatError, match=r"x\.txt.*no rosettasciio plugin reads 'txt'"):
        framescope.open(path, format="rsciio")
    with pytest.raises(FormatError, match=r"x\.txt.*unknown rosettasciio plugin 'nope'"):
        framescope.open(path, format="rsciio", plugin="nope")


def test_own_formats_keep_their_suffixes_and_do_not_import_rsciio(tmp_path):
    for name, fmt in [("a.mib", "mib"), ("a.hdr", "mib"), ("a.npy", "npy"), ("a.h5", "hdf5"),
                      ("a.hspy", "hdf5"), ("a.raw", "raw"), ("a.dm4", "rsciio"),
                      ("a.blo", "rsciio"), ("a_000.tvips", "rsciio")]:
        assert reader_for(tmp_path / name).format == fmt, name
    path = tmp_path / "d.npy"
    np.save(path, np.zeros((4, 3, 3), np.uint16))
    code = ("import sys, framescope; framescope.open(sys.argv[1]).values; "
            "assert 'rsciio' not in sys.modules, 'rsciio imported'")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=120)
