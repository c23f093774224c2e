"""The ``framescope`` command line: thin wrappers over the library."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["main"]

log = logging.getLogger("framescope")


def _shape2(text: str) -> tuple[int, int]:
    try:
        a, b = text.lower().split("x")
        return int(a), int(b)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 128x128, found {text!r}") from None


def _shape(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.lower().replace(",", "x").split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes such as 4096x256x256, found {text!r}")\
            from None


def _add_open_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("opening options")
    g.add_argument("--scan", type=_shape2, help="scan shape HxW for frame stacks")
    g.add_argument("--sync-offset", type=int, default=0,
                   help="skip (>0) or pad (<0) this many leading frames")
    g.add_argument("--reader", help="input format/reader name (default: guessed)")
    g.add_argument("--dataset", help="HDF5/Zarr dataset path")
    g.add_argument("--shape", type=_shape, help="raw files: frames shape, e.g. 16384x256x256")
    g.add_argument("--dtype", dest="raw_dtype", help="raw files: pixel dtype, e.g. uint16")
    g.add_argument("--offset", type=int, help="raw files: bytes before the first frame")


def _open(args: argparse.Namespace) -> Any:
    import framescope

    options = {k: v for k, v in {
        "dataset": args.dataset, "shape": args.shape, "dtype": args.raw_dtype,
        "offset": args.offset,
    }.items() if v is not None}
    return framescope.open(args.path, format=args.reader, scan=args.scan,
                           sync_offset=args.sync_offset, **options)


def _cmd_info(args: argparse.Namespace) -> int:
    arr = _open(args)
    info = {
        "path": str(args.path),
        "format": arr.attrs["format"],
        "dims": list(arr.dims),
        "shape": list(arr.shape),
        "dtype": arr.dtype.name,
        "bytes": int(arr.nbytes),
        "chunks": [list(c) for c in arr.data.chunks],
        "partitions": int(np.prod(arr.data.numblocks)),
        "attrs": {k: v for k, v in arr.attrs.items() if k not in ("format", "dtype")},
    }
    print(json.dumps(info, indent=2, default=str))
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from framescope.datasets import synthetic
    from framescope.io._export import save

    arr = synthetic(scan=args.scan, det=args.det, dtype=args.dtype, seed=args.seed,
                    **({"dose": args.dose} if args.dose is not None else {}))
    options = {"compression": args.compression} if args.compression else {}
    out = save(arr, args.out, args.format, overwrite=args.overwrite,
               progress=not args.quiet, **options)
    print(out)
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from framescope.io._export import save

    arr = _open(args)
    options = {"compression": args.compression} if args.compression else {}
    print(save(arr, args.out, args.format, overwrite=args.overwrite, progress=not args.quiet,
               **options))
    return 0


_MASK_ARGS = {"disk": 3, "ring": 4, "box": 4, "point": 2}


def _mask(text: str) -> tuple[str | None, Any]:
    """``[name=]kind:a,b,c`` → (name, mask spec), e.g. ``adf=ring:128,128,40,90``."""
    import framescope.masks as fm

    name, _, spec = text.rpartition("=")
    kind, _, values = spec.partition(":")
    want = _MASK_ARGS.get(kind)
    try:
        nums = [float(v) for v in values.split(",")]
    except ValueError:
        nums = []
    if want is None or len(nums) != want:
        forms = ", ".join(f"{k}:{n} numbers" for k, n in _MASK_ARGS.items())
        raise argparse.ArgumentTypeError(f"bad mask {text!r}; expected [name=]KIND:NUMBERS with "
                                         f"{forms} (disk:cy,cx,r ring:cy,cx,r_in,r_out)")
    return (name or None), getattr(fm, kind)(*nums)


def _write_result(ds: Any, out: str) -> None:
    """NetCDF/HDF5 via xarray; attrs made NetCDF-safe (no bools or None)."""
    import xarray as xr

    if isinstance(ds, xr.DataArray):
        ds = ds.to_dataset()
    for obj in (ds, *ds.variables.values()):
        obj.attrs = {k: (int(v) if isinstance(v, bool) else "none" if v is None else v)
                     for k, v in obj.attrs.items()}
    ds.to_netcdf(out, engine="h5netcdf")


def _client(args: argparse.Namespace) -> Any:
    return args.scheduler  # "inline", "local" or an address: the engine resolves each


def _cmd_virtual_image(args: argparse.Namespace) -> int:
    from framescope.masks import MaskStack

    arr = _open(args)
    stack = MaskStack({(name or f"m{i}"): spec for i, (name, spec) in enumerate(args.mask)})
    img = arr.fs.virtual_image(stack, client=_client(args), progress=not args.quiet)
    _write_result(img.to_dataset(name="intensity").assign_attrs(img.attrs), args.out)
    print(args.out)
    return 0


def _cmd_com(args: argparse.Namespace) -> int:
    arr = _open(args)
    res = arr.fs.com(cy=args.cy, cx=args.cx, radius=args.radius, rotation=args.rotation,
                     flip_y=args.flip_y, client=_client(args), progress=not args.quiet)
    _write_result(res, args.out)
    print(args.out)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
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
    arr = demo_data() if args.demo else _open(args)
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


def build_parser() -> argparse.ArgumentParser:
    from framescope import __version__
    from framescope.io._export import WRITERS

    parser = argparse.ArgumentParser(
        prog="framescope", description="Lazy, interactive and live 4D-STEM analysis.")
    parser.add_argument("--version", action="version", version=f"framescope {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="print a dataset's shape, dtype, format and chunks as JSON")
    p.add_argument("path")
    _add_open_options(p)
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("simulate", help="write a synthetic 4D-STEM dataset")
    p.add_argument("out")
    p.add_argument("--scan", type=_shape2, default=(64, 64), help="scan shape HxW")
    p.add_argument("--det", type=_shape2, default=(128, 128), help="detector shape HxW")
    p.add_argument("--dtype", default="uint16", choices=["uint8", "uint16", "uint32", "float32"])
    p.add_argument("--format", default="raw", choices=list(WRITERS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dose", type=float, help="mean electrons per frame")
    p.add_argument("--compression", help="hdf5/dectris: bslz4, lz4 or gzip")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("convert", help="rewrite a dataset in another format, chunk by chunk")
    p.add_argument("path")
    p.add_argument("out")
    p.add_argument("--format", default="zarr", choices=list(WRITERS), help="output format")
    p.add_argument("--compression", help="hdf5/dectris: bslz4, lz4 or gzip")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_open_options(p)
    p.set_defaults(func=_cmd_convert)

    def analysis(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.add_argument("path")
        p.add_argument("--out", required=True, help="result file, .nc or .h5 (NetCDF4/HDF5)")
        p.add_argument("--scheduler", default="inline",
                       help="'inline' (default: threads of this process, the fastest on one "
                            "machine), 'local' (a LocalCluster of worker processes) or a "
                            "scheduler address tcp://host:8786")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
        _add_open_options(p)
        return p

    p = analysis("virtual-image", "virtual images for one or more masks")
    p.add_argument("--mask", type=_mask, action="append", required=True,
                   help="[name=]disk:cy,cx,r | ring:cy,cx,r_in,r_out | box:y0,x0,y1,x1 | "
                        "point:y,x (repeatable)")
    p.set_defaults(func=_cmd_virtual_image)

    p = analysis("com", "centre of mass / DPC maps")
    p.add_argument("--radius", type=float, help="only pixels this close to the centre")
    p.add_argument("--cy", type=float, help="reference centre y (default det_y // 2)")
    p.add_argument("--cx", type=float, help="reference centre x (default det_x // 2)")
    p.add_argument("--rotation", type=float, default=0.0, help="scan rotation, degrees")
    p.add_argument("--flip-y", action="store_true", help="flip detector y before rotating")
    p.set_defaults(func=_cmd_com)

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
    _add_open_options(p)
    p.set_defaults(func=_cmd_serve)
    _add_live(sub)
    return parser


def _add_live(sub: Any) -> None:
    """``simulate-stream``, ``replay`` and ``live``; without the [live] extra, say so."""
    try:
        from framescope.live._cli import add_parsers
    except ImportError as e:
        missing = str(e)

        def needs_live(args: argparse.Namespace) -> int:
            raise SystemExit(f"framescope {args.command}: needs the [live] extra "
                             f"(pip install 'framescope[live]'): {missing}")

        for name in ("simulate-stream", "replay", "live"):
            sub.add_parser(name, help="(needs [live])").set_defaults(func=needs_live)
        return
    add_parsers(sub)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``framescope`` console script."""
    from framescope.errors import FramescopeError

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2),
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (FramescopeError, FileExistsError, FileNotFoundError) as e:
        print(f"framescope {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
