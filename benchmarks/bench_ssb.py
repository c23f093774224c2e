"""SSB ptychography: framescope beside a read pass over the same bytes and ptychography40.

For each case (scan x detector) a weak phase object is simulated once
(``framescope.datasets.synthetic``, BF disk radius det/6, 1e6 e- per frame, Poisson noise,
calibrated) into a ``.npy`` file under --data-dir. With the file in the page cache it
prints, best of --repeat:

- ceiling: a plain ``readinto`` pass over the file (4 MiB buffer), frames/s;
- framescope: ``fs.open(npy).fs.calibrate(...).fs.ssb()`` (inline executor: threads of this
  process), frames/s and GB/s of warm runs (the plan of bright-field pixels and trotter
  weights cached by the process), the detector binning it chose, the bytes of its
  bright-field stack, the stack's spectrum and the trotter weights, and the tracemalloc
  peak of one run; then a cold run, the plan built inside it (time and traced peak);
- ptychography40 ``SSB_UDF`` on LiberTEM (GPL peer, ``pip install 'framescope[bench]'``) on
  the same frames in memory (LiberTEM's memory dataset: no reading counted against it),
  inline and with a local dask cluster of 2 worker processes; first run (masks built,
  numba compiled) and best;
- quality: the correlation of framescope's phase with ptychography40's, and of each with
  the simulated phase (away from the scan's edges, where frames see object outside the scan).

With ``--live`` also a live scan: a sender process PUSHes the frames of the first case as
DECTRIS stream2 messages (pre-encoded, uncompressed) paced at ``--rate`` frames/s into
``framescope.submit(SSB(), ZMQSource(...))``; prints the rate the sender achieved (PUSH
blocks when the receiver's queue is full, so a slow receiver slows the sender: compare it
with the rate asked), the frames/s from first frame to final result, frames dropped, and
whether the final image equals the offline one.

    python benchmarks/bench_ssb.py                               # 64x64:64x64, 128x128:128x128
    python benchmarks/bench_ssb.py --cases 64x64:64x64 --live --rate 1000
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
from _common import best, plain_read

HERE = Path(__file__).resolve().parent


def corr(a: np.ndarray, b: np.ndarray, border: int = 0) -> float:
    if border:
        a, b = a[border:-border, border:-border], b[border:-border, border:-border]
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def dataset(scan: tuple[int, int], det: tuple[int, int], data_dir: Path):
    """The frames' .npy file (simulated once), its calibration and the true phase."""
    from framescope.datasets import synthetic

    arr = synthetic(scan=scan, det=det, semiconv=det[1] / 6, dose=1e6, atom_phase=0.1,
                    smooth_phase=0.0, calibrated=True, seed=7)
    path = data_dir / f"ssb_{scan[0]}x{scan[1]}_{det[0]}x{det[1]}.npy"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, np.asarray(arr).reshape(-1, *det))
        tmp.rename(path)
    return path, arr.fs.calibration, arr.true_phase.values


def peak(fn) -> tuple[object, int]:
    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def sender(path: str, scan: tuple[int, int], rate: float, q) -> None:
    """The detector: pre-encode DECTRIS stream2 messages, wait for a receiver, send paced."""
    import zmq

    from framescope.live import SeriesStart, make_encoder

    frames = np.load(path)
    n = len(frames)
    enc = make_encoder("dectris-stream2", "none")
    start = SeriesStart(1, frames.shape[1:], frames.dtype, n, scan, "raster")
    messages = [enc.frame(1, i, frames[i]) for i in range(n)]
    zctx = zmq.Context()
    sock = zctx.socket(zmq.PUSH)
    monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    q.put(port)
    monitor.recv_multipart()
    sock.send_multipart(enc.start(start))
    t0 = time.perf_counter()
    for i, m in enumerate(messages):
        ahead = t0 + i / rate - time.perf_counter()
        if ahead > 0.0005:
            time.sleep(ahead)
        sock.send_multipart(m, copy=False)
    q.put(n / (time.perf_counter() - t0))
    sock.send_multipart(enc.end(1))
    sock.disable_monitor()
    monitor.close()
    sock.close(linger=-1)
    zctx.term()


def live(path: Path, scan: tuple[int, int], cal, rate: float, offline: np.ndarray) -> dict:
    import framescope
    from framescope.live import ZMQSource
    from framescope.udf import SSB

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=sender, args=(str(path), scan, rate, q))
    p.start()
    port = q.get(timeout=600)
    done: list[float] = []
    job = framescope.submit(SSB(), ZMQSource(f"tcp://127.0.0.1:{port}", "dectris-stream2",
                                             calibration=cal, policy="drop"),
                            on_series_end=lambda ds: done.append(time.perf_counter()))
    t_first = None
    while not done:
        if t_first is None and job.status.frames_received:
            t_first = time.perf_counter()
        time.sleep(0.005)
    st = job.status
    sent = q.get(timeout=60)
    res = job.results
    res = res[0] if isinstance(res, list) else res
    job.cancel()
    p.join()
    same = np.allclose(res["phase"].values, offline, atol=1e-4, equal_nan=True)
    return {"fps": st.frames_processed / (done[0] - t_first), "processed": st.frames_processed,
            "dropped": st.dropped, "equal": same, "sent": sent}


