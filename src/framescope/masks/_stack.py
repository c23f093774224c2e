"""MaskStack: an ordered, named, immutable set of masks; matrices live in ``_matrix``."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix

from framescope.errors import MaskError
from framescope.masks._array import ArrayMask
from framescope.masks._cache import RASTERS
from framescope.masks._matrix import (
    SPARSE_THRESHOLD,
    Window,
    build_dense,
    build_sparse,
    window_of,
)
from framescope.masks._spec import MaskSpec, check_det_shape, digest
from framescope.masks._units import CalibrationLike

__all__ = ["MaskStack"]

_FORMAT = "framescope.maskstack"


def _as_spec(value: Any, where: str) -> MaskSpec:
    if isinstance(value, MaskSpec):
        return value
    if isinstance(value, np.ndarray):
        return ArrayMask(value)
    raise TypeError(f"{where}: expected a mask spec or a 2D numpy array, found "
                    f"{type(value).__name__}")


class MaskStack(Mapping[str, MaskSpec]):
    """Ordered, named, immutable collection of masks: the ``k`` of ``frames @ masks``.

    A read-only mapping ``name -> spec``. It holds specs only, so it pickles small; rasters
    and matrices are built per detector shape and cached by content (:attr:`key`).

    Parameters
    ----------
    masks : Mapping[str, MaskSpec] or Iterable[MaskSpec]
        Named specs, or specs that get the names ``m0, m1, …`` in order.

    See Also
    --------
    MaskStack.from_any : also accepts a single spec, numpy arrays and 3D stacks.

    Notes
    -----
    :meth:`dense` is ``(pixels, k)`` float32 in Fortran order: ``tile @ M`` is one BLAS call
    (C and F order timed equal) and each mask stays contiguous. :meth:`sparse` is CSR
    ``(k, pixels)``, meant for ``S @ frame`` per frame: for a C-ordered ``(n, pixels)``
    tile, scipy's ``tile @ S.T`` (or a CSC/CSR ``(pixels, k)``) first copies the whole tile
    transposed, ~27 ms per 100 x 256 x 256 tile against 1-5 ms dense. Frame by frame, CSR
    beat dense below 3-8 % fill (k = 1..16), hence ``SPARSE_THRESHOLD = 0.05``.

    Examples
    --------
    >>> from framescope.masks import MaskStack, disk, ring
    >>> stack = MaskStack({"bf": disk(128, 128, 20), "adf": ring(128, 128, 40, 90)})
    >>> stack.names, stack.dense((256, 256)).shape
    (('bf', 'adf'), (65536, 2))
    """

    __slots__ = ("_key", "_names", "_specs")

    def __init__(self, masks: Mapping[str, MaskSpec] | Iterable[MaskSpec]) -> None:
        if isinstance(masks, MaskSpec | np.ndarray | str):
            raise TypeError(
                f"MaskStack expects a dict or list of masks, found {type(masks).__name__}; "
                "use MaskStack.from_any for single masks and arrays"
            )
        if isinstance(masks, Mapping):
            pairs = list(masks.items())
        else:
            pairs = [(f"m{i}", spec) for i, spec in enumerate(masks)]
        if not pairs:
            raise MaskError("a MaskStack needs at least one mask, found none")
        for name, spec in pairs:
            if not isinstance(name, str) or not name:
                raise MaskError(f"mask names must be non-empty strings, found {name!r}")
            if not isinstance(spec, MaskSpec):
                raise TypeError(f"mask {name!r}: expected a mask spec, found "
                                f"{type(spec).__name__}; MaskStack.from_any converts arrays")
        self._names = tuple(n for n, _ in pairs)
        self._specs = tuple(s for _, s in pairs)
        ident = json.dumps([[n, s.key] for n, s in pairs], separators=(",", ":"))
        self._key = digest(f"{_FORMAT}:{ident}".encode())

    @classmethod
    def from_any(cls, masks: Any) -> MaskStack:
        """Build a stack from a stack, a spec, a list or dict of specs/2D arrays, or an array.

        A 2D array is one :class:`ArrayMask`; a 3D array ``(k, det_y, det_x)`` is ``k`` of
        them. Unnamed masks are called ``m0, m1, …``.

        Examples
        --------
        >>> import numpy as np
        >>> MaskStack.from_any(np.ones((3, 8, 8))).names
        ('m0', 'm1', 'm2')
        """
        if isinstance(masks, MaskStack):
            return masks
        if isinstance(masks, MaskSpec):
            return cls([masks])
        if isinstance(masks, np.ndarray):
            if masks.ndim == 2:
                return cls([ArrayMask(masks)])
            if masks.ndim == 3:
                return cls([ArrayMask(m) for m in masks])
            raise MaskError(
                f"expected a 2D mask or a 3D stack (k, det_y, det_x), found shape {masks.shape}"
            )
        if isinstance(masks, Mapping):
            return cls({n: _as_spec(v, f"mask {n!r}") for n, v in masks.items()})
        if isinstance(masks, list | tuple):
            return cls([_as_spec(v, f"mask {i}") for i, v in enumerate(masks)])
        raise TypeError(
            "expected a MaskStack, mask spec, list/dict of masks or numpy array, found "
            f"{type(masks).__name__}"
        )

    # ---- mapping protocol and identity -------------------------------------------------
    def __getitem__(self, name: str) -> MaskSpec:
        try:
            return self._specs[self._names.index(name)]
        except ValueError:
            raise KeyError(f"no mask {name!r}; masks: {list(self._names)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    @property
    def names(self) -> tuple[str, ...]:
        """Mask names in order (the order of the ``k`` axis)."""
        return self._names

    @property
    def key(self) -> str:
        """Stable hash (hex) of the ordered ``(name, spec.key)`` pairs."""
        return self._key

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MaskStack):
            return NotImplemented
        return self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        inner = ", ".join(f"{n!r}: {s!r}" for n, s in zip(self._names, self._specs, strict=True))
        return f"MaskStack({{{inner}}})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (dict(zip(self._names, self._specs, strict=True)),))

    # ---- new stacks ----------------------------------------------------------------------
    def subset(self, names: Iterable[str]) -> MaskStack:
        """A new stack of ``names``, in the order given."""
        wanted = [names] if isinstance(names, str) else list(names)
        missing = [n for n in wanted if n not in self._names]
        if missing:
            raise MaskError(f"unknown mask names {missing}; masks: {list(self._names)}")
        return MaskStack({n: self[n] for n in wanted})

    def add(self, name: str, spec: MaskSpec | np.ndarray) -> MaskStack:
        """A new stack with ``spec`` appended as ``name``."""
        if name in self._names:
            raise MaskError(f"mask {name!r} already exists; masks: {list(self._names)}")
        return MaskStack({**dict(self.items()), name: _as_spec(spec, f"mask {name!r}")})

    # ---- physical units ------------------------------------------------------------------
    @property
    def is_physical(self) -> bool:
        """True if some mask is in physical units (mrad, 1/Å …) and needs a calibration."""
        return any(s.is_physical for s in self._specs)

    def to_pixels(self, angle_per_px: float, center: tuple[float, float],
                  wavelength: float | None = None) -> MaskStack:
        """The same names with every mask in pixels; see :meth:`MaskSpec.to_pixels`.

        Examples
        --------
        >>> from framescope.masks import MaskStack, disk, ring
        >>> stack = MaskStack({"bf": disk(r=10, units="mrad"), "adf": ring(64, 64, 40, 90)})
        >>> stack.to_pixels(0.5e-3, (63.5, 64))["bf"]
        Disk(cy=63.5, cx=64.0, r=20.0)
        """
        if not self.is_physical:
            return self
        out = {}
        for name, spec in zip(self._names, self._specs, strict=True):
            try:
                out[name] = spec.to_pixels(angle_per_px, center, wavelength)
            except MaskError as exc:
                raise MaskError(f"mask {name!r}: {exc}") from exc
        return MaskStack(out)

    def resolved(self, calibration: CalibrationLike | None,
                 det_shape: tuple[int, int]) -> MaskStack:
        """The all-pixel stack on a detector of ``det_shape`` with ``calibration`` (a
        :class:`~framescope.calibration.Calibration` or None); returns ``self`` when every
        mask is in pixels already.

        Raises
        ------
        MaskError
            A mask in physical units without the calibration it needs, naming the mask, its
            units and how to calibrate.
        """
        if not self.is_physical:
            return self
        return MaskStack({n: s.resolved(calibration, det_shape, name=n)
                          for n, s in zip(self._names, self._specs, strict=True)})

    # ---- serialisation -------------------------------------------------------------------
    def to_json(self, indent: int | None = None) -> str:
        """JSON text ``{"format", "version", "masks": [{"name", "kind", "params"}, …]}``."""
        masks = [{"name": n, **s.to_dict()} for n, s in zip(self._names, self._specs,
                                                             strict=True)]
        return json.dumps({"format": _FORMAT, "version": 1, "masks": masks}, indent=indent,
                          allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> MaskStack:
        """Rebuild a stack from :meth:`to_json` output; raises MaskError if malformed."""
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MaskError(f"mask stack JSON does not parse: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != _FORMAT or not isinstance(
            doc.get("masks"), list
        ):
            raise MaskError(
                f"expected a JSON object with format {_FORMAT!r} and a 'masks' list, found "
                f"{str(doc)[:200]}"
            )
        out = {}
        for i, entry in enumerate(doc["masks"]):
            name = entry.get("name") if isinstance(entry, dict) else None
            if not isinstance(name, str) or name in out:
                raise MaskError(f"masks[{i}]: expected a unique 'name' string, found {name!r}")
            out[name] = MaskSpec.from_dict(entry)
        return cls(out)

    # ---- rasters and matrices --------------------------------------------------------------
    def _rasters(self, shape: tuple[int, int]) -> list[np.ndarray]:
        out = []
        for name, spec in zip(self._names, self._specs, strict=True):
            try:
                out.append(spec.rasterize(shape))
            except MaskError as exc:
                raise MaskError(f"mask {name!r}: {exc}") from exc
        return out

    def dense(self, det_shape: tuple[int, int]) -> np.ndarray:
        """Masks as a read-only float32 ``(pixels, k)`` Fortran-ordered matrix.

        ``pixels = det_y * det_x`` in C order of the frame, so a C-ordered tile
        ``(n, det_y, det_x)`` reshaped to ``(n, pixels)`` gives ``tile @ M`` of ``(n, k)``.

        Examples
        --------
        >>> from framescope.masks import MaskStack, box
        >>> float(MaskStack([box(0, 0, 2, 2)]).dense((4, 4)).sum())
        4.0
        """
        shape = check_det_shape(det_shape)
        return RASTERS.get_or_make(
            ("dense", self._key, shape), lambda: build_dense(self._rasters(shape), shape)
        )

    def sparse(self, det_shape: tuple[int, int]) -> csr_matrix:
        """Masks as a float32 CSR matrix ``(k, pixels)`` (shared: do not modify).

        Apply it frame by frame, ``S @ frame.ravel()``, not as ``tile @ S.T`` (see Notes of
        :class:`MaskStack`). ``S.T`` is the CSC ``(pixels, k)`` view at no cost.

        Examples
        --------
        >>> from framescope.masks import MaskStack, ring
        >>> MaskStack([ring(32, 32, 10, 12)]).sparse((64, 64)).shape
        (1, 4096)
        """
        shape = check_det_shape(det_shape)
        return RASTERS.get_or_make(
            ("sparse", self._key, shape), lambda: build_sparse(self._rasters(shape), shape)
        )

    def fill_fraction(self, det_shape: tuple[int, int]) -> float:
        """Nonzero entries over ``pixels * k``: the density of :meth:`dense`."""
        shape = check_det_shape(det_shape)
        nnz = sum(int(np.count_nonzero(r)) for r in self._rasters(shape))
        return nnz / (shape[0] * shape[1] * len(self))

    def prefer_sparse(
        self, det_shape: tuple[int, int], threshold: float = SPARSE_THRESHOLD
    ) -> bool:
        """Whether the CSR product should beat the dense one: ``fill_fraction < threshold``.

        The default 0.05 comes from timing both on 256x256 frames, 100 per tile, 1-16
        masks (see Notes of :class:`MaskStack`); measure again on unusual machines.
        """
        return self.fill_fraction(det_shape) < threshold

    def bounding_box(self, det_shape: tuple[int, int]) -> Window:
        """Smallest window ``(y0, y1, x0, x1)`` holding every nonzero pixel of every mask.

        Kernels can multiply ``frame[y0:y1, x0:x1]`` only. Note the order differs from
        :func:`box` (``y0, x0, y1, x1``); :attr:`Window.slices` avoids mixing them up.

        Examples
        --------
        >>> from framescope.masks import MaskStack, disk
        >>> MaskStack([disk(10, 20, 2)]).bounding_box((64, 64))
        Window(y0=8, y1=13, x0=18, x1=23)
        """
        shape = check_det_shape(det_shape)
        return window_of(self._rasters(shape), shape)
