"""``framescope ssb``, ``idpc`` and ``parallax``: phase images of a dataset on disk."""

from __future__ import annotations

import argparse
from typing import Any

from framescope.cli._common import apply_calibration, open_array, write_result
from framescope.cli._offline import analysis_parser, client_of, corrected

__all__ = ["add_parsers", "cmd_idpc", "cmd_parallax", "cmd_ssb"]


def _array(args: argparse.Namespace) -> Any:
    return corrected(apply_calibration(open_array(args), args), args)


def cmd_ssb(args: argparse.Namespace) -> int:
    res = _array(args).fs.ssb(defocus=args.defocus, rotation=args.rotation, flip=args.flip_y,
                              bin=args.bin_ssb, client=client_of(args),
                              progress=not args.quiet)
    write_result(res, args.out)
    print(args.out)
    return 0


def cmd_idpc(args: argparse.Namespace) -> int:
    res = _array(args).fs.idpc(rotation=args.rotation, flip_y=args.flip_y,
                               highpass=args.highpass, client=client_of(args),
                               progress=not args.quiet)
    write_result(res, args.out)
    print(args.out)
    return 0


def cmd_parallax(args: argparse.Namespace) -> int:
    res = _array(args).fs.parallax(defocus=args.defocus, upsample=args.upsample,
                                   rotation=args.rotation, flip_y=args.flip_y,
                                   bin=args.bin_bf, client=client_of(args),
                                   progress=not args.quiet)
    write_result(res, args.out)
    print(args.out)
    return 0


def _geometry_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rotation", type=float,
                   help="scan rotation, degrees (default: the calibration's, else 0)")
    p.add_argument("--flip-y", action=argparse.BooleanOptionalAction, default=None,
                   help="flip detector y (default: the calibration's, else no)")


def add_parsers(sub: Any) -> None:
    """Add ``ssb``, ``idpc`` and ``parallax`` to ``sub``."""
    p = analysis_parser(sub, "ssb", "single-sideband ptychography: phase and amplitude "
                        "(needs energy, angle per pixel, semiconv and scan step)")
    p.add_argument("--defocus", default="0 nm", help="probe defocus with a unit, e.g. 12nm")
    p.add_argument("--ssb-bin", dest="bin_ssb", type=int,
                   help="detector binning for the product (default: the smallest that fits "
                        "1 GiB of weights)")
    _geometry_options(p)
    p.set_defaults(func=cmd_ssb)

    p = analysis_parser(sub, "idpc", "integrated DPC phase (needs energy, angle per pixel "
                        "and scan step for rad)")
    p.add_argument("--highpass", type=float, default=0.0,
                   help="damping frequency in cycles per scan step (default 0)")
    _geometry_options(p)
    p.set_defaults(func=cmd_idpc)

    p = analysis_parser(sub, "parallax", "tilt-corrected bright field: tcBF image, fitted "
                        "defocus, astigmatism and rotation")
    p.add_argument("--defocus", help="known defocus with a unit (default: fitted), e.g. 12nm")
    p.add_argument("--upsample", type=int, default=1, help="also an image this many times "
                   "finer than the scan")
    p.add_argument("--bf-bin", dest="bin_bf", type=int,
                   help="bin BF pixels (default: the smallest that fits the memory budget)")
    _geometry_options(p)
    p.set_defaults(func=cmd_parallax)
