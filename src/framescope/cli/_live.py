"""``framescope simulate-stream``, ``replay`` and ``live``: thin wrappers over framescope.live.

Importing this module imports :mod:`framescope.live`, so it fails without the ``[live]``
extra; :func:`framescope.cli.build_parser` then adds stand-ins that say so.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from typing import Any

import xarray as xr

from framescope.cli._common import (
    MASK_HELP,
    add_calibration_options,
    add_corrections_options,
    add_open_options,
    calibration_fields,
    corrections_of,
    open_array,
    parse_mask,
    parse_shape2,
    write_result,
)
from framescope.engine import submit
from framescope.live import ZMQSource, replay, simulate_stream

__all__ = ["add_parsers", "cmd_live", "cmd_replay", "cmd_simulate_stream"]

PROTOCOLS = ("dectris-stream2", "dectris-stream1", "native")
COMPRESSIONS = ("none", "lz4", "bslz4")


def _source(args: argparse.Namespace) -> Any:
    """The frames to publish: ``--source`` opened like other commands, else None."""
    if args.source is None:
        return None
    return open_array(argparse.Namespace(**{**vars(args), "path": args.source}))


def cmd_simulate_stream(args: argparse.Namespace) -> int:
    def bound(endpoint: str) -> None:
        print(f"publishing {args.protocol} on {endpoint}", file=sys.stderr, flush=True)

    scan = args.scan or (128, 128)
    if args.source is None:
        print(f"simulating {scan[0] * scan[1]} frames of {args.det[0]}x{args.det[1]} first "
              f"(a few hundred per second per core)", file=sys.stderr, flush=True)
    stats = simulate_stream(
        args.bind, args.protocol, source=_source(args), scan=scan, det=args.det,
        dtype=args.raw_dtype or "uint16", rate=args.rate, compression=args.compression,
        series=args.series, order=args.order, peers=args.peers, cache_mib=args.cache_mib,
        on_bound=bound)
    print(json.dumps(stats))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    def bound(endpoint: str) -> None:
        print(f"replaying {args.recording} as {args.protocol} on {endpoint}", file=sys.stderr,
              flush=True)

    stats = replay(args.recording, args.bind, args.protocol, rate=args.rate,
                   compression=args.compression, series=args.series, peers=args.peers,
                   on_bound=bound)
    print(json.dumps(stats))
    return 0


def _udfs(args: argparse.Namespace) -> tuple[list[Any], dict[str, Any]]:
    from framescope.masks import MaskStack
    from framescope.udf import ApplyMasks, CenterOfMass

    udfs: list[Any] = []
    attrs: dict[str, Any] = {}
    if args.mask:
        stack = MaskStack({(name or f"m{i}"): spec for i, (name, spec) in enumerate(args.mask)})
        udfs.append(ApplyMasks(stack))
        attrs["masks"] = stack.to_json()
    if args.com:
        com = CenterOfMass(radius=args.com_radius)
        udfs.append(com)
        attrs.update({f"com_{k}": ("none" if v is None else v) for k, v in com.params().items()})
    return udfs, attrs


def _progress(status: Any) -> str:
    return (f"\r{status.state:9s} series {status.series} "
            f"{status.frames_processed}/{status.frames_expected or '?'} frames, "
            f"{status.rate_hz:8.0f} Hz {status.mb_per_s:7.1f} MB/s, dropped {status.dropped}, "
            f"spilled {status.spilled}, gaps {status.gaps}, malformed {status.malformed}")


def cmd_live(args: argparse.Namespace) -> int:
    from framescope._version import __version__

    udfs, attrs = _udfs(args)
    problem = ("give --mask and/or --com" if not udfs
               else "--processes > 1 needs --scan" if args.processes > 1 and not args.scan
               else "--record works with --processes 1 only"
               if args.processes > 1 and args.record
               else "--scheduler needs --processes > 1" if args.scheduler and args.processes < 2
               else "")
    if problem:
        print(f"framescope live: {problem}", file=sys.stderr)
        return 2
    src = ZMQSource(args.connect, args.protocol, scan=args.scan, order=args.order,
                    channel=args.channel, policy=args.policy, buffer_mib=args.buffer_mib,
                    spill_dir=args.spill_dir, stall_timeout=args.timeout, record=args.record,
                    calibration=calibration_fields(args) or None)
    corrections = corrections_of(args)
    job = submit(udfs, src, processes=args.processes, client=args.scheduler,
                 merge_host=args.merge_host, corrections=corrections)
    start = time.monotonic()
    ds = None
    stop = False

    def interrupt(*_: Any) -> None:
        nonlocal stop
        stop = True

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, interrupt) if main else None
    try:
        while not stop:
            try:
                ds = job.result(0.5)
            except TimeoutError:
                ds = None
            st = job.status
            if not args.quiet:
                print(_progress(st), end="", file=sys.stderr, flush=True)
            if ds is not None or st.state == "stalled":
                break
            if st.series is None and args.start_timeout and \
                    time.monotonic() - start > args.start_timeout:
                break
        if ds is None:  # stalled, interrupted or nothing came: what there is, as it is
            ds = job.partial()
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)
        job.cancel()
        if not args.quiet:
            print(file=sys.stderr)
    if ds is None:
        print(f"framescope live: no series received from {args.connect}", file=sys.stderr)
        return 1
    # one file: the UDFs' results side by side (their done maps are the same)
    ds = xr.merge(ds, compat="override", join="exact", combine_attrs="override")
    ds.attrs.update({**attrs, "protocol": args.protocol, "endpoint": args.connect,
                     "framescope_version": __version__})
    ds.attrs = {k: (json.dumps(v) if isinstance(v, list | dict) else v)
                for k, v in ds.attrs.items()}
    write_result(ds, args.out)
    print(args.out)
    if ds.attrs["state"] != "finished" or not ds.attrs["complete"]:
        print(f"framescope live: series {ds.attrs['series']} {ds.attrs['state']}, "
              f"{int(ds['done'].sum())} of {ds['done'].size} positions done; partial results "
              f"written", file=sys.stderr)
        return 1
    return 0


def add_parsers(sub: Any) -> None:
    """Add the ``simulate-stream``, ``replay`` and ``live`` commands to ``sub``."""
    def sender_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--bind", default="tcp://127.0.0.1:9999",
                       help="PUSH endpoint to bind (default 127.0.0.1 only; port 0: any)")
        p.add_argument("--protocol", default="dectris-stream2", choices=PROTOCOLS)
        p.add_argument("--compression", default="none", choices=COMPRESSIONS)
        p.add_argument("--peers", type=int, default=1,
                       help="receivers to wait for before sending (they share frames "
                            "round-robin)")

    p = sub.add_parser("simulate-stream",
                       help="publish synthetic or file frames as a detector stream")
    sender_options(p)
    p.add_argument("--det", type=parse_shape2, default=(256, 256),
                   help="synthetic detector shape HxW (--scan: scan shape, default 128x128)")
    p.add_argument("--rate", type=float, default=5000.0,
                   help="frames per second (0: as fast as receivers take them)")
    p.add_argument("--source", help="send the frames of this dataset (default: synthetic)")
    p.add_argument("--series", type=int, default=1, help="number of series to send")
    p.add_argument("--order", default="raster", choices=["raster", "snake"])
    p.add_argument("--cache-mib", type=float, default=4096,
                   help="read sources up to this size into memory first, so the rate holds")
    add_open_options(p)
    p.set_defaults(func=cmd_simulate_stream)

    p = sub.add_parser("replay", help="re-publish a recording made by 'framescope live'")
    p.add_argument("recording")
    sender_options(p)
    p.add_argument("--rate", type=float, default=0.0,
                   help="frames per second (default 0: as fast as receivers take them)")
    p.add_argument("--series", type=int, help="only this recorded series id")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("live", help="receive one series from a detector stream and analyse it")
    p.add_argument("--connect", default="tcp://127.0.0.1:9999", help="detector PUSH endpoint")
    p.add_argument("--protocol", default="dectris-stream2", choices=PROTOCOLS)
    p.add_argument("--scan", type=parse_shape2, help="scan shape HxW (default: from the header)")
    p.add_argument("--order", choices=["raster", "snake"], help="scan order (default: header)")
    p.add_argument("--channel", help="stream2 channel (default: the first)")
    p.add_argument("--mask", type=parse_mask, action="append",
                   help=f"{MASK_HELP} (repeatable)")
    p.add_argument("--com", action="store_true", help="centre of mass / DPC maps")
    p.add_argument("--com-radius", type=float, help="COM: only pixels this close to the centre")
    p.add_argument("--out", required=True, help="result file, .nc or .h5 (NetCDF4/HDF5)")
    p.add_argument("--record", help="also record the analysed frames to this HDF5 file")
    p.add_argument("--policy", default="drop", choices=["drop", "spill"],
                   help="when analysis falls behind: drop frames (counted) or spill them "
                        "to disk and analyse them later")
    p.add_argument("--buffer-mib", type=float, default=512,
                   help="memory for frames waiting for analysis")
    p.add_argument("--spill-dir", help="directory for spill files (default: temp dir)")
    p.add_argument("--processes", type=int, default=1,
                   help="receiver processes sharing the stream (needs --scan)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="run the --processes receivers as tasks on this dask cluster's "
                        "workers (one per worker) instead of local processes")
    p.add_argument("--merge-host", default="127.0.0.1",
                   help="address of this machine that the receivers send results to (for "
                        "workers on other hosts)")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="give up (writing partial results) after this many seconds without "
                        "a message mid-series")
    p.add_argument("--start-timeout", type=float, default=0.0,
                   help="give up if no series started within this many seconds (0: wait)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    add_calibration_options(p)
    add_corrections_options(p)
    p.set_defaults(func=cmd_live)
