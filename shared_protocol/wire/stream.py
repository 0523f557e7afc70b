"""Stream framing for envelope messages (TCP, serial, BLE).

Each frame is a 2-byte big-endian length then that many bytes, as
NoiseSocket frames handshake and transport messages, so the same framing
carries plaintext and encrypted links. ``StreamDecoder`` is sans-I/O: feed
it bytes, take frames out. A partial frame consumes nothing; feeding the
same bytes whole or one at a time yields the same frames; a declared length
over the limit is an error before any byte of the frame is buffered. Its
buffer has a fixed capacity, allocated once.

Datagram framing and the errors both modes raise are in wire/framing.py.
"""

from shared_protocol.errors import LocalError
from shared_protocol.wire.framing import (EMPTY, OVERSIZE, TRUNCATED, _check_size)
from shared_protocol.wire import framing

LENGTH_BYTES = 2
# The 2-byte prefix can say at most 65535.
STREAM_FRAME_CEILING = 0xFFFF
# Default per-frame limit: a board keeps one frame in RAM, and 4 KiB is enough
# for any protocol message (a DMC sync batch, a CYCLON view of 20 entries)
# while staying a small slice of a 100 KB ESP32 heap.
STREAM_FRAME_DEFAULT = 4096


def frame(payload, limit=STREAM_FRAME_DEFAULT):
    """Length-prefix one message for a stream."""
    _check_size(payload, min(limit, STREAM_FRAME_CEILING), "FrameLimitError", "frame")
    n = len(payload)
    out = bytearray(LENGTH_BYTES + n)
    out[0] = n >> 8
    out[1] = n & 0xFF
    out[2:] = payload
    return bytes(out)


class StreamDecoder:
    """Incremental decoder of length-prefixed frames.

    receive_data(data) -> number of bytes taken (it takes what fits in the
    fixed buffer; give the rest after draining frames). b"" means end of input.
    next_frame() -> bytes of the next complete frame, or None if more data is
    needed. After an error the decoder stays in that error (sticky).
    """

    def __init__(self, limit=STREAM_FRAME_DEFAULT):
        if not (0 < limit <= STREAM_FRAME_CEILING):
            raise framing.FrameLimitError(OVERSIZE, __debug__ and "frame limit must be 1..%d" % STREAM_FRAME_CEILING)
        self.limit = limit
        # Room for one whole frame plus its prefix, and as much again so a
        # reader can hand over a typical socket read without many calls.
        self.capacity = 2 * (LENGTH_BYTES + limit)
        self._buf = bytearray(self.capacity)
        self._mv = memoryview(self._buf)
        self._start = 0
        self._end = 0
        self._eof = False
        self._error = None

    def buffered(self):
        return self._end - self._start

    def free(self):
        return self.capacity - (self._end - self._start)

    def receive_data(self, data):
        if self._error is not None:
            raise self._error
        n = len(data)
        if n == 0:
            self._eof = True
            return 0
        if self._eof:
            raise LocalError("eof", __debug__ and "data received after end of input")
        if self._end + n > self.capacity and self._start > 0:
            # Move the unread tail to the front (memmove within the buffer).
            k = self._end - self._start
            self._mv[0:k] = self._mv[self._start:self._end]
            self._start = 0
            self._end = k
        take = self.capacity - self._end
        if take > n:
            take = n
        self._mv[self._end:self._end + take] = data[:take] if take < n else data
        self._end += take
        return take

    def next_frame(self):
        if self._error is not None:
            raise self._error
        avail = self._end - self._start
        if avail < LENGTH_BYTES:
            if self._eof and avail:
                self._fail(TRUNCATED, "input ended inside a frame's length prefix")
            return None
        s = self._start
        n = (self._buf[s] << 8) | self._buf[s + 1]
        if n == 0:
            self._fail(EMPTY, "empty frame")
        if n > self.limit:
            self._fail(OVERSIZE, "frame declares %d bytes, limit %d" % (n, self.limit))
        if avail < LENGTH_BYTES + n:
            if self._eof:
                self._fail(TRUNCATED, "input ended %d bytes into a %d-byte frame" % (avail - LENGTH_BYTES, n))
            return None
        out = bytes(self._mv[s + LENGTH_BYTES:s + LENGTH_BYTES + n])
        self._start = s + LENGTH_BYTES + n
        if self._start == self._end:
            self._start = self._end = 0
        return out

    def _fail(self, code, msg):
        self._error = framing.FrameError(code, msg)
        raise self._error

    def feed(self, data):
        """Convenience for runners: take all of data, return the frames in it.

        Loops receive_data/next_frame, so the buffer bound still holds.
        """
        frames = []
        mv = memoryview(data)
        while True:
            f = self.next_frame()
            while f is not None:
                frames.append(f)
                f = self.next_frame()
            if not len(mv):
                return frames
            k = self.receive_data(mv)
            mv = mv[k:]
