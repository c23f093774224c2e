"""DECTRIS stream v1 between framescope and LiberTEM-live 0.3 (its Rust receiver and the
replay engine of its simulator, ``libertem_dectris``), both ways, frames equal to the source.

The peer runs in a subprocess from ``.venv-bench`` (its own venv); skipped without it.
LiberTEM-live reads stream v1 only (no stream2 receiver), and rejects a header or image
appendix, which the DECTRIS documentation allows: framescope's simulator is run with
``appendix=False`` towards it.
"""

from __future__ import annotations

import queue
import subprocess
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from framescope.live import Batch, End, Start, ZMQSource, write_stream1_dump

from .conftest import simulator_thread, until

PEER = Path(__file__).resolve().parents[2] / ".venv-bench" / "bin" / "python"
SCAN, DET = (4, 6), (32, 40)  # not square: a transposed frame would show
N = SCAN[0] * SCAN[1]


def _peer_ok() -> bool:
    if not PEER.exists():
        return False
    try:
        return subprocess.run([str(PEER), "-c", "import libertem_dectris"], timeout=60,
                              capture_output=True).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


pytestmark = pytest.mark.skipif(not _peer_ok(), reason="no .venv-bench with libertem_dectris "
                                                       "(LiberTEM-live)")

# LiberTEM-live's receiver: passive, one series, every frame decoded into one array
RECEIVE = """
import os, sys, tempfile, time
import numpy as np
import libertem_dectris as ld

endpoint, n, h, w, out = sys.argv[1], *map(int, sys.argv[2:5]), sys.argv[5]
conn = ld.DectrisConnection(uri=endpoint, frame_stack_size=8, num_slots=64,
                            handle_path=os.path.join(tempfile.mkdtemp(), "shm"),
                            bytes_per_frame=h * w * 2)
conn.start_passive()
arm = conn.wait_for_arm(60)
if arm is None:
    sys.exit("no series header within 60 s")
config, series = arm
cam = ld.CamClient(conn.get_socket_path())
frames = np.zeros((n, h, w), np.uint16)
got, deadline = 0, time.monotonic() + 60
while got < n and time.monotonic() < deadline:
    stack = conn.get_next_stack(max_size=8)
    if stack is None:
        break
    k = len(stack)
    if k:
        cam.decode_range_into_buffer(stack, frames[got:got + k], 0, k)
        cam.done(stack)
        got += k
np.save(out, frames[:got])
print("series", series, "frames", config.get_num_frames(), "got", got, flush=True)
cam.close()
conn.close()
"""

# LiberTEM-live's simulator (the replay its `dectris.sim` runs): a dump, sent when told
REPLAY = """
import sys
import libertem_dectris as ld

sim = ld.DectrisSim(uri="tcp://127.0.0.1", filename=sys.argv[1], random_port=True)
print(sim.get_uri(), flush=True)
sys.stdin.readline()  # the receiver is connected
sim.send_headers()
sim.send_frames()
sim.send_footer()
print("sent", flush=True)
sys.stdin.readline()  # exit when told (queued messages leave first)
"""


def source() -> xr.DataArray:
    rng = np.random.default_rng(190)
    data = rng.poisson(40, (*SCAN, *DET)).astype("uint16")
    data[..., 3, 5] = 65535  # a saturated pixel: all 16 bits go through the codecs
    return xr.DataArray(data, dims=("scan_y", "scan_x", "det_y", "det_x"))


