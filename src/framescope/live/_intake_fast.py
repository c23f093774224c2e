"""The intake's side of the compiled receive loop (``_fastrecv``): where frames may go,
and the bookkeeping of what the loop received, as :meth:`Intake._frame` does per frame."""

from __future__ import annotations

import re
import time
from typing import Any

import numpy as np

from framescope.live import _batch
from framescope.live._buffers import Chunk
from framescope.live._codecs import Encoded
from framescope.live._messages import reason_key

__all__ = ["FastIntake"]

# a dimage_d's size field: the compiled loop matches the rest byte for byte
_SIZE = re.compile(rb'"size"\s*:\s*')
_PARTS_WHY = "stream1 dimage: expected >= 4 parts, found 3"


class FastIntake:
    """Mixed into :class:`~framescope.live._intake.Intake` (its attributes are used)."""

    def fast_init(self, decoder: Any) -> None:
        # on for stream v1 without hash checks; a series' frames are taken once one came
        # through the Python path (its dimage_d is the template)
        self.fast_on = bool(getattr(decoder, "receives_compiled", False))
        self.fast_series = -1
        self.fast_kind: str | None = None  # "raw" or the codec
        self.fast_desc: np.ndarray | None = None  # dimage_d, or the part before the size
        self.fast_post: np.ndarray | None = None  # the part after the size

    def fast_learn(self, series: int, wire: tuple[str, Any] | None) -> None:
        """A frame of ``series`` was accepted: its dimage_d is the template for the loop."""
        desc = bytes(self.decoder.last_desc)
        self.fast_series, self.fast_kind = series, None
        if wire is None:
            self.fast_kind, self.fast_desc = "raw", np.frombuffer(desc, np.uint8)
            return
        m = _SIZE.search(desc)
        digits = re.match(rb"\d+", desc[m.end():]) if m else None
        if digits is None:  # no size: the payload's length is unknown before it comes
            return
        self.fast_kind = wire[0]
        self.fast_desc = np.frombuffer(desc[: m.end()], np.uint8)
        self.fast_post = np.frombuffer(desc[m.end() + digits.end():], np.uint8)

    def fast_slots(self) -> tuple | None:
        """What the compiled loop may take now: (kind, series, dimage_d or its part before
        the size, the part after it, the open batch's rows of frame bytes, first free slot,
        frames at most, payload bytes at most or -1); None: the Python path."""
        s, b = self.series, self.batcher
        if (b is None or s is None or self.ended or s.series != self.fast_series
                or self.fast_kind is None or self._recording
                or self.attach_request is not None):
            return None
        raw = self.fast_kind == "raw"
        got = b.slots(encoded=not raw)
        if got is None:  # no buffer free, or frames wait compressed: as the Python path does
            return None
        frames, first, budget = got
        room = b.per_batch - first
        if raw:
            rows = frames.reshape(len(frames), -1).view(np.uint8)
            return "raw", s.series, self.fast_desc, None, rows, first, room, -1
        return (self.fast_kind, s.series, self.fast_desc, self.fast_post, None, first,
                min(room, _batch.CHUNK_FRAMES), budget)  # (a chunk: one decode task)

    def _fast_accept(self, number: int, size: int) -> bool:
        """One frame the loop received: tracked and counted; whether it is analysed."""
        if number < 0:
            self._malformed(_PARTS_WHY, reason_key(_PARTS_WHY))
            return False
        why = self.tracker.accept(number)
        if why and why != "duplicate":
            self._malformed(why, "outside the scan")
            return False
        c = self.counters
        c.frames_received += 1
        c.bytes_received += size
        return not why  # a duplicate: counted, not analysed again

    def _fast_seen(self, sizes: np.ndarray, got: int) -> None:
        self._idle_since, self._last_msg = None, time.monotonic()
        self.last_size = int(sizes[got - 1])

    def fast_frames(self, rows: np.ndarray, first: int, index: np.ndarray,
                    sizes: np.ndarray, got: int) -> None:
        """``got`` uncompressed frames the loop put in ``rows[first:]`` (rejected ones
        leave their rows to the next)."""
        self._fast_seen(sizes, got)
        accept, row = [], first
        for k in range(got):
            if not self._fast_accept(int(index[k]), int(sizes[k])):
                continue
            if row != first + k:
                rows[row] = rows[first + k]
            accept.append(int(index[k]))
            row += 1
        if self.counters.frames_received and self.state != "receiving":
            self.state = "receiving"
        if accept:
            meta = self.series.meta
            self.latest = rows[row - 1].view(meta.dtype).reshape(meta.frame_shape)
            self.batcher.filled(accept)

    def fast_encoded(self, codec: str, payload: np.ndarray, first: int, index: np.ndarray,
                     ends: np.ndarray, sizes: np.ndarray, got: int) -> None:
        """``got`` compressed frames, their payloads in ``payload`` up to ``ends``: one
        chunk for the decoders, into the open batch's slots from ``first``."""
        self._fast_seen(sizes, got)
        chunk, start, slot = Chunk(), 0, first
        for k in range(got):
            stop = int(ends[k])
            if self._fast_accept(int(index[k]), int(sizes[k])):
                chunk.starts.append(start)
                chunk.ends.append(stop)
                chunk.slots.append(slot)
                chunk.indices.append(int(index[k]))
                chunk.codecs.append(codec)
                slot += 1
            start = stop
        if self.counters.frames_received and self.state != "receiving":
            self.state = "receiving"
        if chunk.indices:
            chunk.joined = payload[: int(ends[got - 1])].tobytes()
            chunk.size = len(chunk.joined)
            meta = self.series.meta
            self.latest = Encoded(memoryview(chunk.joined)[chunk.starts[-1] : chunk.ends[-1]],
                                  codec, meta.frame_shape, meta.dtype)
            self.batcher.filled_chunk(chunk)

    def fast_skipped(self, why: str) -> None:
        """A message the compiled loop could not take, nor hand back: counted."""
        self._idle_since, self._last_msg = None, time.monotonic()
        self._malformed(why, reason_key(why))
