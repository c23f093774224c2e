"""Event jobs on real sockets: three simulated streams → trigger map → workers → reducer."""

from __future__ import annotations

import numpy as np
import pytest

import framescope.events as fe
from framescope.events._simulate import simulate_streams

FPP = 2  # detector (and I0) frames per motor point


class RingOverI0(fe.EventWorker):
    """Sum of each detector frame over a box, over I0 of the same frame, times a scale."""

    def process_event(self, event, parameters):
        if not event.complete:
            return None
        det = event["detector"]  # (FPP, h, w)
        i0 = np.array([f.data["i0"] for f in event.streams["i0"]])
        vals = det[:, 4:12, 4:12].sum((1, 2)) / i0 * parameters["scale"]
        pos = event["motors"]
        return {"value": vals.sum(), "x": pos["x"], "y": pos["y"],
                "frames": [f.frame for f in event.streams["detector"]]}


class Collect(fe.Reducer):
    def __init__(self, parameters, context):
        super().__init__(parameters, context)
        self.order, self.results = [], {}

    def process_result(self, result, parameters):
        self.order.append(result.event)
        self.results[result.event] = result
        self.publish["n"] = len(self.order)


def _truth_value(sim, event, scale=1.0):
    frames = range(event * FPP, (event + 1) * FPP)
    return sum(sim.truth["detector"][k][4:12, 4:12].sum() / sim.truth["i0"][k]
               for k in frames) * scale


def _streams(sim):
    return {n: (sim.endpoints[n], sim.protocols[n]) for n in sim.endpoints}


def _map(n):
    return fe.TriggerMap.per_point(n, {"detector": FPP, "i0": FPP, "motors": 1})


@pytest.mark.parametrize("workers", [1, 2])
def test_events_equal_the_ground_truth_in_order_each_once(workers):
    n = 40
    with simulate_streams(n_points=n, frames_per_point=FPP, det=(16, 16),
                          rates={"motors": 400.0, "i0": 2000.0}) as sim:
        job = fe.submit(_streams(sim), _map(n), RingOverI0, Collect,
                        parameters={"scale": 1.0}, workers=workers)
        out = job.result(30)
        sim.wait(5)
    red, st = job.reducer, job.status
    assert st["state"] == "finished"
    assert out["n"] == n
    assert red.order == list(range(n))  # sequential, each event once
    assert st["formed"] == st["reduced"] == n
    assert st["incomplete"] == 0
    assert st["streams"]["detector"]["received"] == n * FPP
    assert st["streams"]["motors"]["received"] == n
    for e, r in red.results.items():
        assert r.complete
        assert r.error is None
        assert r.value["frames"] == [e * FPP, e * FPP + 1]
        np.testing.assert_allclose(r.value["value"], _truth_value(sim, e), rtol=1e-12)
        assert (r.value["x"], r.value["y"]) == tuple(sim.truth["motors"][e].values())
    if workers == 2:
        assert {r.worker for r in red.results.values()} == {0, 1}


def test_faults_mark_events_incomplete_with_reasons_and_never_hang():
    n = 12
    faults = {"detector": {"skip": [5], "repeat": [2]},
              "i0": {"stop_after": 18},  # dies mid-scan: frames 0..17, no end message
              "motors": {"start_delay": 0.3, "repeat": [1], "n_frames": n - 1}}
    with simulate_streams(n_points=n, frames_per_point=FPP, det=(16, 16),
                          faults=faults) as sim:
        job = fe.submit(_streams(sim), _map(n), RingOverI0, Collect, workers=2,
                        parameters={"scale": 1.0}, timeout=1.0, reorder_grace=0.2)
        job.result(30)
    red, st = job.reducer, job.status
    assert red.order == list(range(n))
    incomplete = {e: r for e, r in red.results.items() if not r.complete}
    # event 2 holds detector frames 4, 5 (5 skipped); events 9.. lack I0 frames 18..
    assert set(incomplete) == {2, *range(9, n)}
    assert incomplete[2].missing == {"detector": [5]}
    # skipped (later frames came) or ended without it (the stream ended within the grace)
    assert any(w in incomplete[2].reason for w in ("skipped", "ended without"))
    assert incomplete[9].missing == {"i0": [18, 19]}
    # the motors stream is one point short: the last event also misses its position
    assert incomplete[n - 1].missing == {"i0": [22, 23], "motors": [n - 1]}
    assert "'motors' ended without frame(s) 11" in incomplete[n - 1].reason
    assert "'i0'" in incomplete[9].reason
    for e, r in red.results.items():
        assert (r.value is None) != r.complete
        assert r.error is None
        if r.complete:
            np.testing.assert_allclose(r.value["value"], _truth_value(sim, e), rtol=1e-12)
    assert st["streams"]["detector"]["repeated"] == 1
    assert st["streams"]["motors"]["repeated"] == 1
    assert st["incomplete"] == n - 9 + 1


