"""Event forming against the map, without sockets: order, all/discard/drop, giving up."""

from __future__ import annotations

import numpy as np

from framescope.events import TriggerMap
from framescope.events._former import EventFormer
from framescope.live._streams import StreamCounters


def _former(tm, **kw):
    counters = {s: StreamCounters() for s in tm.streams}
    return EventFormer(tm, counters, **kw), counters


def _feed(f, counters, stream, index, payload, now=0.0):
    c = counters[stream]
    c.received += 1
    c.highest = max(c.highest, index)
    c.last_heard = now
    f.on_frame(stream, index, payload, 0)


def test_events_form_in_order_once_their_frames_came():
    tm = TriggerMap.per_point(3, {"det": 2, "i0": 1})
    f, c = _former(tm)
    frames = np.arange(6 * 4).reshape(6, 2, 2)
    for k in (5, 4, 2, 3):  # out of order, events 1 and 2 complete first
        _feed(f, c, "det", k, frames[k])
    for k in range(3):
        _feed(f, c, "i0", k, {"i0": 10.0 + k})
    assert f.form(now=0.0) == []  # event 0 waits for det 0, 1
    _feed(f, c, "det", 0, frames[0])
    _feed(f, c, "det", 1, frames[1])
    evs = f.form(now=0.0)
    assert [e.number for e in evs] == [0, 1, 2]
    assert all(e.complete for e in evs)
    np.testing.assert_array_equal(evs[1]["det"], frames[2:4])
    assert evs[2]["i0"] == {"i0": 12.0}
    assert f.done
    assert f.buffered() == {"det": 0, "i0": 0}


def test_all_goes_to_every_event_discard_and_drop_are_consumed():
    tm = TriggerMap(["det", "hdr"], closed=False)
    tm.append({"hdr": {"frames": [0], "to": "all"}, "det": {"frames": [0], "drop": [1]}})
    tm.append({"hdr": {"frames": [0], "to": "all"}, "det": {"frames": [2, 3],
                                                             "to": "discard"}})
    tm.append({"det": [4]})  # no hdr frame: "none"
    tm.close()
    f, c = _former(tm)
    _feed(f, c, "hdr", 0, {"gain": 2})
    for k in range(5):
        _feed(f, c, "det", k, np.full((1, 1), k))
    evs = f.form(now=0.0)
    assert [e.number for e in evs] == [0, 1, 2]
    assert evs[0]["hdr"] == evs[1]["hdr"] == {"gain": 2}
    assert [s.frame for s in evs[0].streams["det"]] == [0]
    assert "det" not in evs[1].streams
    assert "hdr" not in evs[2].streams
    assert f.buffered()["det"] == 0  # 1 dropped, 2 and 3 discarded
    _feed(f, c, "det", 1, np.zeros((1, 1)))  # a resend after its event formed
    assert f.late["det"] == 1
    assert f.buffered()["det"] == 0


def test_missing_frames_are_given_up_with_the_reason_never_waited_on_forever():
    tm = TriggerMap.per_point(4, {"det": 1, "i0": 1})
    f, c = _former(tm, timeout=5.0, reorder_grace=0.5)
    f.started = 0.0
    for k in (0, 2, 3):  # det skips frame 1
        _feed(f, c, "det", k, np.zeros((1, 1)), now=1.0)
    for k in (0, 1):  # i0 stops after frame 1 (no end message)
        _feed(f, c, "i0", k, {"i0": 1.0}, now=1.0)
    assert [e.number for e in f.form(now=1.0)] == [0]
    assert f.form(now=1.2) == []  # det 1 might still come (reordering)
    (e1,) = f.form(now=1.8)
    assert not e1.complete
    assert e1.missing == {"det": [1]}
    assert "skipped" in e1.reason
    assert f.form(now=3.0) == []  # i0 2 waits: the stream may just be slow
    e2, e3 = f.form(now=9.0)  # silent for 8 s: both its events give up at once
    assert e2.missing == {"i0": [2]}
    assert "silent" in e2.reason
    assert e3.missing == {"i0": [3]}
    assert f.incomplete == 3
    assert f.reasons == {"stream 'det' skipped": 1, "stream 'i0' was silent": 2}
    assert f.done


def test_a_stream_that_ended_gives_up_its_missing_frames_at_once():
    tm = TriggerMap.per_point(3, {"det": 1, "i0": 1})
    f, c = _former(tm, timeout=60.0)
    f.started = 0.0
    for k in range(3):
        _feed(f, c, "det", k, np.zeros((1, 1)), now=0.1)
    _feed(f, c, "i0", 0, {"i0": 1.0}, now=0.1)
    c["i0"].ended = True  # its end message came after frame 0
    e0, e1, e2 = f.form(now=0.2)
    assert e2.missing == {"i0": [2]}
    assert e0.complete
    assert e1.missing == {"i0": [1]}
    assert "'i0' ended without frame(s) 1" in e1.reason
    assert f.reasons == {"stream 'i0' ended": 2}
    assert f.done


def test_a_stream_that_never_starts_gives_up_after_the_timeout_then_at_once():
    tm = TriggerMap.per_point(3, {"det": 1, "i0": 1})
    f, c = _former(tm, timeout=2.0)
    f.started = 0.0
    for k in range(3):
        _feed(f, c, "det", k, np.zeros((1, 1)), now=0.1)
    assert f.form(now=1.0) == []
    evs = f.form(now=2.1)  # silent since the job started: every event gives up at once
    assert [e.number for e in evs] == [0, 1, 2]
    assert all("'i0' sent nothing for 2 s" in e.reason for e in evs)
    assert evs[0]["det"].shape == (1, 1)
    assert f.reasons == {"stream 'i0' sent nothing": 3}
