"""The events a Noise transport hands out, shared by the stream (stream.py)
and UDP (udp.py) transports. In their own module so a board that only
speaks UDP does not load the stream transport and its framing to get them.
"""


class _NeedData:
    def __repr__(self):
        return "NEED_DATA"


# next_event() of a stream transport: no complete frame yet.
NEED_DATA = _NeedData()


class HandshakeComplete:
    def __init__(self, remote_static, handshake_hash, payload):
        self.remote_static = remote_static
        self.handshake_hash = handshake_hash
        self.payload = payload  # the peer's last handshake payload


class Message:
    def __init__(self, data):
        self.data = data
