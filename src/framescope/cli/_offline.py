"""``framescope info``, ``simulate``, ``convert``, ``virtual-image`` and ``com``: datasets on
disk, thin wrappers over the library."""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from framescope.cli._common import (
    add_calibration_options,
    add_corrections_options,
    add_open_options,
    apply_calibration,
    corrections_of,
    open_array,
    parse_mask,
    parse_shape2,
    write_result,
)

__all__ = ["add_parsers", "analysis_parser", "client_of", "cmd_com", "cmd_convert", "cmd_info",
           "cmd_simulate", "cmd_virtual_image", "corrected"]


def cmd_info(args: argparse.Namespace) -> int:
    arr = open_array(args)
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


def cmd_simulate(args: argparse.Namespace) -> int:
    from framescope.datasets import synthetic
    from framescope.io._export import save

    arr = synthetic(scan=args.scan, det=args.det, dtype=args.dtype, seed=args.seed,
                    **({"dose": args.dose} if args.dose is not None else {}))
    options = {"compression": args.compression} if args.compression else {}
    out = save(arr, args.out, args.format, overwrite=args.overwrite,
               progress=not args.quiet, **options)
    print(out)
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from framescope.io._export import save

    arr = open_array(args)
    options = {"compression": args.compression} if args.compression else {}
    print(save(arr, args.out, args.format, overwrite=args.overwrite, progress=not args.quiet,
               **options))
    return 0


def client_of(args: argparse.Namespace) -> Any:
    return args.scheduler  # "inline", "local" or an address: the engine resolves each


def corrected(arr: Any, args: argparse.Namespace) -> Any:
    """``arr`` with the corrections of the options (the file's own unless refused)."""
    corrections = corrections_of(args)
    if corrections is None:
        return arr
    return arr.fs.with_corrections(corrections or None)


def cmd_virtual_image(args: argparse.Namespace) -> int:
    from framescope.masks import MaskStack

    arr = corrected(apply_calibration(open_array(args), args), args)
    stack = MaskStack({(name or f"m{i}"): spec for i, (name, spec) in enumerate(args.mask)})
    img = arr.fs.virtual_image(stack, client=client_of(args), progress=not args.quiet)
    write_result(img.to_dataset(name="intensity").assign_attrs(img.attrs), args.out)
    print(args.out)
    return 0


def cmd_com(args: argparse.Namespace) -> int:
    arr = corrected(apply_calibration(open_array(args), args), args)
    res = arr.fs.com(cy=args.cy, cx=args.cx, radius=args.radius, rotation=args.rotation,
                     flip_y=args.flip_y, client=client_of(args), progress=not args.quiet)
    write_result(res, args.out)
    print(args.out)
    return 0


def analysis_parser(sub: Any, name: str, help: str) -> argparse.ArgumentParser:
    """A subcommand that runs one analysis of a dataset on disk into ``--out``."""
    p = sub.add_parser(name, help=help)
    p.add_argument("path")
    p.add_argument("--out", required=True, help="result file, .nc or .h5 (NetCDF4/HDF5)")
    p.add_argument("--scheduler", default="inline",
                   help="'inline' (default: threads of this process, the fastest on one "
                        "machine), 'local' (a LocalCluster of worker processes) or a "
                        "scheduler address tcp://host:8786")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_open_options(p)
    add_calibration_options(p)
    add_corrections_options(p)
    return p


def add_parsers(sub: Any) -> None:
    """Add ``info``, ``simulate``, ``convert``, ``virtual-image`` and ``com`` to ``sub``."""
    from framescope.io._export import WRITERS

    p = sub.add_parser("info", help="print a dataset's shape, dtype, format and chunks as JSON")
    p.add_argument("path")
    add_open_options(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("simulate", help="write a synthetic 4D-STEM dataset")
    p.add_argument("out")
    p.add_argument("--scan", type=parse_shape2, default=(64, 64), help="scan shape HxW")
    p.add_argument("--det", type=parse_shape2, default=(128, 128), help="detector shape HxW")
    p.add_argument("--dtype", default="uint16", choices=["uint8", "uint16", "uint32", "float32"])
    p.add_argument("--format", default="raw", choices=list(WRITERS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dose", type=float, help="mean electrons per frame")
    p.add_argument("--compression", help="hdf5/dectris: bslz4, lz4 or gzip")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("convert", help="rewrite a dataset in another format, chunk by chunk")
    p.add_argument("path")
    p.add_argument("out")
    p.add_argument("--format", default="zarr", choices=list(WRITERS), help="output format")
    p.add_argument("--compression", help="hdf5/dectris: bslz4, lz4 or gzip")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_open_options(p)
    p.set_defaults(func=cmd_convert)


    p = analysis_parser(sub, "virtual-image", "virtual images for one or more masks")
    p.add_argument("--mask", type=parse_mask, action="append", required=True,
                   help="[name=]KIND:NUMBERS[@UNITS]: disk:cy,cx,r | ring:cy,cx,r_in,r_out | "
                        "box:y0,x0,y1,x1 | point:y,x | polygon:y,x,y,x,y,x,...; UNITS px "
                        "(default), mrad, rad, 1/A or 1/nm, relative to the beam centre "
                        "(disk:r and ring:r_in,r_out centred on it), e.g. "
                        "adf=ring:20,60@mrad (repeatable)")
    p.set_defaults(func=cmd_virtual_image)

    p = analysis_parser(sub, "com", "centre of mass / DPC maps")
    p.add_argument("--radius", type=float, help="only pixels this close to the centre")
    p.add_argument("--cy", type=float, help="reference centre y (default det_y // 2)")
    p.add_argument("--cx", type=float, help="reference centre x (default det_x // 2)")
    p.add_argument("--rotation", type=float,
                   help="scan rotation, degrees (default: the calibration's, else 0)")
    p.add_argument("--flip-y", action=argparse.BooleanOptionalAction, default=None,
                   help="flip detector y before rotating (default: the calibration's, "
                        "else no)")
    p.set_defaults(func=cmd_com)
