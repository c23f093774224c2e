"""The three-stream simulator, received by plain PULL sockets, against its own truth."""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
import pytest
import zmq

from framescope.events._simulate import (
    StreamFaults,
    simulate_streams,
    simulate_streams_process,
)
from framescope.live._messages import Frame, SeriesEnd, SeriesStart
from framescope.live._protocols import make_decoder
from framescope.live._values import Values, make_values_decoder


def receive(endpoints: Mapping[str, str], expected: Mapping[str, int], timeout: float = 20.0,
            ) -> tuple[dict[str, list[list[bytes]]], dict[str, list[float]]]:
    """``expected[name]`` messages from each stream (raw parts), and when each came
    (perf_counter); then checks for a short while that no more come."""
    ctx = zmq.Context.instance()
    socks = {}
    got: dict[str, list[list[bytes]]] = {name: [] for name in endpoints}
    arrived: dict[str, list[float]] = {name: [] for name in endpoints}
    try:
        poller = zmq.Poller()
        for name, ep in endpoints.items():
            socks[name] = s = ctx.socket(zmq.PULL)
            s.connect(ep)
            poller.register(s, zmq.POLLIN)
        deadline = time.monotonic() + timeout
        while any(len(got[n]) < expected[n] for n in endpoints):
            counts = {n: len(m) for n, m in got.items()}
            assert time.monotonic() < deadline, f"timed out with {counts} of {expected}"
            for sock, _ in poller.poll(100):
                name = next(n for n, s in socks.items() if s is sock)
                got[name].append(sock.recv_multipart())
                arrived[name].append(time.perf_counter())
        for sock, _ in poller.poll(200):  # nothing beyond what was announced
            name = next(n for n, s in socks.items() if s is sock)
            got[name].append(sock.recv_multipart())
    finally:
        for s in socks.values():
            s.close(linger=0)
    return got, arrived


def decode_all(protocol: str, messages: list[list[bytes]]) -> list:
    dec = (make_values_decoder(protocol) if protocol.startswith("values-")
           else make_decoder(protocol))
    return [dec.decode(m) for m in messages]


def expected_counts(sim) -> dict[str, int]:
    return {n: 1 + len(sim.sent[n]) + sim.ended[n] for n in sim.endpoints}


def check_against_truth(sim, events: Mapping[str, list], n_frames: Mapping[str, int]) -> None:
    for name, evs in events.items():
        assert isinstance(evs[0], SeriesStart)
        assert evs[0].n_frames == n_frames[name]
        assert isinstance(evs[-1], SeriesEnd) is sim.ended[name]
        body = evs[1:-1] if sim.ended[name] else evs[1:]
        assert [e.index for e in body] == sim.sent[name]
        for e in body:
            want = sim.truth[name][e.index]
            if name == "detector":
                assert isinstance(e, Frame)
                assert e.data.dtype == want.dtype
                assert e.data.tobytes() == want.tobytes()
            elif name == "i0":
                assert isinstance(e, Values)
                assert e.values == {"i0": want}
            else:
                assert e.values == want


@pytest.mark.parametrize("protocol", ["native", "dectris-stream2"])
def test_three_streams_equal_truth(protocol):
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 4000, (6, 8, 10), dtype=np.uint16)
    with simulate_streams(frames, n_points=3, frames_per_point=2, detector_protocol=protocol,
                          seed=5) as sim:
        assert sim.protocols == {"detector": protocol, "i0": "values-json",
                                 "motors": "values-cbor"}
        got, _ = receive(sim.endpoints, expected_counts(sim))
        assert sim.wait(10)
    events = {n: decode_all(sim.protocols[n], m) for n, m in got.items()}
    check_against_truth(sim, events, {"detector": 6, "i0": 6, "motors": 3})
    assert sim.sent == {"detector": list(range(6)), "i0": list(range(6)), "motors": [0, 1, 2]}
    for k in range(6):  # the truth is the given frames, not a copy of what came
        np.testing.assert_array_equal(sim.truth["detector"][k], frames[k])
    xy = np.array([[p["x"], p["y"]] for p in sim.truth["motors"].values()])
    assert len(np.unique(xy[:, 0])) == 3  # scattered, not on grid rows
    assert np.all(np.abs(xy) <= 5.0)
    assert events["motors"][0].header["fields"]["x"]["unit"] == "um"


