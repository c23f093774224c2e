"""dranspose (MAX IV's multi-stream event framework) as a peer for ``framescope.events``.

Measures dranspose's events/s on two streams we publish: a detector stream in DECTRIS
stream v1 ("eiger legacy") and a small per-point stream with I0 (contrast's layout: pickled
dicts on PUB/SUB; dranspose has no plain-JSON scalar ingester). Every dranspose part runs as
its own process, as deployed: redis-server (own port, no persistence), the controller
(uvicorn), the reducer, one ingester per stream and 1..N workers; the worker and reducer
classes are in ``peer_dranspose_worker.py``. The rate is taken from the first to the last
result the reducer received; the reducer's image is checked against numpy on the same frames.

Needs the ``.venv-dranspose`` environment (``bash benchmarks/setup_dranspose.sh``)::

    .venv-dranspose/bin/python benchmarks/_peer_dranspose.py --events 2000 --det 64 \
        --workers 2 --json

From framescope's own environment (e.g. ``bench_events.py``) call :func:`measure`, which
runs that command in a subprocess and returns its JSON as a dict. This module imports only
the standard library at the top, so it imports in either environment.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from importlib.metadata import version
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEER_PYTHON = ROOT / ".venv-dranspose" / "bin" / "python"
N_POOL = 8  # distinct frames cycled through: encoding each frame anew would load the sender


def measure(n_events: int, det: int = 64, workers: int = 1, *, timeout: float = 300.0,
            tries: int = 2, python: str | os.PathLike[str] = PEER_PYTHON) -> dict[str, Any]:
    """Run the dranspose peer in its own environment; its JSON line as a dict.

    Parameters
    ----------
    n_events
        Events (frames with their I0 point) in the scan.
    det
        Side of the square detector frames (uint32).
    workers
        dranspose worker processes.
    timeout
        Seconds for one try, start-up included.
    tries
        Runs, each with fresh processes, until one succeeds (dranspose can stall on this
        loaded 2-core machine; the JSON's ``failed_tries`` says so when it did).
    python
        Interpreter of the environment with dranspose.

    Returns
    -------
    dict
        ``events``, ``seconds``, ``events_per_s``, ``workers``, ``det``, ``ran`` and checks;
        ``{"error": ...}`` when the environment is missing or the run failed.
    """
    if not Path(python).exists():
        return {"error": f"{python} not found: run bash benchmarks/setup_dranspose.sh"}
    cmd = [str(python), str(Path(__file__).resolve()), "--events", str(n_events),
           "--det", str(det), "--workers", str(workers), "--timeout", str(timeout),
           "--tries", str(tries), "--json"]
    limit = timeout * tries + 60
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        # SIGTERM first: the peer then ends the redis and dranspose processes it started
        proc.terminate()
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        return {"error": f"dranspose peer ran past {limit:.0f} s"}
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {"error": f"dranspose peer exited {proc.returncode}: {stderr[-2000:]}"}


# --- everything below runs in the dranspose environment ---------------------------------

def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class _Procs:
    """The processes of one run, each in its own process group, ended together."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, cmd: list[str], env: dict[str, str]) -> None:
        log = open(self.logdir / f"{name}.log", "wb")  # noqa: SIM115 (kept open for the child)
        self.procs.append((name, subprocess.Popen(cmd, env=env, stdout=log,
                                                  stderr=subprocess.STDOUT,
                                                  start_new_session=True)))

    def check(self) -> None:
        for name, p in self.procs:
            if p.poll() is not None:
                raise RuntimeError(f"dranspose {name} exited with {p.returncode}:\n"
                                   f"{self.tail(name)}")

    def tail(self, name: str, n: int = 3000) -> str:
        path = self.logdir / f"{name}.log"
        return path.read_bytes()[-n:].decode(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        # dranspose's parts first: they tidy their keys in redis on the way out; redis last
        self._end([p for n, p in self.procs if n != "redis"])
        self._end([p for n, p in self.procs if n == "redis"])

    @staticmethod
    def _end(procs: list[subprocess.Popen[bytes]]) -> None:
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
            alive = [p for p in procs if p.poll() is None]
            for p in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, sig)
            deadline = time.monotonic() + wait
            for p in alive:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(max(0.0, deadline - time.monotonic()))


def _http(url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _wait(what: str, cond: Any, timeout: float, procs: _Procs) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        procs.check()
        try:
            got = cond()
        except Exception as e:  # not up yet: connection refused, missing key, ...
            last = e
            got = None
        if got:
            return got
        time.sleep(0.25)  # every poll costs the controller a redis scan: not faster
    raise TimeoutError(f"dranspose: {what} not ready after {timeout:.0f} s (last: {last!r})")


def _wait_done(ctrl: str, out: Path, timeout: float, procs: _Procs,
               stall: float = 30.0) -> None:
    """Wait for the reducer's file; raise if no event completes for ``stall`` seconds."""
    deadline = time.monotonic() + timeout
    seen, since = -1, time.monotonic()
    while not out.exists():
        procs.check()
        now = time.monotonic()
        with contextlib.suppress(Exception):  # a slow answer is no progress, not an error
            done = _http(f"{ctrl}/api/v1/progress")["completed_events"]
            if done != seen:
                seen, since = done, now
        if now - since > stall or now > deadline:
            raise TimeoutError(f"dranspose stalled: {seen} events completed, none in the "
                               f"last {now - since:.0f} s")
        time.sleep(0.5)


def _ensemble_ready(ctrl: str, workers: int) -> bool:
    cfg = _http(f"{ctrl}/api/v1/config")
    if cfg.get("reducer") is None or len(cfg["workers"]) != workers:
        return False
    # every worker reaches both ingesters, and both ingesters have heard every worker
    return (all(len(w["ingesters"]) == 2 for w in cfg["workers"])
            and len(cfg["ingesters"]) == 2
            and all(len(i["connected_workers"]) == workers for i in cfg["ingesters"]))


def _frames(det: int, seed: int = 18) -> list[Any]:
    import numpy as np
    rng = np.random.default_rng(seed)
    return [rng.poisson(3.0 + k, (det, det)).astype("<u4") for k in range(N_POOL)]


def _i0(k: int) -> float:
    return 1000.0 + (k * 37) % 101


def _reference(pool: list[Any], n: int, rows: int, cols: int) -> Any:
    """The expected image, by plain numpy (hypot distances, independent of the worker's)."""
    import numpy as np
    det = pool[0].shape[0]
    yy, xx = np.ogrid[:det, :det]
    r = np.hypot(yy - det // 2, xx - det // 2)
    # no pixel lies on either radius for the sizes used (r^2 is an integer, the radii^2 not)
    ring = (r >= 0.15 * det) & (r < 0.35 * det)
    sums = [float((f * ring).sum()) for f in pool]
    ref = np.full((rows, cols), np.nan)
    for k in range(n):
        ref[k // cols, k % cols] = sums[k % N_POOL] / _i0(k)
    return ref


def _publish(push: Any, xpub: Any, pool: list[Any], n: int) -> None:
    """One series: DECTRIS stream v1 on PUSH, contrast points on XPUB, point k with frame k."""
    import numpy as np
    det = pool[0].shape[0]
    j = json.dumps
    config = {"nimages": n, "ntrigger": 1, "x_pixels_in_detector": det,
              "y_pixels_in_detector": det, "bit_depth_image": 32}
    # header_detail "all": header, config, then (header, blob) for flat field, pixel mask and
    # count-rate table, then the appendix: the 9 parts dranspose's parser expects
    flat = np.ones((det, det), "<f4")
    mask = np.zeros((det, det), "<u4")
    rate = np.array([[0.0, 1.0], [0.0, 1.0]], "<f4")
    push.send_multipart([
        j({"htype": "dheader-1.0", "series": 1, "header_detail": "all"}).encode(),
        j(config).encode(),
        j({"htype": "dflatfield-1.0", "shape": [det, det], "type": "float32"}).encode(),
        flat.tobytes(),
        j({"htype": "dpixelmask-1.0", "shape": [det, det], "type": "uint32"}).encode(),
        mask.tobytes(),
        j({"htype": "dcountrate_table-1.0", "shape": [2, 2], "type": "float32"}).encode(),
        rate.tobytes(),
        j({"benchmark": "framescope events peer"}).encode()])
    xpub.send(pickle.dumps({"status": "started", "path": "", "scannr": 1,
                            "description": f"peer {n} points"}))
    dimage_d = j({"htype": "dimage_d-1.0", "shape": [det, det], "type": "uint32",
                  "encoding": "<", "size": det * det * 4}).encode()
    blobs = [f.tobytes() for f in pool]
    for k in range(n):
        xpub.send(pickle.dumps({"status": "running", "dt": k * 1e-3, "point": k,
                                "i0": _i0(k)}))
        push.send_multipart([
            j({"htype": "dimage-1.0", "series": 1, "frame": k, "hash": ""}).encode(),
            dimage_d, blobs[k % N_POOL],
            j({"htype": "dconfig-1.0", "start_time": k, "stop_time": k + 1,
               "real_time": 1}).encode(),
            b"{}"], copy=False)
    push.send(j({"htype": "dseries_end-1.0", "series": 1}).encode())
    xpub.send(pickle.dumps({"status": "finished", "path": "", "scannr": 1,
                            "description": f"peer {n} points"}))


def run_dranspose(n_events: int, det_shape: tuple[int, int] = (64, 64), workers: int = 1,
                  timeout: float = 300.0, keep_logs: bool = False,
                  log_level: str = "WARNING") -> dict[str, Any]:
    """One dranspose scan of ``n_events`` events; the rate and the checks as a dict.

    Must run in the dranspose environment (``.venv-dranspose``). Starts redis-server and the
    dranspose processes, publishes the two streams, waits for the reducer's image, ends every
    process it started and returns ``events``, ``seconds`` (first to last result reduced),
    ``events_per_s``, ``workers``, ``det``, ``max_rel_err`` (reducer's image vs numpy),
    ``mismatched`` (events whose frame and I0 point differ), ``startup_s``, ``ran``.
    """
    import numpy as np
    import zmq

    ny, nx = det_shape
    if ny != nx:
        raise ValueError(f"det_shape: square frames only, got {det_shape}")
    if n_events < 2:
        raise ValueError(f"n_events: at least 2 for a rate, got {n_events}")
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise RuntimeError("redis-server not found: run bash benchmarks/setup_dranspose.sh")
    cols = max(1, math.isqrt(n_events))
    rows = -(-n_events // cols)
    pool = _frames(ny)
    (p_redis, p_ctrl, p_red_http, p_red_zmq, p_ing_det, p_ing_i0,
     p_det, p_i0) = _free_ports(8)
    tmp = Path(tempfile.mkdtemp(prefix="peer-dranspose-"))
    out = tmp / "reduced.npz"
    bindir = Path(sys.executable).parent
    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{p_redis}/0",
           "LOG_LEVEL": log_level, "PYTHONPATH": str(HERE),
           "PEER_DRANSPOSE_SCAN": f"{rows},{cols}", "PEER_DRANSPOSE_OUT": str(out),
           "BUILD_META_FILE": str(tmp / "none.json")}
    procs = _Procs(tmp)
    ctx = zmq.Context()
    t_start = time.monotonic()
    try:
        procs.start("redis", [redis_server, "--port", str(p_redis), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--daemonize", "no"], env)
        import redis
        rclient = redis.Redis(port=p_redis)
        _wait("redis", rclient.ping, 20, procs)
        rclient.close()
        dr = [str(bindir / "dranspose")]
        # the CLI's controller binds port 5000 whatever it is asked; uvicorn directly does not
        procs.start("controller", [sys.executable, "-m", "uvicorn", "dranspose.controller:app",
                                   "--host", "127.0.0.1", "--port", str(p_ctrl),
                                   "--log-level", "warning"], env)
        procs.start("reducer", [*dr, "reducer", "-c", "peer_dranspose_worker:ImageReducer",
                                "--host", "127.0.0.1", "-p", str(p_red_http)],
                    {**env, "REDUCER_URL": f"tcp://127.0.0.1:{p_red_zmq}"})
        procs.start("ingester-eiger", [*dr, "ingester", "-c", "ZmqPullEigerLegacyIngester",
                                       "-u", f"tcp://127.0.0.1:{p_det}", "-n", "eiger"],
                    {**env, "INGESTER_URL": f"tcp://127.0.0.1:{p_ing_det}"})
        procs.start("ingester-i0", [*dr, "ingester", "-c", "ZmqSubContrastIngester",
                                    "-u", f"tcp://127.0.0.1:{p_i0}", "-n", "i0"],
                    {**env, "INGESTER_URL": f"tcp://127.0.0.1:{p_ing_i0}"})
        ctrl = f"http://127.0.0.1:{p_ctrl}"
        # workers after the reducer is registered: a worker looks for it every 10 s only
        _wait("controller and reducer",
              lambda: _http(f"{ctrl}/api/v1/config")["reducer"] is not None, 60, procs)
        for w in range(workers):
            procs.start(f"worker{w}", [*dr, "worker", "-c", "peer_dranspose_worker:RingWorker",
                                       "-n", f"worker{w}"], env)
        _wait("workers and ingesters", lambda: _ensemble_ready(ctrl, workers), 90, procs)

        push = ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.SNDTIMEO, 30_000)  # a stalled ingester raises zmq.Again, no hang
        push.bind(f"tcp://127.0.0.1:{p_det}")
        xpub = ctx.socket(zmq.XPUB)
        xpub.setsockopt(zmq.SNDHWM, 0)  # no drops: the I0 stream is small, let it queue
        xpub.bind(f"tcp://127.0.0.1:{p_i0}")
        # one virtual worker per event, the same for both streams: dranspose adds the start
        # and end events (sent to all workers) itself
        mapping = {s: [[{"constraint": k, "tags": ["generic"]}] for k in range(n_events)]
                   for s in ("eiger", "i0")}
        _http(f"{ctrl}/api/v1/mapping", mapping)
        startup = time.monotonic() - t_start
        # the i0 ingester subscribes once the mapping reaches it; anything sent before is lost
        _wait("the i0 ingester's subscription", lambda: xpub.poll(100), 30, procs)
        xpub.recv()
        t_pub = time.time()
        _publish(push, xpub, pool, n_events)
        t_sent = time.time()
        _wait_done(ctrl, out, max(10.0, timeout - (time.monotonic() - t_start)), procs)
        with np.load(out) as z:
            got = {k: z[k] for k in z.files}
        ref = _reference(pool, n_events, rows, cols)
        done = ~np.isnan(ref)
        if np.isnan(got["image"][done]).any():
            max_rel = float("inf")
        else:
            max_rel = float(np.max(np.abs(got["image"][done] - ref[done]) / np.abs(ref[done])))
        seconds = float(got["t_last"] - got["t_first"])
        return {
            "peer": "dranspose", "version": version("dranspose"),
            "events": int(got["count"]), "seconds": seconds,
            "events_per_s": (int(got["count"]) - 1) / seconds if seconds > 0 else float("nan"),
            "workers": workers, "det": f"{ny}x{nx}",
            "send_s": t_sent - t_pub, "first_result_after_s": float(got["t_first"]) - t_pub,
            "startup_s": startup, "max_rel_err": max_rel, "mismatched": int(got["mismatched"]),
            "ran": (f"redis-server + dranspose controller, reducer, 2 ingesters "
                    f"(ZmqPullEigerLegacy 'eiger', ZmqSubContrast 'i0'), {workers} worker "
                    "process(es); frames uint32 uncompressed stream v1; I0 as contrast points; "
                    "rate = (events-1)/(last-first result reduced)"),
        }
    except Exception:
        for name, _ in procs.procs:
            print(f"--- {name} log tail ---\n{procs.tail(name, 1500)}", file=sys.stderr)
        raise
    finally:
        procs.stop()
        ctx.destroy(linger=0)
        if keep_logs:
            print(f"dranspose logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--det", type=int, default=64, help="side of the square frames")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds for one try")
    ap.add_argument("--tries", type=int, default=2, help="fresh starts until one succeeds")
    ap.add_argument("--keep-logs", action="store_true")
    ap.add_argument("--log-level", default="WARNING", help="of the dranspose processes")
    ap.add_argument("--json", action="store_true", help="print one JSON line only")
    args = ap.parse_args(argv)
    # SIGTERM (measure() on a timeout) unwinds run_dranspose, whose finally ends its processes
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    failed: list[str] = []
    res: dict[str, Any] | None = None
    for _ in range(max(1, args.tries)):
        try:
            res = run_dranspose(args.events, (args.det, args.det), args.workers,
                                timeout=args.timeout, keep_logs=args.keep_logs,
                                log_level=args.log_level)
            break
        except Exception as e:  # a stall or a part that died: say so, start afresh
            failed.append(f"{type(e).__name__}: {str(e)[:300]}")
            print(f"dranspose try failed: {failed[-1]}", file=sys.stderr)
    if res is None:
        print(json.dumps({"error": "; ".join(failed), "failed_tries": failed}), flush=True)
        return 1
    res["failed_tries"] = failed
    if args.json:
        print(json.dumps(res), flush=True)
    else:
        for k, v in res.items():
            print(f"{k:>22}: {v}")
    ok = res["events"] == args.events and res["max_rel_err"] < 1e-9 and not res["mismatched"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
