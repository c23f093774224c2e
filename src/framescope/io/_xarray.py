"""xarray backend: ``xr.open_dataset(path, engine="framescope")`` calls ``framescope.open``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import xarray as xr
from xarray.backends import BackendEntrypoint

__all__ = ["FramescopeBackend"]


class FramescopeBackend(BackendEntrypoint):
    """Opens every format framescope reads as a Dataset with one ``frames`` variable."""

    description = "Lazy 4D-STEM frames (raw, npy, HDF5, DECTRIS, Zarr, Merlin MIB) via framescope"
    url = "https://github.com/framescope/framescope"
    open_dataset_parameters = (
        "filename_or_obj", "drop_variables", "format", "scan", "sync_offset",
        "partition_mib", "dataset", "shape", "dtype", "offset", "calibration", "flip_y",
    )

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        # claim only formats no other xarray backend knows, so .h5/.zarr stay with theirs
        if not isinstance(filename_or_obj, str | os.PathLike):
            return False
        p = Path(filename_or_obj)
        return p.suffix.lower() in {".mib", ".hdr"} or p.name.endswith("_master.h5")

    def open_dataset(  # type: ignore[override]
        self,
        filename_or_obj: str | os.PathLike[str],
        *,
        drop_variables: Any = None,
        **options: Any,
    ) -> xr.Dataset:
        from framescope.io._open import open as fs_open

        options = {k: v for k, v in options.items() if v is not None}
        arr = fs_open(filename_or_obj, **options)
        ds = arr.to_dataset(name="frames")
        ds["frames"].encoding.update(arr.encoding)
        return ds.drop_vars(drop_variables or [], errors="ignore")