def test_parameters_change_mid_scan_and_each_result_records_its_version():
    n = 60
    with simulate_streams(n_points=n, frames_per_point=FPP, det=(16, 16),
                          rates={"motors": 100.0}) as sim:
        job = fe.submit(_streams(sim), _map(n), RingOverI0, Collect, workers=2,
                        parameters={"scale": 1.0})
        import time

        deadline = time.monotonic() + 20
        while job.status["formed"] < 15 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert job.set_parameters(scale=3.0) == 1
        job.result(30)
    red = job.reducer
    versions = [red.results[e].parameters_version for e in range(n)]
    assert versions[0] == 0
    assert versions[-1] == 1
    assert versions == sorted(versions)  # dispatched in order: one switch
    for e in range(n):
        scale = 3.0 if versions[e] else 1.0
        np.testing.assert_allclose(red.results[e].value["value"], _truth_value(sim, e, scale),
                                   rtol=1e-12)
    hist = job.parameters.history()
    assert [h["values"]["scale"] for h in hist] == [1.0, 3.0]


def test_an_open_map_is_extended_while_the_scan_runs():
    n = 10
    with simulate_streams(n_points=n, frames_per_point=FPP, det=(16, 16)) as sim:
        tm = fe.TriggerMap.per_point(None, {"detector": FPP, "i0": FPP, "motors": 1})
        job = fe.submit(_streams(sim), tm, RingOverI0, Collect, parameters={"scale": 1.0})
        tm.extend_points(4)
        job.extend_map([])  # wakes the job; nothing appended
        with pytest.raises(TimeoutError, match="4 of 4 events reduced"):
            job.result(1.0)  # the map is open: the job waits for more events
        tm.extend_points(n - 4)
        job.close_map()
        job.result(30)
    assert job.reducer.order == list(range(n))


def test_a_worker_that_raises_gives_error_results_and_the_scan_goes_on():
    class Fails(RingOverI0):
        def process_event(self, event, parameters):
            if event.number == 3:
                raise ValueError("bad frame")
            return super().process_event(event, parameters)

    n = 6
    with simulate_streams(n_points=n, frames_per_point=FPP, det=(16, 16)) as sim:
        job = fe.submit(_streams(sim), _map(n), Fails, Collect, parameters={"scale": 1.0})
        job.result(30)
    r3 = job.reducer.results[3]
    assert r3.value is None
    assert "ValueError: bad frame" in r3.error
    assert job.status["errors"] == 1
    assert job.reducer.order == list(range(n))


def test_missing_stream_and_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match=r"names \['motors'\], which streams= does not give"):
        fe.submit({"detector": ("tcp://127.0.0.1:1", "native"),
                   "i0": ("tcp://127.0.0.1:2", "values-json")}, _map(1), RingOverI0, Collect)


def test_partial_results_over_http_during_the_scan_and_parameters_with_a_token():
    import io
    import json
    import urllib.request

    n = 30
    with simulate_streams(n_points=n, frames_per_point=FPP, det=(16, 16),
                          rates={"motors": 60.0}) as sim:
        job = fe.submit(_streams(sim), _map(n), RingOverI0, Collect, parameters={"scale": 1.0},
                        http=True, token="s3cret")
        try:
            assert job.http_url.startswith("http://127.0.0.1:")
            with urllib.request.urlopen(job.http_url + "/status") as r:
                status = json.load(r)
            assert status["events"] == n
            assert status["state"] == "running"
            req = urllib.request.Request(job.http_url + "/parameters", method="POST",
                                         data=json.dumps({"scale": 2.0}).encode(),
                                         headers={"Authorization": "Bearer s3cret",
                                                  "Content-Type": "application/json"})
            with urllib.request.urlopen(req) as r:
                assert json.load(r) == {"version": 1}
            job.result(30)
            with urllib.request.urlopen(job.http_url + "/results/n") as r:
                assert json.load(r) == n
        finally:
            job.close()
    assert job.parameters.history()[1]["source"] == "http"
    versions = [job.reducer.results[e].parameters_version for e in range(n)]
    assert versions[-1] == 1
    for e in range(n):
        scale = 2.0 if versions[e] else 1.0
        np.testing.assert_allclose(job.reducer.results[e].value["value"],
                                   _truth_value(sim, e, scale), rtol=1e-12)
    assert io  # (module used for .npy reads elsewhere)


