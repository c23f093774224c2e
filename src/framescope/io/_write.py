"""Writers for raw (+ JSON sidecar), ``.npy`` and Zarr, fed block by block.

Each writer takes ``blocks``, an iterable of ``(k, det_y, det_x)`` arrays in frame order, so
multi-GB datasets stream through without being held in memory. Writers refuse to overwrite.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["check_new", "write_npy", "write_raw", "write_zarr"]


def check_new(path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Refuse to clobber an existing file unless asked to."""
    p = Path(path)
    if p.exists() and not overwrite:
        raise FileExistsError(
            f"{p}: already exists; pass overwrite=True (--overwrite) to replace it"
        )
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def _count(path: Path, written: int, n_frames: int) -> None:
    if written != n_frames:
        raise ValueError(f"{path}: blocks held {written} frames, expected {n_frames}")


def write_raw(
    path: str | os.PathLike[str],
    blocks: Iterable[np.ndarray],
    *,
    n_frames: int,
    frame_shape: tuple[int, int],
    dtype: str | np.dtype,
    scan: tuple[int, int] | None = None,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write frames back to back (little-endian) and a ``<name>.json`` sidecar beside them."""
    p = check_new(path, overwrite)
    dt = np.dtype(dtype).newbyteorder("<")
    written = 0
    with open(p, "wb") as f:
        for block in blocks:
            f.write(np.ascontiguousarray(block, dtype=dt).data)
            written += len(block)
    _count(p, written, n_frames)
    shape = [*scan, *frame_shape] if scan else [n_frames, *frame_shape]
    side = {"shape": shape, "dtype": dt.name, "byteorder": "little", "offset": 0,
            "metadata": metadata or {}}
    p.with_name(p.name + ".json").write_text(json.dumps(side, indent=2) + "\n")
    return p


def write_npy(
    path: str | os.PathLike[str],
    blocks: Iterable[np.ndarray],
    *,
    n_frames: int,
    frame_shape: tuple[int, int],
    dtype: str | np.dtype,
    scan: tuple[int, int] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a ``.npy`` file: 4D ``(scan_y, scan_x, det_y, det_x)`` with ``scan``, else 3D."""
    p = check_new(path, overwrite)
    shape = (*scan, *frame_shape) if scan else (n_frames, *frame_shape)
    mm = np.lib.format.open_memmap(p, mode="w+", dtype=np.dtype(dtype), shape=shape)
    flat = mm.reshape(n_frames, *frame_shape)
    written = 0
    for block in blocks:
        flat[written : written + len(block)] = block
        written += len(block)
    mm.flush()
    del flat, mm
    _count(p, written, n_frames)
    return p


def write_zarr(
    path: str | os.PathLike[str],
    blocks: Iterable[np.ndarray],
    *,
    n_frames: int,
    frame_shape: tuple[int, int],
    dtype: str | np.dtype,
    scan: tuple[int, int] | None = None,
    metadata: dict[str, Any] | None = None,
    chunk_mib: float = 4.0,
    compress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write a Zarr (v3) array, chunked by whole frames, ~``chunk_mib`` MiB per chunk."""
    import zarr

    p = check_new(path, overwrite)
    frame_bytes = frame_shape[0] * frame_shape[1] * np.dtype(dtype).itemsize
    per_chunk = max(1, int(chunk_mib * 2**20 // frame_bytes))
    if scan:
        shape = (*scan, *frame_shape)
        cx = min(scan[1], per_chunk)
        chunks = (max(1, min(scan[0], per_chunk // cx)), cx, *frame_shape)
        dims = ["scan_y", "scan_x", "det_y", "det_x"]
    else:
        shape, chunks = (n_frames, *frame_shape), (per_chunk, *frame_shape)
        dims = ["frame", "det_y", "det_x"]
    arr = zarr.create_array(
        store=os.fspath(p), shape=shape, chunks=chunks, dtype=np.dtype(dtype),
        compressors="auto" if compress else None, dimension_names=dims,
        attributes=metadata or {}, overwrite=overwrite,
    )
    # buffer whole chunk rows so each zarr chunk is written once
    if scan:
        nx = scan[1]
        span = chunks[0] * nx
    else:
        span = per_chunk
    buf = np.empty((span, *frame_shape), dtype=np.dtype(dtype))
    filled = written = 0

    def flush(n: int) -> None:
        if scan:
            y0 = written // nx
            arr[y0 : y0 + n // nx] = buf[:n].reshape(n // nx, nx, *frame_shape)
        else:
            arr[written : written + n] = buf[:n]

    for block in blocks:
        i = 0
        while i < len(block):
            take = min(span - filled, len(block) - i)
            buf[filled : filled + take] = block[i : i + take]
            filled += take
            i += take
            if filled == span:
                flush(span)
                written += span
                filled = 0
    if filled:
        flush(filled)
        written += filled
    _count(p, written, n_frames)
    return p
