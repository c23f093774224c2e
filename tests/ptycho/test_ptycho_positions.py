"""Measured scan positions (array, .npy, HDF5, a values stream) and position refinement."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from _ptycho_helpers import phase_r
from _ptycho_xray_sim import (
    DEFOCUS,
    DIAMETER,
    OUTER_ZONE,
    PIXEL,
    SCAN,
    STOP,
    N,
    experiment,
    grid_corners,
    make_object,
    probe,
)
from scipy import ndimage

from framescope.ptycho import (
    RPIE,
    PositionRefiner,
    ZonePlate,
    load_positions,
    positions_from_stream,
    reconstruct,
    scan_matrix,
)

ZP = ZonePlate(DIAMETER, OUTER_ZONE, STOP)
NFRAMES = SCAN[0] * SCAN[1]


def _grid_m() -> np.ndarray:
    """The calibrated grid as measured positions: (y, x) in m along the scan axes."""
    return grid_corners() * PIXEL * 1.0


@pytest.fixture(scope="module")
def frames():
    return experiment()[0]


@pytest.fixture(scope="module")
def grid_result(frames):
    return reconstruct(frames, iterations=2, probe=ZP, defocus=DEFOCUS, rotation=0.3,
                       client="inline")


def _same(ds, ref):
    np.testing.assert_array_equal(ds["object_phase"].values, ref["object_phase"].values)
    # the same windows (bit-identical object); the nm positions equal to float rounding
    np.testing.assert_allclose(ds["position_y"].values, ref["position_y"].values, atol=1e-9)
    np.testing.assert_allclose(ds["positions"].values, ref["positions_initial"].values,
                               atol=1e-9)


def test_positions_array_npy_and_hdf5_equal_the_grid(frames, grid_result, tmp_path):
    import h5py

    grid = _grid_m()
    np.save(tmp_path / "pos.npy", grid)
    with h5py.File(tmp_path / "scan.h5", "w") as f:
        f["/entry/positions"] = grid
        f["/entry/positions_um"] = grid * 1e6
        f["/entry/positions_um"].attrs["units"] = "um"
    for spec in (grid, str(tmp_path / "pos.npy"), f"{tmp_path / 'scan.h5'}::/entry/positions",
                 f"{tmp_path / 'scan.h5'}::/entry/positions_um"):
        # the rotation applies to measured positions as to the grid
        ds = reconstruct(frames, iterations=2, probe=ZP, defocus=DEFOCUS, rotation=0.3,
                         positions=spec, client="inline")
        _same(ds, grid_result)
    assert ds.attrs["positions_source"].endswith("::/entry/positions_um")
    assert grid_result.attrs["positions_source"] == "calibrated grid"
    # rotated: the probe centres are the grid's steps turned by the scan matrix
    turned = (grid - grid[0]) @ scan_matrix(0.3, False).T * 1e9
    np.testing.assert_allclose(grid_result["positions"].values.reshape(-1, 2), turned,
                               atol=1e-6)


def test_measured_positions_need_no_scan_step(frames, grid_result):
    bare = frames.copy()
    cal = frames.fs.calibration
    bare.attrs = {}
    ds = reconstruct(bare, iterations=2, probe=ZP, defocus=DEFOCUS, rotation=0.3,
                     energy=cal.energy, radiation="xray", camera_length=cal.camera_length,
                     pixel_size=cal.pixel_size, positions=_grid_m(), client="inline")
    _same(ds, grid_result)
    assert np.isnan(ds.attrs["scan_step_m"]).all()


@pytest.mark.parametrize(("spec", "message"), [
    (np.zeros((NFRAMES, 3)), r"expected an \(n, 2\) array of \(y, x\) in m, found shape "
                             r"\(64, 3\)"),
    (np.zeros((10, 2)), "expected one position per frame \\(64 frames\\), found 10"),
    (np.full((NFRAMES, 2), np.nan), "expected finite values, found 128 NaN"),
    (np.arange(2 * NFRAMES).reshape(-1, 2) * 1.0, "expected metres, found a range of 126"),
])
def test_bad_positions_are_named(spec, message):
    with pytest.raises(ValueError, match=message):
        load_positions(spec, NFRAMES)


def test_bad_position_files_are_named(tmp_path):
    import h5py

    with pytest.raises(FileNotFoundError, match="no file"):
        load_positions(str(tmp_path / "missing.npy"), NFRAMES)
    with h5py.File(tmp_path / "scan.h5", "w") as f:
        f["/entry/x"] = np.zeros(3)
        f["/entry/nm"] = np.zeros((NFRAMES, 2))
        f["/entry/nm"].attrs["units"] = "mrad"
    with pytest.raises(ValueError, match=r"scan.h5 has no dataset '/entry/positions'"):
        load_positions(f"{tmp_path / 'scan.h5'}::/entry/positions", NFRAMES)
    with pytest.raises(ValueError, match=r"scan.h5::/entry/x: expected an \(n, 2\) array"):
        load_positions(f"{tmp_path / 'scan.h5'}::/entry/x", NFRAMES)
    with pytest.raises(ValueError, match="units: expected a length unit"):
        load_positions(f"{tmp_path / 'scan.h5'}::/entry/nm", NFRAMES)


def _send_values(positions_um: np.ndarray, *, unit: str = "um", skip: int | None = None,
                 ) -> tuple[str, threading.Thread]:
    """A values-cbor sender on 127.0.0.1: a PUSH socket bound to a free port."""
    import zmq

    from framescope.live import ValuesEncoder

    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 2000)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    enc = ValuesEncoder("cbor")
    fields = {"x": {"dtype": "float64", "unit": unit}, "y": {"dtype": "float64", "unit": unit}}

    def send() -> None:
        sock.send_multipart(enc.start("motors", 1, fields, len(positions_um)))
        sent = 0
        for k, (y, x) in enumerate(positions_um):
            if k != skip:
                sock.send_multipart(enc.frame(1, k, {"x": x, "y": y}))
                sent += 1
        sock.send_multipart(enc.end(1, sent))
        sock.close()

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return f"tcp://127.0.0.1:{port}", thread


def test_positions_from_a_values_stream_equal_the_grid(frames, grid_result):
    grid = _grid_m()
    endpoint, thread = _send_values(grid * 1e6)
    pos = positions_from_stream(endpoint, NFRAMES, protocol="values-cbor", timeout=20)
    thread.join(5)
    np.testing.assert_allclose(pos, grid, rtol=1e-12, atol=1e-18)
    ds = reconstruct(frames, iterations=2, probe=ZP, defocus=DEFOCUS, rotation=0.3,
                     positions=pos, client="inline")
    np.testing.assert_allclose(ds["object_phase"].values, grid_result["object_phase"].values,
                               atol=1e-5)


def test_a_positions_stream_short_of_frames_names_them():
    endpoint, thread = _send_values(_grid_m()[:6] * 1e9, unit="nm", skip=3)
    with pytest.raises(TimeoutError, match=r"5 of 6 positions, the series ended; missing "
                                           r"frames \[3\]"):
        positions_from_stream(endpoint, 6, timeout=20)
    thread.join(5)
    endpoint, thread = _send_values(_grid_m()[:4], unit="")
    with pytest.raises(ValueError, match="declare no unit; pass unit="):
        positions_from_stream(endpoint, 4, timeout=20)
    thread.join(5)


def test_refiner_moves_positions_to_the_truth_on_the_true_object():
    """On the true object and probe (noise-free), the gradient step corrects position
    errors: sign and size of the update, independent of the solver's sweeps."""
    true = grid_corners() + 4  # room to move
    shape = (int(true[:, 0].max()) + N + 4, int(true[:, 1].max()) + N + 4)
    obj, p = make_object(shape), probe()
    amp = np.empty((len(true), N, N), np.float32)
    for j, (y, x) in enumerate(true):
        amp[j] = np.abs(np.fft.fft2(p * obj[y:y + N, x:x + N], norm="ortho"))
    rng = np.random.default_rng(7)
    start = true + rng.uniform(-1.2, 1.2, true.shape)
    start -= (start - true).mean(axis=0)  # a common shift is not the refiner's to find
    solver = RPIE(p, start, shape, obj=obj)
    refiner = PositionRefiner(max_step=0.5)
    bounds = (shape[0] - N, shape[1] - N)
    for _ in range(8):
        refiner.refine(solver, amp, np.ones(len(true), bool), None, bounds)
    got = solver.top + solver.frac
    before = np.abs(start - true).mean()
    after = np.abs(got - true).mean()
    assert before > 0.4, before
    assert after < 0.05, (before, after)


