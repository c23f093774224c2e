"""A contract every reader must honour, as a pytest test class to subclass.

Subclass :class:`ReaderContract` and implement the ``case`` fixture: it writes a small file
and returns ``(path, reference, open_kwargs)`` where ``reference`` is the 4D numpy array
(scan_y, scan_x, det_y, det_x) read independently (plain numpy on the same bytes, or the
array the file was written from).
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import framescope
from framescope.io import DIMS

__all__ = ["ReaderContract", "file_digest"]


def file_digest(path: str | os.PathLike[str]) -> dict[str, tuple[int, int, str]]:
    """(size, mtime_ns, sha256) of a file, or of every file under a directory."""
    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    out = {}
    for f in files:
        st = f.stat()
        out[str(f)] = (st.st_size, st.st_mtime_ns, hashlib.sha256(f.read_bytes()).hexdigest())
    return out


class ReaderContract:
    """Tests shared by every reader: laziness, exact values, partition edges, pickling.

    Subclass it in a pytest module and give it a ``case`` fixture that writes a small file
    and returns ``(path, reference, open_kwargs)``: ``reference`` is the 4D array the file
    must read as, obtained independently of the reader under test. Every ``test_*`` method
    then runs on that case: dims and laziness, values, partition edges, the pickled reader
    reading the same frames, the source left untouched, and a compute on dask.distributed,
    which needs a ``client`` fixture (a ``distributed.Client``; session scope keeps it
    cheap) from your ``conftest.py``.

    Examples
    --------
    >>> import numpy as np
    >>> import pytest
    >>> from framescope.testing import ReaderContract
    >>> class TestMyFormat(ReaderContract):  # doctest: +SKIP
    ...     @pytest.fixture
    ...     def case(self, tmp_path):
    ...         ref = np.arange(3 * 4 * 8 * 8, dtype=np.uint16).reshape(3, 4, 8, 8)
    ...         path = tmp_path / "scan.myf"
    ...         write_my_format(path, ref)  # the format's own writer, or raw bytes
    ...         return path, ref, {"format": "myformat"}
    """

    @pytest.fixture
    def case(self, tmp_path: Path) -> tuple[Path, np.ndarray, dict[str, Any]]:
        raise NotImplementedError

    def test_dims_lazy_and_attrs(self, case):
        path, ref, kw = case
        arr = framescope.open(path, **kw)
        assert arr.dims == DIMS
        assert arr.shape == ref.shape
        assert arr.dtype == ref.dtype.newbyteorder("=")
        assert arr.chunks is not None  # dask-backed, nothing read yet
        assert arr.attrs["source"] == os.fspath(path)
        assert arr.attrs["dtype"] == arr.dtype.name
        for dim in DIMS:
            np.testing.assert_array_equal(arr[dim].values, np.arange(arr.sizes[dim]))

    def test_values_equal_reference(self, case):
        path, ref, kw = case
        arr = framescope.open(path, **kw)
        np.testing.assert_array_equal(arr.values, ref)

    @pytest.mark.parametrize("rows", [1, 2, 3])
    def test_partition_edges(self, case, rows):
        path, ref, kw = case
        arr = framescope.open(path, chunks=rows, **kw)
        assert arr.data.chunks[0][0] == min(rows, ref.shape[0])
        np.testing.assert_array_equal(arr.values, ref)
        # selections that cross partition boundaries and cut rows
        ny, nx = ref.shape[:2]
        sel = arr.isel(scan_y=slice(max(ny // 2 - 1, 0), ny), scan_x=slice(1, max(nx - 1, 2)))
        np.testing.assert_array_equal(sel.values, ref[max(ny // 2 - 1, 0) :, 1 : max(nx - 1, 2)])
        np.testing.assert_array_equal(arr[-1, -1].values, ref[-1, -1])

    def test_reader_pickles_and_reads(self, case):
        path, ref, kw = case
        arr = framescope.open(path, **kw)
        source = pickle.loads(pickle.dumps(arr.encoding["framescope_source"]))
        ny, nx = ref.shape[:2]
        got = source.read_positions(0, ny * nx)
        np.testing.assert_array_equal(got.reshape(ref.shape), ref)

    def test_source_untouched(self, case):
        path, _, kw = case
        before = file_digest(path)
        arr = framescope.open(path, **kw)
        arr.values  # noqa: B018 - read everything
        assert file_digest(path) == before

    def test_distributed_compute(self, case, client):
        path, ref, kw = case
        arr = framescope.open(path, chunks=2, **kw)
        total = client.compute(arr.data.sum(axis=(2, 3), dtype="f8")).result()
        np.testing.assert_array_equal(total, ref.sum(axis=(2, 3), dtype="f8"))
