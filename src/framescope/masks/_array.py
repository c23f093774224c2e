"""User-given masks: any 2D bool/int/float array, kept as float32 data."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from framescope.errors import MaskError
from framescope.masks._spec import MaskSpec, digest, register

__all__ = ["ArrayMask", "array"]

_DTYPE = "<f4"  # stored and serialised as little-endian float32 on every platform


@register
@dataclass(frozen=True, slots=True, eq=False, repr=False)
class ArrayMask(MaskSpec):
    """A mask given as pixel values (weights may be negative, e.g. for DPC).

    The values are copied to a read-only C-ordered little-endian float32 array; the
    :attr:`key` hashes its shape and bytes. :meth:`to_dict` stores ``shape``, ``dtype``
    (``"<f4"``) and ``data``, the base64 of those bytes: exact and compact, unlike a nested
    list of decimal floats.

    Examples
    --------
    >>> import numpy as np
    >>> m = ArrayMask(np.eye(4, dtype=bool))
    >>> m.values.dtype, m.params["shape"]
    (dtype('float32'), [4, 4])
    """

    values: np.ndarray
    _key: str = field(init=False, repr=False)
    kind = "array"
    units = "px"  # values per detector pixel: never physical

    def __post_init__(self) -> None:
        a = np.asarray(self.values)
        if a.dtype.kind not in "biuf":
            raise MaskError(
                f"array mask: expected bool, integer or float values, found dtype {a.dtype}"
            )
        if a.ndim != 2:
            raise MaskError(
                f"array mask: expected a 2D array (det_y, det_x), found shape {a.shape}"
            )
        values = np.array(a, dtype=_DTYPE, order="C")  # always a private copy
        bad = int(np.count_nonzero(~np.isfinite(values)))
        if bad:
            raise MaskError(
                f"array mask: expected finite values, found {bad} NaN/inf of {values.size} "
                "(after conversion to float32)"
            )
        values.flags.writeable = False
        object.__setattr__(self, "values", values)
        head = f"framescope.masks.array:{values.shape[0]}x{values.shape[1]}:{_DTYPE}:"
        object.__setattr__(self, "_key", digest(head.encode() + values.tobytes()))

    @property
    def key(self) -> str:
        """Stable hash of shape and float32 bytes (hex), computed once."""
        return self._key

    @property
    def shape(self) -> tuple[int, int]:
        """``(det_y, det_x)`` of the values."""
        return self.values.shape  # type: ignore[return-value]

    def _params(self) -> dict[str, Any]:
        data = base64.b64encode(self.values.tobytes()).decode("ascii")
        return {"shape": list(self.values.shape), "dtype": _DTYPE, "data": data}

    @classmethod
    def _from_params(cls, params: Mapping[str, Any]) -> ArrayMask:
        if set(params) != {"shape", "dtype", "data"}:
            raise MaskError(
                f"array: expected parameters ['data', 'dtype', 'shape'], found {sorted(params)}"
            )
        if params["dtype"] != _DTYPE:
            raise MaskError(f"array: expected dtype {_DTYPE!r}, found {params['dtype']!r}")
        try:
            raw = base64.b64decode(params["data"], validate=True)
            shape = tuple(int(n) for n in params["shape"])
        except (binascii.Error, TypeError, ValueError) as exc:
            raise MaskError(f"array: malformed shape or base64 data ({exc})") from None
        need = int(np.prod(shape)) * 4
        if len(shape) != 2 or len(raw) != need:
            raise MaskError(
                f"array: shape {shape} needs {need} bytes of float32, found {len(raw)} bytes"
            )
        return cls(np.frombuffer(raw, dtype=_DTYPE).reshape(shape))

    def _raster(self, det_shape: tuple[int, int]) -> np.ndarray:
        if self.values.shape != det_shape:
            raise MaskError(
                f"mask shape {self.values.shape} does not match detector {det_shape}"
            )
        return self.values

    def __reduce__(self) -> tuple[Any, ...]:
        # rebuild through __init__ so the values come back read-only and validated
        return (type(self), (self.values,))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ArrayMask):
            return NotImplemented
        return self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        return f"ArrayMask(shape={self.values.shape}, key={self._key[:12]!r})"


def array(values: Any) -> ArrayMask:
    """A mask from a 2D bool/int/float array (e.g. drawn or loaded); see :class:`ArrayMask`.

    Examples
    --------
    >>> import numpy as np
    >>> array(np.ones((256, 256), dtype=bool)).shape
    (256, 256)
    """
    return ArrayMask(values)