@pytest.mark.parametrize("compression", ["bslz4", "lz4"])
def test_framescope_simulator_into_libertem_live(compression, tmp_path):
    arr = source()
    out = tmp_path / "frames.npy"
    with simulator_thread(protocol="dectris-stream1", source=arr, rate=0,
                          compression=compression,
                          encoder_options={"appendix": False}) as endpoint:
        done = subprocess.run([str(PEER), "-c", RECEIVE, endpoint, str(N), *map(str, DET),
                               str(out)], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"frames {N} got {N}" in done.stdout
    np.testing.assert_array_equal(np.load(out), arr.values.reshape(N, *DET))


def frames_of(handoff: queue.SimpleQueue) -> tuple[np.ndarray, tuple[int, int], bool]:
    """The frames handed on (by frame number), the series' scan shape, whether it ended."""
    frames: dict[int, np.ndarray] = {}
    scan, ended = None, False
    while not handoff.empty():
        item = handoff.get_nowait()
        if isinstance(item, Start):
            scan = item.series.meta.scan_shape
        elif isinstance(item, Batch):
            for i, f in zip(item.indices[: item.n], item.frames[: item.n], strict=True):
                frames[int(i)] = f.copy()
            item.release()
        elif isinstance(item, End):
            ended = item.ended
    return np.stack([frames[i] for i in sorted(frames)]), scan, ended


@pytest.mark.parametrize("scan", [SCAN, None])
def test_libertem_live_simulator_into_framescope(scan, tmp_path):
    arr = source()
    dump = tmp_path / "series.dump"
    assert write_stream1_dump(dump, arr, compression="bslz4")["frames"] == N
    sim = subprocess.Popen([str(PEER), "-c", REPLAY, str(dump)], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        endpoint = sim.stdout.readline().strip()
        assert endpoint.startswith("tcp://"), sim.stderr.read()[-2000:]
        handoff: queue.SimpleQueue = queue.SimpleQueue()
        with ZMQSource(endpoint, "dectris-stream1", scan=scan, header_timeout=30) as src:
            src.attach(handoff)
            sim.stdin.write("go\n")
            sim.stdin.flush()
            until(lambda: src.status.state in ("finished", "failed"), timeout=120,
                  what="the series' end")
            st = src.status
        sim.stdin.write("exit\n")
        sim.stdin.flush()
        sim.wait(timeout=60)
    finally:
        if sim.poll() is None:
            sim.kill()
    assert st.state == "finished", st.last_error
    assert (st.frames_received, st.malformed, st.gaps) == (N, 0, 0)
    frames, got_scan, ended = frames_of(handoff)
    assert ended
    # without scan= the header's number of images makes one scan row
    assert got_scan == (scan or (1, N))
    np.testing.assert_array_equal(frames, arr.values.reshape(N, *DET))



def test_libertem_live_dcu_simulator_armed_over_rest(tmp_path):
    """The whole simulator: ``python -m libertem_live.detectors.dectris.sim DUMP`` (a REST
    copy of the DCU and the replay), armed over HTTP as a beamline's control would."""
    import json
    import socket
    import threading
    import urllib.request

    arr = source()
    dump = tmp_path / "series.dump"
    write_stream1_dump(dump, arr, compression="lz4")
    with socket.socket() as s:  # a free port for its REST API
        s.bind(("127.0.0.1", 0))
        api = s.getsockname()[1]
    sim = subprocess.Popen([str(PEER), "-m", "libertem_live.detectors.dectris.sim", str(dump),
                            "--port", str(api), "--zmqport", "0"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        endpoint = next((line.split("listening on ")[1].strip() for line in sim.stderr
                         if "listening on tcp://" in line), None)
        assert endpoint is not None, "the simulator did not bind its data port"
        threading.Thread(target=sim.stderr.read, daemon=True).start()  # keep it drained
        url = f"http://127.0.0.1:{api}/detector/api/1.8.0/"

        def rest(path: str, method: str = "GET") -> dict:
            req = urllib.request.Request(url + path, method=method, data=b"{}" if
                                         method == "PUT" else None,
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.loads(r.read())

        until(lambda: _answers(rest), timeout=120, what="the simulator's REST API")
        assert rest("config/trigger_mode")["value"] == "exte"  # one image per trigger
        assert rest("config/ntrigger")["value"] == N
        handoff: queue.SimpleQueue = queue.SimpleQueue()
        with ZMQSource(endpoint, "dectris-stream1", scan=SCAN) as src:
            src.attach(handoff)
            rest("command/arm", "PUT")
            until(lambda: src.status.state in ("finished", "failed"), timeout=120,
                  what="the series' end")
            st = src.status
    finally:
        sim.terminate()
        try:
            sim.wait(timeout=40)
        except subprocess.TimeoutExpired:
            sim.kill()
    assert st.state == "finished", st.last_error
    assert (st.frames_received, st.malformed) == (N, 0)
    frames, got_scan, ended = frames_of(handoff)
    assert ended
    assert got_scan == SCAN
    np.testing.assert_array_equal(frames, arr.values.reshape(N, *DET))


def _answers(rest) -> bool:
    try:
        rest("config/x_pixels_in_detector")
    except OSError:
        return False
    return True
