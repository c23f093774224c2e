"""Receiver throughput with and without recording (``ZMQSource(record=...)``).

A sender process pre-encodes one series of 256 x 256 uint16 frames and PUSHes it as fast
as the receiver takes it (ZeroMQ back-pressure: nothing is lost in transport). This process
runs a ``ZMQSource`` with no analysis attached: its receiver thread receives, decodes,
checks and (with ``record=``) queues each frame for the recording thread, which writes it
into the HDF5 recording. Reported per case, best of ``--repeat`` runs: frames/s received
(first frame to the series' end message) and recorded (first frame to the recording
closed by ``stop()``, all written), the CPU µs per frame of the receiver and the recording
threads, frames recorded and not recorded (``record_dropped``), and the file size.

    python benchmarks/bench_record.py --frames 8192 --repeat 3
    python benchmarks/bench_record.py --dir /data/scratch   # record onto that disk

The recording goes to ``--dir`` (default the system temp dir) and is deleted after each
run. The first run of a case also checks the recording against the frames sent.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from bench_live import DEFAULT_DATA, DET, load_frames, start_sender, thread_cpu

# (protocol, compression on the wire, record: None = off, else the recording's compression)
CASES = [
    ("dectris-stream2", "none", None), ("dectris-stream2", "none", "none"),
    ("dectris-stream2", "bslz4", None), ("dectris-stream2", "bslz4", "none"),
    ("dectris-stream2", "bslz4", "bslz4"), ("native", "none", "bslz4"),
]


def receive(protocol: str, wire: str, record: str | None, data: Path, n: int,
            directory: str, check: bool) -> dict:
    from framescope.live import ZMQSource, read_recording

    p, q, go, endpoint, nbytes = start_sender(protocol, wire, data, n)
    path = None if record is None else os.path.join(directory, f"bench-{os.getpid()}.h5")
    src = ZMQSource(endpoint, protocol, record=path,
                    record_compression=None if record == "none" else record)
    threads0 = thread_cpu()
    src.start()
    t_first = time.perf_counter()
    go.set()  # the sender starts once the source has connected
    while src.status.state != "finished":
        time.sleep(0.002)
    dt = time.perf_counter() - t_first
    if record is not None:  # until every frame is written (or counted as not)
        while src.status.recorded + src.status.record_dropped < src.status.frames_received:
            time.sleep(0.002)
    dt_rec = time.perf_counter() - t_first
    threads = thread_cpu()  # before stop(): the threads still exist
    cpu = {"framescope-receiver": 0.0, "framescope-recorder": 0.0}
    for t in threading.enumerate():
        if t.name in cpu:
            cpu[t.name] = (threads[t.native_id] - threads0.get(t.native_id, 0.0)) / n * 1e6
    src.stop()
    st = src.status
    q.get(timeout=60)
    p.join()
    out = {"fps": st.frames_received / dt, "fps_rec": st.recorded / dt_rec,
           "cpu_us": cpu["framescope-receiver"], "rec_us": cpu["framescope-recorder"],
           "received": st.frames_received, "recorded": st.recorded,
           "record_dropped": st.record_dropped, "wire_bytes": nbytes / n, "file_mib": 0.0}
    if path is not None:
        out["file_mib"] = os.path.getsize(path) / 2**20
        if check:
            frames = load_frames(data, n)
            [(_, got)] = list(read_recording(path))
            for i, frame in got:
                if not np.array_equal(frame, frames[i]):
                    raise AssertionError(f"recorded frame {i} differs from the one sent")
        os.remove(path)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=8192)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    print(f"{args.frames} frames of {DET[0]}x{DET[1]} uint16, receiver only, recording in "
          f"{args.dir}; best of {args.repeat}")
    print(f"{'protocol':16s} {'wire':6s} {'record':7s} {'B/frame':>8s} | {'rx fps':>7s} "
          f"{'rec fps':>7s} {'rx µs':>6s} {'rec µs':>6s} {'recorded':>8s} {'not rec':>7s} "
          f"{'MiB':>5s}")
    for protocol, wire, record in CASES:
        runs = [receive(protocol, wire, record, args.data, args.frames, args.dir, k == 0)
                for k in range(args.repeat)]
        best = max(runs, key=lambda r: r["fps"])
        rec = "" if record is None else f"{best['fps_rec']:7.0f}"
        print(f"{protocol:16s} {wire:6s} {record or 'off':7s} {best['wire_bytes']:8.0f} | "
              f"{best['fps']:7.0f} {rec:>7s} {min(r['cpu_us'] for r in runs):6.1f} "
              f"{min(r['rec_us'] for r in runs):6.1f} {best['recorded']:8d} "
              f"{best['record_dropped']:7d} {best['file_mib']:5.0f}", flush=True)


if __name__ == "__main__":
    main()
