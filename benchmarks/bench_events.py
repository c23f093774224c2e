"""Events from three streams: framescope.events beside a plain receive pass and dranspose.

A simulator process (``framescope.events.simulate_streams_process``) publishes a detector
stream (DECTRIS stream v1, uncompressed), an I0 counter (values-json) and motor positions
(values-cbor), one frame of each per event, as fast as they are taken. For each detector
size it prints events/s, from the first event to the last:

- ceiling: the same three streams taken by plain PULL sockets (one poller, no decoding);
- framescope: ``framescope.events.submit`` with a trigger map of one frame per stream per
  event, a worker summing the frame over a ring divided by I0 (numpy) and a reducer placing
  the value on the scan image; workers as 1 and 2 threads, and 2 dask-task workers on a
  LocalCluster of 2 processes; the image is checked against numpy;
- dranspose (PyPI, MAX IV; ``bash benchmarks/setup_dranspose.sh`` makes its venv and
  installs Debian's redis-server): the same worker and reducer, 1 and 2 worker processes,
  on a stream v1 detector stream and an I0 stream (contrast's format: it has no plain
  JSON ingester), no motors stream. Start-up (redis, controller, ingesters) not counted.

    python benchmarks/bench_events.py                  # 2000 x 64x64 and 500 x 256x256
    python benchmarks/bench_events.py --cases 64:2000 --no-peer
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import zmq

import framescope.events as fe
from framescope.events._simulate import simulate_streams_process

STREAMS = ("detector", "i0", "motors")


def ring(det: int) -> np.ndarray:
    y, x = np.indices((det, det))
    r = np.hypot(y - det / 2, x - det / 2)
    return ((r >= det / 8) & (r < det / 3)).astype("f8")


class RingOverI0(fe.EventWorker):
    def __init__(self, parameters, context):
        super().__init__(parameters, context)
        self.mask = ring(parameters["det"])

    def process_event(self, event, parameters):
        if not event.complete:
            return None
        i0 = event["i0"]["i0"]
        return {"value": float((event["detector"] * self.mask).sum() / i0), "i0": i0,
                "x": event["motors"]["x"]}


class ImageReducer(fe.Reducer):
    def __init__(self, parameters, context):
        super().__init__(parameters, context)
        self.publish["image"] = np.full(parameters["n"], np.nan)
        self.publish["i0"] = np.full(parameters["n"], np.nan)

    def process_result(self, result, parameters):
        if result.value is not None:
            self.publish["image"][result.event] = result.value["value"]
            self.publish["i0"][result.event] = result.value["i0"]


def frames_for(n: int, det: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.poisson(3.0, (n, det, det)).astype("u4")


def sim_kwargs(n: int, frames: np.ndarray) -> dict:
    return {"frames": frames, "n_points": n, "det": frames.shape[1:],
            "detector_protocol": "dectris-stream1", "dtype": "uint32"}


def ceiling(n: int, frames: np.ndarray) -> float:
    """Events/s of plain PULL sockets taking the same messages (no decoding)."""
    ctx = zmq.Context.instance()
    with simulate_streams_process(**sim_kwargs(n, frames)) as sim:
        socks = []
        poller = zmq.Poller()
        for name in STREAMS:
            s = ctx.socket(zmq.PULL)
            s.connect(sim.endpoints[name])
            poller.register(s, zmq.POLLIN)
            socks.append(s)
        # every stream: its header, n frames and its end message (stream v1: a header
        # message and an end, each one multipart message)
        left = {s: n + 2 for s in socks}
        t0 = None
        while any(left.values()):
            for s, _ in poller.poll(1000):
                s.recv_multipart(copy=False)
                if t0 is None:
                    t0 = time.perf_counter()
                left[s] -= 1
        dt = time.perf_counter() - t0
        for s in socks:
            s.close(linger=0)
        sim.wait(30)
    return n / dt


def framescope_rate(n: int, frames: np.ndarray, workers: int, client) -> tuple[float, float]:
    """Events/s and the largest relative error of the image against numpy."""
    det = frames.shape[1]
    tm = fe.TriggerMap.per_point(n, {name: 1 for name in STREAMS})
    with simulate_streams_process(**sim_kwargs(n, frames)) as sim:
        job = fe.submit({k: (sim.endpoints[k], sim.protocols[k]) for k in STREAMS}, tm,
                        RingOverI0, ImageReducer, workers=workers, client=client,
                        parameters={"det": det, "n": n}, max_inflight=256)
        out = job.result(600)
        st = job.status
        sim.wait(30)
    if st["incomplete"]:
        raise RuntimeError(f"{st['incomplete']} incomplete events: {st['incomplete_by']}")
    want = (frames[:n].astype("f8") * ring(det)).sum((1, 2))
    err = float(np.max(np.abs(out["image"] * out["i0"] - want) / want))
    return st["events_per_s"], err


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default="64:2000,256:500",
                    help="detector side:events, comma separated")
    ap.add_argument("--no-peer", action="store_true", help="skip dranspose")
    ap.add_argument("--no-dask", action="store_true", help="skip dask-task workers")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    client = None
    if not args.no_dask:
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               dashboard_address=":0", host="127.0.0.1")
        client = Client(cluster)
    rows = []
    for case in args.cases.split(","):
        det, n = (int(v) for v in case.split(":"))
        frames = frames_for(n, det)
        row = {"case": f"{n} x {det}x{det}", "ceiling": ceiling(n, frames)}
        for label, workers, cl in (("threads x1", 1, None), ("threads x2", 2, None),
                                   ("dask x2", 2, client)):
            if cl is None and label.startswith("dask"):
                continue
            rate, err = framescope_rate(n, frames, workers, cl)
            row[f"framescope {label}"] = rate
            if not err < 1e-9:
                raise RuntimeError(f"framescope {label}: image off by {err:.3g}")
        if not args.no_peer:
            from _peer_dranspose import measure

            for workers in (1, 2):
                res = measure(n, det, workers)
                row[f"dranspose x{workers}"] = res.get("events_per_s", float("nan"))
                if "error" in res:
                    print(f"dranspose x{workers}: {res['error']}")
        rows.append(row)
        print(", ".join(f"{k}: {v:,.0f}" if isinstance(v, float) else f"{k}: {v}"
                        for k, v in row.items()), flush=True)
    print()
    keys = list(dict.fromkeys(k for r in rows for k in r))
    print(" | ".join(keys))
    for r in rows:
        print(" | ".join(f"{r[k]:,.0f}" if isinstance(r.get(k), float) else str(r.get(k, ""))
                         for k in keys))
    if client is not None:
        client.close()
        cluster.close()


if __name__ == "__main__":
    main()
