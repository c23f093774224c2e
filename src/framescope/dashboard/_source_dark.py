"""The dark line of the source widgets ("dark: N frames, bad pixels: M") as plain text.

Shared by the panel and ipywidgets faces, free of both. It reads only what the source keeps
(:attr:`~framescope.live.ZMQSource.dark`, :attr:`~framescope.live.ZMQSource.dark_requested`
and the current series), never waiting on the receiver.
"""

from __future__ import annotations

from typing import Any

__all__ = ["dark_text"]


def dark_text(source: Any) -> str:
    """What the source's dark is: being taken, in use (frames, bad pixels), requested."""
    if source is None or not hasattr(source, "take_dark"):
        return ""
    series = getattr(source, "series", None)
    if series is not None and getattr(series, "dark", False) and source.series_open:
        received, _ = source.frame_progress()
        return f"dark: taking series {series.series} ({received} frames so far)"
    requested = source.dark_requested
    stats = source.dark
    parts = []
    if stats is not None:
        parts.append(f"dark: {stats.n} frames, bad pixels: {int(stats.bad.sum())}")
    if requested:
        parts.append(f"the next {'series is' if requested == 1 else f'{requested} series are'}"
                     f" taken as dark")
    if not parts:
        return "dark: none (Take dark: the next series is a dark series)"
    return "; ".join(parts) if stats is not None else "dark: " + parts[0]
