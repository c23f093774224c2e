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
