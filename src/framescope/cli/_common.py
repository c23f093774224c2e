"""What the commands share: argument types, the dataset opening options, result files."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = [
    "MASK_ARGS",
    "MASK_HELP",
    "add_calibration_options",
    "add_corrections_options",
    "add_open_options",
    "apply_calibration",
    "calibration_fields",
    "corrections_of",
    "open_array",
    "parse_mask",
    "parse_shape",
    "parse_shape2",
    "write_result",
]

#: mask kinds of ``--mask`` and how many numbers each takes (``polygon``: 3 or more y,x pairs)
MASK_ARGS = {"disk": 3, "ring": 4, "box": 4, "point": 2}
#: in physical units a disk or ring may leave out its centre (the beam centre)
_CENTRED_ARGS = {"disk": 1, "ring": 2}
MASK_HELP = ("[name=]KIND:NUMBERS[@UNITS] with disk:cy,cx,r | ring:cy,cx,r_in,r_out | "
              "box:y0,x0,y1,x1 | point:y,x | polygon:y,x,y,x,y,x,...; UNITS px (default), "
              "mrad, rad, 1/A or 1/nm, relative to the beam centre, where disk:r and "
              "ring:r_in,r_out are centred on it (e.g. adf=ring:20,60@mrad)")


def parse_shape2(text: str) -> tuple[int, int]:
    """``"128x64"`` → ``(128, 64)`` (an argparse type)."""
    try:
        a, b = text.lower().split("x")
        return int(a), int(b)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 128x128, found {text!r}") from None


def parse_shape(text: str) -> tuple[int, ...]:
    """``"4096x256x256"`` (or commas) → a tuple of sizes (an argparse type)."""
    try:
        return tuple(int(v) for v in text.lower().replace(",", "x").split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes such as 4096x256x256, found {text!r}")\
            from None


def add_open_options(p: argparse.ArgumentParser) -> None:
    """The options of :func:`framescope.open` that :func:`open_array` passes on."""
    g = p.add_argument_group("opening options")
    g.add_argument("--scan", type=parse_shape2, help="scan shape HxW for frame stacks")
    g.add_argument("--sync-offset", type=int, default=0,
                   help="skip (>0) or pad (<0) this many leading frames")
    g.add_argument("--reader", help="input format/reader name (default: guessed)")
    g.add_argument("--dataset", help="HDF5/Zarr dataset path")
    g.add_argument("--shape", type=parse_shape,
                   help="raw files: frames shape, e.g. 16384x256x256")
    g.add_argument("--dtype", dest="raw_dtype", help="raw files: pixel dtype, e.g. uint16")
    g.add_argument("--offset", type=int, help="raw files: bytes before the first frame")


def open_array(args: argparse.Namespace) -> Any:
    """``framescope.open(args.path, ...)`` with the options of :func:`add_open_options`."""
    import framescope

    options = {k: v for k, v in {
        "dataset": args.dataset, "shape": args.shape, "dtype": args.raw_dtype,
        "offset": args.offset,
    }.items() if v is not None}
    return framescope.open(args.path, format=args.reader, scan=args.scan,
                           sync_offset=args.sync_offset, **options)


def parse_mask(text: str) -> tuple[str | None, Any]:
    """``[name=]kind:a,b,c[@units]`` → (name, mask spec), e.g. ``adf=ring:128,128,40,90``
    or, around the beam centre of calibrated data, ``adf=ring:20,60@mrad``."""
    import framescope.masks as fm
    from framescope.errors import MaskError

    name, _, spec = text.rpartition("=")
    spec, _, units = spec.partition("@")
    kind, _, values = spec.partition(":")
    units = units or "px"
    try:
        nums = [float(v) for v in values.split(",")]
    except ValueError:
        nums = []
    try:
        if kind == "polygon" and len(nums) >= 6 and len(nums) % 2 == 0:
            return (name or None), fm.polygon(list(zip(nums[::2], nums[1::2], strict=True)),
                                              units=units)
        if kind in MASK_ARGS and len(nums) == MASK_ARGS[kind]:
            return (name or None), getattr(fm, kind)(*nums, units=units)
        # px without a centre: the factory says the centre is required
        if kind in _CENTRED_ARGS and len(nums) == _CENTRED_ARGS[kind]:
            radii = dict(zip(("r",) if kind == "disk" else ("r_in", "r_out"), nums,
                             strict=True))
            return (name or None), getattr(fm, kind)(**radii, units=units)
    except MaskError as e:
        raise argparse.ArgumentTypeError(f"bad mask {text!r}: {e}; expected {MASK_HELP}"
                                         ) from None
    raise argparse.ArgumentTypeError(f"bad mask {text!r}; expected {MASK_HELP}")


def _quantity(kind: str, example: str) -> Any:
    """An argparse type: a number with a unit of ``kind`` (a bare number is refused: SI
    radians or metres are never what a user means by ``0.5``), in SI."""

    def parse(text: str) -> float:
        from framescope.calibration import CalibrationError, parse_quantity

        try:
            float(text)
        except ValueError:
            pass
        else:
            raise argparse.ArgumentTypeError(f"expected a number with a unit such as "
                                             f"{example!r}, found {text!r}")
        try:
            return parse_quantity(text, kind, "value")
        except CalibrationError as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix("value: ")) from None

    parse.__name__ = kind  # argparse names the type in its messages
    return parse


def _steps(text: str) -> tuple[float, float]:
    parse = _quantity("length", "0.5nm")
    steps = [parse(v) for v in text.split(",")]
    if len(steps) not in (1, 2):
        raise argparse.ArgumentTypeError(f"expected one step or dy,dx such as 0.5nm or "
                                         f"0.5nm,0.4nm, found {text!r}")
    return (steps[0], steps[-1])


def _center(text: str) -> tuple[float, float]:
    try:
        cy, cx = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected the beam centre cy,cx in detector pixels "
                                         f"such as 127.5,128, found {text!r}") from None
    return cy, cx


def add_calibration_options(p: argparse.ArgumentParser) -> None:
    """``--energy``, ``--semiconv``, ``--angle-per-px``, ``--scan-step``, ``--center``: set
    on the data by :func:`apply_calibration` (they override what the file says)."""
    g = p.add_argument_group("calibration (numbers with units; masks in mrad need "
                             "--angle-per-px unless the file gives it)")
    g.add_argument("--energy", type=_quantity("energy", "300kV"),
                   help="beam energy, e.g. 300kV")
    g.add_argument("--semiconv", type=_quantity("angle", "20mrad"),
                   help="convergence semi-angle, e.g. 20mrad")
    g.add_argument("--angle-per-px", type=_quantity("angle", "0.5mrad"),
                   help="scattering angle per detector pixel, e.g. 0.5mrad")
    g.add_argument("--scan-step", type=_steps,
                   help="distance between scan positions, e.g. 0.5nm, or dy,dx")
    g.add_argument("--center", type=_center,
                   help="beam centre cy,cx in detector pixels (default: the middle)")


def calibration_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The calibration fields of :func:`add_calibration_options` that were given."""
    fields = {"energy": args.energy, "semiconv": args.semiconv,
              "angle_per_px": args.angle_per_px, "scan_step": args.scan_step,
              "center": args.center}
    return {k: v for k, v in fields.items() if v is not None}


