"""The trigger map: validation, append-only, the common maps, JSON round trip."""

from __future__ import annotations

import pytest

from framescope.events import TriggerMap


def test_per_point_blocks_with_drop_and_json_round_trip(tmp_path):
    tm = TriggerMap.per_point(3, {"det": 4, "pos": 1}, drop={"pos": 1})
    assert tm.closed
    assert len(tm) == 3
    e = tm[2]
    assert e.streams["det"].frames == [8, 9, 10, 11]
    assert e.streams["pos"].frames == [4]
    assert e.streams["pos"].drop == [5]
    back = TriggerMap.from_json(tm.to_json())
    assert [back[k] for k in range(3)] == [tm[k] for k in range(3)]
    assert back.closed
    path = tmp_path / "map.json"
    path.write_text(tm.to_json())
    assert TriggerMap.from_json(path)[1] == tm[1]


def test_open_map_extends_and_closes():
    tm = TriggerMap.per_point(None, {"det": 1}, stateful=True)
    assert len(tm) == 0
    assert not tm.closed
    assert tm.extend_points(5) == 5
    assert tm[4].worker == 0
    assert tm[4].streams["det"].frames == [4]
    tm.close()
    with pytest.raises(ValueError, match="closed"):
        tm.extend_points(1)


def test_bad_events_name_what_is_wrong_and_append_nothing():
    tm = TriggerMap(["det", "i0"])
    tm.append({"det": [0], "i0": [0]})
    with pytest.raises(ValueError, match="expected event 1 next, found event 3"):
        tm.extend([{"event": 3, "streams": {"det": {"frames": [1]}}}])
    with pytest.raises(ValueError, match=r"unknown stream\(s\) \['pos'\]"):
        tm.append({"pos": [1]})
    with pytest.raises(ValueError, match="frames \\[0\\] of stream 'det' belong to an earlier"):
        tm.append({"det": [0]})
    with pytest.raises(ValueError, match="event 1"):
        tm.extend([{"event": 1, "streams": {"det": {"frames": [-1]}}}])
    # a failed call appends nothing, even its valid first events
    with pytest.raises(ValueError, match="belong to an earlier event"):
        tm.extend([{"event": 1, "streams": {"det": {"frames": [1]}}},
                   {"event": 2, "streams": {"det": {"frames": [1]}}}])
    assert len(tm) == 1
    # "all" frames may go to several events
    tm.append({"det": {"frames": [1], "to": "all"}})
    tm.append({"det": {"frames": [1], "to": "all"}, "i0": [1]})
    assert len(tm) == 3
    with pytest.raises(ValueError, match="distinct"):
        TriggerMap(["a", "a"])
