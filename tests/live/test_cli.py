"""The live commands (:mod:`framescope.cli._live`) end to end: simulate-stream → live
(→ record → replay → live). They stay beside the receivers' tests, whose helpers they use
(and tests/live/test_dask_receivers.py uses :func:`parse`)."""

from __future__ import annotations

import argparse
import socket
import threading

import numpy as np
import xarray as xr

import framescope
import framescope.masks as fm
from framescope.cli._live import add_parsers
from framescope.udf import ApplyMasks, CenterOfMass

from .conftest import until


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="framescope")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sender(*argv: str) -> threading.Thread:
    args = parse(*argv)
    t = threading.Thread(target=args.func, args=(args,), daemon=True)
    t.start()
    return t


def test_simulate_live_record_replay(tmp_path):
    data = np.random.default_rng(7).poisson(3, (5, 6, 20, 20)).astype("uint16")
    np.save(tmp_path / "scan.npy", data)
    out, rec, out2 = tmp_path / "out.nc", tmp_path / "rec.h5", tmp_path / "again.nc"
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    t = sender("simulate-stream", "--bind", endpoint, "--protocol", "dectris-stream1",
               "--source", str(tmp_path / "scan.npy"), "--rate", "0", "--compression",
               "bslz4", "--order", "snake")
    live = parse("live", "--connect", endpoint, "--protocol", "dectris-stream1", "--mask",
                 "bf=disk:10,10,4", "--mask", "ring:10,10,5,9", "--com", "--com-radius", "8",
                 "--out", str(out), "--record", str(rec), "--policy", "spill", "-q")
    assert live.func(live) == 0
    t.join(30)
    arr = framescope.from_array(data)
    masks = {"bf": fm.disk(10, 10, 4), "m1": fm.ring(10, 10, 5, 9)}
    vi = framescope.run(ApplyMasks(masks), arr, client="inline")
    com = framescope.run(CenterOfMass(radius=8), arr, client="inline")
    with xr.open_dataset(out, engine="h5netcdf") as ds:
        np.testing.assert_array_equal(ds["intensity"].values, vi["intensity"].values)
        np.testing.assert_array_equal(ds["com_x"].values, com["com_x"].values)
        assert list(ds["mask"].values) == ["bf", "m1"]
        assert ds.attrs["state"] == "finished"
        assert (ds.attrs["frames_processed"], ds.attrs["dropped"]) == (30, 0)
        assert "ring" in ds.attrs["masks"]

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    t = sender("replay", str(rec), "--bind", endpoint, "--protocol", "native")
    again = parse("live", "--connect", endpoint, "--protocol", "native", "--mask",
                  "bf=disk:10,10,4", "--out", str(out2), "-q")
    assert again.func(again) == 0
    t.join(30)
    with xr.open_dataset(out2, engine="h5netcdf") as ds:
        np.testing.assert_array_equal(ds["intensity"].values[..., 0],
                                      vi["intensity"].values[..., 0])
        assert ds.attrs["protocol"] == "native"


def test_live_without_a_sender_gives_up(tmp_path, capsys):
    args = parse("live", "--connect", f"tcp://127.0.0.1:{free_port()}", "--com", "--out",
                 str(tmp_path / "x.nc"), "--start-timeout", "0.3", "-q")
    assert args.func(args) == 1
    assert "no series received" in capsys.readouterr().err
    assert not (tmp_path / "x.nc").exists()
    for argv in (["--out", "x.nc"], ["--com", "--processes", "2", "--out", "x.nc"],
                 ["--com", "--processes", "2", "--scan", "2x2", "--record", "r.h5", "--out",
                  "x.nc"]):
        args = parse("live", *argv)
        assert args.func(args) == 2
    assert "--record works with --processes 1" in capsys.readouterr().err


def test_live_writes_partial_results_when_the_sender_stalls(tmp_path, capsys):
    from framescope.live import simulate_stream

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    t = threading.Thread(target=simulate_stream, args=(endpoint, "native"), daemon=True,
                         kwargs={"scan": (4, 4), "det": (16, 16), "rate": 0,
                                 "stop_after": 5})
    t.start()
    out = tmp_path / "part.nc"
    args = parse("live", "--connect", endpoint, "--protocol", "native", "--com", "--out",
                 str(out), "--timeout", "0.3", "-q")
    assert args.func(args) == 1
    t.join(30)
    assert "stalled, 5 of 16 positions done" in capsys.readouterr().err
    with xr.open_dataset(out, engine="h5netcdf") as ds:
        assert int(ds["done"].sum()) == 5
        assert ds.attrs["state"] == "stalled"
        assert ds.attrs["complete"] == 0


def test_simulator_repeats_series():
    from framescope.live import ZMQSource, simulate_stream
    from framescope.udf import SumFrame

    data = np.random.default_rng(8).integers(0, 9, (3, 4, 8, 8)).astype("uint8")
    bound = threading.Event()
    where: list[str] = []
    t = threading.Thread(target=simulate_stream, args=("tcp://127.0.0.1:0", "native"),
                         kwargs={"source": framescope.from_array(data), "rate": 2000,
                                 "series": 3, "first_series": 7,
                                 "on_bound": lambda e: (where.append(e), bound.set())},
                         daemon=True)
    t.start()
    bound.wait(30)
    results: list[xr.Dataset] = []
    job = framescope.submit(SumFrame(), ZMQSource(where[0], "native", policy="spill"),
                            on_series_end=results.append)
    t.join(60)
    until(lambda: len(results) == 3, what="3 series")
    job.cancel()
    assert [int(r.attrs["series"]) for r in results] == [7, 8, 9]
    for r in results:
        np.testing.assert_array_equal(r["sum"].values, data.reshape(-1, 8, 8).sum(axis=0))


def test_live_takes_the_calibration_and_masks_in_mrad(tmp_path):
    data = np.random.default_rng(8).poisson(3, (4, 5, 20, 20)).astype("uint16")
    np.save(tmp_path / "scan.npy", data)
    out = tmp_path / "out.nc"
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    t = sender("simulate-stream", "--bind", endpoint, "--protocol", "dectris-stream2",
               "--source", str(tmp_path / "scan.npy"), "--rate", "0")
    live = parse("live", "--connect", endpoint, "--mask", "adf=ring:2,4@mrad",
                 "--angle-per-px", "0.5mrad", "--center", "10,9.5", "--scan-step", "0.2nm",
                 "--out", str(out), "-q")
    assert live.func(live) == 0
    t.join(30)
    # 2..4 mrad at 0.5 mrad/px around (10, 9.5): the ring 4..8 px
    want = framescope.run(ApplyMasks({"adf": fm.ring(10, 9.5, 4, 8)}),
                          framescope.from_array(data), client="inline")
    with xr.open_dataset(out, engine="h5netcdf") as ds:
        np.testing.assert_array_equal(ds["intensity"].values, want["intensity"].values)
        assert ds["scan_x"].attrs["units"] == "nm"
        np.testing.assert_allclose(ds["scan_x"].values, np.arange(5) * 0.2)
