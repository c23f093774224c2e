from __future__ import annotations

import itertools
import json
import logging
import threading
from datetime import UTC, datetime

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict, Field

from framescope.errors import ParameterError
from framescope.events._params import Parameters, jsonable


class Scan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(gt=0)
    roi: list[int] = Field(default_factory=lambda: [0, 0, 8, 8])
    label: str = "run"


def test_versions_start_at_zero_and_keep_the_past():
    p = Parameters({"threshold": 5, "mode": "sum"})
    assert p.version == 0
    assert p.update({"threshold": 7}) == 1
    assert p.update(mode="max", threshold=9) == 2
    assert p.version == 2
    assert p.get(0) == {"threshold": 5, "mode": "sum"}
    assert p.get(1) == {"threshold": 7, "mode": "sum"}
    assert p.get() == p.get(2) == {"threshold": 9, "mode": "max"}
    assert p.snapshot() == (2, {"threshold": 9, "mode": "max"})


def test_keywords_win_over_the_mapping_and_an_empty_update_is_no_version():
    p = Parameters({"a": 1})
    assert p.update({"a": 2, "b": 3}, a=4) == 1
    assert p.get() == {"a": 4, "b": 3}
    assert p.update() == 1
    assert p.update({}) == 1
    assert len(p.history()) == 2


def test_get_returns_copies():
    p = Parameters({"roi": [1, 2, 3]})
    got = p.get()
    got["roi"].append(99)
    got["new"] = 1
    assert p.get() == {"roi": [1, 2, 3]}
    p.history()[0]["values"]["roi"].clear()
    assert p.get(0) == {"roi": [1, 2, 3]}


@pytest.mark.parametrize("bad", [3, -1, 1.0, "1", True])
def test_unknown_version_names_the_range(bad):
    p = Parameters({"a": 1})
    p.update(a=2)
    with pytest.raises(KeyError, match=r"0\.\.1"):
        p.get(bad)


def test_history_records_time_values_and_source():
    before = datetime.now(UTC)
    p = Parameters({"a": 1})
    p.update(a=2, source="http")
    p.update({"a": 3}, source="dashboard")
    after = datetime.now(UTC)
    h = p.history()
    assert [v["version"] for v in h] == [0, 1, 2]
    assert [v["source"] for v in h] == ["python", "http", "dashboard"]
    assert [v["values"] for v in h] == [{"a": 1}, {"a": 2}, {"a": 3}]
    times = [datetime.fromisoformat(v["time"]) for v in h]
    assert all(t.utcoffset().total_seconds() == 0 for t in times)
    # millisecond resolution: truncation may put the first one just before `before`
    assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= times[0]
    assert times == sorted(times)
    assert times[-1] <= after
    assert json.loads(json.dumps(h)) == h  # the whole history is JSON


def test_unknown_source_is_refused():
    p = Parameters({"a": 1})
    with pytest.raises(ValueError, match=r"source.*'web'"):
        p.update(a=2, source="web")
    assert p.version == 0


def test_numpy_values_become_plain_json_types():
    p = Parameters({"n": np.int64(3)})
    p.update(x=np.float32(0.5), flag=np.bool_(True), roi=np.array([1, 2], dtype=np.uint16),
             nested={"t": (np.int8(-1), 2.5)})
    v = p.get()
    assert type(v["n"]) is int
    assert v["n"] == 3
    assert type(v["x"]) is float
    assert v["x"] == 0.5
    assert v["flag"] is True
    assert v["roi"] == [1, 2]
    assert all(type(i) is int for i in v["roi"])
    assert v["nested"] == {"t": [-1, 2.5]}
    assert json.loads(json.dumps(v)) == v


@pytest.mark.parametrize(("value", "match"), [
    (object(), r"parameters\['bad'\].*JSON-able.*found object"),
    ({1: "x"}, r"parameters\['bad'\].*str keys.*found key 1"),
    (float("nan"), r"parameters\['bad'\].*finite.*nan"),
    ([1, {"deep": np.float64("inf")}], r"parameters\['bad'\]\[1\]\['deep'\].*inf"),
    ({1, 2}, r"found set"),
])
def test_values_that_are_not_json_are_refused_and_the_version_stays(value, match):
    p = Parameters({"a": 1})
    with pytest.raises(ParameterError, match=match):
        p.update(bad=value)
    assert p.version == 0
    assert p.get() == {"a": 1}


def test_not_json_initial_values_are_refused():
    with pytest.raises(ParameterError, match="JSON-able"):
        Parameters({"f": lambda: 1})


