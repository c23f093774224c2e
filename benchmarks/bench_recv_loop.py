"""Receive loops for uncompressed DECTRIS stream v1 frames: what a compiled loop would save.

An experiment for issue 19, not framescope code: uncompressed frames reach 0.66-0.77 of a
plain ZeroMQ receive, and the receiver thread's Python per message is much of the gap.
Three loops receive the same messages from one sender process (16 384 stream v1 image
messages of 256 x 256 uint16, four parts each, as a DECTRIS detector sends them):

- ``plain``: ``recv_multipart(copy=False)`` and nothing else (the ceiling: the bytes
  arrive, nothing is kept);
- ``python``: what framescope's receiver does per message, in essence: zmq.Frames, the two
  JSON parts decoded, the image copied into a batch buffer;
- ``compiled``: a numba loop without the GIL that calls libzmq (the library pyzmq loads)
  through ctypes, reads the frame number out of the first part, and copies the image part
  into the batch buffer with ``memcpy``, up to a batch of messages per call.

Printed per loop: frames/s, the receiving thread's CPU per frame, the whole process's
(ZeroMQ's I/O thread included), medians of ``--repeat`` alternating runs after a warm-up.
The frame numbers every loop read are checked against the ones sent. On 2 cores the
Python sender (~12 000 messages/s) bounds all three rates alike: the CPU columns are the
figures; in framescope's pipeline, sharing the cores, the CPU bounds the rate.

    python bench_recv_loop.py --repeat 5
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import json
import multiprocessing as mp
import os
import statistics
import time

import numba
import numpy as np
import zmq

DET = (256, 256)
FRAME_BYTES = DET[0] * DET[1] * 2
BATCH = 256

_zmq_lib = glob.glob(os.path.join(os.path.dirname(zmq.__file__), "..", "pyzmq.libs",
                                  "libzmq-*.so*"))
# the libzmq pyzmq loaded (its wheel's copy); a system one would be another library
_LIB = ctypes.CDLL(_zmq_lib[0] if _zmq_lib else "libzmq.so.5")
_vp, _u8p = ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint8)
msg_init = ctypes.CFUNCTYPE(ctypes.c_int, _vp)(("zmq_msg_init", _LIB))
msg_recv = ctypes.CFUNCTYPE(ctypes.c_int, _vp, _vp, ctypes.c_int)(("zmq_msg_recv", _LIB))
msg_data = ctypes.CFUNCTYPE(_u8p, _vp)(("zmq_msg_data", _LIB))
msg_size = ctypes.CFUNCTYPE(ctypes.c_size_t, _vp)(("zmq_msg_size", _LIB))
msg_more = ctypes.CFUNCTYPE(ctypes.c_int, _vp)(("zmq_msg_more", _LIB))
msg_close = ctypes.CFUNCTYPE(ctypes.c_int, _vp)(("zmq_msg_close", _LIB))
memcpy = ctypes.CFUNCTYPE(_vp, _vp, _u8p, ctypes.c_size_t)(("memcpy", ctypes.CDLL(None)))
NOBLOCK = int(zmq.NOBLOCK)
KEY = np.frombuffer(b'"frame"', np.uint8).copy()


@numba.njit(nogil=True)
def _frame_number(p, n, key):  # (numba: untyped)
    """The integer after ``"frame":`` in a small JSON object; -1 if there is none."""
    for i in range(n - len(key)):
        for j in range(len(key)):
            if p[i + j] != key[j]:
                break
        else:
            k = i + len(key)
            while k < n and (p[k] == 32 or p[k] == 58):  # spaces, the colon
                k += 1
            value, digits = 0, 0
            while k < n and 48 <= p[k] <= 57:
                value = value * 10 + (p[k] - 48)
                k += 1
                digits += 1
            return value if digits else -1
    return -1


@numba.njit(nogil=True)
def receive_batch(sock, msg, out, index, first, most, key):  # (numba: untyped)
    """Receive up to ``most`` image messages into ``out[first:]``; how many came.

    The first waits (the socket's timeout), the rest only while messages are queued. A
    message whose image part is not a whole frame gets index -1.
    """
    m = msg.ctypes.data
    got = 0
    while got < most:
        msg_init(m)
        if msg_recv(m, sock, 0 if got == 0 else NOBLOCK) < 0:
            msg_close(m)
            break
        n = msg_size(m)
        number = _frame_number(numba.carray(msg_data(m), n), n, key)
        more = msg_more(m)
        msg_close(m)
        part, whole = 1, False
        while more:
            msg_init(m)
            msg_recv(m, sock, 0)  # (the parts of a message arrive together)
            n = msg_size(m)
            if part == 2 and n == out.shape[1]:
                memcpy(out[first + got].ctypes.data, msg_data(m), n)
                whole = True
            more = msg_more(m)
            msg_close(m)
            part += 1
        index[first + got] = number if whole else -1
        got += 1
    return got


def sender(port: int, n: int) -> None:
    """Stream v1 image messages (dimage, dimage_d, the frame, dconfig), zero-copy."""
    ctx = zmq.Context()
    s = ctx.socket(zmq.PUSH)
    s.connect(f"tcp://127.0.0.1:{port}")
    desc = json.dumps({"htype": "dimage_d-1.0", "shape": DET[::-1], "type": "uint16",
                       "encoding": "<", "size": FRAME_BYTES}).encode()
    image = np.random.default_rng(0).integers(0, 100, DET, np.uint16).tobytes()
    config = json.dumps({"htype": "dconfig-1.0", "start_time": 0, "stop_time": 0,
                         "real_time": 0}).encode()
    heads = [json.dumps({"htype": "dimage-1.0", "series": 1, "frame": k,
                         "hash": ""}).encode() for k in range(n)]
    s.send(b"go")
    for k in range(n):
        s.send_multipart([heads[k], desc, image, config], copy=False)
    s.send(b"end")
    s.close(linger=-1)
    ctx.term()


def run(loop: str, n: int) -> dict:
    ctx = zmq.Context.instance()
    r = ctx.socket(zmq.PULL)
    r.setsockopt(zmq.RCVTIMEO, 5000)
    port = r.bind_to_random_port("tcp://127.0.0.1")
    p = mp.get_context("spawn").Process(target=sender, args=(port, n))
    p.start()
    out = np.empty((BATCH, FRAME_BYTES), np.uint8)
    index = np.empty(BATCH, np.int64)
    msg = np.zeros(64, np.uint8)  # a zmq_msg_t
    numbers: list[int] = []
    r.recv()  # the sender is up: the clock starts
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
    else:
        sock, left = r.underlying, n
        while left:
            first = 0
            while first < BATCH and left:
                got = receive_batch(sock, msg, out, index, first, min(BATCH - first, left),
                                    KEY)
                if not got:
                    raise TimeoutError("no message for 5 s")
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
