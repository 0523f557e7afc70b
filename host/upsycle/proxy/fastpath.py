"""The proxy's per-message fast paths on CPython, in one place.

The proxy runs the shared session state machine (session_proxy.py), which
the MicroPython VM tests run too; on the host its codec hooks get the C-backed
equivalents of upsycle.wire_fast, TCP frames are split and joined by
slicing, and Noise transport messages go straight to libsodium
(upsycle.noise_fast). Each of these makes the same bytes as the shared code
(tests/host/test_wire_fast.py); the server only calls the names below.
"""
from shared_protocol.session_proxy import ProxySession
from upsycle import noise_fast, wire_fast

StreamDecoder = wire_fast.StreamDecoder
frames = wire_fast.frames
frame = wire_fast.frame
fast_cipher = noise_fast.fast
fast_channel = noise_fast.fast_channel


class HostProxySession(ProxySession):
    decode = staticmethod(wire_fast.decode)
    encode_deliver = staticmethod(wire_fast.encode_deliver)
    encode_puback = staticmethod(wire_fast.encode_puback)


def seal_frames(cs, msgs, limit):
    """Encrypt each session message with ``cs`` and frame them for one write."""
    enc = cs.encrypt_with_ad
    return wire_fast.frames([enc(b"", m) for m in msgs], limit)
