"""Noise over a byte stream (TCP, serial, BLE), NoiseSocket style: every
handshake and transport message is one frame of the project's stream framing
(shared_protocol/wire/stream.py: a 2-byte big-endian length, then the bytes;
NoiseSocket rev. 2 §3 frames the same way, and Noise §3 caps a message at
65535 bytes, which is why two bytes suffice).

Sans-I/O, h11 style: ``receive_data(bytes)`` hands bytes to the fixed-size
frame buffer (and returns how many it took), ``next_event()`` returns the
next event or ``NEED_DATA``, ``send(payload)`` returns bytes to write, and
handshake replies queue in ``data_to_send()``. A partial frame consumes
nothing. The first remote error is sticky: the byte stream is out of step
after it, so every later call raises; the caller closes the link.
"""
from shared_protocol.wire import stream as wire_stream
from shared_protocol.errors import RemoteError
from shared_protocol.noise import errors as nerr
from shared_protocol.noise.events import NEED_DATA, HandshakeComplete, Message  # noqa: F401 (re-exported)
from shared_protocol.noise.symmetric import MESSAGE_MAX, TAGLEN

# Default largest frame: the stream framing's default (4 KiB, one frame in a
# board's RAM). Hosts talking to hosts may pass up to 65535.
FRAME_MAX = wire_stream.STREAM_FRAME_DEFAULT
# Largest plaintext in one transport frame.
PAYLOAD_MAX = MESSAGE_MAX - TAGLEN


def frame(body):
    return wire_stream.frame(body, MESSAGE_MAX)


class NoiseStream:
    def __init__(self, handshake, max_frame=FRAME_MAX, handshake_payload=b""):
        if not 0 < max_frame <= MESSAGE_MAX:
            raise nerr.NoiseUsageError(message=__debug__ and "max_frame must be 1..%d" % MESSAGE_MAX)
        self._hs = handshake
        self._max = max_frame
        self._payload = handshake_payload
        self._frames = wire_stream.StreamDecoder(max_frame)
        self._out = []
        self._send = None
        self._recv = None
        self._error = None
        self._pending_done = None
        self._started = False

    @property
    def handshake_complete(self):
        return self._send is not None

    def start(self):
        """Initiator only: queue the first handshake message."""
        if not self._hs.initiator or self._started:
            raise nerr.NoiseUsageError(message=__debug__ and "start() is for the initiator, once")
        self._started = True
        self._out.append(frame(self._hs.write_message(self._payload)))

    def data_to_send(self):
        out = b"".join(self._out)
        self._out = []
        return out

    def receive_data(self, data):
        """Returns how many bytes were taken; give the rest after draining
        events (the frame buffer has a fixed size)."""
        self._check()
        return self._frames.receive_data(data)

    def _check(self):
        if self._error is not None:
            raise nerr.NoiseUsageError(message=__debug__ and "link failed earlier (%s); close it" % self._error.code)

    def next_event(self):
        self._check()
        if self._pending_done is not None:
            ev, self._pending_done = self._pending_done, None
            return ev
        try:
            body = self._frames.next_frame()
            if body is None:
                return NEED_DATA
            if self._recv is not None:
                return Message(self._recv.decrypt_with_ad(b"", body))
            return self._handshake_step(body)
        except RemoteError as e:
            self._error = e
            raise

    def _handshake_step(self, body):
        hs = self._hs
        payload = hs.read_message(body)
        if not hs.complete:
            self._out.append(frame(hs.write_message(self._payload)))
        if hs.complete:
            self._send, self._recv = hs.split()
            return HandshakeComplete(hs.remote_static, hs.handshake_hash, payload)
        return self.next_event()

    def send(self, payload):
        self._check()
        if self._send is None:
            raise nerr.NoiseUsageError(message=__debug__ and "handshake not complete")
        if len(payload) > min(PAYLOAD_MAX, self._max - TAGLEN):
            raise nerr.NoiseUsageError(message=__debug__ and "payload of %d bytes does not fit one frame" % len(payload))
        return frame(self._send.encrypt_with_ad(b"", payload))
