"""What the commands share: argument types, the dataset opening options, result files."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = [
    "MASK_ARGS",
    "add_open_options",
    "open_array",
    "parse_mask",
    "parse_shape",
    "parse_shape2",
    "write_result",
]

#: mask kinds of ``--mask`` and how many numbers each takes
MASK_ARGS = {"disk": 3, "ring": 4, "box": 4, "point": 2}


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
    """``[name=]kind:a,b,c`` → (name, mask spec), e.g. ``adf=ring:128,128,40,90``."""
    import framescope.masks as fm

    name, _, spec = text.rpartition("=")
    kind, _, values = spec.partition(":")
    want = MASK_ARGS.get(kind)
    try:
        nums = [float(v) for v in values.split(",")]
    except ValueError:
        nums = []
    if want is None or len(nums) != want:
        forms = ", ".join(f"{k}:{n} numbers" for k, n in MASK_ARGS.items())
        raise argparse.ArgumentTypeError(f"bad mask {text!r}; expected [name=]KIND:NUMBERS with "
                                         f"{forms} (disk:cy,cx,r ring:cy,cx,r_in,r_out)")
    return (name or None), getattr(fm, kind)(*nums)


def write_result(ds: Any, out: str) -> None:
    """NetCDF/HDF5 via xarray; attrs made NetCDF-safe (no bools or None)."""
    import xarray as xr

    if isinstance(ds, xr.DataArray):
        ds = ds.to_dataset()
    for obj in (ds, *ds.variables.values()):
        obj.attrs = {k: (int(v) if isinstance(v, bool) else "none" if v is None else v)
                     for k, v in obj.attrs.items()}
    ds.to_netcdf(out, engine="h5netcdf")
