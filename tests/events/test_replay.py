"""Record several streams, replay them byte for byte; publish HDF5 datasets as streams."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Mapping

import h5py
import numpy as np
import pytest
import zmq

from framescope.events._replay import record_streams, replay_hdf5, replay_streams
from framescope.events._simulate import simulate_streams
from framescope.live._messages import Frame, SeriesEnd, SeriesStart
from framescope.live._protocols import make_decoder
from framescope.live._values import Values, make_values_decoder


def pull_all(endpoints: Mapping[str, str], expected: Mapping[str, int], timeout: float = 20.0,
             arrivals: dict[str, list[float]] | None = None) -> dict[str, list[list[bytes]]]:
    """``expected[name]`` raw messages from each stream (fails on a timeout); their arrival
    times (perf_counter) go to ``arrivals``."""
    ctx = zmq.Context.instance()
    socks: dict[str, zmq.Socket] = {}
    got: dict[str, list[list[bytes]]] = {name: [] for name in endpoints}
    try:
        for name, ep in endpoints.items():
            socks[name] = ctx.socket(zmq.PULL)
            socks[name].connect(ep)
        deadline = time.monotonic() + timeout
        while any(len(got[n]) < expected[n] for n in endpoints):
            assert time.monotonic() < deadline, {n: len(m) for n, m in got.items()}
            for name, sock in socks.items():
                if len(got[name]) < expected[name] and sock.poll(20):
                    got[name].append(sock.recv_multipart())
                    if arrivals is not None:
                        arrivals.setdefault(name, []).append(time.perf_counter())
    finally:
        for s in socks.values():
            s.close(linger=0)
    return got


def read_raw(path, name: str) -> list[list[bytes]]:
    """A recorded stream's messages, read with plain h5py/numpy from the documented layout."""
    with h5py.File(path, "r") as f:
        g = f[f"streams/{name}"]
        data = g["data"][:].tobytes()
        lengths, offsets = g["part_lengths"][:], g["message_offsets"][:]
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    firsts = [*offsets.tolist(), len(lengths)]
    return [[data[bounds[p]:bounds[p + 1]] for p in range(a, b)]
            for a, b in itertools.pairwise(firsts)]


def decoder(protocol: str):
    return (make_values_decoder(protocol) if protocol.startswith("values-")
            else make_decoder(protocol))


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """Three simulated streams with faults, recorded; (path, simulator handle, summary)."""
    path = tmp_path_factory.mktemp("rec") / "rec.h5"
    frames = np.random.default_rng(0).integers(0, 60000, (4, 6, 5), dtype=np.uint16)
    faults = {"detector": {"skip": [1], "repeat": [3]}, "i0": {"stop_after": 2}}
    with simulate_streams(frames, n_points=4, detector_protocol="dectris-stream2",
                          faults=faults, rates={"motors": 200.0}) as sim:
        summary = record_streams(sim.endpoints, path, protocols=sim.protocols,
                                 idle_timeout=1.0)
        assert sim.wait(10)
    return path, sim, summary


def test_record_holds_every_message_as_sent(recording):
    path, sim, summary = recording
    assert summary == {
        "detector": {"messages": 6, "bytes": summary["detector"]["bytes"], "ended": True,
                     "malformed": 0},
        "i0": {"messages": 3, "bytes": summary["i0"]["bytes"], "ended": False, "malformed": 0},
        "motors": {"messages": 6, "bytes": summary["motors"]["bytes"], "ended": True,
                   "malformed": 0},
    }
    with h5py.File(path, "r") as f:
        assert json.loads(f.attrs["streams"]) == ["detector", "i0", "motors"]
        assert f["streams/i0"].attrs["protocol"] == "values-json"
        times = f["streams/motors/times"][:]
        assert np.all(np.diff(times) >= 0)
    for name in sim.endpoints:
        events = [decoder(sim.protocols[name]).decode(m) for m in read_raw(path, name)]
        body = [e for e in events if isinstance(e, Frame | Values)]
        assert [e.index for e in body] == sim.sent[name]
        for e in body:
            want = sim.truth[name][e.index]
            if name == "detector":
                assert e.data.tobytes() == want.tobytes()
            else:
                assert e.values == ({"i0": want} if name == "i0" else want)


@pytest.mark.parametrize("speed", [0.0, 1.0])
def test_replay_reproduces_the_recorded_bytes(recording, speed):
    path, sim, _ = recording
    recorded = {name: read_raw(path, name) for name in sim.endpoints}
    with h5py.File(path, "r") as f:
        times = {n: f[f"streams/{n}/times"][:] for n in recorded}
    t_ref = min(t[0] for t in times.values())
    arrivals: dict[str, list[float]] = {}
    with replay_streams(path, speed=speed) as eps:
        assert sorted(eps) == ["detector", "i0", "motors"]
        assert eps.protocols == sim.protocols
        t_connect = time.perf_counter()
        got = pull_all(eps, {n: len(m) for n, m in recorded.items()}, arrivals=arrivals)
        assert eps.wait(10)
    assert got == recorded
    assert eps.messages_sent == {n: len(m) for n, m in recorded.items()}
    if speed == 1.0:
        # message i leaves no earlier than its recorded offset after the receivers
        # connected (after t_connect): a lower bound, whatever the machine's load
        for name, t in times.items():
            assert arrivals[name][-1] - t_connect >= t[-1] - t_ref
        assert times["motors"][-1] - times["motors"][1] > 0.01  # recorded at 200 Hz


