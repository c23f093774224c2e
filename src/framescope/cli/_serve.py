"""``framescope serve``: the dashboard of a dataset, the demo data or a live stream."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from framescope.cli._common import add_open_options, open_array

__all__ = ["add_parser", "cmd_serve"]


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from framescope.dashboard._serve import demo_data, local_client, serve
    except ImportError as exc:
        print(f"framescope serve: needs the dashboard extra (pip install 'framescope[dashboard]'):"
              f" {exc}", file=sys.stderr)
        return 2
    if (args.demo + (args.path is not None) + (args.live is not None)) != 1:
        print("framescope serve: give one of a dataset PATH, --demo or --live ENDPOINT",
              file=sys.stderr)
        return 2
    if args.live is not None:
        return _serve_live(args)
    arr = demo_data() if args.demo else open_array(args)
    client = local_client() if args.scheduler == "local" else args.scheduler
    try:
        serve(arr, port=args.port, address=args.address, client=client,
              persist=args.demo or args.persist, websocket_origin=args.allow_websocket_origin,
              prefix=args.prefix)
    finally:
        if not isinstance(client, str):
            cluster = client.cluster
            client.close()
            cluster.close()
    return 0


def _serve_live(args: argparse.Namespace) -> int:
    try:
        from framescope.dashboard._serve import serve_live
        from framescope.live import PROTOCOLS
    except ImportError as exc:
        print(f"framescope serve --live: needs the dashboard and live extras "
              f"(pip install 'framescope[dashboard,live]'): {exc}", file=sys.stderr)
        return 2
    if args.protocol not in PROTOCOLS:
        print(f"framescope serve: --protocol: expected one of {list(PROTOCOLS)}, found "
              f"{args.protocol!r}", file=sys.stderr)
        return 2
    serve_live(args.live, args.protocol, scan=args.scan, port=args.port, address=args.address,
               websocket_origin=args.allow_websocket_origin, prefix=args.prefix)
    return 0


def add_parser(sub: Any) -> None:
    """Add ``serve`` to ``sub``."""
    p = sub.add_parser("serve", help="serve the interactive dashboard (needs [dashboard])")
    p.add_argument("path", nargs="?", help="dataset to open (or --demo)")
    p.add_argument("--demo", action="store_true",
                   help="serve the built-in synthetic dataset (64x64 scan, 128x128 frames)")
    p.add_argument("--live", metavar="ENDPOINT",
                   help="serve the live dashboard of a detector stream, e.g. "
                        "tcp://127.0.0.1:9999 (--protocol, --scan; needs [live])")
    p.add_argument("--protocol", default="dectris-stream2",
                   help="with --live: dectris-stream2 (default), dectris-stream1 or native")
    p.add_argument("--port", type=int, default=5006, help="TCP port (0: any free port)")
    p.add_argument("--address", default="127.0.0.1",
                   help="interface to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--allow-websocket-origin", action="append", metavar="HOST:PORT",
                   help="extra origin allowed to connect, e.g. behind a proxy (repeatable)")
    p.add_argument("--prefix", default="", metavar="PATH",
                   help="serve under this URL path, e.g. behind jupyter-server-proxy")
    p.add_argument("--scheduler", default="inline",
                   help="'inline' (default: threads of this process, the lowest edit-to-"
                        "image latency on one machine), 'local' (a LocalCluster started for "
                        "the server) or a scheduler address tcp://host:8786")
    p.add_argument("--persist", action="store_true",
                   help="load the data into the workers' memory first (--demo always does)")
    add_open_options(p)
    p.set_defaults(func=cmd_serve)