def apply_calibration(arr: Any, args: argparse.Namespace) -> Any:
    """``arr.fs.calibrate(...)`` with the options of :func:`add_calibration_options` that were
    given; ``arr`` itself when none was."""
    given = calibration_fields(args)
    return arr.fs.calibrate(**given) if given else arr


def write_result(ds: Any, out: str) -> None:
    """NetCDF/HDF5 via :func:`framescope.io.write_netcdf` (CF units, calibration kept)."""
    from framescope.io import write_netcdf

    write_netcdf(ds, out, overwrite=True)


def add_corrections_options(p: argparse.ArgumentParser) -> None:
    """``--dark``, ``--gain``, ``--bad-pixels``, ``--bad-fill``, ``--threshold``, ``--bin``,
    ``--fft-downsample`` and ``--no-detector-corrections`` (see :func:`corrections_of`)."""
    g = p.add_argument_group("detector corrections (applied to every frame first)")
    g.add_argument("--dark", metavar="NPY", help="dark frame (.npy, det_y x det_x)")
    g.add_argument("--gain", metavar="NPY", help="gain / flat field (.npy), multiplied")
    g.add_argument("--bad-pixels", metavar="NPY",
                   help="bad-pixel map (.npy, nonzero = bad)")
    g.add_argument("--bad-fill", choices=["zero", "neighbours"], default="zero",
                   help="bad pixels become 0 or the mean of their good neighbours")
    g.add_argument("--threshold", type=float, help="values below it become 0")
    g.add_argument("--bin", type=int, default=1, help="sum BIN x BIN pixels")
    g.add_argument("--fft-downsample", type=_fft_downsample, metavar="F|HxW",
                   help="downsample by FFT crop (after --bin): a factor F or an output "
                        "shape HxW; the frame's sum is kept")
    g.add_argument("--no-detector-corrections", action="store_true",
                   help="do not apply what the detector states (a DECTRIS pixel_mask)")


def _fft_downsample(text: str) -> int | tuple[int, int]:
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected a factor F or an output shape HxW of "
                                         f"positive ints, found {text!r}")
    return parts[0] if len(parts) == 1 else (parts[0], parts[1])


def _npy(path: str | None, what: str) -> Any:
    if path is None:
        return None
    import numpy as np

    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise argparse.ArgumentTypeError(f"--{what} {path}: expected a .npy array ({e})"
                                         ) from None


def corrections_of(args: argparse.Namespace) -> Any:
    """The corrections the options ask for: a Corrections, False (none, not even the
    detector's) or None (the detector's, where it states any)."""
    given = {"dark": _npy(args.dark, "dark"), "gain": _npy(args.gain, "gain"),
             "bad": _npy(args.bad_pixels, "bad-pixels"), "threshold": args.threshold}
    if given["bad"] is not None:
        given["bad"] = given["bad"] != 0
    fields = {k: v for k, v in given.items() if v is not None}
    fft = getattr(args, "fft_downsample", None)
    if fields or args.bin != 1 or fft is not None:
        from framescope.corrections import Corrections

        return Corrections(**fields, bin=args.bin, bad_fill=args.bad_fill,
                           fft_downsample=fft)
    return False if args.no_detector_corrections else None
