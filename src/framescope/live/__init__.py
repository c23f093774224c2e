"""Live 4D-STEM: ZeroMQ receivers (DECTRIS stream v1/stream2, native), live analysis with the
offline merge, recording/replay and a detector simulator. See docs/live.md.

Needs the ``live`` extra (pyzmq, cbor2, lz4, bitshuffle). The source widgets
(:func:`source_widget`) also need panel or ipywidgets, imported only when first used.
"""

from typing import Any

from framescope.live._messages import Frame, MessageError, SeriesEnd, SeriesStart
from framescope.live._parallel import ParallelRun
from framescope.live._protocols import PROTOCOLS, make_decoder, make_encoder
from framescope.live._receiver import ZMQSource
from framescope.live._record import Recorder, read_recording
from framescope.live._run import LiveRun
from framescope.live._simulate import Publisher, replay, simulate_stream
from framescope.live._status import Status

__all__ = [
    "PROTOCOLS",
    "Frame",
    "LiveRun",
    "MessageError",
    "ParallelRun",
    "Publisher",
    "Recorder",
    "SeriesEnd",
    "SeriesStart",
    "Status",
    "ZMQSource",
    "make_decoder",
    "make_encoder",
    "read_recording",
    "replay",
    "simulate_stream",
]


def __getattr__(name: str) -> Any:
    if name in ("SourceWidget", "SourceIPyWidget", "source_widget"):
        # faces belong to the dashboard: live/ only receives
        raise AttributeError(f"framescope.live.{name} moved to framescope.dashboard.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
