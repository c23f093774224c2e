"""Live stream analysis throughput and latency beside a plain ZeroMQ PUSH→PULL ceiling.

A sender process (the "detector") pre-encodes one series of 256 x 256 uint16 frames per
protocol/compression (so encoding costs nothing during the run) and PUSHes it as fast as
the receiver takes it (ZeroMQ back-pressure: nothing is lost in transport). In this process:

- ceiling: a plain PULL socket receiving the same messages (``recv_multipart(copy=False)``,
  nothing else): the transport's limit on this machine, measured in the same run;
- live: ``framescope.submit([ApplyMasks(ring), CenterOfMass(radius)], ZMQSource(...))`` with
  ``policy="drop"`` and a 2 GiB frame buffer (LiberTEM-live's default): decode, check,
  batch, analyse, merge. Reported: frames/s and GB/s (on
  the wire, and of decoded frames) from the first frame received to the series' results
  being final, frames dropped, and the latency from a frame's arrival to its result being
  visible in ``snapshot()`` (median of samples every 20 ms, and maximum);
- for both, the CPU time of this process per frame (all its threads, ZeroMQ's I/O thread
  included; for the live run also split by thread: ZeroMQ I/O, receiver, analysis) and of
  the sender process: on a shared machine the steadier figures, and sender + receiver CPU
  per frame is what two cores must carry;
- if frames were dropped at full speed, paced runs (the sender sending at a fixed rate, as
  a detector does) find the highest rate with 0 dropped;
- the same live analysis with ``processes=2`` (two receiver processes);
- the peer: LiberTEM-live (its Rust receiver ``libertem-dectris``, ring + COM UDFs on its
  pipelined executor with 2 worker processes), on the same messages in the same run.

DECTRIS stream v1 cases are sent by LiberTEM-live's DECTRIS simulator (a REST copy of the
DCU, armed over HTTP, replaying a dump of the messages that this script writes from the
same frames), to every receiver alike: the plain PULL, framescope and LiberTEM-live. Each
receiver runs warm: LiberTEM-live's runs reuse one connection after a warm-up run, and
framescope's one ``ZMQSource`` per case after a warm-up series (a new job on a source
reuses the batch buffers the last one gave back: memory paged in once). That
needs the environment with LiberTEM-live (``--peer-python``, default ``.venv-bench``); without
it, stream v1 comes from framescope's sender and the peer column stays empty. Other
protocols come from framescope's sender. At the end the summary table: frames/s of each.

    python benchmarks/bench_live.py                      # stream v1 bslz4/lz4/none + peer
    python benchmarks/bench_live.py --frames 8192 --cases dectris-stream2:none

Frames come from ``--data`` (a raw 128x128x256x256 uint16 file, as written by
``framescope simulate``) when it exists, else from a cycle of synthetic frames.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import zmq

HERE = Path(__file__).parent
DEFAULT_DATA = HERE / "data" / "128x128_256x256" / "data.raw"
DEFAULT_PEER = HERE.parent / ".venv-bench" / "bin" / "python"
DET = (256, 256)
RING = (128, 128, 40, 90)  # cy, cx, r_in, r_out
# frames waiting for analysis: LiberTEM-live's receiver buffers 2 GiB by default; the same
# here (per receiver), so that neither drops what the other would have kept
BUFFER_MIB = 2048
DECODE_THREADS: int | None = None  # ZMQSource(decode_threads=): the library's default


def load_frames(path: Path, n: int) -> np.ndarray:
    """``n`` 256x256 uint16 frames: from the raw file if present, else synthetic, cycled."""
    if path.exists() and path.stat().st_size >= n * DET[0] * DET[1] * 2:
        return np.fromfile(path, dtype="<u2", count=n * DET[0] * DET[1]).reshape(n, *DET)
    from framescope.datasets import synthetic

    distinct = min(n, 512)
    base = np.asarray(synthetic(scan=(1, distinct), det=DET, dtype="uint16")).reshape(-1, *DET)
    return base[np.arange(n) % distinct]


def sender(protocol: str, compression: str, path: str, n: int, rate: float, q, go) -> None:
    """The detector: pre-encode, bind, wait for one receiver and ``go``, send one series,
    report."""
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
    go.wait()  # (the receiving side's clock starts here)
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
    q, go = ctx.Queue(), ctx.Event()
    p = ctx.Process(target=sender, args=(protocol, compression, str(data), n, rate, q, go))
    p.start()
    port, nbytes = q.get(timeout=600)
    return p, q, go, f"tcp://127.0.0.1:{port}", nbytes


def scan_of(n: int) -> tuple[int, int]:
    side = int(np.sqrt(n))
    return (side, n // side) if side * (n // side) == n else (1, n)


class OwnFeed:
    """framescope's sender process: one series per :meth:`open`."""

    head_messages = 1

    def __init__(self, protocol: str, compression: str, data: Path, n: int) -> None:
        self.protocol, self.compression, self.data, self.n = protocol, compression, data, n

    def open(self, rate: float = 0.0) -> str:
        self.p, self.q, self._go, endpoint, self.nbytes = start_sender(
            self.protocol, self.compression, self.data, self.n, rate)
        return endpoint

    def go(self) -> None:
        """Start sending (once a receiver has connected)."""
        self._go.set()

    def close(self) -> float:
        _, send_us = self.q.get(timeout=600)
        self.p.join()
        return send_us


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_dump(path: Path, compression: str, data: Path, n: int) -> tuple[int, float]:
    """Stream v1 messages of ``n`` frames in the simulator's dump format; (bytes, ring sum).

    A record per message part: its length (int64) and bytes. Header and detector config
    are separate messages (as a DCU may send them), each frame four parts with its MD5.
    """
    import framescope.masks as fm
    from framescope.live import _codecs

    mask = fm.ring(*RING).rasterize(DET)
    frames = load_frames(data, n)
    encoding = {"none": "<", "lz4": "lz4<", "bslz4": "bs16-lz4<"}[compression]
    codec = {"none": "raw", "lz4": "lz4", "bslz4": "bslz4"}[compression]
    config = {"x_pixels_in_detector": DET[1],
              "y_pixels_in_detector": DET[0], "bit_depth_image": 16, "nimages": 1,
              "ntrigger": n, "trigger_mode": "exte", "compression": compression,
              "count_time": 1e-4, "frame_time": 1e-4}
    nbytes, ring_sum = 0, 0.0
    with open(path, "wb") as f:
        def record(part: bytes) -> None:
            f.write(np.int64(len(part)).tobytes())
            f.write(part)

        record(json.dumps({"htype": "dheader-1.0", "series": 1,
                           "header_detail": "basic"}).encode())
        record(json.dumps(config).encode())
        for i in range(n):
            blob = _codecs.encode(frames[i], codec)
            blob = blob.tobytes() if isinstance(blob, np.ndarray) else bytes(blob)
            parts = [json.dumps({"htype": "dimage-1.0", "series": 1, "frame": i,
                                 "hash": hashlib.md5(blob).hexdigest()}).encode(),
                     json.dumps({"htype": "dimage_d-1.0", "shape": [DET[1], DET[0]],
                                 "type": "uint16", "encoding": encoding,
                                 "size": len(blob)}).encode(),
                     blob,
                     json.dumps({"htype": "dconfig-1.0", "start_time": 0, "stop_time": 0,
                                 "real_time": 0}).encode()]
            for part in parts:
                record(part)
            nbytes += sum(len(part) for part in parts)
            ring_sum += float((frames[i] * mask).sum())
        record(json.dumps({"htype": "dseries_end-1.0", "series": 1}).encode())
    return nbytes, ring_sum