def test_refinement_recovers_perturbed_positions_and_improves_the_object():
    true = grid_corners()
    arr, obj, _p = experiment(true)
    rng = np.random.default_rng(5)
    nominal = true + rng.uniform(-1.5, 1.5, true.shape)  # px, what the motors claim
    runs = {refine: reconstruct(arr, iterations=15, probe=ZP, defocus=DEFOCUS,
                                positions=nominal * PIXEL, refine_positions=refine,
                                refine_start=2, client="inline")
            for refine in (False, True)}
    scores = {k: _score(ds, true, nominal, obj) for k, ds in runs.items()}
    assert scores[False][0] > 1.0  # the perturbation (mean |error| px, common shift out)
    assert scores[True][0] < 0.5, scores  # 0.17 measured
    assert scores[True][1] > scores[False][1] + 0.01, scores  # 0.990 vs 0.970 measured
    ds = runs[True]
    np.testing.assert_allclose(ds["positions_initial"].values.reshape(-1, 2),
                               (nominal - nominal[0]) * PIXEL * 1e9, atol=1e-6)
    assert ds.attrs["refine_positions"] == 1
    assert ds.attrs["refine_start"] == 2
    # the result's position_y/x are the refined ones
    np.testing.assert_allclose(ds["position_y"].values.ravel(),
                               ds["positions"].values[..., 0].ravel())


