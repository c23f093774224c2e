"""Which reader opens a file: built-in formats plus third-party entry points."""

from __future__ import annotations

import importlib
import logging
import os
from functools import cache
from importlib.metadata import entry_points

from framescope.errors import UnknownFormatError
from framescope.io._base import FrameReader

__all__ = ["ENTRY_POINT_GROUP", "available_readers", "reader_for"]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "framescope.readers"

# order matters: the first reader whose guess_can_open says yes wins
_BUILTIN = {
    "dectris": "framescope.io._dectris:DectrisReader",
    "mib": "framescope.io._mib:MibReader",
    # before hdf5: an .h5 file holding electron_events is counted electrons, not frames
    "counted": "framescope.io._counted:CountedReader",
    "hdf5": "framescope.io._hdf5:Hdf5Reader",
    "zarr": "framescope.io._zarr:ZarrReader",
    "npy": "framescope.io._npy:NpyReader",
    "raw": "framescope.io._raw:RawReader",
    # last: framescope's own readers keep their suffixes; imports rosettasciio only on open
    "rsciio": "framescope.io._rsciio:RsciioReader",
}


def _load(target: str) -> type[FrameReader]:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


@cache
def available_readers() -> dict[str, type[FrameReader]]:
    """Format name → reader class, built-ins first, then the ``framescope.readers`` entry points."""
    readers = {name: _load(target) for name, target in _BUILTIN.items()}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in readers:
            log.warning("entry point %s=%s shadows a built-in reader; ignored", ep.name, ep.value)
            continue
        try:
            readers[ep.name] = ep.load()
        except Exception:  # a broken plugin must not break opening other formats
            log.exception("could not load framescope reader entry point %s=%s", ep.name, ep.value)
    return readers


def reader_for(path: str | os.PathLike[str], format: str | None = None) -> type[FrameReader]:
    """The reader class for ``path``: by ``format`` name, else the first that recognises it."""
    readers = available_readers()
    if format is not None:
        try:
            return readers[format]
        except KeyError:
            raise UnknownFormatError(
                f"{os.fspath(path)}: unknown format {format!r}; installed: {', '.join(readers)}"
            ) from None
    for cls in readers.values():
        if cls.guess_can_open(path):
            return cls
    raise UnknownFormatError(
        f"{os.fspath(path)}: no reader recognises this file; installed formats: "
        f"{', '.join(readers)}. Pass format=... (raw files need shape/dtype or a JSON sidecar)."
    )
