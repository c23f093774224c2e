"""Frame bookkeeping between receiver and analysis: order tracking, batches, spilling.

The receiver copies each accepted frame into the next slot of a :class:`Batch` (buffers
from a pool, reused) and hands full batches over; the analysis analyses a batch in place
and gives its buffer back. Copying at once, while the message is hot in the cache, costs
less than copying later, and the message's memory is reused for the next one. At most
``capacity`` frames of buffers exist; when none is free, a frame is dropped (counted) or
spilled to an unlinked temp file (:class:`Spill`), which the analysis reads back when it
has time. Memory is bounded and the receiver never waits.

Compressed frames (:class:`~framescope.live._codecs.Encoded`, on a receiver thread that
defers decoding) are not decoded before they get here: their payloads are staged per chunk
(``CHUNK_FRAMES``) and decoded by a :class:`~framescope.live._decode.DecodePool` (or at once,
without one) straight into their slots. A batch is handed over, in order, once all its
chunks are decoded; a frame whose payload turns out corrupt is taken out of its batch and
counted as malformed (and as missing, not received).

Compressed frames are decoded at most ``AHEAD_BUFFERS`` batch buffers ahead of the
analysis. Behind that, a backlog waits compressed (batches without a buffer, decoded in
order as buffers come back), bounded by the same memory budget: it holds 10-20x more
frames than decoded buffers would, and the buffers in use stay few and already paged in.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np

from framescope.live import _decode
from framescope.live._buffers import Chunk, Pool, Spill
from framescope.live._codecs import Encoded
from framescope.live._messages import MessageError
from framescope.live._scan import Series
from framescope.live._status import Counters, Status
from framescope.live._tracker import FrameTracker

__all__ = ["Batch", "Batcher", "End", "FrameTracker", "Policy", "Pool", "Spill", "Start",
           "use_decode_pool"]

log = logging.getLogger(__name__)

Policy = Literal["drop", "spill"]
# a batch of ~4 MiB: still in the L3 cache when the analysis reads it, and a quarter of the
# latency of 16 MiB batches; the per-batch cost (hand-over, run_frames, merge) is ~30 µs for
# a ring + COM, about 1 µs per 128 KiB frame
BATCH_BYTES = 4 * 2**20
# frames per decode task (a default batch of 256 x 256 uint16 frames is one task). A task
# costs a pool thread's wake-up, two GIL hand-overs and a few small arrays: with 8 frames
# per task that was ~5 context switches per 8 frames, and 6-15 % more CPU per frame than
# with 32 (bench_live, alternating runs on 2 cores). Batches still overlap: one decodes
# while the next fills.
CHUNK_FRAMES = 32
# decoded batch buffers in use at most while a compressed backlog waits (32 MiB of 256 x 256
# uint16 frames: enough to keep the analysis and two decoding threads busy). A backlog
# decoded into ever new buffers touched fresh memory: a page fault per 4 KiB, 10-20 µs
# each on a VM (13-15 per frame: 3-6x the decoding CPU), which made the backlog grow
AHEAD_BUFFERS = 8
STALL_S = 10.0  # a series' end waits this long for the analysis to give a buffer back
_LOG_FIRST = 10  # corrupt payloads logged per series before thinning out

_local = threading.local()


def use_decode_pool(pool: _decode.DecodePool | None) -> None:
    """The pool that decodes the batches filled on the calling thread (None: decode at once)."""
    _local.pool = pool


@dataclass(frozen=True, slots=True)
class Start:
    """Handed to the analysis before a series' first batch."""

    series: Series
    batcher: Batcher


@dataclass(frozen=True, slots=True)
class End:
    """Handed to the analysis after a series' last batch; ``ended``: by its end message.

    ``status`` holds the receiver's final counters of the series (the receiver may be on
    the next series by the time the analysis gets here).
    """

    series: int
    ended: bool
    status: Status | None = None


