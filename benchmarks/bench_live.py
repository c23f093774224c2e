"""Live stream analysis throughput and latency beside a plain ZeroMQ PUSH→PULL ceiling.

A sender process (the "detector") pre-encodes one series of 256 x 256 uint16 frames per
protocol/compression (so encoding costs nothing during the run) and PUSHes it as fast as
the receiver takes it (ZeroMQ back-pressure: nothing is lost in transport). In this process:

- ceiling: a plain PULL socket receiving the same messages (``recv_multipart(copy=False)``,
  nothing else): the transport's limit on this machine, measured in the same run;
- live: ``framescope.submit([ApplyMasks(ring), CenterOfMass(radius)], ZMQSource(...))`` with
  ``policy="drop"``: decode, check, batch, analyse, merge. Reported: frames/s and GB/s (on
  the wire, and of decoded frames) from the first frame received to the series' results
  being final, frames dropped, and the latency from a frame's arrival to its result being
  visible in ``snapshot()`` (median of samples every 20 ms, and maximum);
- for both, the CPU time of this process per frame (all its threads, ZeroMQ's I/O thread
  included; for the live run also split by thread: ZeroMQ I/O, receiver, analysis) and of
  the sender process: on a shared machine the steadier figures, and sender + receiver CPU
  per frame is what two cores must carry;
- if frames were dropped at full speed, paced runs (the sender sending at a fixed rate, as
  a detector does) find the highest rate with 0 dropped.

    python benchmarks/bench_live.py                      # stream2 and native, none + bslz4
    python benchmarks/bench_live.py --frames 8192 --cases dectris-stream2:none

Frames come from ``--data`` (a raw 128x128x256x256 uint16 file, as written by
``framescope simulate``) when it exists, else from a cycle of synthetic frames.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time
from pathlib import Path

import numpy as np
import zmq

HERE = Path(__file__).parent
DEFAULT_DATA = HERE / "data" / "128x128_256x256" / "data.raw"
DET = (256, 256)


def load_frames(path: Path, n: int) -> np.ndarray:
    """``n`` 256x256 uint16 frames: from the raw file if present, else synthetic, cycled."""
    if path.exists() and path.stat().st_size >= n * DET[0] * DET[1] * 2:
        return np.fromfile(path, dtype="<u2", count=n * DET[0] * DET[1]).reshape(n, *DET)
    from framescope.datasets import synthetic

    distinct = min(n, 512)
    base = np.asarray(synthetic(scan=(1, distinct), det=DET, dtype="uint16")).reshape(-1, *DET)
    return base[np.arange(n) % distinct]


def sender(protocol: str, compression: str, path: str, n: int, rate: float, q) -> None:
    """The detector: pre-encode, bind, wait for one receiver, send one series, report."""
    from framescope.live import SeriesStart, make_encoder

    frames = load_frames(Path(path), n)
    side = int(np.sqrt(n))
    scan = (side, n // side) if side * (n // side) == n else (1, n)
    enc = make_encoder(protocol, compression)
    start = SeriesStart(1, DET, frames.dtype, n, scan, "raster")
    messages = [enc.frame(1, i, frames[i]) for i in range(n)]
    del frames
    nbytes = sum(len(p) if isinstance(p, bytes) else p.nbytes for m in messages for p in m)
    zctx = zmq.Context()
    sock = zctx.socket(zmq.PUSH)
    monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    q.put((port, nbytes))
    monitor.recv_multipart()  # one receiver connected
    sock.send_multipart(enc.start(start))
    t0, c0 = time.perf_counter(), time.process_time()
    for i, m in enumerate(messages):
        if rate:
            ahead = t0 + i / rate - time.perf_counter()
            if ahead > 0.0005:
                time.sleep(ahead)
        sock.send_multipart(m, copy=False)
    sock.send_multipart(enc.end(1))
    q.put((time.perf_counter() - t0, (time.process_time() - c0) / n * 1e6))
    sock.disable_monitor()
    monitor.close()
    sock.close(linger=-1)
    zctx.term()  # waits until every zero-copy frame left, while the buffers live


def thread_cpu() -> dict[int, float]:
    """CPU seconds of each thread of this process, by thread id (Linux; else empty)."""
    out = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    tick = os.sysconf("SC_CLK_TCK")
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:  # the thread ended
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return out


def split_cpu(before: dict[int, float], after: dict[int, float], n: int) -> dict[str, float]:
    """µs per frame of the receiver, analysis and ZeroMQ I/O threads between two samples."""
    import threading

    names = {t.native_id: t.name for t in threading.enumerate()}
    out = {"receiver": 0.0, "analysis": 0.0, "zmq_io": 0.0}
    for tid, cpu in after.items():
        name = names.get(tid, "")
        key = ("receiver" if "receiver" in name else "analysis" if "analysis" in name
               else "zmq_io" if tid not in names else "")
        if key:
            out[key] += (cpu - before.get(tid, 0.0)) / n * 1e6
    return out


def start_sender(protocol, compression, data, n, rate=0.0):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=sender, args=(protocol, compression, str(data), n, rate, q))
    p.start()
    port, nbytes = q.get(timeout=600)
    return p, q, f"tcp://127.0.0.1:{port}", nbytes


def ceiling(protocol, compression, data, n) -> dict:
    """Plain PULL of the same messages: frames/s, wire GB/s, CPU µs per frame here."""
    p, q, endpoint, nbytes = start_sender(protocol, compression, data, n)
    sock = zmq.Context.instance().socket(zmq.PULL)
    sock.connect(endpoint)
    sock.recv_multipart(copy=False)  # header
    sock.recv_multipart(copy=False)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n - 1):
        sock.recv_multipart(copy=False)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    sock.recv_multipart(copy=False)  # end
    sock.close()
    _, send_us = q.get(timeout=60)
    p.join()
    return {"fps": (n - 1) / dt, "wire_gbps": nbytes / n * (n - 1) / dt / 1e9,
            "cpu_us": cpu / (n - 1) * 1e6, "send_us": send_us}


def live(protocol, compression, data, n, rate=0.0, batch_frames=None) -> dict:
    """The live pipeline on the same messages (sender paced to ``rate`` if > 0)."""
    import framescope
    import framescope.masks as fm
    from framescope.live import ZMQSource
    from framescope.udf import ApplyMasks, CenterOfMass

    p, q, endpoint, nbytes = start_sender(protocol, compression, data, n, rate)
    udfs = [ApplyMasks({"adf": fm.ring(128, 128, 40, 90)}), CenterOfMass(radius=40)]
    done_at: list[float] = []
    c0, threads0 = time.process_time(), thread_cpu()
    run = framescope.submit(
        udfs, ZMQSource(endpoint, protocol, policy="drop", batch_frames=batch_frames),
        on_series_end=lambda ds: done_at.append(time.perf_counter()))
    t_first, latencies = None, []
    while not done_at:  # coarse polling: a dashboard's few Hz, not a busy loop
        st = run.status
        if t_first is None and st.frames_received:
            t_first = time.perf_counter()
        if st.frames_processed:
            latencies.append(st.latency_s)
        time.sleep(0.02)
    cpu, threads = time.process_time() - c0, thread_cpu()
    st = run.status
    final = run.results
    split = split_cpu(threads0, threads, n)  # before cancel(): the threads still exist
    run.cancel()
    _, send_us = q.get(timeout=60)
    p.join()
    dt = done_at[0] - t_first
    return {"fps": st.frames_processed / dt,
            "wire_gbps": nbytes * st.frames_processed / n / dt / 1e9,
            "frame_gbps": st.frames_processed * DET[0] * DET[1] * 2 / dt / 1e9,
            "processed": st.frames_processed, "dropped": st.dropped, "gaps": st.gaps,
            "latency_median": statistics.median(latencies) if latencies else float("nan"),
            "latency_max": st.latency_max_s, "complete": bool(final[0].attrs["complete"]),
            "bytes_per_frame": nbytes / n, "cpu_us": cpu / n * 1e6, "send_us": send_us,
            **split}


def row(label: str, c: dict | None, r: dict) -> str:
    ceil = (f"{c['fps']:8.0f} {c['wire_gbps']:5.2f} {c['cpu_us']:4.0f} {c['send_us']:4.0f}"
            if c else f"{'':8s} {'':5s} {'':4s} {'':4s}")
    return (f"{label:28s} {r['bytes_per_frame']:7.0f} | {ceil} | {r['fps']:7.0f} "
            f"{r['wire_gbps']:5.2f} {r['frame_gbps']:5.2f} {r['cpu_us']:4.0f} "
            f"{r['zmq_io']:3.0f} {r['receiver']:3.0f} {r['analysis']:3.0f} {r['send_us']:4.0f} "
            f"{r['dropped']:6d} {1e3 * r['latency_median']:5.1f} {1e3 * r['latency_max']:5.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=16384, help="frames per series")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs per case (the machine is shared: best one printed)")
    parser.add_argument("--cases", default="dectris-stream2:none,dectris-stream2:bslz4,"
                                           "native:none,dectris-stream1:bslz4",
                        help="protocol:compression,...")
    parser.add_argument("--batch-frames", default="",
                        help="frames per batch to compare, e.g. 128,32 (default: the "
                             "library's)")
    args = parser.parse_args()
    n = args.frames
    print(f"{n} frames of {DET[0]}x{DET[1]} uint16 per series; {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}; virtual detector (ring) + COM; best of "
          f"{args.repeat}, after a warm-up series (numba kernels loaded)")
    print(f"{'':28s} {'':7s} | {'plain ZeroMQ PULL':24s} | live: decode + analyse + merge; "
          f"CPU µs/frame: this process (its ZeroMQ I/O, receiver, analysis threads), sender")
    print(f"{'case':28s} {'B/frame':>7s} | {'fps':>8s} {'GB/s':>5s} {'CPU':>4s} {'send':>4s} | "
          f"{'fps':>7s} {'GB/s':>5s} {'GB/s':>5s} {'CPU':>4s} {'io':>3s} {'rcv':>3s} "
          f"{'ana':>3s} {'send':>4s} {'drop':>6s} {'lat50':>5s} {'latmx':>5s}")
    print(f"{'':28s} {'':7s} | {'':8s} {'wire':>5s} {'µs':>4s} {'µs':>4s} | {'':7s} "
          f"{'wire':>5s} {'frame':>5s} {'µs':>4s} {'':3s} {'':3s} {'':3s} {'µs':>4s} {'':6s} "
          f"{'ms':>5s} {'ms':>5s}")
    live("native", "none", args.data, min(n, 1024))  # warm-up: JIT kernels, allocator
    sizes = [int(b) for b in args.batch_frames.split(",") if b] or [None]
    for case in args.cases.split(","):
        protocol, compression = case.split(":")
        cs, rs = [], {b: [] for b in sizes}
        for _ in range(args.repeat):  # alternate, so all see the same machine load
            cs.append(ceiling(protocol, compression, args.data, n))
            for b in sizes:
                rs[b].append(live(protocol, compression, args.data, n, batch_frames=b))
        c = max(cs, key=lambda x: x["fps"])
        for b in sizes:
            r = max(rs[b], key=lambda x: (x["dropped"] == 0, x["fps"]))
            label = case if b is None else f"{case} b={b}"
            print(row(label, c, r), flush=True)
            rate = r["fps"]
            while r["dropped"]:  # a detector cannot wait: find the rate with nothing dropped
                rate *= 0.85
                r = live(protocol, compression, args.data, n, rate, batch_frames=b)
                print(row(f"  sender paced {rate:.0f}/s", None, r), flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
