from __future__ import annotations

import pickle

import numpy as np
import pytest

import framescope
from framescope.datasets import SyntheticReader, convergent_probe, phase_object, synthetic
from framescope.io import DIMS

SCAN = (8, 9)
DET = (32, 32)


def small(**kw):
    kw.setdefault("scan", SCAN)
    kw.setdefault("det", DET)
    return synthetic(**kw)


def centre_of_mass(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COM in detector px relative to the optical axis pixel ``det // 2``, plain numpy."""
    frames = frames.astype(np.float64)
    h, w = frames.shape[-2:]
    total = frames.sum(axis=(-2, -1))
    com_y = (frames.sum(axis=-1) * np.arange(h)).sum(axis=-1) / total - h // 2
    com_x = (frames.sum(axis=-2) * np.arange(w)).sum(axis=-1) / total - w // 2
    return com_y, com_x


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32", "float32"])
def test_shape_dtype_dims_and_coords(dtype):
    arr = small(dtype=dtype, dose=2e3)
    assert arr.dims == DIMS
    assert arr.shape == (*SCAN, *DET)
    assert arr.dtype == np.dtype(dtype)
    assert arr.chunks is not None  # lazy
    assert arr.attrs["format"] == "synthetic"
    assert arr.attrs["simulated"] is True
    assert arr.attrs["seed"] == 0
    for name in ("true_phase", "true_phase_gradient_y", "true_phase_gradient_x"):
        assert arr[name].dims == DIMS[:2]
        assert np.isfinite(arr[name].values).all()
    source = arr.encoding["framescope_source"]
    assert isinstance(source.reader, SyntheticReader)
    values = arr.values
    assert values.dtype == np.dtype(dtype)
    assert values.min() >= 0
    assert values.sum() > 0


def test_deterministic_by_seed():
    a = small(seed=3).values
    b = small(seed=3).values
    c = small(seed=4).values
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(small(seed=3).true_phase.values, small(seed=4).true_phase.values)


def test_frames_independent_of_read_range():
    ref = small().values
    for chunks in (1, 3, {"scan_y": 2, "scan_x": 4}):
        np.testing.assert_array_equal(small(chunks=chunks).values, ref)
    reader = SyntheticReader(SCAN, DET)
    flat = ref.reshape(-1, *DET)
    for start, stop in [(0, 1), (5, 6), (7, 40), (63, 72), (71, 72)]:
        np.testing.assert_array_equal(reader.read(start, stop), flat[start:stop])
    # a small FFT block forces reads to straddle blocks
    reader.block = 5
    np.testing.assert_array_equal(reader.read(3, 17), flat[3:17])


def test_reader_pickles_without_model_and_token_is_parametric():
    reader = SyntheticReader(SCAN, DET, seed=2)
    ref = reader.read(0, reader.n_frames)
    assert "_model" in reader.__dict__
    clone = pickle.loads(pickle.dumps(reader))
    assert "_model" not in clone.__dict__
    np.testing.assert_array_equal(clone.read(0, clone.n_frames), ref)
    assert clone.token() == reader.token()
    assert SyntheticReader(SCAN, DET, seed=2, dose=1.0).token() != reader.token()


def test_distributed_workers(client):
    arr = small(chunks=2, seed=5)
    np.testing.assert_array_equal(client.compute(arr.data).result(), arr.values)


def test_mean_total_counts_match_dose():
    dose = 1e4
    arr = small(dtype="uint16", dose=dose)
    totals = arr.values.sum(axis=(2, 3), dtype=np.int64).ravel()
    # a phase object absorbs nothing: each total is Poisson(dose)
    n = totals.size
    assert abs(totals.mean() - dose) < 5 * np.sqrt(dose / n)
    assert 0.4 < totals.var(ddof=1) / dose < 1.8
    exact = small(dtype="float32", dose=dose, noise=False).values.sum(axis=(2, 3))
    np.testing.assert_allclose(exact, dose, rtol=1e-4)


def test_integer_counts_are_clipped_not_wrapped():
    u8 = small(dtype="uint8", dose=1e6).values
    u16 = small(dtype="uint16", dose=1e6).values
    assert u16.max() > 255  # the bright-field disk saturates uint8
    np.testing.assert_array_equal(u8, np.minimum(u16, 255))


@pytest.mark.parametrize("semiconv", [3.0, 6.0])
def test_bright_field_disk_centred(semiconv):
    mean = small(semiconv=semiconv, dose=1e4).values.mean(axis=(0, 1))
    h, w = DET
    r = np.hypot(*np.meshgrid(np.arange(h) - h // 2, np.arange(w) - w // 2, indexing="ij"))
    assert mean[r <= semiconv + 2].sum() > 0.9 * mean.sum()
    assert mean[r <= semiconv - 1].min() > 0.2 * mean.max()  # a filled disk, not a ring


@pytest.mark.parametrize(("step", "defocus"), [(1, 0.0), (2, 0.0), (1, 2.0)])
def test_centre_of_mass_follows_phase_gradient(step, defocus):
    arr = small(dtype="float32", dose=1e6, step=step, defocus=defocus, seed=1)
    com_y, com_x = centre_of_mass(arr.values)
    h, w = DET
    # COM - det//2 = det / (2 pi) * <grad phi>, same axes, same sign
    expect_y = h / (2 * np.pi) * arr.true_phase_gradient_y.values
    expect_x = w / (2 * np.pi) * arr.true_phase_gradient_x.values
    for got, expect in ((com_y, expect_y), (com_x, expect_x)):
        assert np.corrcoef(got.ravel(), expect.ravel())[0, 1] > 0.9
        slope = np.polyfit(expect.ravel(), got.ravel(), 1)[0]
        assert 0.9 < slope < 1.1


def test_probe_spilling_out_of_window_warns(caplog):
    small(defocus=12.0).encoding["framescope_source"].reader.probe  # noqa: B018
    assert "does not fit" in caplog.text


def test_true_phase_is_object_phase_at_probe_centre():
    arr = small(step=2, seed=7)
    reader = arr.encoding["framescope_source"].reader
    h, w = DET
    expect = reader.phase[h // 2 : h // 2 + 2 * SCAN[0] : 2, w // 2 : w // 2 + 2 * SCAN[1] : 2]
    np.testing.assert_array_equal(arr.true_phase.values, expect)
    assert reader.phase.shape == (2 * (SCAN[0] - 1) + h, 2 * (SCAN[1] - 1) + w)


def test_phase_object_and_probe():
    phi = phase_object((40, 50), seed=1, smooth_phase=0.0, atom_phase=0.5, atom_density=0.01)
    np.testing.assert_array_equal(phi, phase_object((40, 50), seed=1, smooth_phase=0.0,
                                                    atom_phase=0.5, atom_density=0.01))
    # 20 atoms of integral 0.5 * 2 pi sigma²
    np.testing.assert_allclose(phi.sum(), 20 * 0.5 * 2 * np.pi * 1.5**2, rtol=1e-3)
    probe = convergent_probe((32, 32), 4.0)
    np.testing.assert_allclose((np.abs(probe) ** 2).sum(), 1.0)
    assert np.unravel_index(np.abs(probe).argmax(), probe.shape) == (16, 16)


@pytest.mark.parametrize(
    "kw",
    [{"dtype": "int16"}, {"semiconv": 16.0}, {"dose": 0.0}, {"step": 0}, {"seed": -1},
     {"scan": (0, 4)}],
)
def test_invalid_parameters(kw):
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        small(**kw)


def test_lazy_access_from_package():
    assert framescope.datasets.synthetic is synthetic


# -- calibration, scan rotation/flip, descan ------------------------------------------------

def rotate_com(com_y, com_x, rotation, flip):
    """Detector COM into scan axes as CenterOfMass does: flip y, then rotate."""
    dy = -com_y if flip else com_y
    c, s = np.cos(rotation), np.sin(rotation)
    return c * dy + s * com_x, -s * dy + c * com_x


def test_off_by_default_means_explicit_zeros():
    ref = small(dtype="float32", dose=1e3).values
    same = small(dtype="float32", dose=1e3, rotation=0.0, flip=False,
                 descan=np.zeros((2, 2)), descan_offset=(0, 0), energy=200e3,
                 pixel_size=1e-10).values
    np.testing.assert_array_equal(same, ref)


def test_default_frames_are_the_plain_numpy_far_field():
    arr = small(dtype="float32", noise=False, dose=1e4, seed=3)
    reader = arr.encoding["framescope_source"].reader
    h, w = DET
    iy, ix = 5, 7
    wave = reader.probe * np.exp(1j * reader.phase[iy : iy + h, ix : ix + w])
    expect = 1e4 * np.abs(np.fft.fftshift(np.fft.fft2(wave, norm="ortho"))) ** 2
    np.testing.assert_allclose(arr.values[iy, ix], expect, rtol=1e-4, atol=1e-3)


def test_quarter_turn_and_flip_rescan_the_same_object():
    # positions stay whole: the frames are the unrotated scan's, re-ordered
    kw = {"scan": (7, 7), "dtype": "float32", "noise": False, "seed": 2}
    plain = small(**kw).values
    quarter = small(rotation=np.pi / 2, **kw).values
    flipped = small(flip=True, **kw).values
    # A = R(90°).T = [[0, -1], [1, 0]]: scan (iy, ix) sits on object row n-1-ix, column iy
    np.testing.assert_array_equal(quarter, np.transpose(plain, (1, 0, 2, 3))[:, ::-1])
    np.testing.assert_array_equal(flipped, plain[::-1])


def test_rotated_frame_is_the_far_field_of_the_subpixel_probe():
    from scipy import ndimage

    arr = small(rotation=0.4, dtype="float32", noise=False, dose=1e4, seed=5)
    reader = arr.encoding["framescope_source"].reader
    h, w = DET
    yy, xx = reader.probe_centres()
    assert not np.allclose(yy, np.round(yy))  # a fractional position is exercised
    for iy, ix in [(0, 0), (3, 5), (7, 8)]:
        y, x = yy[iy, ix], xx[iy, ix]
        top = (int(np.floor(y + 1e-9)) - h // 2, int(np.floor(x + 1e-9)) - w // 2)
        frac = (y - h // 2 - top[0], x - w // 2 - top[1])
        probe = np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(reader.probe), frac))
        window = reader.phase[top[0] : top[0] + h, top[1] : top[1] + w]
        far = np.fft.fftshift(np.fft.fft2(probe * np.exp(1j * window), norm="ortho"))
        np.testing.assert_allclose(arr.values[iy, ix], 1e4 * np.abs(far) ** 2, rtol=1e-3,
                                   atol=1e-2)


@pytest.mark.parametrize(("rotation", "flip"), [(0.3, False), (-0.6, True), (0.0, True),
                                                (2.5, False)])
def test_rotated_com_follows_ground_truth_in_scan_axes(rotation, flip):
    arr = small(scan=(12, 12), rotation=rotation, flip=flip, dtype="float32", noise=False,
                dose=1e5, seed=1)
    field_y, field_x = rotate_com(*centre_of_mass(arr.values), rotation, flip)
    k = DET[0] / (2 * np.pi)
    truth_y, truth_x = arr.true_phase_gradient_y.values, arr.true_phase_gradient_x.values
    assert k * np.hypot(truth_y.std(), truth_x.std()) > 0.5  # a real signal, not zeros
    np.testing.assert_allclose(field_y, k * truth_y, atol=0.03)
    np.testing.assert_allclose(field_x, k * truth_x, atol=0.03)
    # without undoing rotation and flip the COM disagrees with the truth
    plain_y, plain_x = centre_of_mass(arr.values)
    assert max(np.abs(plain_y - k * truth_y).max(), np.abs(plain_x - k * truth_x).max()) > 0.3


def test_rotation_needs_square_detector():
    with pytest.raises(ValueError, match="square detector"):
        small(det=(32, 40), rotation=0.2)


def test_descan_moves_every_pattern_by_its_plane():
    matrix, offset = [[0.05, 0.02], [-0.03, 0.08]], (1.3, -0.7)
    arr = small(descan=matrix, descan_offset=offset, dtype="float32", noise=False, dose=1e5)
    reader = arr.encoding["framescope_source"].reader
    iy, ix = np.meshgrid(np.arange(SCAN[0]), np.arange(SCAN[1]), indexing="ij")
    shift_y, shift_x = reader.descan_shift()
    np.testing.assert_allclose(shift_y, 0.05 * iy + 0.02 * ix + 1.3)
    np.testing.assert_allclose(shift_x, -0.03 * iy + 0.08 * ix - 0.7)
    com_y, com_x = centre_of_mass(arr.values)
    k = DET[0] / (2 * np.pi)
    np.testing.assert_allclose(com_y - shift_y, k * arr.true_phase_gradient_y.values, atol=0.02)
    np.testing.assert_allclose(com_x - shift_x, k * arr.true_phase_gradient_x.values, atol=0.02)
    assert arr.attrs["descan"] == [0.05, 0.02, -0.03, 0.08]  # row-major
    assert arr.attrs["descan_offset"] == list(offset)


def test_whole_pixel_descan_rolls_the_frames():
    kw = {"dtype": "float32", "noise": False, "dose": 1e4}
    plain = small(**kw).values
    moved = small(descan_offset=(2, -3), **kw).values
    np.testing.assert_allclose(moved, np.roll(plain, (2, -3), axis=(2, 3)), rtol=1e-4,
                               atol=1e-3)


@pytest.mark.parametrize("kw", [{"descan": [[1, 2, 3]]}, {"descan_offset": (1,)},
                                {"energy": 0.0}, {"pixel_size": -1.0},
                                {"rotation": float("nan")}])
def test_invalid_geometry(kw):
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        small(**kw)


def test_exact_calibration():
    from framescope.calibration import Calibration, CalibrationError

    reader = SyntheticReader((4, 5), (48, 48), semiconv=6.0, step=2, energy=300e3,
                             pixel_size=0.2e-10, rotation=0.3, flip=True,
                             descan_offset=(0.5, -1.0))
    cal = reader.calibration()
    angle = 1.96875e-12 / (48 * 0.2e-10)  # 300 kV: 1.9687 pm (tabulated)
    assert cal.angle_per_px == pytest.approx(angle, rel=1e-4)
    assert cal.semiconv == pytest.approx(6 * angle, rel=1e-4)
    assert cal.scan_step == pytest.approx((0.4e-10, 0.4e-10))
    assert cal.center == (24.5, 23.0)
    assert (cal.rotation, cal.flip, cal.energy) == (0.3, True, 300e3)
    assert set(cal.sources.values()) == {"synthetic"}
    assert Calibration.from_json(cal.to_json()) == cal
    with pytest.raises(CalibrationError, match="square detector"):
        SyntheticReader((4, 5), (32, 40)).calibration()


def test_calibrated_is_the_same_lazy_array_in_physical_units():
    plain = small(seed=2)
    cal = small(seed=2, calibrated=True)
    assert "calibration" not in plain.attrs
    assert plain["det_x"].attrs.get("units", "px") == "px"
    assert cal.chunks is not None
    assert cal.encoding["framescope_source"].reader.token() == \
        plain.encoding["framescope_source"].reader.token()
    truth = cal.encoding["framescope_source"].reader.calibration()
    assert cal.fs.calibration == truth
    h = DET[0]
    np.testing.assert_allclose(cal["det_y"].values,
                               (np.arange(h) - h // 2) * truth.angle_per_px * 1e3)
    np.testing.assert_allclose(cal["scan_x"].values, np.arange(SCAN[1]) * 0.2e-10 * 1e9)
    assert (cal["det_y"].attrs["units"], cal["scan_x"].attrs["units"]) == ("mrad", "nm")
    np.testing.assert_array_equal(cal.values, plain.values)
    np.testing.assert_array_equal(cal.true_phase_gradient_y.values,
                                  plain.true_phase_gradient_y.values)