def _score(ds, true, nominal, obj) -> tuple[float, float]:
    """Mean position error (px, the common shift removed) and the phase r of the object
    registered onto the truth's grid by that common shift."""
    px = PIXEL * 1e9
    pos = ds["positions"].values.reshape(-1, 2) / px  # from the first nominal position
    err = pos - (true - nominal[0])
    shift = err.mean(axis=0)
    position_error = float(np.linalg.norm(err - shift, axis=1).mean())
    # reconstruction px of truth px t: t - true_j + corner_j, corner_j = c0 + pos_j
    c0 = np.array([-float(ds.y[0]), -float(ds.x[0])]) / px - N // 2
    offset = c0 + shift - nominal[0]
    o = ds["object_amplitude"].values * np.exp(1j * ds["object_phase"].values)
    yy, xx = np.indices(obj.shape).astype(float)
    at = [yy + offset[0], xx + offset[1]]
    moved = (ndimage.map_coordinates(o.real, at, order=3)
             + 1j * ndimage.map_coordinates(o.imag, at, order=3))
    region = np.zeros(obj.shape, bool)  # the scanned field, half a probe in from the edge
    region[N // 2 - 8:true[:, 0].max() + N // 2 + 8,
           N // 2 - 8:true[:, 1].max() + N // 2 + 8] = True
    return position_error, phase_r(np.angle(moved), np.angle(obj), region)


def test_refinement_options_are_checked(frames):
    with pytest.raises(ValueError, match="refine_max_step: expected a positive"):
        reconstruct(frames, iterations=1, probe=ZP, defocus=DEFOCUS, refine_positions=True,
                    refine_max_step=0, client="inline")