class Batch:
    """Frames copied into a pooled buffer (``frames[:n]``) and their numbers."""

    __slots__ = ("batcher", "chunk", "failed", "frames", "indices", "outstanding", "series",
                 "staged", "t0", "waiting")

    def __init__(self, batcher: Batcher, series: int, buffer: np.ndarray | None) -> None:
        self.frames = buffer  # None: compressed frames waiting for a buffer
        self.indices: list[int] = []
        self.t0 = time.monotonic()  # when the first frame came (for latency)
        self.series = series
        self.batcher = batcher
        self.chunk: Chunk | None = None  # payloads staged, not yet given to the decoders
        self.outstanding = 0  # chunks being decoded
        self.waiting: list[Chunk] = []  # full chunks staged while there is no buffer
        self.staged = 0  # bytes of compressed payloads held while there is no buffer
        self.failed: list[tuple[int, int, str]] = []  # (slot, frame number, why)

    @property
    def n(self) -> int:
        return len(self.indices)

    def release(self) -> None:
        """Give the buffer back (analysis thread, once analysed); idempotent."""
        if self.indices:
            self.batcher.returned += len(self.indices)
            self.indices = []
            self.batcher.pool.free.append(self.frames)  # (deque: safe between threads)


class Batcher:
    """Receiver side of one series: fill batches, hand them over, apply the policy.

    Parameters
    ----------
    series : Series
    handoff : queue.SimpleQueue
        Where full batches (and control items) go, in order.
    counters : Counters
    policy : {"drop", "spill"}
    buffer_bytes : int
        Bound of the batch pool (frames in memory waiting for analysis).
    batch_frames : int, optional
        Frames per batch (default: about 4 MiB of frames).
    spill_dir, spill_limit_bytes
        Where, and how much, to spill.
    pool : Pool, optional
        Batch buffers to reuse (the previous series').
    tracker : FrameTracker, optional
        The series' tracker: frames whose payload is corrupt are forgotten there (gaps).
    """

    def __init__(self, series: Series, handoff: queue.SimpleQueue, counters: Counters, *,
                 policy: Policy, buffer_bytes: int, batch_frames: int | None,
                 spill_dir: str | None, spill_limit_bytes: int, pool: Pool | None = None,
                 tracker: FrameTracker | None = None) -> None:
        meta = series.meta
        frame_bytes = meta.n_pixels * meta.dtype.itemsize
        # a small series gets slack beyond its own size: batches leave part-full after 50 ms
        # on slow streams, and the analysis may stall (kernels loading) for a second
        budget = max(2, min(buffer_bytes // frame_bytes, max(4 * meta.n_positions, 256)))
        # >= 32 batches, so that batches flushed part-full do not exhaust the buffers
        default = min(max(1, BATCH_BYTES // frame_bytes), max(1, budget // 32))
        self.per_batch = min(batch_frames or default, max(1, budget // 2))  # >= 2 buffers
        buffers = max(2, budget // self.per_batch)
        key = (self.per_batch, meta.frame_shape, meta.dtype, buffers)
        # the previous series' pool if it fits: its buffers still in use count too
        self.pool = pool if pool is not None and pool.fits(*key) else Pool(*key)
        self.buffer_bytes = buffer_bytes
        self.batch_bytes = self.per_batch * frame_bytes
        self.staged_bytes = self.staged_frames = 0  # compressed backlog without buffers
        self.staged: deque[Batch] = deque()  # handed over, waiting for a buffer (in order)
        self.queued = 0  # frames handed over (receiver)
        self.returned = 0  # frames released (analysis)
        self.series, self.handoff, self.counters, self.policy = series, handoff, counters, policy
        self.spill = Spill(meta.frame_shape, meta.dtype, spill_dir, spill_limit_bytes)
        self.current: Batch | None = None
        self._warned = False
        self.tracker = tracker
        self.inflight: deque[Batch] = deque()  # handed over, being decoded (in order)
        self._decoders: _decode.DecodePool | None = None
        self._logged = 0

    @property
    def capacity(self) -> int:
        """Frames that fit: in batch buffers, and (compressed, at their mean size so far)
        in the memory the buffers leave."""
        frames = self.pool.buffers * self.per_batch
        if self.staged_frames:
            room = self.buffer_bytes - self.pool.allocated * self.batch_bytes
            frames += int(room * self.staged_frames / self.staged_bytes)
        return frames

    def _ahead(self) -> bool:
        """Whether enough buffers are decoded ahead of the analysis (or being filled)."""
        return self.pool.allocated - len(self.pool.free) >= AHEAD_BUFFERS

    def put(self, index: int, frame: np.ndarray | Encoded) -> None:
        """Copy (or decode) a frame into the open batch; never blocks (drops or spills when
        full)."""
        batch = self.current
        encoded = isinstance(frame, Encoded)
        if batch is None or (not encoded and batch.frames is None):
            # a compressed frame opens a batch without a buffer when enough are ahead
            buffer = None if encoded and (self.staged or self._ahead()) else self.pool.take()
            if buffer is None and not (encoded and self._room(frame)):
                self._overflow(index, frame)
                return
            if batch is None:
                batch = self.current = Batch(self, self.series.series, buffer)
            else:  # (rare: an uncompressed frame in a batch of compressed ones)
                self._assign(batch, buffer)
        elif batch.frames is None and not self._room(frame):
            self._overflow(index, frame)
            return
        slot = len(batch.indices)
        if encoded:
            chunk = batch.chunk
            if chunk is None:
                chunk = batch.chunk = Chunk()
            chunk.add(slot, index, frame)
            if batch.frames is None:
                batch.staged += len(frame.blob)
                self.staged_bytes += len(frame.blob)
                self.staged_frames += 1
            if len(chunk.slots) >= CHUNK_FRAMES:
                self._decode(batch)
        else:
            batch.frames[slot] = frame
        batch.indices.append(index)
        if len(batch.indices) >= self.per_batch:
            self._hand_over()
        elif self.inflight:
            self._collect(wait=False)

    def slots(self, encoded: bool = False) -> tuple[np.ndarray | None, int, int] | None:
        """Where the caller (the compiled receive loop) may put frames: the open batch's
        buffer, its next free slot and, for a batch that waits for a buffer, the bytes of
        compressed payloads that may still wait (-1: no limit). Uncompressed frames need
        a buffer; compressed ones are handed over as chunks (:meth:`filled_chunk`). None
        where :meth:`put` is to decide (no buffer free, no memory left, a chunk staged)."""
        batch = self.current
        if batch is None:
            buffer = None if encoded and (self.staged or self._ahead()) else self.pool.take()
            if buffer is None and (not encoded or self._budget() <= 0):
                return None
            batch = self.current = Batch(self, self.series.series, buffer)
        elif (batch.frames is None and not encoded) or batch.chunk is not None:
            return None
        return batch.frames, len(batch.indices), (-1 if batch.frames is not None
                                                  else self._budget())

    def _budget(self) -> int:
        """Bytes of compressed payloads that may still wait without a buffer."""
        return self.buffer_bytes - self.staged_bytes - self.pool.allocated * self.batch_bytes

    def filled(self, indices: list[int]) -> None:
        """Frames ``indices`` were copied into the open batch's next slots (see
        :meth:`slots`)."""
        batch = self.current
        if not batch.indices:  # (opened by slots() before any frame came)
            batch.t0 = time.monotonic()
        batch.indices.extend(indices)
        self._filled(batch)

    def filled_chunk(self, chunk: Chunk) -> None:
        """A chunk of compressed frames for the open batch's next slots (see :meth:`slots`):
        to the decoders, or waiting with the batch for a buffer."""
        batch = self.current
        if not batch.indices:
            batch.t0 = time.monotonic()
        batch.indices.extend(chunk.indices)
        if batch.frames is None:
            batch.staged += chunk.size
            self.staged_bytes += chunk.size
            self.staged_frames += len(chunk.slots)
            batch.waiting.append(chunk)
        else:
            self._submit(batch, chunk)
        self._filled(batch)

    def _filled(self, batch: Batch) -> None:
        if len(batch.indices) >= self.per_batch:
            self._hand_over()
        elif self.inflight:
            self._collect(wait=False)

    def _room(self, frame: Encoded) -> bool:
        """Whether a compressed frame may wait without a buffer (memory budget)."""
        return len(frame.blob) <= self._budget()

    def _assign(self, batch: Batch, buffer: np.ndarray) -> None:
        """A waiting batch gets its buffer: its staged chunks go to the decoders."""
        batch.frames = buffer
        self.staged_bytes -= batch.staged
        self.staged_frames -= sum(len(c.slots) for c in batch.waiting) + (
            0 if batch.chunk is None else len(batch.chunk.slots))
        batch.staged = 0
        waiting, batch.waiting = batch.waiting, []
        for chunk in waiting:
            self._submit(batch, chunk)

    def _pump(self) -> bool:
        """Buffers for the oldest waiting batches, as many as may be decoded ahead; whether
        any got one."""
        staged, any_ = self.staged, False
        while staged and not self._ahead():
            buffer = self.pool.take()
            if buffer is None:
                break
            batch = staged.popleft()
            self._assign(batch, buffer)
            if batch.chunk is not None:  # (its last, part-full chunk)
                self._decode(batch)
            any_ = True
        return any_

    def _overflow(self, index: int, frame: np.ndarray | Encoded) -> None:
        c = self.counters
        if self.policy == "spill":
            if isinstance(frame, Encoded):  # decoded here: the spill file holds frames
                try:
                    frame = np.asarray(frame)
                except MessageError as exc:
                    self._corrupt(index, str(exc))
                    return
            if self.spill.write(index, frame):
                c.spilled += 1
                return
        c.dropped += 1
        if not self._warned:
            self._warned = True
            why = ("spill file full or failing" if self.policy == "spill"
                   else "policy 'drop', analysis behind")
            log.warning("series %d: frame buffer full (%d frames); dropping frames (%s), "
                        "see status.dropped", self.series.series, self.capacity, why)

    def _corrupt(self, index: int, why: str) -> None:
        """A frame counted as received turned out corrupt: malformed, and missing."""
        c = self.counters
        c.skipped(why.split(":", 1)[0], why)  # under the codec's name (bslz4, lz4)
        c.frames_received -= 1
        if self.tracker is not None:
            self.tracker.forget(index)
        self._logged += 1
        if self._logged <= _LOG_FIRST or self._logged % 1000 == 0:
            log.warning("series %d: frame %d skipped (%d so far): %s", self.series.series,
                        index, c.malformed, why)

    def _decode(self, batch: Batch) -> None:
        """Give the batch's staged payloads to the decoders (or decode them now); without a
        buffer yet, they wait."""
        chunk, batch.chunk = batch.chunk, None
        if batch.frames is None:
            batch.waiting.append(chunk)
        else:
            self._submit(batch, chunk)

    def _submit(self, batch: Batch, chunk: Chunk) -> None:
        batch.outstanding += 1
        if self._decoders is None:
            self._decoders = getattr(_local, "pool", None)
        if self._decoders is None:
            self._finish(*chunk.run(batch))
        else:
            self._decoders.submit(functools.partial(chunk.run, batch))

    def _finish(self, batch: Batch, chunk: Chunk, status: np.ndarray) -> None:
        batch.outstanding -= 1
        for k in np.flatnonzero(status):
            codec = chunk.codecs[k]
            nbytes = batch.frames[0].nbytes
            batch.failed.append((chunk.slots[k], chunk.indices[k], _decode.error_message(
                codec, int(status[k]), nbytes, chunk.ends[k] - chunk.starts[k])))

    def _hand_over(self) -> None:
        """The open batch leaves: to the analysis, or behind batches still decoding."""
        batch, self.current = self.current, None
        self.queued += len(batch.indices)
        if batch.frames is None:  # its last chunk is decoded once it has a buffer
            self.staged.append(batch)
            self.inflight.append(batch)
            self._collect(wait=False)
            return
        if batch.chunk is not None:
            self._decode(batch)
        if batch.outstanding or self.inflight:
            self.inflight.append(batch)
            self._collect(wait=False)
        else:
            self._deliver(batch)

    def _collect(self, wait: bool) -> None:
        """Take finished decode tasks; hand over the batches done, in order.

        ``wait``: until all of this batcher's batches are decoded and handed over (waiting
        batches get buffers as the analysis gives them back; if none comes back for
        ``STALL_S``, their frames are dropped).
        """
        returned, since = self.returned, time.monotonic()
        while True:
            self._release_ready()
            pool = self._decoders
            while pool is not None:
                if not wait and pool.done.empty():  # (cheaper than a raised queue.Empty)
                    break
                decoding = wait and any(b.outstanding for b in self.inflight)
                try:
                    done = pool.done.get(timeout=1.0) if decoding else pool.done.get_nowait()
                except queue.Empty:
                    if not decoding:
                        break
                    continue  # (a chunk takes ms; the timeout only keeps this interruptible)
                done[0].batcher._finish(*done)
                self._release_ready()
            if not (wait and self.inflight):
                return
            # the rest waits for buffers the analysis gives back
            now = time.monotonic()
            if self.returned != returned:
                returned, since = self.returned, now
            elif now - since > STALL_S:
                self._drop_staged()
            time.sleep(0.0005)

    def _drop_staged(self) -> None:
        """The analysis gave no buffer back for ``STALL_S``: drop the frames waiting."""
        lost = 0
        while self.staged:
            batch = self.staged.popleft()
            self.inflight.remove(batch)
            lost += len(batch.indices)
            self.queued -= len(batch.indices)
            self.staged_bytes -= batch.staged
            self.staged_frames -= len(batch.indices)
        self.counters.dropped += lost
        log.warning("series %d: the analysis gave no buffer back for %g s; %d compressed "
                    "frames waiting for one dropped", self.series.series, STALL_S, lost)

    def _release_ready(self) -> None:
        inflight = self.inflight
        while True:
            while inflight and not inflight[0].outstanding and inflight[0].frames is not None:
                self._deliver(inflight.popleft())
            # (without decoding threads, a batch given a buffer is decoded at once)
            if not (self.staged and self._pump()):
                return

    def _deliver(self, batch: Batch) -> None:
        if batch.failed:  # rare: take the corrupt frames out, keep the order of the rest
            bad = {slot for slot, _, _ in batch.failed}
            for _, index, why in batch.failed:
                self._corrupt(index, why)
            keep = [k for k in range(len(batch.indices)) if k not in bad]
            batch.frames[: len(keep)] = batch.frames[keep]
            batch.indices = [batch.indices[k] for k in keep]
            self.queued -= len(bad)
            batch.failed = []
            if not keep:  # nothing left to analyse: the buffer goes straight back
                self.pool.free.append(batch.frames)
                return
        self.handoff.put(batch)

    def flush(self, older_than: float = 0.0) -> None:
        """Hand over the current batch (if older than ``older_than`` s).

        With ``older_than`` 0 (a series' end), also wait until every batch handed over is
        decoded and in the hand-over queue: what comes after it is put behind them.
        """
        batch = self.current
        if batch is not None and batch.indices and not (
                older_than and time.monotonic() - batch.t0 < older_than):
            self._hand_over()
        if self.inflight:
            self._collect(wait=not older_than)

    @property
    def depth(self) -> int:
        """Frames waiting for analysis (handed over or in the open batch)."""
        batch = self.current
        return self.queued - self.returned + (0 if batch is None else len(batch.indices))
