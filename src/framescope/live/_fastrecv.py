"""DECTRIS stream v1 image messages received by a compiled loop, straight into batches.

Per message, the Python receive (four zmq.Frames, two JSON parts, the checks, the copy or
the staging of a payload) cost the receiver thread ~30-45 µs for an uncompressed 128 KiB
frame and ~20-27 µs for a compressed one, most of the gap to a plain receive. These numba
loops call libzmq (the instance pyzmq loaded) without the GIL, read the series and frame
numbers out of the ``dimage-1.0`` part, and require the ``dimage_d-1.0`` part to be byte
for byte the one of a frame the Python path already accepted in this series (same shape,
type, encoding; for compressed frames all but the ``size``). :func:`receive_images` copies
uncompressed images into the next slots of the open batch; :func:`receive_encoded`
appends compressed payloads to one buffer, a chunk for the decoders.

Anything else (another htype, another series, another ``dimage_d``) is handed back to the
Python path with the parts read so far; a wrong image size is reported for the malformed
counter. Bookkeeping (frame tracking, counters, batches) stays in Python, once per call.
"""

from __future__ import annotations

import glob
import logging
import os
from typing import Any

import numba
import numpy as np
import zmq
from numba import types

__all__ = ["FastImages", "available", "receive_images", "warm"]

log = logging.getLogger(__name__)

# kernel results
OK, TIMEOUT, HELD, IMAGE_SIZE, TOO_LARGE, ZMQ_ERROR = 0, 1, 2, 3, 4, 5


def _libzmq_paths() -> list[str]:
    """The libzmq this process loaded with pyzmq (the same instance must serve its
    sockets), else the copy pyzmq's wheel ships."""
    try:
        with open("/proc/self/maps") as f:
            mapped = {line.split()[-1] for line in f if "/libzmq" in line}
    except OSError:  # pragma: no cover - not Linux
        mapped = set()
    here = os.path.dirname(zmq.__file__)
    return sorted(mapped) + glob.glob(os.path.join(here, "..", "pyzmq.libs", "libzmq*.so*"))


def _load_libzmq() -> bool:
    """Make libzmq's functions known to numba's linker (by symbol name: the kernels stay
    cacheable); False where they cannot be found (then no compiled loop)."""
    try:
        import llvmlite.binding as llvm
    except ImportError:  # pragma: no cover - numba brings it
        return False
    for path in _libzmq_paths():
        try:
            llvm.load_library_permanently(path)
        except RuntimeError:  # pragma: no cover
            continue
        if llvm.address_of_symbol("zmq_msg_recv"):
            return True
    return False  # pragma: no cover - e.g. a libzmq linked into pyzmq's extension


_LOADED = _load_libzmq()
_init = types.ExternalFunction("zmq_msg_init", types.int32(types.uintp))
_recv = types.ExternalFunction("zmq_msg_recv", types.int32(types.uintp, types.uintp, types.int32))
_data = types.ExternalFunction("zmq_msg_data", types.uintp(types.uintp))
_size = types.ExternalFunction("zmq_msg_size", types.uintp(types.uintp))
_more = types.ExternalFunction("zmq_msg_more", types.int32(types.uintp))
_close = types.ExternalFunction("zmq_msg_close", types.int32(types.uintp))
_errno = types.ExternalFunction("zmq_errno", types.int32())
_memcpy = types.ExternalFunction("memcpy", types.uintp(types.uintp, types.uintp, types.uintp))
_NOBLOCK = int(zmq.NOBLOCK)
_EAGAIN = int(zmq.EAGAIN)
_SERIES = np.frombuffer(b'"series"', np.uint8).copy()
_FRAME = np.frombuffer(b'"frame"', np.uint8).copy()
_DIMAGE = np.frombuffer(b'"dimage-', np.uint8).copy()


def available() -> bool:
    """Whether the compiled receive loop can run here."""
    return _LOADED


