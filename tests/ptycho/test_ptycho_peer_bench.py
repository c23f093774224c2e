"""The py4DSTEM peer benchmark's own pieces: grid alignment, the calibration file, and (when
``.venv-py4dstem`` exists) one tiny peer run checked against the simulated truth."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from _ptycho_helpers import phase_r, problem

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

from _peer_py4dstem import PEER_PYTHON, measure, read_meta  # noqa: E402
from bench_ptycho_peer import phase_on_truth, write_problem  # noqa: E402


def smooth_phase(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    spectrum = np.zeros(shape, complex)
    spectrum[:4, :4] = rng.normal(size=(4, 4)) + 1j * rng.normal(size=(4, 4))
    return np.fft.ifft2(spectrum).real * 50


def test_phase_on_truth_undoes_a_shift_of_the_grid() -> None:
    truth = smooth_phase((60, 60))
    # the method's object: the truth padded by (7, 3) px, so its probe centres are too
    obj = np.exp(1j * np.pad(truth, ((7, 5), (3, 9)), mode="wrap"))
    cy, cx = np.meshgrid(np.arange(10, 50, 4.0), np.arange(12, 48, 4.0), indexing="ij")
    centres = np.c_[cy.ravel(), cx.ravel()]
    box = (slice(10, 47), slice(12, 45))
    got = phase_on_truth(obj, centres + np.array([7, 3]), centres, box)
    np.testing.assert_allclose(got, truth[box], atol=1e-6)
    # a half-pixel offset: the spline samples between pixels of a smooth phase
    half = phase_on_truth(obj, centres + np.array([7.5, 3]), centres, box)
    between = (truth[box] + np.roll(truth, -1, axis=0)[box]) / 2  # truth[y + 1/2]
    assert np.abs(half - between).max() < 0.05 * np.ptp(truth)
    with pytest.raises(ValueError, match="affine"):
        phase_on_truth(obj, centres + np.random.default_rng(1).normal(size=centres.shape),
                       centres, box)


def test_meta_names_the_file_and_the_field(tmp_path: Path) -> None:
    arr, _, defocus_m = problem()
    data, meta = write_problem(arr, defocus_m, tmp_path)
    assert np.load(data).shape == arr.shape
    fields = read_meta(meta)
    cal = arr.fs.calibration
    assert fields["defocus_A"] == pytest.approx(defocus_m * 1e10)
    assert fields["angle_per_px_mrad"] == pytest.approx(cal.angle_per_px * 1e3)
    broken = json.loads(meta.read_text())
    del broken["energy_eV"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match=r"bad\.json.*'energy_eV'"):
        read_meta(bad)
    bad.write_text(json.dumps({**broken, "energy_eV": 3e5, "flip": True}))
    with pytest.raises(ValueError, match="flip must be false"):
        read_meta(bad)


@pytest.mark.skipif(not PEER_PYTHON.exists(), reason="no .venv-py4dstem "
                    "(bash benchmarks/setup_py4dstem.sh)")
def test_py4dstem_on_our_frames_finds_the_simulated_phase(tmp_path: Path) -> None:
    arr, reader, defocus_m = problem(scan=(12, 12))
    data, meta = write_problem(arr, defocus_m, tmp_path)
    peer = measure(data, meta, 20, batch=24, timeout=300)
    cy, cx = reader.probe_centres()
    box = (slice(int(cy.min()), int(cy.max()) + 1), slice(int(cx.min()), int(cx.max()) + 1))
    truth = reader.phase[box]
    phase = phase_on_truth(np.load(peer["object"]), np.load(peer["positions_px"]),
                           np.c_[cy.ravel(), cx.ravel()].astype(float), box)
    # the defocus sign convention right, or py4DSTEM's phase would anti-correlate
    assert phase_r(phase, truth, np.ones_like(truth, bool)) > 0.9
    assert peer["error"][-1] < peer["error"][0]
    assert len(peer["error"]) == peer["iterations"] == 20
