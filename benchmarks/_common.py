"""Timing helpers shared by the benchmarks."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def best(fn: Callable[[], object], repeat: int) -> float:
    """Fastest of ``repeat`` wall-clock timings of ``fn()`` in seconds."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def plain_read(files: Iterable[Path]) -> None:
    """The ceiling: read every byte of ``files`` into one reused 4 MiB buffer."""
    view = memoryview(bytearray(4 * 2**20))
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            while fh.readinto(view):
                pass


@dataclass
class Setup:
    """What the engine benchmarks share: the raw file, its ceiling, a cluster, LiberTEM."""

    args: argparse.Namespace
    scan: tuple[int, int]
    det: tuple[int, int]
    path: Path
    arr: Any
    t_ceil: float
    client: Any = None
    ctx: Any = None
    lt_ds: Any = None


def engine_setup(doc: str) -> Setup:
    """Parse the common options, simulate the raw file once, time the ceiling, start the
    2-process LocalCluster and the LiberTEM context (unless switched off)."""
    import framescope as fs
    from framescope.datasets import synthetic

    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--scan", default="128x128")
    ap.add_argument("--det", default="256x256")
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parent / "data"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-libertem", action="store_true")
    ap.add_argument("--no-cluster", action="store_true")
    args = ap.parse_args()
    scan = tuple(int(v) for v in args.scan.split("x"))
    det = tuple(int(v) for v in args.det.split("x"))
    path = Path(args.data_dir) / f"{args.scan}_{args.det}" / "data.raw"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fs.io.save(synthetic(scan=scan, det=det), path, "raw")
    plain_read([path])
    s = Setup(args, scan, det, path, fs.open(path),
              best(lambda: plain_read([path]), args.repeat))
    if not args.no_cluster:
        from distributed import Client, LocalCluster

        # not dask's default client: analyses without client= must keep their own default
        s.client = Client(LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=":0", host="127.0.0.1"),
                          set_as_default=False)
    if not args.no_libertem:
        try:
            import libertem.api as lt

            s.ctx = lt.Context.make_with("dask", cpus=2)
            s.lt_ds = s.ctx.load("raw", path=str(path), nav_shape=scan, sig_shape=det,
                                 dtype="uint16")
        except ImportError:
            print("libertem not installed: pip install 'framescope[bench]'")
    return s
