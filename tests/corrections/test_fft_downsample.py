"""FFT downsampling in the corrections stage, against numpy FFTs and analytic frames."""

from __future__ import annotations

import contextlib
import queue
import threading

import numpy as np
import pytest

import framescope as fs
import framescope.masks as fm
from framescope.corrections import Corrections, CorrectionsError, fft_downsample, fold_masks
from framescope.engine._run import _prepare
from framescope.udf import ApplyMasks, SumFrame

SCAN, DET = (3, 4), (16, 20)


def crop_1d(x: np.ndarray, m: int, axis: int) -> np.ndarray:
    """numpy reference along one axis: fft, fftshift, the centred m frequencies, ifft, real
    part (it preserves the sum: ifft of m samples divides by m)."""
    n = x.shape[axis]
    spec = np.fft.fftshift(np.fft.fft(x, axis=axis), axes=axis)
    kept = np.take(spec, np.arange(n // 2 - m // 2, n // 2 - m // 2 + m), axis=axis)
    return np.fft.ifft(np.fft.ifftshift(kept, axes=axis), axis=axis).real


def reference(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The documented filter: the 1D reference along y, then along x (float64)."""
    return crop_1d(crop_1d(np.asarray(x, np.float64), shape[0], -2), shape[1], -1)


def reference_2d(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """fft2 + fftshift + centred 2D crop + ifft2, real part (equal to :func:`reference`
    unless both output sides are even: then the corner frequency differs)."""
    (h, w), (ho, wo) = x.shape[-2:], shape
    spec = np.fft.fftshift(np.fft.fft2(x), axes=(-2, -1))
    y0, x0 = h // 2 - ho // 2, w // 2 - wo // 2
    kept = spec[..., y0:y0 + ho, x0:x0 + wo]
    return np.fft.ifft2(np.fft.ifftshift(kept, axes=(-2, -1))).real


SHAPES = [(16, 20, 8, 10), (16, 20, 5, 7), (15, 17, 6, 4), (15, 17, 15, 9), (9, 12, 2, 3),
          (16, 20, 16, 1), (8, 8, 1, 1)]


@pytest.mark.parametrize(("h", "w", "ho", "wo"), SHAPES)
def test_equals_the_numpy_reference_and_keeps_the_sum(h, w, ho, wo):
    x = np.random.default_rng(h * w + ho).normal(5, 2, (3, h, w))
    got = fft_downsample(x, (ho, wo))
    want = reference(x, (ho, wo))
    np.testing.assert_allclose(got, want, atol=1e-10)
    np.testing.assert_allclose(got.sum(axis=(1, 2)), x.sum(axis=(1, 2)), rtol=1e-12)
    if ho % 2 or wo % 2:  # no corner frequency: the 2D crop is the same filter
        np.testing.assert_allclose(got, reference_2d(x, (ho, wo)), atol=1e-10)
    # float32 frames stay float32, within float32 rounding
    got32 = fft_downsample(x.astype(np.float32), (ho, wo))
    assert got32.dtype == np.float32
    np.testing.assert_allclose(got32, want, atol=1e-4 * np.abs(want).max())


def test_even_outputs_treat_the_nyquist_frequencies_symmetrically():
    # a circular mirror of the frame mirrors the output (the 2D crop alone does not: it
    # keeps one diagonal pair of the four corner frequencies)
    x = np.random.default_rng(1).normal(size=(16, 20))
    got = fft_downsample(x, (8, 10))
    mirrored = fft_downsample(x[(-np.arange(16)) % 16], (8, 10))
    np.testing.assert_allclose(mirrored, got[(-np.arange(8)) % 8], atol=1e-12)
    two_d = reference_2d(x, (8, 10))
    two_d_mirrored = reference_2d(x[(-np.arange(16)) % 16], (8, 10))
    assert not np.allclose(two_d_mirrored, two_d[(-np.arange(8)) % 8])
    # a cosine at the output's Nyquist row and column: kept at half weight
    yy, xx = np.mgrid[:16, :20]
    nyq = np.cos(np.pi * yy / 2) * np.cos(np.pi * xx / 2)  # period 4 = 2 output pixels
    np.testing.assert_allclose(fft_downsample(nyq, (8, 10)),
                               0.25 * 4 * nyq[::2, ::2], atol=1e-12)


@pytest.mark.parametrize(("h", "w", "ho", "wo"), [(16, 20, 8, 10), (15, 17, 7, 6),
                                                  (24, 18, 9, 9)])
def test_a_band_limited_frame_is_sampled_exactly(h, w, ho, wo):
    # cosines strictly inside the output band: the output is the frame on the coarse grid
    # (output pixel m at input pixel m * h / ho) times h w / (ho wo)
    rng = np.random.default_rng(7)
    waves = [(0, 0), (1, 0), (0, 2), (2, -1), ((ho - 1) // 2, (wo - 1) // 2)]

    def frame(y, x):
        total = np.full(np.broadcast(y, x).shape, 3.0)
        for (ky, kx), a, phi in zip(waves, rng.uniform(0.5, 1, 5), rng.uniform(0, 6, 5),
                                    strict=True):
            total += a * np.cos(2 * np.pi * (ky * y / h + kx * x / w) + phi)
        return total

    state = rng.bit_generator.state
    x = frame(*np.mgrid[:h, :w].astype(float))
    rng.bit_generator.state = state  # the same amplitudes and phases
    coarse = frame(*np.meshgrid(np.arange(ho) * h / ho, np.arange(wo) * w / wo,
                                indexing="ij"))
    np.testing.assert_allclose(fft_downsample(x, (ho, wo)), coarse * (h * w) / (ho * wo),
                               atol=1e-10)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(12)
    frames = rng.poisson(20, (*SCAN, *DET)).astype(np.uint16)
    dark = rng.normal(3.0, 0.5, DET).astype(np.float32)
    gain = rng.uniform(0.8, 1.25, DET).astype(np.float32)
    bad = np.zeros(DET, bool)
    bad[[0, 5, 9], [0, 9, 19]] = True
    return frames, dark, gain, bad


def corrected(frames, dark, gain, bad, crop=None, k=1, shape=None):
    """dark, gain, zeroed bad pixels, crop and binning in numpy, then :func:`reference`."""
    x = (frames.astype(np.float32) - dark) * gain
    x[..., bad] = 0
    if crop is not None:
        x = x[..., crop[0]:crop[1], crop[2]:crop[3]]
    if k > 1:
        *lead, h, w = x.shape
        x = x.reshape(*lead, h // k, k, w // k, k).sum(axis=(-3, -1))
    return x if shape is None else reference(x, shape)


@pytest.mark.parametrize(("fft", "crop", "k", "shape"), [
    ((6, 9), None, 1, (6, 9)),
    (2, (0, 16, 2, 18), 2, (4, 4)),  # crop, bin, then a factor
    ((7, 8), (1, 16, 0, 20), 1, (7, 8)),
])
def test_a_file_run_equals_numpy(data, tmp_path, fft, crop, k, shape):
    frames, dark, gain, bad = data
    np.save(tmp_path / "frames.npy", frames)
    arr = fs.open(tmp_path / "frames.npy")
    c = Corrections(dark=dark, gain=gain, bad=bad, crop=crop, bin=k, fft_downsample=fft)
    assert c.output_shape(DET) == shape
    want = corrected(frames, dark, gain, bad, crop, k, shape)
    got = fs.run(SumFrame(), arr, corrections=c, client="inline")
    np.testing.assert_allclose(got["sum"].values, want.sum(axis=(0, 1)), rtol=1e-5)
    # a virtual detector is not folded into the raw frames: it runs on the FFT tiles
    disk = fm.disk(shape[0] / 2, shape[1] / 2, 2)
    mask = disk.rasterize(shape)
    assert fold_masks(c, mask[None], DET) is None
    assert _prepare(ApplyMasks(disk), arr.fs.with_corrections(c), None)[3].corrections == c
    vi = arr.fs.virtual_image(disk, corrections=c, client="inline")
    np.testing.assert_allclose(vi.values, (want * mask).sum(axis=(2, 3)), rtol=1e-4)


def test_detector_coordinates_and_calibration_follow(data):
    frames = data[0]
    arr = fs.from_array(frames).fs.calibrate(angle_per_px="0.5 mrad", center=(8, 10),
                                             energy="200 kV")
    c = Corrections(fft_downsample=2)
    res = arr.fs.sum_frame(corrections=c, client="inline")
    # output pixel m samples raw pixel 2 m: its coordinate
    np.testing.assert_allclose(res["det_x"].values, arr["det_x"].values[::2])
    np.testing.assert_allclose(res["det_y"].values, arr["det_y"].values[::2])
    cal = fs.corrections.corrected_calibration(arr.fs.calibration, c, DET)
    assert cal.angle_per_px == pytest.approx(1e-3)
    assert cal.center == pytest.approx((4.0, 5.0))
    # a ring in mrad on the downsampled frames: centre (4, 5), 1 mrad per pixel
    vi = arr.fs.virtual_image(fm.ring(r_in=1, r_out=3, units="mrad"), corrections=c,
                              client="inline")
    mask = fm.ring(4, 5, 1, 3).rasterize((8, 10))
    small = reference(frames, (8, 10))
    np.testing.assert_allclose(vi.values, (small * mask).sum(axis=(2, 3)), rtol=1e-5)
    # a shape that makes pixels non-square cannot keep one angle per pixel
    with pytest.raises(CorrectionsError, match=r"scales y by 2 and x by 4"):
        arr.fs.sum_frame(corrections=Corrections(fft_downsample=(8, 5)), client="inline")
    # uncalibrated: any shape; pixel indices at m * h / h_out
    plain = fs.from_array(frames).fs.sum_frame(corrections=Corrections(fft_downsample=(8, 8)),
                                               client="inline")
    np.testing.assert_allclose(plain["det_x"].values, np.arange(8) * 2.5)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"fft_downsample": 0}, r"fft_downsample: expected a factor >= 1 or an output shape"),
    ({"fft_downsample": (4, 0)}, r"fft_downsample: expected .* found \(4, 0\)"),
    ({"fft_downsample": "2"}, r"fft_downsample: expected .* found '2'"),
    ({"fft_downsample": (2, 3, 4)}, r"fft_downsample: expected"),
])
def test_bad_fft_parameters_are_named(kwargs, message):
    with pytest.raises(CorrectionsError, match=message):
        Corrections(**kwargs)


def test_fft_shapes_that_do_not_fit_the_frames(data):
    arr = fs.from_array(data[0])
    with pytest.raises(CorrectionsError, match=r"fft_downsample: the 16x20 frame does not "
                                               r"divide by the factor 3"):
        arr.fs.with_corrections(fft_downsample=3)
    with pytest.raises(CorrectionsError, match=r"at most the binned 8x10 frame, found 9x4"):
        arr.fs.with_corrections(bin=2, fft_downsample=(9, 4))
    assert Corrections(fft_downsample=1) == Corrections()  # a factor 1 is none
    assert Corrections(fft_downsample=2) != Corrections(fft_downsample=(8, 10))


@contextlib.contextmanager
def simulator(**kwargs):
    """The stream simulator in a thread, bound to a free port on 127.0.0.1; its endpoint."""
    from framescope.live import simulate_stream

    q: queue.Queue = queue.Queue()
    t = threading.Thread(target=lambda: simulate_stream("tcp://127.0.0.1:0", on_bound=q.put,
                                                        **kwargs), daemon=True)
    t.start()
    try:
        yield q.get(timeout=60)
    finally:
        t.join(timeout=30)


def test_a_stream_with_fft_downsampling_equals_numpy(data):
    from framescope.live import ZMQSource

    frames, dark, gain, bad = data
    c = Corrections(dark=dark, gain=gain, bad=bad, fft_downsample=(8, 5))
    want = corrected(frames, dark, gain, bad, shape=(8, 5))
    disk = fm.disk(4, 2, 2)
    udfs = {"sum": SumFrame(), "vd": ApplyMasks({"d": disk})}
    src = ZMQSource("tcp://127.0.0.1:0", "dectris-stream2", scan=SCAN)
    with simulator(protocol="dectris-stream2", scan=SCAN, det=DET, rate=0,
                   source=fs.from_array(frames)) as endpoint:
        src.endpoint = endpoint
        job = fs.submit(udfs, src, corrections=c)
        live = job.result(60)
        job.cancel()
    np.testing.assert_allclose(live["sum"]["sum"].values, want.sum(axis=(0, 1)), rtol=1e-5)
    np.testing.assert_allclose(live["vd"]["intensity"].values[..., 0],
                               (want * disk.rasterize((8, 5))).sum(axis=(2, 3)), rtol=1e-4)
    np.testing.assert_allclose(live["sum"]["det_x"].values, np.arange(5) * 4.0)


def test_the_cli_flag(data, tmp_path):
    import xarray as xr

    from framescope.cli import main

    frames = data[0]
    np.save(tmp_path / "f.npy", frames)
    out = tmp_path / "vi.nc"
    assert main(["virtual-image", str(tmp_path / "f.npy"), "--mask", "disk:3,4,2",
                 "--fft-downsample", "8x10", "--out", str(out), "-q"]) == 0
    want = (reference(frames, (8, 10)) * fm.disk(3, 4, 2).rasterize((8, 10))).sum((2, 3))
    with xr.open_dataset(out) as ds:
        np.testing.assert_allclose(ds["intensity"].values.reshape(SCAN), want, rtol=1e-5)
        assert '"fft_downsample": [8, 10]' in ds.attrs["corrections"]
    with pytest.raises(SystemExit):
        main(["virtual-image", str(tmp_path / "f.npy"), "--mask", "disk:3,4,2",
              "--fft-downsample", "2x", "--out", str(out), "-q"])
