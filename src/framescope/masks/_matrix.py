"""Matrix forms of a mask stack: dense, sparse, and the window its pixels span.

Matrix orientation (measured on a 256x256 detector, tiles of 100 frames, float32):

* :meth:`MaskStack.dense` is ``(pixels, k)`` in Fortran order, i.e. the transpose of a
  C-ordered ``(k, pixels)`` array. ``tile @ M`` runs as one BLAS call without copies in
  either order (C and F measured equal within noise), and F order keeps every mask
  contiguous: built by writing rows, and ``M[:, j]`` or ``M.T`` are free.
* :meth:`MaskStack.sparse` is CSR ``(k, pixels)``: one row per mask, so ``S @ frame`` is
  scipy's ``csr_matvec`` on a contiguous frame with no copy. Do not write ``tile @ S.T``
  or ``(S @ tile.T).T`` for a C-ordered tile: scipy then copies the whole tile transposed,
  which cost ~27 ms per tile in every orientation (CSR or CSC), 5-30x the dense product.
  Apply ``S`` frame by frame (or to a ``(pixels, n)`` C-ordered buffer).
* :data:`SPARSE_THRESHOLD` = 0.05: the frame-by-frame CSR product beat the dense one below
  about 3-8 % fill (k = 1..16 masks; the crossover falls as k grows), see
  :meth:`MaskStack.prefer_sparse`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.sparse import csr_matrix

__all__ = ["SPARSE_THRESHOLD", "Window", "build_dense", "build_sparse", "window_of"]

SPARSE_THRESHOLD = 0.05


class Window(NamedTuple):
    """Half-open pixel window ``frame[y0:y1, x0:x1]``."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(slice(y0, y1), slice(x0, x1))``, to index a frame."""
        return slice(self.y0, self.y1), slice(self.x0, self.x1)


def build_dense(rasters: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Read-only float32 ``(pixels, k)`` Fortran-ordered matrix of ``k`` rasters."""
    rows = np.empty((len(rasters), shape[0] * shape[1]), dtype=np.float32)
    for j, raster in enumerate(rasters):
        rows[j] = raster.ravel()
    rows.flags.writeable = False
    return rows.T


def build_sparse(rasters: list[np.ndarray], shape: tuple[int, int]) -> csr_matrix:
    """Float32 CSR ``(k, pixels)`` matrix of ``k`` rasters, its arrays read-only."""
    indices, data, indptr = [], [], [0]
    for raster in rasters:
        flat = raster.ravel()
        nz = np.flatnonzero(flat)  # sorted, so the CSR rows are canonical
        indices.append(nz.astype(np.int32))
        data.append(flat[nz])
        indptr.append(indptr[-1] + nz.size)
    mat = csr_matrix(
        (np.concatenate(data), np.concatenate(indices), np.asarray(indptr, np.int32)),
        shape=(len(rasters), shape[0] * shape[1]),
    )
    for part in (mat.data, mat.indices, mat.indptr):
        part.flags.writeable = False  # shared through the cache: nobody may edit it
    return mat


def window_of(rasters: list[np.ndarray], shape: tuple[int, int]) -> Window:
    """Smallest window holding every nonzero pixel of the (non-empty) rasters."""
    covered = np.zeros(shape, dtype=bool)
    for raster in rasters:
        covered |= raster != 0
    rows = np.flatnonzero(covered.any(axis=1))
    cols = np.flatnonzero(covered.any(axis=0))
    return Window(int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