def test_replay_hdf5_publishes_the_datasets(tmp_path):
    rng = np.random.default_rng(2)
    n = 5
    frames = rng.integers(0, 2**16, (n, 4, 3), dtype=np.uint16)
    i0 = rng.normal(1e5, 10.0, n)
    spec = rng.normal(size=(n, 40)).astype(np.float32)
    motors = np.zeros(n, dtype=[("x", "f8"), ("y", "f8")])
    motors["x"], motors["y"] = rng.uniform(-1, 1, n), rng.uniform(-1, 1, n)
    path = tmp_path / "scan.h5"
    with h5py.File(path, "w") as f:
        f["entry/frames"] = frames
        f["entry/i0"] = i0
        f["entry/i0"].attrs["units"] = "counts"
        f["entry/spec"] = spec
        f["entry/motors"] = motors
    streams = {"det": {"dataset": "entry/frames", "protocol": "native", "rate": 500.0},
               "i0": {"dataset": "/entry/i0", "protocol": "values-json"},
               "spec": {"dataset": "entry/spec", "protocol": "values-cbor"},
               "mot": {"dataset": "entry/motors", "protocol": "values-cbor", "rate": 0}}
    with replay_hdf5(path, streams, series=4) as eps:
        got = pull_all(eps, dict.fromkeys(streams, n + 2))
        assert eps.wait(10)
    ev = {name: [decoder(streams[name]["protocol"]).decode(m) for m in msgs]
          for name, msgs in got.items()}
    for evs in ev.values():
        assert isinstance(evs[0], SeriesStart)
        assert (evs[0].series, evs[0].n_frames) == (4, n)
        assert evs[-1] == SeriesEnd(4)
        assert [e.index for e in evs[1:-1]] == list(range(n))
    np.testing.assert_array_equal(np.stack([e.data for e in ev["det"][1:-1]]), frames)
    assert [e.values["i0"] for e in ev["i0"][1:-1]] == i0.tolist()
    assert ev["i0"][0].header["fields"] == {"i0": {"dtype": "float64", "shape": [],
                                                   "unit": "counts"}}
    got_spec = np.stack([e.values["spec"] for e in ev["spec"][1:-1]])
    assert got_spec.dtype == np.float32
    assert got_spec.tobytes() == spec.tobytes()
    assert len(got["spec"][1]) == 2  # 40 values: a raw part, not inline
    assert [(e.values["x"], e.values["y"]) for e in ev["mot"][1:-1]] == motors.tolist()


def test_clear_errors(tmp_path):
    missing = tmp_path / "nope.h5"
    with pytest.raises(FileNotFoundError, match=r"nope\.h5: no such file"), \
            replay_streams(missing):
        pass
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.zeros((3, 2))
        f["v"] = np.zeros(3)
        f.attrs["framescope_recording"] = 1
    with pytest.raises(ValueError, match=r"other\.h5: not a framescope streams recording: "
                                         r"expected root attribute "
                                         r"'framescope_streams_recording' = 1, found attributes "
                                         r"\['framescope_recording'\] \(a single-stream"), \
            replay_streams(other):
        pass
    broken = tmp_path / "broken.h5"
    with h5py.File(broken, "w") as f:
        f.attrs["framescope_streams_recording"] = 1
        f.attrs["streams"] = json.dumps(["i0"])
        f["streams/i0/data"] = np.zeros(0, np.uint8)
    with pytest.raises(ValueError, match=r"stream 'i0': expected group /streams/i0 with "
                                         r"datasets .* missing \['part_lengths', "
                                         r"'message_offsets', 'times'\]"), \
            replay_streams(broken):
        pass
    with pytest.raises(KeyError, match=r"other\.h5: stream 's': no dataset 'y' in the file"), \
            replay_hdf5(other, {"s": {"dataset": "y", "protocol": "values-json"}}):
        pass
    with pytest.raises(ValueError, match=r"dataset 'x' has 2 dim\(s\) \(values\): expected a "
                                         r"values protocol"), \
            replay_hdf5(other, {"s": {"dataset": "x", "protocol": "native"}}):
        pass
    with pytest.raises(ValueError, match=r"unknown keys \['hz'\]"), \
            replay_hdf5(other, {"s": {"dataset": "v", "protocol": "values-json", "hz": 1}}):
        pass
    with pytest.raises(ValueError, match=r"give duration=, idle_timeout=, stop="):
        record_streams({"a": "tcp://127.0.0.1:1"}, tmp_path / "r.h5")
    with pytest.raises(ValueError, match=r"without '/', found \['a/b'\]"):
        record_streams({"a/b": "tcp://127.0.0.1:1"}, tmp_path / "r.h5", duration=0.1)