@numba.njit(nogil=True, cache=True)
def _find(p: Any, n: int, key: Any) -> int:
    """Offset just past the first ``key`` in ``p[:n]``; -1 if absent."""
    k = len(key)
    for i in range(n - k + 1):
        j = 0
        while j < k and p[i + j] == key[j]:
            j += 1
        if j == k:
            return i + k
    return -1


@numba.njit(nogil=True, cache=True)
def _number(p: Any, n: int, key: Any) -> int:
    """The non-negative integer a JSON object gives ``key`` (``"frame": 12``); -1 if none."""
    k = _find(p, n, key)
    if k < 0:
        return -1
    while k < n and (p[k] == 32 or p[k] == 58 or p[k] == 9):  # spaces, the colon
        k += 1
    value, digits = 0, 0
    while k < n and 48 <= p[k] <= 57 and digits < 18:
        value = value * 10 + (p[k] - 48)
        k += 1
        digits += 1
    return value if digits and (k == n or not 48 <= p[k] <= 57) else -1


@numba.njit(nogil=True, cache=True)
def _head(m: int, sock: int, flags: int, series: int, side: Any, held: Any
          ) -> tuple[int, int, int, int]:
    """Receive a message's first two parts into ``side`` (``dimage-1.0``, ``dimage_d``).

    Returns ``(number, n0, n1, why)``: ``why`` -1 when the caller goes on (an image of
    ``series``, frame ``number``, more parts to come), else why to stop (``held`` set).
    """
    _init(m)
    if _recv(m, sock, flags) < 0:
        err = _errno()
        _close(m)
        if err == _EAGAIN:
            return -1, 0, 0, TIMEOUT
        held[1] = err
        return -1, 0, 0, ZMQ_ERROR
    # the first part, copied for the checks (a small JSON object)
    n0 = np.int64(_size(m))
    if n0 > len(side):
        held[1] = n0
        _close(m)
        return -1, n0, 0, TOO_LARGE
    _memcpy(side.ctypes.data, _data(m), n0)
    more = _more(m)
    _close(m)
    head = side[:n0]
    number = -1
    if _find(head, n0, _DIMAGE) >= 0 and _number(head, n0, _SERIES) == series:
        number = _number(head, n0, _FRAME)
    if number < 0 or not more:
        held[0], held[1] = 1, n0
        return -1, n0, 0, HELD
    _init(m)
    _recv(m, sock, 0)  # (the parts of a message arrive together)
    n1 = np.int64(_size(m))
    if n0 + n1 > len(side):
        held[1] = n1
        _close(m)
        return -1, n0, n1, TOO_LARGE
    _memcpy(side.ctypes.data + n0, _data(m), n1)
    more = _more(m)
    _close(m)
    if not more:
        held[0], held[1], held[2] = 2, n0, n1
        return -1, n0, n1, HELD
    return number, n0, n1, -1


@numba.njit(nogil=True, cache=True)
def _image(m: int, sock: int, dest: int, expect: int, held: Any) -> tuple[int, int]:
    """Receive the image part (``expect`` bytes) to ``dest`` and the parts after it.

    Returns ``(bytes, parts)`` of the image part and those after it; parts 0 if the
    image part had another size (``held[1]``; the rest is still to be received).
    """
    _init(m)
    _recv(m, sock, 0)
    n = np.int64(_size(m))
    if n != expect:
        held[1] = n
        _close(m)
        return n, 0
    _memcpy(dest, _data(m), n)
    more = _more(m)
    _close(m)
    parts = 1
    while more:  # dconfig (times), and whatever follows: counted, not kept
        _init(m)
        _recv(m, sock, 0)
        n += np.int64(_size(m))
        more = _more(m)
        _close(m)
        parts += 1
    return n, parts


@numba.njit(nogil=True, cache=True)
def _same(side: Any, at: int, ref: Any) -> bool:
    """Whether ``side[at:at + len(ref)]`` holds ``ref``."""
    if at + len(ref) > len(side):
        return False
    for k in range(len(ref)):  # noqa: SIM110 (a loop numba compiles)
        if side[at + k] != ref[k]:
            return False
    return True


