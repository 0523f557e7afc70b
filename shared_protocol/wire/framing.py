"""Datagram framing for envelope messages, and the errors of both framings.

Datagram mode: one message per UDP packet, never fragmented. The limit,
DATAGRAM_MAX, keeps a packet under IPv6's minimum link MTU of 1280 bytes
(RFC 8200 §5) less the IPv6 and UDP headers (48 bytes) and leaves room for a
32-byte transport overhead (Noise datagram nonce + tag), so it crosses any
path, and an ESP32's or Pico W's WiFi, without fragmentation.

Stream mode (TCP, serial, BLE: a 2-byte length before each frame) is in
wire/stream.py: a node on UDP never loads it (its bytecode and qstrs are
some 2 KB of a board's heap with .mpy modules). Its names are still
importable from here (``framing.StreamDecoder``), which imports it on first
use.
"""

from shared_protocol.errors import LocalError, RemoteError, kind

DATAGRAM_MAX = 1200

OVERSIZE = "oversize"
EMPTY = "empty"
TRUNCATED = "truncated"
BUFFER_FULL = "buffer_full"


# Name, base, code (a line each; made on first use, see
# shared_protocol.errors.kind; this module raises them through _error, others
# name them through the module, e.g. framing.FrameError):
# - FrameError: framing of incoming bytes is broken (the stream cannot
#   continue).
# - FrameLimitError: the caller tried to send something over a framing limit.
KINDS = """
FrameError RemoteError frame
FrameLimitError LocalError frame_limit
"""
# The kinds made so far (shared_protocol.errors.kind), under their names,
# and the module name they carry.
_MADE = {"__name__": __name__}


def _error(name):
    return _MADE.get(name) or kind(name, KINDS, _MADE)


def _check_size(data, limit, err, what):
    n = len(data)
    if n == 0:
        raise _error(err)(EMPTY, __debug__ and "empty " + what)
    if n > limit:
        raise _error(err)(OVERSIZE, __debug__ and "%s of %d bytes exceeds %d" % (what, n, limit))
    return data


def datagram(payload, limit=DATAGRAM_MAX):
    """Check an outgoing datagram payload against the limit; return it."""
    return _check_size(payload, limit, "FrameLimitError", "datagram")


def check_datagram(packet, limit=DATAGRAM_MAX):
    """Check an incoming packet; return it or raise FrameError."""
    return _check_size(packet, limit, "FrameError", "datagram")


# wire/stream.py's names, for callers that take them from here (module
# __getattr__: asked only for a name this module does not hold).
_STREAM_NAMES = ("LENGTH_BYTES", "STREAM_FRAME_CEILING", "STREAM_FRAME_DEFAULT", "frame", "StreamDecoder")


def __getattr__(name):
    if name in _STREAM_NAMES:
        from shared_protocol.wire import stream
        return getattr(stream, name)
    return _error(name)
