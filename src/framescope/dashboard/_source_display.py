"""What the source widgets show, as plain values: scan text, status table, preview image.

Shared by the panel (:mod:`~framescope.dashboard._source_widget`) and ipywidgets
(:mod:`~framescope.dashboard._source_ipywidget`) faces and free of both (it imports neither
of them, nor panel or ipywidgets), so it is tested without either.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from framescope.dashboard._images import display_frame, downsample

if TYPE_CHECKING:
    from framescope.live import Status, ZMQSource

__all__ = [
    "ORDERS",
    "PREVIEW_SIDE",
    "format_scan",
    "parse_scan",
    "poll",
    "preview_image",
    "start_source",
    "status_html",
    "status_table",
]

log = logging.getLogger(__name__)

#: largest side (pixels) of the preview image; bigger frames are block-averaged
PREVIEW_SIDE = 128
#: scan order choices: label → value ("" = the series header's order)
ORDERS: dict[str, str] = {"from header": "", "raster": "raster", "snake": "snake"}

_SCAN = re.compile(r"^\s*(\d+)\s*[x×,]\s*(\d+)\s*$", re.IGNORECASE)
_WARN = ("dropped", "malformed", "gaps")  # rows shown in red when not zero


def parse_scan(text: str) -> tuple[int, int] | None:
    """``"128x128"`` → ``(128, 128)``; an empty text → None (the header's scan shape).

    Raises
    ------
    ValueError
        If the text is neither empty nor two positive integers ``HEIGHTxWIDTH``.
    """
    if not text.strip():
        return None
    m = _SCAN.match(text)
    if m is None or int(m[1]) < 1 or int(m[2]) < 1:
        raise ValueError(f"scan: expected HEIGHTxWIDTH such as '128x128' (or empty to take "
                         f"it from the series header), found {text!r}")
    return int(m[1]), int(m[2])


def format_scan(scan: tuple[int, int] | None) -> str:
    """The inverse of :func:`parse_scan`."""
    return "" if scan is None else f"{scan[0]}x{scan[1]}"


def start_source(endpoint: str, protocol: str, scan: str, order: str, policy: str,
                 before_start: Callable[[ZMQSource], Any] | None = None,
                 ) -> ZMQSource | str:
    """A started :class:`~framescope.live.ZMQSource` from the widgets' fields, or the reason
    it could not be made (a message for the user; also logged).

    ``before_start(source)`` runs between making and starting it: analyses attached there
    see the series from its first frame (one may start the source itself).
    """
    import zmq

    from framescope.live import ZMQSource

    try:
        src = ZMQSource(endpoint, protocol, scan=parse_scan(scan), order=order or None,
                        policy=policy)  # type: ignore[arg-type]
        if before_start is not None:
            before_start(src)
        return src.start()  # a no-op when before_start started it
    except zmq.ZMQError as exc:
        msg = f"cannot connect to {endpoint!r}: {exc}"
        if exc.errno == zmq.EINVAL:
            msg += "; expected an endpoint such as 'tcp://127.0.0.1:9999'"
    except ValueError as exc:  # scan, protocol, order or policy
        msg = str(exc)
    log.warning("source widget: %s", msg)
    return msg


def poll(source: ZMQSource | None, last_status: Status | None, seen: Any,
         ) -> tuple[Status | None, np.ndarray | None, Any]:
    """What a widget's refresh shows: the status now (``last_status`` without a source),
    and a copy of the latest frame when one arrived since ``seen`` (the key returned by the
    previous call; no copy otherwise). Returns ``(status, frame or None, key)``."""
    status = source.status if source is not None else last_status
    if source is None or status is None:
        return status, None, seen
    key = (status.series, status.frames_received)
    if key == seen:
        return status, None, seen
    frame = source.latest_frame()
    return status, frame, (seen if frame is None else key)


def _count(n: int) -> str:
    return f"{n:,}"


def status_table(status: Status | None) -> dict[str, str]:
    """The rows of the widgets' status panel (label → display text) for ``status``.

    None (no source) gives state ``disconnected`` and dashes.
    """
    if status is None:
        keys = ("series", "frames received", "frames expected", "rate (Hz)", "MB/s",
                "dropped", "spilled", "malformed", "gaps", "duplicates", "out of order",
                "queue", "last error")
        return {"state": "disconnected", **dict.fromkeys(keys, "—"), "last error": ""}
    s = status
    return {
        "state": s.state,
        "series": "—" if s.series is None else str(s.series),
        "frames received": _count(s.frames_received),
        "frames expected": "—" if s.frames_expected is None else _count(s.frames_expected),
        "rate (Hz)": f"{s.rate_hz:,.1f}",
        "MB/s": f"{s.mb_per_s:,.2f}",
        "dropped": _count(s.dropped),
        "spilled": _count(s.spilled),
        "malformed": _count(s.malformed),
        "gaps": _count(s.gaps),
        "duplicates": _count(s.duplicates),
        "out of order": _count(s.out_of_order),
        "queue": f"{_count(s.queue_depth)} / {_count(s.queue_capacity)}",
        "last error": s.last_error,
    }


def status_html(table: dict[str, str]) -> str:
    """``table`` as a two-column HTML table; lost or bad frames (not zero) in red."""
    rows = []
    for key, value in table.items():
        bad = key in _WARN and value not in ("0", "—")
        style = ' style="color:#b00;font-weight:bold"' if bad else ""
        rows.append(f'<tr><th style="text-align:left;padding-right:1em">{html.escape(key)}'
                    f"</th><td{style}>{html.escape(value)}</td></tr>")
    return '<table class="framescope-status">' + "".join(rows) + "</table>"


def preview_image(frame: np.ndarray, max_side: int = PREVIEW_SIDE
                  ) -> tuple[np.ndarray, int]:
    """The preview of a frame: ``log10(1 + I)``, block-averaged to at most ``max_side``
    pixels a side; returns ``(image, factor)`` (float32): the dashboard's own scaling, so
    that the preview looks like the dashboard's frame."""
    return downsample(display_frame(frame, "log"), max_side=max_side,
                      max_bytes=max_side * max_side * 4)

