"""One calibration from what a file or stream header says and what the user gives."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from framescope.calibration._model import Calibration
from framescope.calibration._quantities import CalibrationError

__all__ = ["combine"]

log = logging.getLogger(__name__)


def _differs(a: Any, b: Any) -> bool:
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) != len(b) or any(_differs(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float | int) and isinstance(b, float | int) and not isinstance(a, bool):
        return abs(a - b) > 0.01 * max(abs(a), abs(b))
    return a != b


def combine(found: Mapping[str, tuple[Any, str]],
            given: Calibration | Mapping[str, Any] | str | None = None,
            ) -> Calibration | None:
    """The calibration of data whose file or header says ``found``, overridden by ``given``.

    Parameters
    ----------
    found : mapping
        Field -> ``(value, where)`` read from the data (see
        ``FrameReader.calibration_fields``); ``where`` names the file/header field.
    given : Calibration, mapping of fields, JSON str or None
        The user's calibration; its fields win. A given value that differs from the found
        one by more than 1 % is used and logged once (a warning naming both).

    Returns
    -------
    Calibration or None
        None when nothing is found or given (no pydantic model is built then).

    Raises
    ------
    CalibrationError
        A found value that does not validate names the field and where it was read.
    """
    if not found and given is None:
        return None
    base = Calibration()
    for field, (value, where) in found.items():
        try:
            base = base.updated(where, **{field: value})
        except CalibrationError as exc:
            raise CalibrationError(f"{where}: {exc}") from None
    if given is None:
        return base
    if isinstance(given, str):
        given = Calibration.from_json(given)
    if isinstance(given, Calibration):
        fields = given.model_dump(exclude_defaults=True, exclude={"sources"})
        sources = given.sources
    else:
        fields, sources = dict(given), {}
    out = base.updated("user", **fields)
    for field in fields:
        if field in found and _differs(getattr(out, field), getattr(base, field)):
            log.warning("calibration %s: %r given overrides %r read from %s; the given "
                        "value is used", field, getattr(out, field), getattr(base, field),
                        found[field][1])
    if sources:  # a given Calibration keeps saying where its own fields came from
        out = out.model_copy(update={"sources": {**out.sources,
                                                 **{k: v for k, v in sources.items()
                                                    if k in fields}}})
    return out