@numba.njit(nogil=True, cache=True)
def receive_images(sock: int, msg: Any, series: int, desc: Any, out: Any, first: int,
                   room: int, index: Any, sizes: Any, side: Any, held: Any
                   ) -> tuple[int, int]:
    """Receive up to ``room`` image messages into ``out[first:]`` (rows of frame bytes).

    Returns ``(got, why)``: ``index[:got]`` the frame numbers (-1: a message with fewer than
    4 parts, its slot unused), ``sizes[:got]`` the messages' bytes. ``why`` says why it
    stopped: OK (room filled, or nothing more queued), TIMEOUT (nothing came within the
    socket's timeout), HELD (a message for the Python path: its first ``held[0]`` parts,
    of ``held[1]`` and ``held[2]`` bytes, are in ``side``; the rest is still to be
    received), IMAGE_SIZE (an image part of ``held[1]`` bytes, not a frame), TOO_LARGE (a
    part to hold of ``held[1]`` bytes does not fit ``side``) — for these two the message's
    rest is still to be received —, ZMQ_ERROR (``held[1]`` the errno).
    """
    m = msg.ctypes.data
    got = 0
    held[0] = held[1] = held[2] = 0
    while got < room:
        number, n0, n1, why = _head(m, sock, 0 if got == 0 else _NOBLOCK, series, side,
                                    held)
        if why >= 0:
            return got, OK if why == TIMEOUT and got else why
        # the dimage_d part: the series' own, byte for byte
        if n1 != len(desc) or not _same(side, n0, desc):
            held[0], held[1], held[2] = 2, n0, n1
            return got, HELD
        # the image, into its slot
        n, parts = _image(m, sock, out[first + got].ctypes.data, out.shape[1], held)
        if not parts:
            return got, IMAGE_SIZE
        index[got] = number if parts >= 2 else -1
        sizes[got] = n0 + n1 + n
        got += 1
    return got, OK


@numba.njit(nogil=True, cache=True)
def receive_encoded(sock: int, msg: Any, series: int, pre: Any, post: Any, payload: Any,
                    limit: int, room: int, index: Any, ends: Any, sizes: Any, side: Any,
                    held: Any) -> tuple[int, int]:
    """Receive up to ``room`` compressed image messages, their payloads one after another
    into ``payload``, at most ``limit`` bytes (frame ``k`` ends at ``ends[k]``).

    The ``dimage_d`` part must be ``pre``, a size, ``post`` (the series' own, its ``size``
    aside), the payload that size. Returns ``(got, why)`` as :func:`receive_images`; a
    message whose payload would not fit ``payload`` is HELD, IMAGE_SIZE gives the payload's
    size in ``held[1]`` and the ``dimage_d`` one in ``held[2]``.
    """
    m = msg.ctypes.data
    got = end = 0
    held[0] = held[1] = held[2] = 0
    while got < room:
        number, n0, n1, why = _head(m, sock, 0 if got == 0 else _NOBLOCK, series, side,
                                    held)
        if why >= 0:
            return got, OK if why == TIMEOUT and got else why
        # pre, the size (digits), post
        size, k = -1, n0 + len(pre)
        if _same(side, n0, pre):
            size = 0
            while k < n0 + n1 and 48 <= side[k] <= 57 and size < 2**40:
                size = size * 10 + (side[k] - 48)
                k += 1
        if (size < 0 or k == n0 + len(pre) or k + len(post) != n0 + n1
                or not _same(side, k, post) or end + size > limit):
            held[0], held[1], held[2] = 2, n0, n1
            return got, HELD
        n, parts = _image(m, sock, payload.ctypes.data + end, size, held)
        if not parts:
            held[2] = size
            return got, IMAGE_SIZE
        end += size
        index[got] = number if parts >= 2 else -1
        ends[got] = end
        sizes[got] = n0 + n1 + n
        got += 1
    return got, OK