def run_case(fs, scan: tuple[int, int], det: tuple[int, int], args) -> tuple:
    """One case: ceiling, framescope, the peer and the phase agreement."""
    from framescope.udf._ssb_plan import build_plan

    n = scan[0] * scan[1]
    path, cal, truth = dataset(scan, det, Path(args.data_dir))
    arr = fs.open(path, scan=scan).fs.calibrate(cal)
    print(f"\n== SSB {scan[0]}x{scan[1]} scan of {det[0]}x{det[1]} uint16 frames "
          f"({path.stat().st_size / 1e6:.0f} MB), BF disk radius {det[1] / 6:.1f} px")
    plain_read([path])
    t_ceil = best(lambda: plain_read([path]), args.repeat)
    print(f"{'ceiling (read pass)':34s} {n / t_ceil:10.0f} frames/s")

    arr.fs.ssb(progress=False)  # numba compiled once per process, as for the peer
    # cold: the plan (bright-field pixels, trotter weights) is built, as ptychography40
    # builds its masks in every run; then warm runs reuse the process's cached plan
    build_plan.cache_clear()
    t0 = time.perf_counter()
    ds = arr.fs.ssb(progress=False)
    t_cold = time.perf_counter() - t0
    build_plan.cache_clear()
    _, mem_cold = peak(lambda: arr.fs.ssb(progress=False))
    t_fs = best(lambda: arr.fs.ssb(progress=False), args.repeat)
    _, mem = peak(lambda: arr.fs.ssb(progress=False))
    ours = ds["phase"].values
    print(f"{'framescope ssb (inline)':34s} {n / t_fs:10.0f} frames/s  "
          f"({n / t_fs * det[0] * det[1] * 2 / 1e9:.2f} GB/s, "
          f"{n / t_fs / (n / t_ceil):.3f} of ceiling; bin {ds.attrs['ssb_bin']}, "
          f"{ds.attrs['ssb_bf_pixels']} BF px x {ds.attrs['ssb_frequencies']} freqs, "
          f"stack+spectrum+weights {ds.attrs['ssb_memory_bytes'] / 1e6:.0f} MB, "
          f"peak traced {mem / 1e6:.0f} MB)")
    print(f"{'  cold (plan built in the run)':34s} {n / t_cold:10.0f} frames/s  "
          f"({t_cold:.2f} s, peak traced {mem_cold / 1e6:.0f} MB)")
    border = max(4, scan[0] // 10)
    print(f"{'  r(framescope, truth)':34s} {corr(ours, truth, border):10.3f}")
    if args.no_peer:
        return path, scan, cal, ours
    import _ptycho40 as p40

    frames = np.load(path).reshape(*scan, *det)
    for executor in ("inline", "dask"):
        t = p40.time_ssb_ptychography40(frames, cal, executor=executor, workers=2,
                                        repeat=args.repeat)
        label = f"ptychography40 ({executor}{', 2 procs' if executor == 'dask' else ''})"
        print(f"{label:34s} {t['frames_per_s']:10.0f} frames/s  (first run "
              f"{t['first']:.1f} s; framescope / it: {n / t_fs / t['frames_per_s']:.1f}x)")
    theirs, mem40 = peak(lambda: p40.ssb_ptychography40(frames, cal))
    phase40 = np.angle(theirs)
    print(f"{'  peak traced (inline)':34s} {mem40 / 1e6:10.0f} MB")
    print(f"{'  r(ptychography40, truth)':34s} {corr(phase40, truth, border):10.3f}")
    print(f"{'  r(framescope, ptychography40)':34s} {corr(ours, phase40, border):10.3f}"
          f"  (whole scan {corr(ours, phase40):.3f})")
    return path, scan, cal, ours


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default="64x64:64x64,128x128:128x128",
                    help="comma-separated SCAN:DET, e.g. 64x64:64x64")
    ap.add_argument("--data-dir", default=str(HERE / "data"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--live", action="store_true", help="also a live scan of the first case")
    ap.add_argument("--rate", type=float, default=1000.0, help="live frames/s")
    args = ap.parse_args()
    # the peer's dask and mask-size warnings would bury the table
    warnings.filterwarnings("ignore")
    logging.getLogger("distributed").setLevel(logging.ERROR)
    logging.getLogger("libertem").setLevel(logging.ERROR)

    import framescope as fs

    def shape(s: str) -> tuple[int, int]:
        y, x = s.split("x")
        return int(y), int(x)

    first = None
    for case in args.cases.split(","):
        scan, det = (shape(s) for s in case.split(":"))
        out = run_case(fs, scan, det, args)
        first = first or out

    if args.live and first is not None:
        path, scan, cal, ours = first
        r = live(path, scan, cal, args.rate, ours)
        print(f"\nlive SSB {scan[0]}x{scan[1]} at {args.rate:.0f} frames/s asked "
              f"({r['sent']:.0f} sent): "
              f"{r['fps']:.0f} frames/s processed, {r['processed']} frames, "
              f"{r['dropped']} dropped, final equals offline: {r['equal']}")


if __name__ == "__main__":
    main()
