"""The live views apply the job's corrections: a header pixel mask (and a dark series'
dark) reach the frame view and the images computed from the stored frames as they reach
the job's own images."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator

import numpy as np
import pytest

import framescope
import framescope.masks as fm

pytest.importorskip("zmq")

SCAN, DET = (4, 5), (24, 24)
DISK = fm.disk(12, 12, 6)


@contextlib.contextmanager
def simulator_thread(**kwargs) -> Iterator[str]:
    from framescope.live import simulate_stream

    q: queue.Queue = queue.Queue()
    t = threading.Thread(target=simulate_stream, args=("tcp://127.0.0.1:0",),
                         kwargs={"on_bound": q.put, **kwargs}, daemon=True)
    t.start()
    try:
        yield q.get(timeout=60)
    finally:
        t.join(timeout=30)


def _stream(frames, **sim):
    from framescope.dashboard._live_state import stream_udfs
    from framescope.dashboard._store import FrameStore
    from framescope.live import ZMQSource

    store = FrameStore()
    src = ZMQSource("tcp://127.0.0.1:0", "dectris-stream2")
    with simulator_thread(protocol="dectris-stream2", source=framescope.from_array(frames),
                          rate=0, **sim) as endpoint:
        src.endpoint = endpoint
        job = framescope.submit(stream_udfs(None, {"bf": DISK}), src, on_frames=store.add)
        job.result(60)
    return store, job


def test_the_frame_view_and_the_images_agree_with_the_job_at_masked_pixels():
    from framescope.dashboard._live_state import LiveState

    rng = np.random.default_rng(8)
    frames = rng.poisson(40, (*SCAN, *DET)).astype(np.uint16)
    mask = np.zeros(DET, np.uint32)
    mask[12, 10:14] = 1  # inside the disk: a gap
    mask[3, 3] = 2  # dead
    store, job = _stream(frames, header_arrays={"pixel_mask": mask})
    want = frames.astype(np.float64)
    want[..., mask != 0] = 0
    try:
        st = LiveState(store, detectors={"bf": DISK, "wide": fm.disk(12, 12, 9)}, job=job)
        try:
            assert st.corrections is not None
            assert int(st.corrections.bad.sum()) == 5
            st.start()
            assert st.jobs.wait(timeout=120)
            # the job's image and the one computed here from the stored frames
            job_bf = job.results["vd"]["intensity"].sel(mask="bf").values
            ref_bf = (want * DISK.rasterize(DET)).sum(axis=(2, 3))
            np.testing.assert_allclose(job_bf, ref_bf, rtol=1e-6)
            wide = fm.disk(12, 12, 9)
            np.testing.assert_allclose(st.image("wide").image,
                                       (want * wide.rasterize(DET)).sum(axis=(2, 3)),
                                       rtol=1e-5)
            # the frame view shows the masked pixels as the analyses see them
            st.pick(1, 2)
            np.testing.assert_array_equal(st.results.get("frame").image, want[1, 2])
            st.frame_mode = "mean"
            np.testing.assert_allclose(st.summary("mean"), want.mean(axis=(0, 1)),
                                       rtol=1e-9)
        finally:
            st.close()
    finally:
        job.cancel()


def test_the_views_subtract_the_dark_of_a_dark_series():
    from framescope.dashboard._live_state import LiveState

    rng = np.random.default_rng(9)
    level = rng.uniform(50, 60, DET)
    dark = np.rint(level + rng.normal(0, 2, (16, *DET))).astype(np.uint16)
    frames = np.rint(level + rng.poisson(30, (*SCAN, *DET))).astype(np.uint16)
    store, job = _stream(frames, dark=dark)
    try:
        assert store.series == 2  # the data series (series 1 was the dark)
        st = LiveState(store, detectors={"bf": DISK}, job=job)
        try:
            mean = dark.astype(np.float64).mean(axis=0).astype(np.float32)
            st.start()
            assert st.jobs.wait(timeout=120)
            st.pick(0, 0)
            np.testing.assert_allclose(st.results.get("frame").image,
                                       frames[0, 0] - mean, rtol=1e-6)
            np.testing.assert_allclose(st.image("bf").image,
                                       ((frames - mean) * DISK.rasterize(DET)).sum((2, 3)),
                                       rtol=1e-5)
        finally:
            st.close()
    finally:
        job.cancel()
