"""Noise transport over datagrams (UDP), where packets are lost, reordered
and duplicated, so the receiver cannot count nonces implicitly (Noise §11.4,
"out-of-order transport messages"). Each packet carries the low bits of its
nonce:

    packet = nonce mod 2^16 (2 bytes, big-endian) | ChaChaPoly(k, nonce, ad="", payload)

The receiver rebuilds the whole 64-bit nonce as the one closest to the
next it expects (the highest it has authenticated + 1) with those low bits,
as DTLS 1.3 rebuilds its record numbers (RFC 9147 §4.2.2): every nonce
within 2^15 of that is found. The AEAD runs with the whole nonce, so a
packet rebuilt to a wrong nonce (more than 2^15 packets in a row lost, or
low bits forged) fails authentication and changes nothing; a session
losing that many in a row is long dead by its keepalive (udp.py) and starts
over with a new handshake. Six bytes less on every packet than the full
8-byte nonce (a reading costs two: its publish and its ack).

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

from shared_protocol.noise import errors as nerr
from shared_protocol.noise.symmetric import NONCE_MAX, TAGLEN
from shared_protocol.replay import ReplayWindow

# Bytes of the nonce on the wire: its low 16 bits (see above).
NONCE_PREFIX = 2
_NONCE_SPAN = 1 << (8 * NONCE_PREFIX)
_NONCE_HALF = _NONCE_SPAN >> 1
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
            raise nerr.NoiseUsageError(message=__debug__ and "payload of %d bytes over the datagram limit" % len(payload))
        n = self._send.n
        if n > NONCE_MAX:
            raise nerr.NoiseUsageError(message=__debug__ and "nonce space exhausted; start a new session")
        self._send.n = n + 1
        return struct.pack(">H", n & (_NONCE_SPAN - 1)) + self._send.encrypt_at(n, b"", payload)

    def _full_nonce(self, low):
        """The nonce closest to the next expected one with these low bits
        (RFC 9147 §4.2.2)."""
        expected = self.replay.top + 1
        n = (expected - (expected & (_NONCE_SPAN - 1))) | low
        if n > expected + _NONCE_HALF and n >= _NONCE_SPAN:
            n -= _NONCE_SPAN
        elif n + _NONCE_HALF < expected:
            n += _NONCE_SPAN
        return n

    def open(self, packet):
        if len(packet) > self._max:
            raise nerr.DecryptFailed(message=__debug__ and "datagram of %d bytes over the %d limit" % (len(packet), self._max))
        if len(packet) < NONCE_PREFIX + TAGLEN:
            raise nerr.DecryptFailed(message=__debug__ and "datagram too short")
        (low,) = struct.unpack_from(">H", packet, 0)
        n = self._full_nonce(low)
        if n > NONCE_MAX:
            raise nerr.DecryptFailed(message=__debug__ and "reserved nonce")
        if not self.replay.is_fresh(n):
            raise nerr.ReplayedMessage(message=__debug__ and "nonce %d already used or outside the window" % n)
        # a view, not a copy: the AEAD reads the sealed bytes in place
        payload = self._recv.decrypt_at(n, b"", memoryview(packet)[NONCE_PREFIX:])
        self.replay.accept(n)  # commit only after authentication
        return payload
