"""A Noise_XX session over UDP: the handshake with retransmission, then the
datagram transport (datagram.py). Sans-I/O: the caller passes packets and
the current time (milliseconds, e.g. ``time.ticks_ms()`` on a board; tick
arithmetic through clock.py) in and
sends what ``packets_to_send()`` returns.

Packets start with one kind byte:

    1, 2, 3  handshake message 1, 2, 3 (Noise XX)
    4        transport: datagram.py's nonce | ciphertext

    5        "no session here": the responder's answer to a transport packet
             it has no session for (it restarted, or message 3 was lost):
             the kind byte and the packet's 16-byte tag, so the initiator
             knows the answer is about a packet it sent and starts a new
             handshake at once instead of waiting for its keepalive to die.

No answer to an unauthenticated packet is larger than that packet, so the
responder cannot be used to amplify a flood towards a forged source:
message 1 carries HS1_PAD bytes of padding (Noise payload), which makes it
as long as message 2, and the "no session" answer is shorter than any
transport packet.

Loss: the initiator repeats message 1 until message 2 arrives; the
responder answers each repeat with its cached message 2 and never repeats
on its own (a timer would send unrequested packets towards a source it
cannot verify). A lost message 3 shows at the responder as transport
packets without a session: it answers "no session" and the initiator starts
over. A packet that does not authenticate raises a typed
error and changes nothing (the handshake's reads are transactional), so a
forger cannot stall or reset a session. Transport packets that arrive before
the responder has finished are dropped, as UDP may drop them anyway.
"""
from shared_protocol import clock
from shared_protocol.noise.datagram import DATAGRAM_MAX, NONCE_PREFIX, REPLAY_WINDOW, DatagramChannel
from shared_protocol.noise import errors as nerr
from shared_protocol.noise.events import HandshakeComplete, Message

try:
    from micropython import const
except ImportError:   # CPython (host and tests)
    def const(x):
        return x

KIND_HS1 = 1
KIND_HS2 = 2
KIND_HS3 = 3
KIND_DATA = 4
_KIND_UNKNOWN = const(5)
# Message 1's payload (zeros in the transcript): 1 + 32 + 64 = 97 bytes, the
# size of message 2 (1 + 32 + 32 + 16 + 16), so answering it never amplifies.
HS1_PAD = 64
HS1_SIZE = 1 + 32 + HS1_PAD
TAG_SIZE = 16
# Tags of our latest transport packets kept to recognise a "no session"
# answer (a window's worth of resends answered at once still matches).
_SENT_TAGS_MAX = const(8)
# Wait before repeating a handshake message. A WiFi LAN round trip is a few
# ms; a sleeping peer's radio wakes within about a second.
RETRY_MS = 1000
# Attempts per handshake message before giving up (about 8 s with RETRY_MS).
TRIES_MAX = 8


def no_session_answer(packet):
    """The responder's answer to a transport packet it has no session for,
    or None if the packet is too short to answer without amplifying."""
    if len(packet) < 1 + NONCE_PREFIX + TAG_SIZE:
        return None
    return bytes((_KIND_UNKNOWN,)) + bytes(packet[-TAG_SIZE:])


