"""Noise transport over datagrams (UDP), where packets are lost, reordered
and duplicated, so the receiver cannot count nonces implicitly (Noise §11.4,
"out-of-order transport messages"). Each packet carries its nonce:

    packet = nonce (8 bytes, big-endian) | ChaChaPoly(k, nonce, ad="", payload)

The receiver accepts a nonce once, within a sliding window below the highest
nonce it has authenticated (the anti-replay window of RFC 4303 §3.4.3, also
used by WireGuard). The window is checked before decryption (cheap rejection)
and updated only after the packet authenticates, so a forged packet changes
nothing.

Handshake messages go one per datagram through ``Handshake`` directly; the
handshake's reads are transactional, so forged or garbled datagrams do not
disturb it.
"""
import struct

from shared_protocol.noise.errors import DecryptFailed, NoiseUsageError, ReplayedMessage
from shared_protocol.noise.symmetric import NONCE_MAX, TAGLEN
from shared_protocol.replay import ReplayWindow

NONCE_PREFIX = 8
# Nonces accepted out of order: 64 as in RFC 4303's recommended default.
# Larger tolerates more reordering, at one bit of state per slot.
REPLAY_WINDOW = 64
# One UDP payload that survives every path without fragmentation on IPv6
# (1280-byte minimum MTU minus IPv6 and UDP headers) carries at most this.
DATAGRAM_MAX = 1232
PAYLOAD_MAX = DATAGRAM_MAX - NONCE_PREFIX - TAGLEN


class DatagramChannel:
    def __init__(self, send_cs, recv_cs, window=REPLAY_WINDOW, max_datagram=DATAGRAM_MAX):
        self._send = send_cs
        self._recv = recv_cs
        self._max = max_datagram
        self.replay = ReplayWindow(window)

    def seal(self, payload):
        if len(payload) > self._max - NONCE_PREFIX - TAGLEN:
            raise NoiseUsageError(message="payload of %d bytes over the datagram limit" % len(payload))
        n = self._send.n
        if n > NONCE_MAX:
            raise NoiseUsageError(message="nonce space exhausted; start a new session")
        self._send.n = n + 1
        return struct.pack(">Q", n) + self._send.encrypt_at(n, b"", payload)

    def open(self, packet):
        if len(packet) > self._max:
            raise DecryptFailed(message="datagram of %d bytes over the %d limit" % (len(packet), self._max))
        if len(packet) < NONCE_PREFIX + TAGLEN:
            raise DecryptFailed(message="datagram too short")
        (n,) = struct.unpack_from(">Q", packet, 0)
        if n > NONCE_MAX:
            raise DecryptFailed(message="reserved nonce")
        if not self.replay.is_fresh(n):
            raise ReplayedMessage(message="nonce %d already used or outside the window" % n)
        payload = self._recv.decrypt_at(n, b"", bytes(packet[NONCE_PREFIX:]))
        self.replay.accept(n)  # commit only after authentication
        return payload
