"""Overload: a detector that does not wait, sending at about twice what the analysis can
take. Every frame is accounted for (sent = analysed + dropped, spilled ones analysed
later), the queue stays within its bound, nothing is lost silently. The long version, with
memory and rates, is benchmarks/bench_overload.py."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import framescope
from framescope.live import Publisher, SeriesStart, ZMQSource
from framescope.udf import SumFrame

SCAN, DET = (20, 30), (32, 32)
PER_FRAME_S = 0.004  # the analysis' cost per frame: at most 250 frames/s
RATE = 500.0  # frames/s sent: twice that, paced like a detector


class Slow(SumFrame):
    """SumFrame at a known cost per frame, so 'twice the sustainable rate' is known."""

    def process_tile(self, tile, results, state):
        time.sleep(PER_FRAME_S * len(tile))
        super().process_tile(tile, results, state)


@pytest.mark.parametrize("policy", ["drop", "spill"])
def test_a_detector_at_twice_the_analysis_rate(tmp_path, policy):
    frames = np.random.default_rng(2).integers(0, 50, (SCAN[0] * SCAN[1], *DET)).astype("u2")
    n = len(frames)
    pub = Publisher("tcp://127.0.0.1:0", "native", rate=RATE)
    src = ZMQSource(pub.endpoint, "native", policy=policy, batch_frames=8,
                    buffer_mib=64 * frames[0].nbytes / 2**20, spill_dir=str(tmp_path),
                    spill_limit_gib=150 * frames[0].nbytes / 2**30,
                    record=str(tmp_path / "rec.h5"))
    job = framescope.submit(Slow(), src)
    samples = []
    sender = threading.Thread(target=lambda: (pub.wait_for_peers(), pub.send_series(
        SeriesStart(1, DET, frames.dtype, n, SCAN), enumerate(frames))), daemon=True)
    try:
        sender.start()
        while sender.is_alive():
            samples.append(job.status)
            time.sleep(0.01)
        at_end = job.status  # the sender is done: what arrived is received or in flight
        final = job.result(120)
        st = job.status
    finally:
        job.cancel()
        pub.close()
    sent = pub.frames_sent
    assert sent == n
    assert st.frames_received == sent  # the receiver never waits: nothing lost on the wire
    assert max(s.queue_depth for s in samples) <= at_end.queue_capacity == 64
    assert st.malformed == st.duplicates == st.gaps == 0
    done = int(final["done"].sum())
    assert done == st.frames_processed
    np.testing.assert_array_equal(final["sum"].values,
                                  frames[final["done"].values.ravel()].sum(0, dtype="f8"))
    if policy == "drop":
        assert st.frames_processed + st.dropped == sent
        assert st.dropped > n // 4  # about half arrive faster than they can be analysed
        assert st.spilled == 0
    else:
        assert st.spilled > 0
        assert st.frames_processed + st.dropped == sent  # spilled ones analysed later
        assert st.dropped > 0  # the spill file's limit was reached
        assert st.spill_pending == 0
    assert st.recorded == sent  # the recording has every frame, dropped ones too
