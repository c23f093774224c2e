"""Dark series in a stream header: framescope's own header part says ``{"dark": true}``.

Where the part travels, by protocol (the encoders put it there, the decoders bring it back
as ``header["framescope"]``):

- native: the start message's ``metadata`` (``{"framescope": {"dark": true}}``);
- DECTRIS stream2: the start message's ``user_data`` (``{"framescope": {"dark": true}}``,
  beside the scan shape and order framescope senders put there);
- DECTRIS stream v1: the JSON appendix after the detector config (same object).

A detector's control software marks its dark series the same way; the user can also mark
the next series (:meth:`framescope.live.ZMQSource.take_dark`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["PART", "dark_header", "framescope_part", "header_dark"]

#: the header key of framescope's own part (scan shape and order, the dark flag)
PART = "framescope"


def framescope_part(user: Any) -> dict[str, Any] | None:
    """The ``{"framescope": {...}}`` part of a user-data mapping (a copy), or None."""
    if not isinstance(user, Mapping):  # cbor2 6 decodes maps as frozendict
        return None
    part = user.get(PART)
    return dict(part) if isinstance(part, Mapping) else None


def header_dark(header: Mapping[str, Any]) -> bool:
    """True when a decoded series header marks a dark series (``framescope.dark``)."""
    part = framescope_part(header)
    if part is None:  # a stream2 header whose decoder kept user_data only
        part = framescope_part(header.get("user_data"))
    return part is not None and part.get("dark") is True


def dark_header(header: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``header`` (a copy) marked as a dark series' header."""
    out = dict(header or {})
    out[PART] = {**(framescope_part(out) or {}), "dark": True}
    return out