class SimFeed:
    """LiberTEM-live's DECTRIS simulator replaying a dump; each :meth:`go` arms it once."""

    head_messages = 2  # dheader-1.0, then the detector config

    def __init__(self, python: Path, compression: str, data: Path, n: int,
                 workdir: Path) -> None:
        self.n, self.python = n, python
        self.dump = workdir / f"stream1-{compression}.dump"
        self.nbytes, self.ring_sum = write_dump(self.dump, compression, data, n)
        self.api_port = _free_port()
        # --zmqport 0: a port of its choosing (a fixed one fails: it binds twice), logged
        self.proc = subprocess.Popen(
            [str(python), "-m", "libertem_live.detectors.dectris.sim", str(self.dump),
             "--port", str(self.api_port), "--zmqport", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.data_port = 0
        for line in self.proc.stderr:
            if "listening on tcp://" in line:
                self.data_port = int(line.rsplit(":", 1)[1])
                break
        if not self.data_port:
            raise RuntimeError("LiberTEM-live's simulator did not start")
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()  # (drained)
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(self._url("detector/api/version/"), timeout=1).read()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("LiberTEM-live's simulator did not answer") from None
                time.sleep(0.2)

    def _url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.api_port}/{path}"

    def open(self, rate: float = 0.0) -> str:
        if rate:
            raise ValueError("the simulator is not paced here")
        return f"tcp://127.0.0.1:{self.data_port}"

    def go(self) -> None:
        req = urllib.request.Request(self._url("detector/api/1.8.0/command/arm"),
                                     data=b"{}", method="PUT",
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=30).read()

    def close(self) -> float:
        return float("nan")  # (the sender's CPU is not measured here)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _median(runs: list[dict]) -> float:
    return statistics.median(r["fps"] for r in runs) if runs else float("nan")


def ceiling(feed, n) -> dict:
    """Plain PULL of the same messages: frames/s, wire GB/s, CPU µs per frame here."""
    endpoint = feed.open()
    sock = zmq.Context.instance().socket(zmq.PULL)
    sock.connect(endpoint)
    feed.go()
    for _ in range(feed.head_messages):
        sock.recv_multipart(copy=False)
    sock.recv_multipart(copy=False)  # the first frame: the clock starts
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n - 1):
        sock.recv_multipart(copy=False)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    sock.recv_multipart(copy=False)  # end
    sock.close()
    send_us = feed.close()
    return {"fps": (n - 1) / dt, "wire_gbps": feed.nbytes / n * (n - 1) / dt / 1e9,
            "cpu_us": cpu / (n - 1) * 1e6, "send_us": send_us}


