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
    python benchmarks/bench_ptycho.py --live                # the scan on a stream, 1 kHz

``--live`` simulates ``framescope.ptycho.ptycho_experiment`` (a complex Siemens-star
object, ``--dark`` dark frames, 1e6 counts per frame), reconstructs it offline for
``--iterations`` sweeps (the reference final error), then publishes the dark series and the
scan at ``--rate`` Hz (``publish_experiment``) and runs ``reconstruct`` on a ``ZMQSource``
of it. It prints the time from the scan's last frame leaving the socket to the first
sweep over every position whose error is within 1 % of the offline run's final error (the
converged image), the sweeps run while frames arrived, and the frames dropped.
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
    ap.add_argument("--live", action="store_true", help="the live timing (see above)")
    ap.add_argument("--rate", type=float, default=1000.0, help="--live: frames/s")
    ap.add_argument("--dark", type=int, default=100, help="--live: dark frames")
    args = ap.parse_args()
    if args.live:
        live(args)
        return

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
    print("peer: py4DSTEM's SingleslicePtychography on the same frames runs in its own "
          "venv: bash setup_py4dstem.sh; python bench_ptycho_peer.py")


def live(args: argparse.Namespace) -> None:
    """Time from the last frame of a published scan to a converged live reconstruction."""
    from _ptycho_helpers import illuminated, phase_r

    from framescope.live import ZMQSource
    from framescope.ptycho import ptycho_experiment, publish_experiment, reconstruct

    h, w = args.det
    n = args.scan[0] * args.scan[1]
    t0 = time.perf_counter()
    exp = ptycho_experiment(scan=args.scan, det=args.det, step=args.step, dose=1e6,
                            defocus=args.defocus, dark_frames=args.dark)
    print(f"# live: {args.scan[0]}x{args.scan[1]} scan of {h}x{w} frames at "
          f"{args.rate:g} Hz after {args.dark} dark frames, step {args.step} px, object "
          f"{exp.truth.object.shape}, backend {args.backend}; simulated in "
          f"{time.perf_counter() - t0:.1f} s")
    truth = np.angle(exp.truth.object)
    # the reference: the same frames, dark-free, offline
    frames = exp.frames.copy(data=exp.frames.values.astype(np.float32)
                             - exp.dark.mean(axis=0, dtype=np.float64).astype(np.float32))
    opts = {"iterations": args.iterations, "defocus": exp.defocus, "backend": args.backend}
    t0 = time.perf_counter()
    offline = reconstruct(frames, client="inline", **opts)
    final = float(offline["error"].values[-1])
    print(f"offline: {args.iterations} sweeps in {time.perf_counter() - t0:.1f} s, final "
          f"error {final:.4e}, phase r = "
          f"{phase_r(offline['object_phase'].values, truth, illuminated(offline)):.3f}")

    sweeps: list[tuple[float, int, float]] = []  # (time, positions, error) per sweep

    def stamp(ds: object) -> None:
        sweeps.append((time.perf_counter(), int(ds["positions_per_iteration"].values[-1]),
                       float(ds["error"].values[-1])))

    pub = publish_experiment(exp, rate=args.rate)
    with pub as endpoint:
        src = ZMQSource(endpoint, "dectris-stream2")
        ds = reconstruct(src, timeout=120, callback=stamp, update_every=1, **opts)
    status = src.status
    last = pub.last_frame_time
    assert last is not None
    assert pub.first_frame_time is not None
    sent_s = last - pub.first_frame_time
    during = sum(1 for _, k, _ in sweeps if k < n)  # sweeps over part of the scan
    full = [(t, e) for t, k, e in sweeps if k == n and t > last]
    converged = next((t for t, e in full if e <= 1.01 * final), None)
    print(f"live: {pub.frames_sent} frames sent in {sent_s:.2f} s "
          f"({pub.frames_sent / sent_s:,.0f} Hz); {during} sweeps over part of the scan; "
          f"measured {int(ds['measured'].sum())}/{n}; dropped {status.dropped}, gaps "
          f"{status.gaps}, dark {src.dark.report()['frames'] if src.dark else 0} frames")
    print("live sweeps (s after the last frame: positions, error): " + ", ".join(
        f"{t - last:+.1f}: {k}, {e:.3e}" for t, k, e in sweeps))
    print("offline errors: " + ", ".join(f"{e:.3e}" for e in offline["error"].values))
    if converged is None:
        print(f"live: no sweep over all positions reached 1.01 x the offline error "
              f"(last {full[-1][1] if full else float('nan'):.4e})")
    else:
        print(f"live: last frame -> converged image (error <= 1.01 x offline "
              f"{final:.4e}): {converged - last:.2f} s")
    print(f"live: final error {float(ds['error'].values[-1]):.4e} after "
          f"{ds.attrs['iterations']} sweeps, phase r = "
          f"{phase_r(ds['object_phase'].values, truth, illuminated(ds)):.3f}")


if __name__ == "__main__":
    main()
