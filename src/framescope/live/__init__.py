"""Live 4D-STEM: ZeroMQ receivers (DECTRIS stream v1/stream2, native): decoding, validation,
ordering, bounded batches, recording/replay and a detector simulator. See docs/live.md.

This package only receives: the engine runs UDFs over what it hands on
(``framescope.submit(udfs, ZMQSource(...))``).

Needs the ``live`` extra (pyzmq, cbor2, lz4, bitshuffle). The source widgets are the
dashboard's (:func:`framescope.dashboard.source_widget`).
"""

from typing import Any

from framescope.live._batch import Batch, Batcher, End, Start
from framescope.live._messages import Frame, MessageError, SeriesEnd, SeriesStart
from framescope.live._protocols import PROTOCOLS, make_decoder, make_encoder
from framescope.live._receiver import ZMQSource
from framescope.live._record import Recorder, read_recording
from framescope.live._scan import Series
from framescope.live._simulate import Publisher, replay, simulate_stream, write_stream1_dump
from framescope.live._status import Status
from framescope.live._streams import StreamCounters, StreamReceiver, make_stream_decoder
from framescope.live._values import (
    VALUE_PROTOCOLS,
    Values,
    ValuesDecoder,
    ValuesEncoder,
    make_values_decoder,
    make_values_encoder,
)

__all__ = [
    "PROTOCOLS",
    "VALUE_PROTOCOLS",
    "Batch",
    "Batcher",
    "End",
    "Frame",
    "MessageError",
    "Publisher",
    "Recorder",
    "Series",
    "SeriesEnd",
    "SeriesStart",
    "Start",
    "Status",
    "StreamCounters",
    "StreamReceiver",
    "Values",
    "ValuesDecoder",
    "ValuesEncoder",
    "ZMQSource",
    "make_decoder",
    "make_encoder",
    "make_stream_decoder",
    "make_values_decoder",
    "make_values_encoder",
    "read_recording",
    "replay",
    "simulate_stream",
    "write_stream1_dump",
]


def __getattr__(name: str) -> Any:
    if name in ("SourceWidget", "SourceIPyWidget", "source_widget"):
        # faces belong to the dashboard: live/ only receives
        raise AttributeError(f"framescope.live.{name} moved to framescope.dashboard.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