def warm() -> None:
    """Compile (or load from numba's cache) the loops for the types the receiver passes,
    before it connects (no socket: libzmq answers ENOTSOCK at once)."""
    i, x = np.empty(1, np.int64), np.frombuffer(b"x", np.uint8)
    receive_images(0, np.zeros(8, np.int64), 0, x, np.empty((1, 1), np.uint8), 0, 1, i, i,
                   np.empty(1, np.uint8), np.zeros(3, np.int64))
    receive_encoded(0, np.zeros(8, np.int64), 0, x, x, np.empty(1, np.uint8), 1, 1, i, i,
                    i, np.empty(1, np.uint8), np.zeros(3, np.int64))


class FastImages:
    """The receiver thread's compiled path: frames into batch slots while it can.

    Parameters
    ----------
    intake : Intake
        The receiver's intake (:meth:`~Intake.fast_slots` says where frames may go).
    sock : zmq.Socket
        The receiver's PULL socket (its receive timeout applies to the first message).
    """

    SIDE_BYTES = 64 * 1024  # a held message's first parts (JSON: a dheader, a config)
    PAYLOAD_BYTES = 4 * 2**20  # compressed payloads of one call (a larger one: Python's)

    def __init__(self, intake: Any, sock: zmq.Socket) -> None:
        self.intake, self.sock = intake, sock
        self._handle = sock.underlying
        self._msg = np.zeros(8, np.int64)  # a zmq_msg_t: 64 bytes, aligned
        self._side = np.empty(self.SIDE_BYTES, np.uint8)
        self._held = np.zeros(3, np.int64)
        self._index = self._sizes = self._ends = np.empty(0, np.int64)
        # compressed payloads of one call (a chunk), copied out for the decoders
        self._payload = np.empty(self.PAYLOAD_BYTES, np.uint8)
        self.frames = 0  # frames this loop took (messages it handed back not counted)

    def receive(self) -> bool:
        """Receive one call's worth; False if the compiled loop cannot take frames now.

        Raises zmq.Again when nothing came within the socket's timeout.
        """
        plan = self.intake.fast_slots()
        if plan is None:
            return False
        kind, series, desc, post, rows, first, room, budget = plan
        if len(self._index) < room:
            self._index, self._sizes, self._ends = (np.empty(room, np.int64) for _ in "isz")
        if kind == "raw":
            got, why = receive_images(self._handle, self._msg, series, desc, rows, first,
                                      room, self._index, self._sizes, self._side, self._held)
            if got:
                self.frames += got
                self.intake.fast_frames(rows, first, self._index, self._sizes, got)
        else:
            limit = len(self._payload) if budget < 0 else min(budget, len(self._payload))
            got, why = receive_encoded(self._handle, self._msg, series, desc, post,
                                       self._payload, limit, room, self._index, self._ends,
                                       self._sizes, self._side, self._held)
            if got:
                self.frames += got
                self.intake.fast_encoded(kind, self._payload, first, self._index,
                                         self._ends, self._sizes, got)
        if why == OK:
            return True
        if why == TIMEOUT:
            raise zmq.Again()
        if why == ZMQ_ERROR:
            raise zmq.ZMQError(int(self._held[1]))
        held = self._held
        if why == HELD:  # the Python path takes it, whole
            parts: list[Any] = [self._side[: held[1]].tobytes()]
            if held[0] == 2:
                parts.append(self._side[held[1] : held[1] + held[2]].tobytes())
            self.intake.handle(parts + self._rest(keep=True))
            return True
        self._rest(keep=False)
        if why == IMAGE_SIZE:
            said = (f"dimage_d says {held[2]} B" if kind != "raw"
                    else f"the frame has {rows.shape[1]} B")
            self.intake.fast_skipped(f"stream1 dimage: blob of {held[1]} B, {said}")
        else:
            self.intake.fast_skipped(f"stream1: a header part of {held[1]} B (at most "
                                     f"{self.SIDE_BYTES} B expected)")
        return True

    def _rest(self, keep: bool) -> list[bytes]:
        """The message's parts not received yet."""
        sock, rest = self.sock, []
        while sock.getsockopt(zmq.RCVMORE):
            part = sock.recv()
            if keep:
                rest.append(part)
        return rest
