"""A receiver's answer to the merging side's end of a series (engine._receiver_task._end).

The case that failed in CI: the series' header and frames wait unread in a receiver's
socket while its thread is busy (the first header imports the calibration model), the
other receiver ends the series, and the busy one must not answer "empty" (the merged
result then lacked its frames and the header's calibration).
"""

from __future__ import annotations

import time
import uuid

import numpy as np
import zmq

from framescope.engine._receiver_task import _end
from framescope.engine._wire import decode_message
from framescope.live import SeriesStart
from framescope.live._intake import Intake
from framescope.live._stream2 import Stream2Decoder, Stream2Encoder


class FakeSource:
    """What _end reads of a ZMQSource."""

    def __init__(self, series=None, open_=False, finished=(), quiet=0.0):
        self.series = None if series is None else type("S", (), {"series": series})()
        self.series_open, self.finished, self.quiet = open_, set(finished), quiet
        self.ends: list[tuple[int, float]] = []

    def seen(self, series: int) -> bool:
        return (self.series is not None and self.series.series == series) \
            or series in self.finished

    def quiet_for(self) -> float:
        return self.quiet

    def request_end(self, series: int, grace: float) -> None:
        self.ends.append((series, grace))


def _pair():
    ctx = zmq.Context.instance()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    # an address per pair: a closed socket leaves its inproc endpoint to libzmq's reaper
    # thread, so the next test binding the same name could find it still taken (CI did)
    address = f"inproc://end-test-{uuid.uuid4().hex}"
    a.bind(address)
    b.connect(address)
    return a, b


def test_a_busy_receiver_does_not_answer_empty_until_its_socket_is_quiet():
    ctrl, merging = _pair()
    try:
        busy = FakeSource(quiet=0.0)
        assert not _end(4, 0.25, busy, ctrl, 1, set())  # still pending
        assert not merging.poll(50)
        idle = FakeSource(quiet=0.3)
        assert _end(4, 0.25, idle, ctrl, 1, set())
        head, _ = decode_message(merging.recv_multipart())
        assert head == {"kind": "end", "worker": 1, "series": 4, "ended": True,
                        "empty": True}
    finally:
        ctrl.close(linger=0)
        merging.close(linger=0)


def test_a_receiver_with_the_series_ends_it_itself_or_after_its_frames():
    ctrl, merging = _pair()
    try:
        open_ = FakeSource(series=4, open_=True)
        assert _end(4, 0.5, open_, ctrl, 0, set())
        assert open_.ends == [(4, 0.5)]
        finished = FakeSource(finished={4}, quiet=10.0)
        assert _end(4, 0.5, finished, ctrl, 0, set())
        begun = FakeSource(quiet=10.0)
        assert _end(4, 0.5, begun, ctrl, 0, {4})  # its analysis began it
        assert not merging.poll(50)  # none of them said "empty"
    finally:
        ctrl.close(linger=0)
        merging.close(linger=0)


def test_intake_is_quiet_only_after_waiting_on_an_empty_socket():
    it = Intake("test", Stream2Decoder(), scan=None, order=None, policy="drop",
                buffer_bytes=2**20, batch_frames=4, spill_dir=None, spill_limit=0,
                stall_timeout=5.0, max_message_bytes=2**20)
    assert it.quiet_for() == 0.0  # connected long ago, but never waited: maybe busy
    it.idle(time.monotonic() - 2.0)
    assert it.quiet_for() >= 2.0
    enc = Stream2Encoder()
    msg = enc.start(SeriesStart(1, (4, 4), np.dtype("uint16"), 2, (1, 2), "raster"))
    it.handle([zmq.Frame(p) for p in msg])
    assert it.quiet_for() == 0.0  # handling messages again