def test_faults_skip_repeat_stop_after_start_delay_and_lengths():
    faults = {"detector": {"skip": [1, 4], "repeat": [2]},
              "i0": StreamFaults(stop_after=3),
              "motors": {"n_frames": 2, "start_delay": 0.3}}
    with simulate_streams(np.zeros((5, 4, 4), np.uint8), n_points=5, detector_protocol="native",
                          faults=faults, rates={"i0": 100.0}) as sim:
        assert sim.sent == {"detector": [0, 2, 2, 3], "i0": [0, 1, 2], "motors": [0, 1]}
        assert sim.ended == {"detector": True, "i0": False, "motors": True}
        t_connect = time.perf_counter()
        got, arrived = receive(sim.endpoints, expected_counts(sim))
        assert sim.wait(10)
    events = {n: decode_all(sim.protocols[n], m) for n, m in got.items()}
    check_against_truth(sim, events, {"detector": 5, "i0": 5, "motors": 2})
    assert sorted(sim.truth["detector"]) == [0, 2, 3]
    assert got["detector"][2] == got["detector"][3]  # a repeat is the same message
    # the delay runs from the receiver's connection, which came after t_connect: a lower
    # bound, whatever the machine's load
    assert arrived["motors"][0] - t_connect >= 0.3
    assert sim.messages_sent == {"detector": 6, "i0": 4, "motors": 4}


def test_stop_without_receivers_and_bad_arguments():
    with simulate_streams(np.zeros((2, 2, 2), np.uint8), n_points=2) as sim:
        sim.stop()
        assert sim.wait(5)
        assert sim.messages_sent == {"detector": 0, "i0": 0, "motors": 0}
    with pytest.raises(ValueError, match=r"faults\['i0'\]: unknown keys \['drop'\]"), \
            simulate_streams(np.zeros((2, 2, 2)), n_points=2, faults={"i0": {"drop": [1]}}):
        pass
    with pytest.raises(ValueError, match=r"unknown streams \['cam'\]"), \
            simulate_streams(np.zeros((2, 2, 2)), n_points=2, rates={"cam": 1.0}):
        pass
    with pytest.raises(ValueError, match=r"frames: expected \(n >= 4, height, width\) detector "
                                         r"frames, found shape \(2, 2, 2\)"), \
            simulate_streams(np.zeros((2, 2, 2)), n_points=4):
        pass


def test_simulator_in_a_spawned_process():
    frames = np.arange(4 * 3 * 3, dtype=np.uint16).reshape(4, 3, 3)
    with simulate_streams_process(frames=frames, n_points=2, frames_per_point=2,
                                  detector_protocol="native",
                                  faults={"i0": {"skip": [0]}}) as proc:
        assert proc.sent["i0"] == [1, 2, 3]
        got, _ = receive(proc.endpoints, {n: 1 + len(proc.sent[n]) + proc.ended[n]
                                          for n in proc.endpoints})
        assert proc.wait(20)
    frames_got = [e for e in decode_all("native", got["detector"]) if isinstance(e, Frame)]
    np.testing.assert_array_equal(np.stack([f.data for f in frames_got]), frames)
    assert [e.index for e in decode_all("values-json", got["i0"])[1:-1]] == [1, 2, 3]


def test_default_frames_are_the_synthetic_dataset_and_rates_pace():
    from framescope.datasets import synthetic

    want = np.asarray(synthetic(scan=(1, 3), det=(16, 16), seed=2)).reshape(3, 16, 16)
    with simulate_streams(n_points=3, det=(16, 16), seed=2, detector_protocol="native",
                          rates={"i0": 50.0}) as sim:
        t_connect = time.perf_counter()
        got, arrived = receive(sim.endpoints, expected_counts(sim))
        assert sim.wait(10)
    events = {n: decode_all(sim.protocols[n], m) for n, m in got.items()}
    check_against_truth(sim, events, {"detector": 3, "i0": 3, "motors": 3})
    np.testing.assert_array_equal(np.stack([e.data for e in events["detector"][1:-1]]), want)
    # i0 frame k leaves k / 50 s after the receiver connected, at the earliest
    assert arrived["i0"][-2] - t_connect >= 2 / 50.0  # [-1] is the end message
