"""Iterative ptychography (rPIE): iterations/s of ``framescope.ptycho.reconstruct``.

A weak phase object is simulated (``framescope.datasets.synthetic``: BF disk radius det/8,
``--defocus`` rad at the rim, ``--step`` object px per scan step, 1e6 e- per frame, Poisson
noise, calibrated) and held in memory. It prints:

- collect: the pass of ``CollectFrames`` through the engine (frames/s);
- rPIE: seconds per sweep over all positions and sweeps/s (the object and probe updated
  per position in random order), timed between the first and the last of ``--iterations``
  sweeps; the same for ePIE (alpha = 1: the same work);
- ceiling: the two FFTs every position update needs, alone, in the same loop of one
  window at a time, and the same FFTs batched over all frames (what no per-position
  solver can beat);
- quality: the correlation of the phase with the simulated one (offset and ramp removed,
  over the well-illuminated region).

    python benchmarks/bench_ptycho.py                       # 64x64 scan of 128x128 frames
    python benchmarks/bench_ptycho.py --scan 32x32 --det 64x64 --iterations 5
    python benchmarks/bench_ptycho.py --backend cupy        # on a GPU
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import scipy.fft as sfft

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "ptycho"))


def pair(text: str) -> tuple[int, int]:
    a, b = text.split("x")
    return int(a), int(b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scan", type=pair, default=(64, 64))
    ap.add_argument("--det", type=pair, default=(128, 128))
    ap.add_argument("--step", type=int, default=4)
    ap.add_argument("--defocus", type=float, default=6.0)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--backend", default="numpy")
    args = ap.parse_args()

    from _ptycho_helpers import illuminated, phase_r, problem

    import framescope as fs
    from framescope.ptycho import CollectFrames, reconstruct

    h, w = args.det
    arr, reader, defocus = problem(scan=args.scan, det=args.det, semiconv=h / 8,
                                   defocus=args.defocus, step=args.step, dtype="float32")
    n = arr.sizes["scan_y"] * arr.sizes["scan_x"]
    print(f"# {args.scan[0]}x{args.scan[1]} scan of {h}x{w} frames, step {args.step} px, "
          f"object {reader.object_shape}, backend {args.backend}")
    t0 = time.perf_counter()
    arr = arr.copy(data=arr.values)  # simulate once; the solver runs on frames in memory
    print(f"simulate: {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    fs.run(CollectFrames(), arr, client="inline")
    dt = time.perf_counter() - t0
    print(f"collect (engine pass): {n / dt:,.0f} frames/s")

    for algorithm in ("rpie", "epie"):
        stamps: list[float] = []
        ds = reconstruct(arr, iterations=args.iterations, defocus=defocus, client="inline",
                         algorithm=algorithm, backend=args.backend, update_every=1,
                         callback=lambda _ds, s=stamps: s.append(time.perf_counter()))
        if len(stamps) > 1:
            per = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
            print(f"{algorithm}: {per:.2f} s/sweep, {1 / per:.3f} sweeps/s, "
                  f"{n / per:,.0f} position updates/s (probe updated from sweep 2)")
        r = phase_r(ds["object_phase"].values, reader.phase, illuminated(ds))
        print(f"{algorithm}: phase r = {r:.3f} after {args.iterations} sweeps, "
              f"error {ds['error'].values[0]:.2e} -> {ds['error'].values[-1]:.2e}")

    rng = np.random.default_rng(0)
    win = (rng.normal(size=(h, w)) + 1j * rng.normal(size=(h, w))).astype(np.complex64)
    t0 = time.perf_counter()
    for _ in range(n):
        sfft.ifft2(sfft.fft2(win, norm="ortho"), norm="ortho")
    loop = time.perf_counter() - t0
    batch = np.repeat(win[None], min(n, 1024), axis=0)
    t0 = time.perf_counter()
    for _ in range(-(-n // batch.shape[0])):
        sfft.ifft2(sfft.fft2(batch, norm="ortho", workers=-1), norm="ortho", workers=-1)
    batched = time.perf_counter() - t0
    print(f"ceiling: 2 FFTs per position one window at a time {loop:.2f} s/sweep "
          f"({1 / loop:.3f} sweeps/s); batched over all frames {batched:.2f} s "
          f"({1 / batched:.3f} sweeps/s)")
    print("TODO(peer): py4DSTEM 0.14 single-slice ptychography (or quantem) on the same "
          "frames, in its own environment: not run in this session")


if __name__ == "__main__":
    main()
