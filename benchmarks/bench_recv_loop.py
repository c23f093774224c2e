"""Receive loops for uncompressed DECTRIS stream v1 frames: what a compiled loop would save.

Made for issue 19: uncompressed frames reach 0.66-0.77 of a
plain ZeroMQ receive, and the receiver thread's Python per message is much of the gap.
Three loops receive the same messages from one sender process (16 384 stream v1 image
messages of 256 x 256 uint16, four parts each, as a DECTRIS detector sends them):

- ``plain``: ``recv_multipart(copy=False)`` and nothing else (the ceiling: the bytes
  arrive, nothing is kept);
- ``python``: what framescope's receiver does per message, in essence: zmq.Frames, the two
  JSON parts decoded, the image copied into a batch buffer;
- ``compiled``: framescope's compiled receive loop (``live._fastrecv.receive_images``: numba
  without the GIL calling libzmq, the image part ``memcpy``'d into the batch buffer, up to
  a batch of messages per call).

Printed per loop: frames/s, the receiving thread's CPU per frame, the whole process's
(ZeroMQ's I/O thread included), medians of ``--repeat`` alternating runs after a warm-up.
The frame numbers every loop read are checked against the ones sent. On 2 cores the
Python sender (~12 000 messages/s) bounds all three rates alike: the CPU columns are the
figures; in framescope's pipeline, sharing the cores, the CPU bounds the rate.

    python bench_recv_loop.py --repeat 5
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import time

import numpy as np
import zmq

from framescope.live._fastrecv import receive_images

DET = (256, 256)
FRAME_BYTES = DET[0] * DET[1] * 2
BATCH = 256

DESC = json.dumps({"htype": "dimage_d-1.0", "shape": DET[::-1], "type": "uint16",
                   "encoding": "<", "size": FRAME_BYTES}).encode()


def sender(port: int, n: int) -> None:
    """Stream v1 image messages (dimage, dimage_d, the frame, dconfig), zero-copy."""
    ctx = zmq.Context()
    s = ctx.socket(zmq.PUSH)
    s.connect(f"tcp://127.0.0.1:{port}")
    image = np.random.default_rng(0).integers(0, 100, DET, np.uint16).tobytes()
    config = json.dumps({"htype": "dconfig-1.0", "start_time": 0, "stop_time": 0,
                         "real_time": 0}).encode()
    heads = [json.dumps({"htype": "dimage-1.0", "series": 1, "frame": k,
                         "hash": ""}).encode() for k in range(n)]
    s.send(b"go")
    for k in range(n):
        s.send_multipart([heads[k], DESC, image, config], copy=False)
    s.send(b"end")
    s.close(linger=-1)
    ctx.term()


def run(loop: str, n: int) -> dict:
    ctx = zmq.Context.instance()
    r = ctx.socket(zmq.PULL)
    r.setsockopt(zmq.RCVTIMEO, 60_000)  # (the spawned sender imports this module first)
    port = r.bind_to_random_port("tcp://127.0.0.1")
    p = mp.get_context("spawn").Process(target=sender, args=(port, n))
    p.start()
    out = np.empty((BATCH, FRAME_BYTES), np.uint8)
    index = np.empty(BATCH, np.int64)
    msg = np.zeros(8, np.int64)  # a zmq_msg_t
    numbers: list[int] = []
    r.recv()  # the sender is up: the clock starts
    r.setsockopt(zmq.RCVTIMEO, 5000)
    t0, c0, p0 = time.perf_counter(), time.thread_time(), time.process_time()
    if loop == "plain":
        for _ in range(n):
            r.recv_multipart(copy=False)
    elif loop == "python":
        for k in range(n):
            parts = r.recv_multipart(copy=False)
            head = json.loads(parts[0].bytes)
            json.loads(parts[1].bytes)
            out[k % BATCH] = np.frombuffer(parts[2].buffer, np.uint8)
            numbers.append(head["frame"])
    else:  # framescope's loop (its receiver checks and counts in Python besides)
        sock, left, desc = r.underlying, n, np.frombuffer(DESC, np.uint8)
        sizes, side, held = np.empty(BATCH, np.int64), np.empty(65536, np.uint8), np.zeros(
            3, np.int64)
        while left:
            first = 0
            while first < BATCH and left:
                got, why = receive_images(sock, msg, 1, desc, out, first,
                                          min(BATCH - first, left), index[first:], sizes,
                                          side, held)
                if why not in (0, 1) or not got:
                    raise RuntimeError(f"the loop stopped ({why}) after {got} messages")
                first, left = first + got, left - got
            numbers.extend(index[:first].tolist())
    dt = time.perf_counter() - t0
    cpu, pcpu = time.thread_time() - c0, time.process_time() - p0
    r.recv()
    p.join()
    r.close()
    if loop != "plain" and numbers != list(range(n)):
        raise AssertionError(f"{loop}: the frame numbers read differ from those sent")
    return {"fps": n / dt, "thread_us": cpu / n * 1e6, "process_us": pcpu / n * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=16384)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    loops = ("plain", "python", "compiled")
    for loop in loops:  # warm-up: the JIT, the sockets
        run(loop, 1024)
    res: dict[str, list[dict]] = {loop: [] for loop in loops}
    for k in range(args.repeat):
        for loop in loops if k % 2 == 0 else loops[::-1]:
            res[loop].append(run(loop, args.frames))
    print(f"{args.frames} stream v1 messages of {DET[0]}x{DET[1]} uint16 (4 parts, "
          f"{FRAME_BYTES} B image), {os.cpu_count()} cores; medians of {args.repeat} runs")
    print(f"{'loop':10s} {'fps':>8s} {'/ plain':>8s} {'thread µs':>10s} {'process µs':>11s}")
    ceiling = statistics.median(r["fps"] for r in res["plain"])
    for loop in loops:
        fps = statistics.median(r["fps"] for r in res[loop])
        print(f"{loop:10s} {fps:8.0f} {fps / ceiling:8.2f} "
              f"{statistics.median(r['thread_us'] for r in res[loop]):10.1f} "
              f"{statistics.median(r['process_us'] for r in res[loop]):11.1f}")


if __name__ == "__main__":
    main()
