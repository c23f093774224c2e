"""The raw JSON sidecar model (pydantic), imported only when a raw file is opened."""

from __future__ import annotations

import os
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = ["RawSidecar", "explain", "sidecar_calibration"]


class RawSidecar(BaseModel):
    """The JSON sidecar that describes a raw file (see docs/formats.md)."""

    model_config = ConfigDict(extra="forbid")

    shape: tuple[int, ...] = Field(
        description="(scan_y, scan_x, det_y, det_x) or (frames, det_y, det_x)"
    )
    dtype: str = Field(description="numpy dtype name, e.g. uint16, float32")
    byteorder: Literal["little", "big"] = "little"
    offset: int = Field(0, ge=0, description="bytes before the first frame")
    frame_header: int = Field(0, ge=0, description="bytes before each frame")
    frame_footer: int = Field(0, ge=0, description="bytes after each frame")
    metadata: dict[str, Any] = Field(default_factory=dict)
    calibration: dict[str, Any] = Field(
        default_factory=dict,
        description="Calibration fields: SI numbers or strings with units ('300 kV')",
    )

    @field_validator("shape")
    @classmethod
    def _shape(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if len(v) not in (3, 4) or min(v) < 1:
            raise ValueError(f"expected 3 or 4 positive sizes, found {list(v)}")
        return v

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, v: str) -> str:
        try:
            dt = np.dtype(v)
        except TypeError as e:
            raise ValueError(f"not a numpy dtype: {v!r}") from e
        if dt.kind not in "uif":
            raise ValueError(f"expected an integer or float dtype, found {v!r}")
        return v


def explain(err: ValidationError) -> str:
    """A pydantic error as ``field: message (found value)``, every error."""
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']} (found {e.get('input')!r})"
        for e in err.errors()
    )


def sidecar_calibration(fields: dict[str, Any], side: str | os.PathLike[str]
                        ) -> dict[str, tuple[Any, str]]:
    """The sidecar's ``calibration`` object, each field validated, in SI units.

    Raises
    ------
    framescope.calibration.CalibrationError
        An unknown field or a value that does not parse, naming the sidecar and the field.
    """
    from framescope.calibration import Calibration, CalibrationError

    name = os.path.basename(side)
    known = [f for f in Calibration.model_fields if f != "sources"]
    out: dict[str, tuple[Any, str]] = {}
    for field, value in fields.items():
        if field not in known:
            raise CalibrationError(f"{side}: calibration.{field}: unknown field; expected "
                                   f"one of {', '.join(known)}")
        if value is None:
            continue
        try:
            checked = Calibration(**{field: value})
        except CalibrationError as exc:
            raise CalibrationError(f"{side}: calibration.{exc}") from None
        out[field] = (getattr(checked, field), f"{name}: calibration.{field}")
    return out