def test_model_fills_defaults_and_normalises():
    p = Parameters({"threshold": "2.5"}, model=Scan)
    assert p.model is Scan
    assert p.get() == {"threshold": 2.5, "roi": [0, 0, 8, 8], "label": "run"}
    assert p.update(roi=(1, 2, 3, 4)) == 1
    assert p.get()["roi"] == [1, 2, 3, 4]
    assert p.get()["threshold"] == 2.5


@pytest.mark.parametrize(("changes", "field", "found"), [
    ({"threshold": -1}, "threshold", "-1"),
    ({"threshold": "high"}, "threshold", "'high'"),
    ({"roi": [1, "x"]}, "roi.1", "'x'"),
    ({"speed": 3}, "speed", "3"),
])
def test_model_rejects_bad_updates_naming_field_and_found(changes, field, found):
    p = Parameters({"threshold": 1.0}, model=Scan)
    with pytest.raises(ParameterError) as info:
        p.update(changes)
    msg = str(info.value)
    assert "Scan" in msg
    assert f"field {field!r}" in msg
    assert f"found {found}" in msg
    assert p.version == 0
    assert p.get() == {"threshold": 1.0, "roi": [0, 0, 8, 8], "label": "run"}


def test_model_rejects_bad_initial_values():
    with pytest.raises(ParameterError, match=r"'threshold'.*greater than 0"):
        Parameters({"threshold": 0}, model=Scan)


def test_subscribers_get_each_version_and_can_leave():
    p = Parameters({"a": 0})
    seen: list[tuple[int, dict]] = []
    unsubscribe = p.subscribe(lambda v, values: seen.append((v, values)))
    p.update(a=1)
    p.update(a=2, b="x")
    unsubscribe()
    p.update(a=3)
    assert seen == [(1, {"a": 1}), (2, {"a": 2, "b": "x"})]
    seen[0][1]["a"] = 99  # subscribers get copies
    assert p.get(1) == {"a": 1}


def test_rejected_update_is_not_announced():
    p = Parameters({"threshold": 1.0}, model=Scan)
    seen = []
    p.subscribe(lambda v, values: seen.append(v))
    with pytest.raises(ParameterError):
        p.update(threshold=-5)
    assert seen == []


def test_a_failing_subscriber_is_logged_and_does_not_stop_others(caplog):
    p = Parameters({"a": 0})
    seen = []

    def broken(version, values):
        raise RuntimeError("worker gone")

    p.subscribe(broken)
    p.subscribe(lambda v, values: seen.append(v))
    with caplog.at_level(logging.ERROR, logger="framescope.events._params"):
        assert p.update(a=1) == 1
    assert seen == [1]
    assert "subscriber" in caplog.text
    assert "version 1" in caplog.text
    assert "worker gone" in caplog.text


def test_concurrent_updates_lose_nothing_and_are_announced_in_order():
    p = Parameters({})
    announced: list[int] = []
    p.subscribe(lambda v, values: announced.append(v))
    n_threads, n_updates = 4, 25

    def writer(i: int) -> None:
        for j in range(n_updates):
            p.update({f"k{i}": j})

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = n_threads * n_updates
    assert p.version == total
    assert announced == list(range(1, total + 1))
    assert p.get() == {f"k{i}": n_updates - 1 for i in range(n_threads)}
    # each version differs from the one before by exactly one key going up by one
    hist = p.history()
    for before, after in itertools.pairwise(hist):
        diff = {k for k in after["values"] if before["values"].get(k) != after["values"][k]}
        assert len(diff) == 1
        (k,) = diff
        assert after["values"][k] == before["values"].get(k, -1) + 1


def test_subscriber_may_update_from_inside_its_callback_and_order_holds():
    p = Parameters({"a": 0})
    first, second = [], []

    def follow(version, values):
        first.append(version)
        if values["a"] == 1:
            assert p.update(a=2, source="dashboard") == 2

    p.subscribe(follow)
    p.subscribe(lambda v, values: second.append((v, values["a"])))
    assert p.update(a=1) == 1
    assert p.get() == {"a": 2}
    assert first == [1, 2]
    assert second == [(1, 1), (2, 2)]  # version 1 reaches everyone before version 2
    assert p.history()[-1]["source"] == "dashboard"


def test_numpy_int_versions():
    p = Parameters({"a": 0})
    p.update(a=1)
    assert p.get(np.int64(0)) == {"a": 0}
    assert p.get(np.uint8(1)) == {"a": 1}


def test_jsonable_is_usable_alone():
    assert jsonable({"a": (np.uint8(1),)}) == {"a": [1]}
    with pytest.raises(ParameterError, match=r"^x: "):
        jsonable(b"bytes", "x")