def test_a_job_records_its_streams_and_the_same_job_on_the_replay_gives_the_same_result(
        tmp_path):
    n = 12
    path = tmp_path / "streams.h5"
    faults = {"detector": {"skip": [7]}}  # an incomplete event, the same on the replay
    with simulate_streams(n_points=n, frames_per_point=FPP, det=(16, 16),
                          faults=faults) as sim:
        job = fe.submit(_streams(sim), _map(n), RingOverI0, Collect,
                        parameters={"scale": 1.0}, record=path, reorder_grace=0.2)
        job.result(30)
    first = job.reducer.results
    assert job.recorded == {"detector": n * FPP - 1 + 2, "i0": n * FPP + 2, "motors": n + 2}
    with fe.replay_streams(path, speed=0) as endpoints:
        protocols = {name: sim.protocols[name] for name in endpoints}
        again = fe.submit({k: (endpoints[k], protocols[k]) for k in endpoints}, _map(n),
                          RingOverI0, Collect, parameters={"scale": 1.0}, reorder_grace=0.2)
        again.result(30)
    second = again.reducer.results
    assert sorted(second) == sorted(first) == list(range(n))
    for e in range(n):
        assert (first[e].complete, first[e].missing) == (second[e].complete, second[e].missing)
        assert first[e].value == second[e].value  # bit-identical: the same bytes came
    assert not first[3].complete  # detector frame 7 is in event 3


def test_nexus_file_holds_results_events_map_parameters_and_version(tmp_path):
    import json

    import h5py

    import framescope

    n = 10
    with simulate_streams(n_points=n, frames_per_point=FPP, det=(16, 16),
                          faults={"i0": {"skip": [4]}}) as sim:
        job = fe.submit(_streams(sim), _map(n), RingOverI0, Collect, reorder_grace=0.2,
                        parameters={"scale": 1.0})
        job.set_parameters(scale=1.0, note="second")
        job.result(30)
    path = job.write_nexus(tmp_path / "events.nxs")
    with h5py.File(path, "r") as f:
        e = f["entry"]
        assert e.attrs["NX_class"] == "NXentry"
        assert e["results/n"][()] == n
        np.testing.assert_array_equal(e["events/event"][()], np.arange(n))
        complete = e["events/complete"][()]
        assert not complete[2]  # i0 frame 4 is in event 2
        assert complete.sum() == n - 1
        assert "i0" in e["events/reason"][2].decode()
        assert e["events/reason"][0].decode() == ""
        p = e["process"]
        assert p["program"][()].decode() == "framescope"
        assert p["version"][()].decode() == framescope.__version__
        if "git_commit" in p:
            assert len(p["git_commit"][()].decode()) == 40
        back = fe.TriggerMap.from_json(p["trigger_map"][()].decode())
        assert len(back) == n
        assert back[3] == job.trigger_map[3]
        v1 = p["parameters/version_1"]
        assert json.loads(v1["values"][()]) == {"scale": 1.0, "note": "second"}
        assert v1["source"][()].decode() == "python"
        assert set(e["events/parameters_version"][()]) <= {0, 1}
        assert p["reducer"][()].decode().endswith("Collect")
        assert json.loads(p["status"][()])["reduced"] == n


class Echo(fe.EventWorker):
    """What the event held: per stream, the frame numbers and data."""

    def process_event(self, event, parameters):
        return {s: [[f.frame, f.data if isinstance(f.data, dict) else float(f.data.sum())]
                    for f in frames] for s, frames in event.streams.items()}


def test_a_map_with_all_none_and_discard_forms_exactly_the_events_it_says():
    n = 12
    events = []
    for e in range(n):
        streams = {"detector": {"frames": [e]}}
        if e % 2 == 0:
            streams["motors"] = {"frames": [e // 2]}
        else:  # odd events: no motor frame of their own, the last one as a reference
            streams["motors"] = {"frames": [n - 1], "to": "all"}
        if e % 3 == 0:
            streams["i0"] = {"frames": [e]}
        elif e % 3 == 1:
            streams["i0"] = {"frames": [e], "to": "discard"}
        events.append({"event": e, "streams": streams})  # e % 3 == 2: no i0 ("none")
    tm = fe.TriggerMap(["detector", "i0", "motors"], events, closed=True)
    with simulate_streams(n_points=n, det=(8, 8), rates={"i0": 500.0}) as sim:
        job = fe.submit(_streams(sim), tm, Echo, Collect, workers=2)
        job.result(30)
    got = {e: r.value for e, r in job.reducer.results.items()}
    assert sorted(got) == list(range(n))
    for e in range(n):
        want = {"detector": [[e, float(sim.truth["detector"][e].sum())]]}
        want["motors"] = ([[e // 2, sim.truth["motors"][e // 2]]] if e % 2 == 0
                          else [[n - 1, sim.truth["motors"][n - 1]]])
        if e % 3 == 0:
            want["i0"] = [[e, {"i0": sim.truth["i0"][e]}]]
        assert got[e] == want, e
    st = job.status
    assert st["incomplete"] == 0
    # i0 frames of "none" events were never claimed: they wait in the buffer
    assert st["streams"]["i0"]["buffered"] == len([e for e in range(n) if e % 3 == 2])