def peer(feed: SimFeed, n: int, runs: int, workdir: Path) -> list[dict]:
    """LiberTEM-live on the simulator's stream: one subprocess, a warm-up and ``runs`` runs."""
    import framescope.masks as fm

    mask, out = workdir / "ring.npy", workdir / "peer-ring.npy"
    np.save(mask, fm.ring(*RING).rasterize(DET))
    ny, nx = scan_of(n)
    done = subprocess.run(
        [str(feed.python), str(HERE / "_peer_libertem_live.py"), str(feed.api_port),
         str(feed.data_port), str(ny), str(nx), str(runs), str(mask), str(out)],
        capture_output=True, text=True, timeout=1800)
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not rows:
        print(f"  LiberTEM-live failed ({done.returncode}): {done.stderr[-2000:]}")
        return []
    for r in rows:
        r["equal"] = bool(np.isclose(r["ring_sum"], feed.ring_sum, rtol=1e-5))
    return rows


def live(feed, n, rate=0.0, batch_frames=None, processes=1, sources=None) -> dict:
    """The live pipeline on the same messages (sender paced to ``rate`` if > 0).

    ``sources``: ZMQSources kept by endpoint, reused by later runs on the same endpoint (as
    LiberTEM-live's runs reuse one connection, and a user one source for many series): a
    new job on a source reuses the batch buffers the last one gave back.
    """
    import framescope
    import framescope.masks as fm
    from framescope.live import ZMQSource
    from framescope.udf import ApplyMasks, CenterOfMass

    protocol = getattr(feed, "protocol", "dectris-stream1")
    endpoint = feed.open(rate)
    udfs = [ApplyMasks({"adf": fm.ring(*RING)}), CenterOfMass(radius=40)]
    done_at: list[float] = []
    c0, threads0 = time.process_time(), thread_cpu()
    # scan= given: receivers in other processes never see the header
    key = (endpoint, batch_frames)
    source = None if sources is None or processes != 1 else sources.get(key)
    if source is None:
        source = ZMQSource(endpoint, protocol, policy="drop", batch_frames=batch_frames,
                           scan=scan_of(n), buffer_mib=BUFFER_MIB,
                           decode_threads=DECODE_THREADS)
        if sources is not None and processes == 1:
            sources[key] = source
    run = framescope.submit(
        udfs, source,
        on_series_end=lambda ds: done_at.append(time.perf_counter()), processes=processes)
    # the clock starts before the sender does (as LiberTEM-live's run_udf arms the
    # detector inside its own clock): a first frame seen in the status lags, by a whole
    # kernel warm-up in fresh receiver processes (processes=2), which once inflated the rate
    t_first, latencies = time.perf_counter(), []
    feed.go()
    while not done_at:  # coarse polling: a dashboard's few Hz, not a busy loop
        st = run.status
        if st.frames_processed:
            latencies.append(st.latency_s)
        time.sleep(0.02)
    cpu, threads = time.process_time() - c0, thread_cpu()
    st = run.status
    final = run.results
    split = split_cpu(threads0, threads, n)  # before cancel(): the threads still exist
    run.cancel()
    send_us = feed.close()
    dt = done_at[0] - t_first
    ring_sum = float(np.asarray(final[0]["intensity"]).sum())
    nbytes = feed.nbytes
    return {"fps": st.frames_processed / dt, "ring_sum": ring_sum,
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
    parser.add_argument("--cases", default="dectris-stream1:bslz4,dectris-stream1:lz4,"
                                           "dectris-stream1:none,dectris-stream2:bslz4,"
                                           "native:none",
                        help="protocol:compression,...")
    parser.add_argument("--batch-frames", default="",
                        help="frames per batch to compare, e.g. 128,32 (default: the "
                             "library's)")
    parser.add_argument("--peer-python", type=Path, default=DEFAULT_PEER,
                        help="interpreter of the environment with LiberTEM-live (its "
                             "simulator sends stream v1, and it is the peer column)")
    parser.add_argument("--no-processes", action="store_true",
                        help="skip the processes=2 runs")
    parser.add_argument("--decode-threads", type=int, default=None,
                        help="ZMQSource(decode_threads=...) (default: the library's)")
    args = parser.parse_args()
    global DECODE_THREADS
    DECODE_THREADS = args.decode_threads
    n = args.frames
    has_peer = args.peer_python.exists()
    print(f"{n} frames of {DET[0]}x{DET[1]} uint16 per series; {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}; virtual detector (ring) + COM; best of "
          f"{args.repeat}, after a warm-up series (numba kernels loaded); stream v1 from "
          + ("LiberTEM-live's simulator" if has_peer else "framescope's sender (no peer)"))
    print(f"{'':28s} {'':7s} | {'plain ZeroMQ PULL':24s} | live: decode + analyse + merge; "
          f"CPU µs/frame: this process (its ZeroMQ I/O, receiver, analysis threads), sender")
    print(f"{'case':28s} {'B/frame':>7s} | {'fps':>8s} {'GB/s':>5s} {'CPU':>4s} {'send':>4s} | "
          f"{'fps':>7s} {'GB/s':>5s} {'GB/s':>5s} {'CPU':>4s} {'io':>3s} {'rcv':>3s} "
          f"{'ana':>3s} {'send':>4s} {'drop':>6s} {'lat50':>5s} {'latmx':>5s}")
    print(f"{'':28s} {'':7s} | {'':8s} {'wire':>5s} {'µs':>4s} {'µs':>4s} | {'':7s} "
          f"{'wire':>5s} {'frame':>5s} {'µs':>4s} {'':3s} {'':3s} {'':3s} {'µs':>4s} {'':6s} "
          f"{'ms':>5s} {'ms':>5s}")
    live(OwnFeed("native", "none", args.data, min(n, 1024)), min(n, 1024))  # warm-up
    sizes = [int(b) for b in args.batch_frames.split(",") if b] or [None]
    summary = []
    workdir = Path(tempfile.mkdtemp(prefix="bench-live-"))
    for case in args.cases.split(","):
        protocol, compression = case.split(":")
        sim = (SimFeed(args.peer_python, compression, args.data, n, workdir)
               if has_peer and protocol == "dectris-stream1" else None)
        feed = sim or OwnFeed(protocol, compression, args.data, n)
        cs, rs, r2, peers = [], {b: [] for b in sizes}, [], []
        sources: dict = {}  # one source per endpoint (the simulator's stays the same)
        try:
            if sim is not None:  # a warm-up on the reused sources (LiberTEM-live: its own)
                for b in sizes:
                    live(feed, n, batch_frames=b, sources=sources)
            # alternate, peer included, so that all see the same machine load (LiberTEM-live
            # starts its workers, and runs a warm-up, for each of its runs)
            for _ in range(args.repeat):
                cs.append(ceiling(feed, n))
                for b in sizes:
                    rs[b].append(live(feed, n, batch_frames=b, sources=sources))
                if not args.no_processes:
                    r2.append(live(feed, n, processes=2))
                if sim is not None and compression != "none":
                    peers += peer(sim, n, 1, workdir)
        finally:
            if sim is not None:
                sim.stop()
                sim.dump.unlink()
        c = max(cs, key=lambda x: x["fps"])
        best = None
        for b in sizes:
            r = best = max(rs[b], key=lambda x: (x["dropped"] == 0, x["fps"]))
            label = case if b is None else f"{case} b={b}"
            print(row(label, c, r), flush=True)
            rate = r["fps"]
            while r["dropped"] and sim is None:  # a detector cannot wait: the rate with 0 lost
                rate *= 0.85
                r = live(feed, n, rate, batch_frames=b)
                print(row(f"  sender paced {rate:.0f}/s", None, r), flush=True)
        p2 = max(r2, key=lambda x: (x["dropped"] == 0, x["fps"])) if r2 else None
        pb = max(peers, key=lambda x: x["fps"]) if peers else None
        ref = sim.ring_sum if sim is not None else None
        for name, r in (("framescope", best), ("framescope processes=2", p2),
                        ("LiberTEM-live", pb)):
            if r is not None and ref is not None and not np.isclose(r["ring_sum"], ref,
                                                                    rtol=1e-5):
                print(f"  {case}: {name}'s ring image differs from numpy's "
                      f"({r['ring_sum']:.6g} vs {ref:.6g})")
        # the typical figure beside the best: runs here move by +-20 %, the peer's too
        med = {"peer": _median(peers), "one": _median(rs[sizes[-1]]), "ceiling": _median(cs)}
        summary.append((case, best["bytes_per_frame"], c, pb, best, p2, med))
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    print()
    print(f"best of {args.repeat} runs (median of the runs in brackets); the ratios are of "
          f"the medians")
    print("| stream | B/frame | plain ZeroMQ PULL | LiberTEM-live (2 workers) | "
          "framescope (1 process) | framescope (processes=2) | framescope / LiberTEM-live | "
          "framescope / plain PULL |")
    print("|---|---|---|---|---|---|---|---|")

    def cell(r: dict | None) -> str:
        if r is None:
            return "—"
        lost = r.get("dropped", 0) + r.get("gaps", 0)
        return f"{r['fps']:.0f}" + (f" ({lost} lost)" if lost else "")

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}" if a == a and b == b else "—"  # (nan: no runs)

    for case, size, c, pb, r1, p2, med in summary:
        peer_cell = cell(pb) if pb is None else f"{cell(pb)} ({med['peer']:.0f})"
        print(f"| {case} | {size:.0f} | {c['fps']:.0f} ({med['ceiling']:.0f}) | {peer_cell} | "
              f"{cell(r1)} ({med['one']:.0f}) | {cell(p2)} | "
              f"{ratio(med['one'], med['peer'])} | {ratio(med['one'], med['ceiling'])} |")


if __name__ == "__main__":
    main()