class UdpSession:
    def __init__(self, handshake, window=REPLAY_WINDOW, retry_ms=RETRY_MS, max_tries=TRIES_MAX, cipher=None):
        # cipher: applied to each transport CipherState once the handshake
        # splits (the host proxy passes libsodium-backed ones; same bytes).
        # The handshake, until it completes: then only its role is kept, so
        # nothing refers to the handshake's objects (or code) any more.
        self._hs = handshake
        self.initiator = handshake.initiator
        self._cipher = cipher
        self._window = window
        self._retry = retry_ms
        self._max_tries = max_tries
        self._out = []
        self._last = None        # the packet we repeat until the peer answers
        self._last_at = 0
        self._tries = 0
        self._cached_reply = None  # what we answer to a repeated peer message
        self._repeat_of = None     # the peer packet that _cached_reply answers
        # the tags of our latest _SENT_TAGS_MAX transport packets, in one
        # ring made at the first send (a list of 16-byte bytes objects held
        # some 430 bytes of a board's heap; this is 128)
        self._tags = None
        self._tags_n = 0           # packets sent (wrapped): the next slot is _tags_n % _SENT_TAGS_MAX
        self.channel = None

    @property
    def established(self):
        return self.channel is not None

    def packets_to_send(self):
        out = self._out
        if not out:
            return ()  # nothing to send: no allocation on an idle turn
        self._out = []
        return out

    def _emit(self, packet, now, repeat):
        self._out.append(packet)
        if repeat:
            self._last, self._last_at, self._tries = packet, now, 1
        else:
            self._last = None

    def start(self, now, payload=b""):
        """Send message 1: payload (at most HS1_PAD bytes, e.g. a
        noise/known.py hint) padded with zeros to HS1_PAD."""
        if not self.initiator or self._hs is None or self._last is not None or self._hs.messages:
            raise nerr.NoiseUsageError(message=__debug__ and "start() is for a fresh initiator")
        if len(payload) > HS1_PAD:
            raise nerr.NoiseUsageError(message=__debug__ and "message 1 payload over %d bytes" % HS1_PAD)
        self._emit(bytes((KIND_HS1,)) + self._hs.write_message(payload + bytes(HS1_PAD - len(payload))), now, True)

    def tick(self, now):
        """Repeat the pending handshake message if due; raises
        HandshakeTimedOut after max_tries attempts."""
        if self._last is None or clock.diff(now, self._last_at) < self._retry:
            return
        if self._tries >= self._max_tries:
            self._last = None
            raise nerr.HandshakeTimedOut(message=__debug__ and "no answer after %d attempts" % self._max_tries)
        self._out.append(self._last)
        self._last_at = now
        self._tries += 1

    def next_resend(self):
        """The tick at which tick() repeats a handshake message, or None."""
        if self._last is None:
            return None
        return clock.add(self._last_at, self._retry)

    @property
    def handshake_started(self):
        """False until a handshake message has been read or written."""
        return self._hs is None or self._hs.messages != 0

    def send(self, payload):
        if self.channel is None:
            raise nerr.NoiseUsageError(message=__debug__ and "session not established")
        pkt = bytes((KIND_DATA,)) + self.channel.seal(payload)
        tags = self._tags
        if tags is None:
            tags = self._tags = bytearray(_SENT_TAGS_MAX * TAG_SIZE)
        n = self._tags_n
        at = n % _SENT_TAGS_MAX * TAG_SIZE
        tags[at:at + TAG_SIZE] = memoryview(pkt)[-TAG_SIZE:]
        # counts on past a full ring, wrapping so it stays a small int
        self._tags_n = n + 1 if n < 2 * _SENT_TAGS_MAX - 1 else _SENT_TAGS_MAX
        return pkt

    def _sent_tag(self, tag):
        """Whether tag is one of our latest transport packets' tags."""
        tags = self._tags
        if tags is None or len(tag) != TAG_SIZE:
            return False
        for i in range(min(self._tags_n, _SENT_TAGS_MAX)):
            if tags[i * TAG_SIZE:(i + 1) * TAG_SIZE] == tag:
                return True
        return False

    def answers(self, packet):
        """True if packet is the peer message our cached reply answers (a
        repeat: send the reply again)."""
        return self._repeat_of is not None and packet == self._repeat_of

    def receive(self, packet, now):
        """One UDP payload in; returns a list of events (HandshakeComplete,
        Message). Raises a typed error, changing nothing, on a bad packet."""
        if not packet or len(packet) > DATAGRAM_MAX + 1:
            raise nerr.BadPacket(message=__debug__ and "empty or oversized packet")
        kind = packet[0]
        body = memoryview(packet)[1:]   # no copy of a datagram of up to 1.2 KB
        hs = self._hs
        if kind == KIND_DATA:
            if self.channel is None:
                return []  # early transport packet: drop, like a lost datagram
            msg = Message(self.channel.open(body))
            if self._repeat_of is not None:
                # the peer sends transport packets: its handshake is
                # complete and it will never repeat a handshake message,
                # so the answer kept for one goes (some 220 bytes)
                self._cached_reply = self._repeat_of = None
            return [msg]
        if kind == _KIND_UNKNOWN:
            if self.channel is not None and self.initiator and self._sent_tag(body):
                raise nerr.SessionUnknown(message=__debug__ and "the proxy has no session for our packets (it restarted?)")
            return []  # not about a packet of ours: forged or stale
        if kind not in (KIND_HS1, KIND_HS2, KIND_HS3):
            raise nerr.BadPacket(message=__debug__ and "unknown packet kind %d" % kind)
        if kind == KIND_HS1 and len(packet) < HS1_SIZE:
            raise nerr.BadPacket(message=__debug__ and "message 1 of %d bytes, shorter than its answer" % len(packet))
        if self.answers(packet):
            # the peer repeated itself: our answer was lost
            self._out.append(self._cached_reply)
            return []
        if hs is None or hs.complete or hs.is_my_turn() or kind != hs.messages + 1:
            return []  # stale or out-of-order handshake packet: ignore
        payload = hs.read_message(bytes(body))
        events = []
        if not hs.complete:
            reply = bytes((kind + 1,)) + hs.write_message(b"")
            # Neither side repeats this on a timer: message 2 goes again
            # when message 1 does, message 3 when message 2 does.
            self._emit(reply, now, False)
            self._cached_reply, self._repeat_of = reply, packet
        else:
            self._last = None
        if hs.complete:
            send, recv = hs.split()
            if self._cipher is not None:
                send, recv = self._cipher(send), self._cipher(recv)
            self.channel = DatagramChannel(send, recv, window=self._window)
            events.append(HandshakeComplete(hs.remote_static, hs.handshake_hash, payload))
            self._hs = None
        return events
