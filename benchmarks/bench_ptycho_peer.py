"""framescope rPIE beside py4DSTEM's single-slice ptychography, on the same frames.

The synthetic weak phase object of ``bench_ptycho.py`` (``framescope.datasets.synthetic``:
BF disk radius det/8, ``--defocus`` rad at the rim, ``--step`` object px per scan step,
1e6 e- per frame, Poisson noise, calibrated) is simulated once and written to an ``.npy``
with its calibration in a JSON file (energy, semi-convergence, angle per px, scan step,
defocus as ``C10``, rotation 0, centre). framescope's ``reconstruct`` runs on those frames
here; py4DSTEM runs on the same file in its own environment (``_peer_py4dstem.py``, set up
by ``bash benchmarks/setup_py4dstem.sh``), one after the other.

Quality, the same way for both: each method's object is sampled onto the *simulation's*
object pixels inside the box spanned by the probe centres (every pixel there is under
many probe positions). The map from simulation pixels to a method's object pixels is the
affine least-squares fit of the method's own probe positions (px, frame order) to the
simulated probe centres, so padding, origin and any sampling or rotation difference are
taken from the method itself; the complex object is interpolated there (cubic spline on
its real and imaginary parts). The phase is then compared with the truth by Pearson r
after removing from each a global offset and a linear ramp (``phase_r`` of the tests).

    python benchmarks/bench_ptycho_peer.py                          # 64x64 of 128x128
    python benchmarks/bench_ptycho_peer.py --scan 16x16 --det 32x32 --iterations 10

Measured on the 2-core VM (numpy; py4DSTEM 0.14.18, numpy 1.26, CPU), 64x64 scan of
128x128 frames, 10 iterations each: framescope rPIE 0.42 it/s, r = 0.997; py4DSTEM GD
0.028 it/s with all positions per step (r = 0.50, ~10 GB resident), 0.052 it/s with 256
(r = 0.83), 0.089 it/s with 64 (r = 0.93). 32x32 of 64x64, 30 iterations: framescope 4.1
it/s, r = 0.998; py4DSTEM 1.3 / 1.8 / 1.7 it/s, r = 0.86 / 0.96 / 0.99 (all / 256 / 64).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr
from scipy import ndimage

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "ptycho"))
sys.path.insert(0, str(HERE))


def pair(text: str) -> tuple[int, int]:
    a, b = text.split("x")
    return int(a), int(b)


def batches(text: str) -> list[int | None]:
    return [None if b == "all" else int(b) for b in text.split(",")]


def write_problem(arr: xr.DataArray, defocus_m: float, folder: Path) -> tuple[Path, Path]:
    """The frames as ``.npy`` (float32) and their calibration as JSON (the peer's fields)."""
    cal = arr.fs.calibration
    data, meta = folder / "frames.npy", folder / "frames.json"
    np.save(data, np.ascontiguousarray(arr.values, dtype=np.float32))
    meta.write_text(json.dumps({
        "energy_eV": float(cal.energy),
        "semiconv_mrad": float(cal.semiconv) * 1e3,
        "angle_per_px_mrad": float(cal.angle_per_px) * 1e3,
        "scan_step_A": [float(s) * 1e10 for s in cal.scan_step],
        "defocus_A": defocus_m * 1e10,  # C10: probe phase -pi lambda C10 k^2
        "rotation_deg": float(np.degrees(cal.rotation)),
        "flip": bool(cal.flip),
        "center_px": [float(c) for c in cal.center],
    }, indent=1))
    return data, meta


def phase_on_truth(obj: np.ndarray, positions_px: np.ndarray, centres: np.ndarray,
                   box: tuple[slice, slice]) -> np.ndarray:
    """Phase of ``obj`` on the simulation's pixels ``box``.

    ``positions_px`` (n, 2) are the method's probe centres in its object px and
    ``centres`` (n, 2) the simulated ones in simulation px, the same frames in the same
    order; an affine map fitted between them takes simulation px to object px.
    """
    design = np.c_[centres, np.ones(len(centres))]
    coef, *_ = np.linalg.lstsq(design, positions_px, rcond=None)
    resid = np.abs(design @ coef - positions_px).max()
    if resid > 0.05:
        raise ValueError(f"probe positions are not an affine map of the simulated centres "
                         f"(largest residual {resid:.3f} px): the grids cannot be aligned")
    yy, xx = np.mgrid[box]
    at = np.c_[yy.ravel(), xx.ravel(), np.ones(yy.size)] @ coef
    sample = [ndimage.map_coordinates(part, at.T, order=3, mode="nearest")
              for part in (obj.real, obj.imag)]
    return np.angle(sample[0] + 1j * sample[1]).reshape(yy.shape)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scan", type=pair, default=(64, 64))
    ap.add_argument("--det", type=pair, default=(128, 128))
    ap.add_argument("--step", type=int, default=4)
    ap.add_argument("--defocus", type=float, default=6.0)
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--batch", type=batches, default=[None],
                    help="py4DSTEM max_batch_size, one run each: 'all' (its default, one "
                         "gradient step per iteration) or positions per step, e.g. all,256")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="where the frames and the peer's object go (default: a temp dir)")
    args = ap.parse_args()

    from _peer_py4dstem import measure
    from _ptycho_helpers import phase_r, problem

    from framescope.ptycho import reconstruct

    h, w = args.det
    arr, reader, defocus_m = problem(scan=args.scan, det=args.det, semiconv=h / 8,
                                     defocus=args.defocus, step=args.step, dtype="float32")
    n = arr.sizes["scan_y"] * arr.sizes["scan_x"]
    print(f"# {args.scan[0]}x{args.scan[1]} scan of {h}x{w} frames, step {args.step} px, "
          f"defocus {args.defocus} rad at the rim ({defocus_m * 1e9:.1f} nm), "
          f"{args.iterations} iterations each")
    t0 = time.perf_counter()
    arr = arr.copy(data=arr.values)  # simulate once; both methods read these frames
    print(f"simulate: {time.perf_counter() - t0:.1f} s")
    cy, cx = reader.probe_centres()
    centres = np.c_[cy.ravel(), cx.ravel()].astype(float)
    box = (slice(int(np.ceil(cy.min())), int(np.floor(cy.max())) + 1),
           slice(int(np.ceil(cx.min())), int(np.floor(cx.max())) + 1))
    truth = reader.phase[box]
    rows: list[tuple[str, float, float, float, str]] = []

    stamps: list[float] = []
    t0 = time.perf_counter()
    ds = reconstruct(arr, iterations=args.iterations, defocus=defocus_m, client="inline",
                     update_every=1,
                     callback=lambda _ds, s=stamps: s.append(time.perf_counter()))
    total = time.perf_counter() - t0
    per = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else np.nan
    dy, dx = float(ds.y[1] - ds.y[0]), float(ds.x[1] - ds.x[0])
    positions = np.c_[(ds["position_y"].values.ravel() - float(ds.y[0])) / dy,
                      (ds["position_x"].values.ravel() - float(ds.x[0])) / dx]
    obj = ds["object_amplitude"].values * np.exp(1j * ds["object_phase"].values)
    r = phase_r(phase_on_truth(obj, positions, centres, box), truth, np.ones_like(truth, bool))
    err = ds["error"].values
    rows.append(("framescope rPIE", 1 / per, total, r, f"{err[0]:.2e} -> {err[-1]:.2e}"))

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        data, meta = write_problem(arr, defocus_m, Path(tmp))
        del arr, ds
        for batch in args.batch:
            try:
                peer = measure(data, meta, args.iterations, batch=batch)
            except (FileNotFoundError, RuntimeError) as exc:
                print(f"py4DSTEM peer not run: {exc}")
                break
            obj, positions = np.load(peer["object"]), np.load(peer["positions_px"])
            r = phase_r(phase_on_truth(obj, positions, centres, box), truth,
                        np.ones_like(truth, bool))
            perr = peer["error"]
            rows.append((f"py4DSTEM {peer['version']} GD (batch {batch or 'all'})",
                         peer["iterations_per_s"],
                         peer["preprocess_s"] + peer["reconstruct_s"], r,
                         f"{perr[0]:.2e} -> {perr[-1]:.2e}"))
            print(f"py4DSTEM batch {batch or 'all'}: load {peer['load_s']:.1f} s, preprocess "
                  f"{peer['preprocess_s']:.1f} s, {args.iterations} iterations "
                  f"{peer['reconstruct_s']:.1f} s")

    print(f"\nquality over the {truth.shape[0]}x{truth.shape[1]} simulation px spanned by "
          f"the probe centres; it/s over the iterations alone (framescope: sweeps 2..N, "
          f"{n} position updates each); seconds: the whole call (framescope: engine "
          f"collect + setup + sweeps; py4DSTEM: preprocess + reconstruct)")
    print("| method | it/s | seconds | r(phase, truth) | error (own definition) |")
    print("|---|---|---|---|---|")
    for name, rate, seconds, r, err in rows:
        print(f"| {name} | {rate:.3f} | {seconds:.1f} | {r:.3f} | {err} |")


if __name__ == "__main__":
    main()
