"""One GATT connection as a reliable message link, sans-I/O.

A BLE GATT connection gives each side one way to send: the peripheral
notifies a characteristic, the central writes one. Each ATT packet carries
at most ATT_MTU - 3 bytes of value (Bluetooth Core 5.3, Vol 3 Part F
§3.4.7.1 Handle Value Notification: opcode 1 + handle 2 bytes; the MTU is 23
until an Exchange MTU, §3.2.8). The link layer retransmits what the radio
loses, but notifications are dropped above it: by the sender's stack when
its buffers are full (NimBLE's gatts_notify fails with ENOMEM), by a client
that keeps only the latest value (aioble), and with everything in flight
when the connection drops. So this layer assumes nothing beyond "a packet
arrives whole or not at all" and makes messages of up to MESSAGE_MAX bytes
arrive whole, in order, once.

Fragments (the value of one notification or write):

    DATA  [1, seq, idx, last] + chunk     fragment idx of 0..last of message seq
    ACK   [2, credit, seq...]             messages seq... are complete here;
                                          credit: messages the sender may
                                          have in flight towards us

- seq counts messages modulo 256. The sender keeps at most
  min(its window, the peer's credit) messages unacknowledged; the receiver
  holds that many reassembly slots, each bounded by MESSAGE_MAX bytes, and
  delivers messages in seq order.
- A message is acknowledged once all its fragments are here (even if an
  earlier one is still missing); an ack for a message already delivered is
  sent again, since the first may have been lost: duplicates are dropped
  and re-acknowledged.
- Retransmission is per message and whole: after a timeout the sender sends
  all fragments of an unacknowledged message again, with the chunk size it
  first used (the MTU only grows within a connection). The receiver keeps
  the fragments it already has, so each round fills the gaps. Loss above the
  link layer comes in bursts (a full buffer), rarely as scattered packets:
  a selective repeat would cost a larger ack for little gain.
- After RETRIES_MAX timeouts of one message, or BAD_FRAGMENTS_MAX malformed
  fragments, the link fails (sticky, ``failed`` holds the code) and the
  runner disconnects: a peer that never acknowledges holds at most the
  window and the queue.

Nothing here reads a clock: ``now`` is ms, tick arithmetic through clock.py.
"""
from shared_protocol import clock
from shared_protocol.ble.errors import BleLocalError, BleRemoteError

try:
    from micropython import const
except ImportError:   # CPython
    def const(x):
        return x

# -- limits ------------------------------------------------------------------
# The default ATT_MTU of LE (Core 5.3 Vol 3 Part F §3.2.8): what every peer
# speaks before an MTU exchange, and what BlueZ reports until one.
ATT_MTU_MIN = const(23)
# Largest ATT_MTU: an attribute value is at most 512 bytes (Vol 3 Part F
# §3.2.9) plus the 5-byte header of the largest PDU that carries one.
ATT_MTU_MAX = const(517)
# opcode + attribute handle in front of a notified or written value.
ATT_HEADER = const(3)
# Our header in front of a chunk: kind, seq, idx, last.
HEADER = const(4)
# Largest message: a Noise packet (kind byte + noise.datagram.DATAGRAM_MAX
# 1232) and a sealed LAN datagram (~1,260 bytes, overlay/lan.py) fit.
MESSAGE_MAX = const(1280)
# idx and last are one byte: at MTU 23 a MESSAGE_MAX message is 80 fragments.
FRAGMENTS_MAX = const(256)
# Messages in flight per direction (sender) and reassembly slots (receiver).
# Each slot holds up to MESSAGE_MAX bytes, so 4 bound a link's receive side
# at ~5 KB; a board passes 2.
WINDOW_MAX = const(4)
# Credit assumed before the peer's first ack: every implementation holds
# at least this many slots.
_WINDOW_MIN = const(2)
# Messages queued by send() beyond the window; past this send() refuses
# (BleLocalError "ble_queue_full") and the caller keeps or drops them.
QUEUE_MAX = const(8)
# Acks waiting to go out (one per completed or duplicate message).
_ACKS_MAX = const(8)
# Retransmission timeout: a base, plus an allowance per fragment for the
# radio to drain them (at a 30 ms connection interval and ~4 packets per
# event, 80 fragments take ~600 ms), doubled per retry up to RTO_MAX_MS.
_RTO_BASE_MS = const(400)
_RTO_PER_FRAGMENT_MS = const(10)
RTO_MAX_MS = const(8000)
RETRIES_MAX = const(6)
# Malformed fragments tolerated before the link fails: a peer sending
# garbage is cut off, a stray bad packet is not fatal.
BAD_FRAGMENTS_MAX = const(16)

KIND_DATA = const(1)
_KIND_ACK = const(2)
_SEQ_MOD = const(256)


def payload_max(mtu):
    """Bytes of value one notification or write carries at this ATT_MTU."""
    return mtu - ATT_HEADER


class _Out:
    """A message in flight: its bytes, seq and retransmission state."""
    __slots__ = ("seq", "data", "chunk", "last", "due", "tries")

    def __init__(self, seq, data, chunk):
        self.seq = seq
        self.data = data
        self.chunk = chunk
        n = (len(data) + chunk - 1) // chunk
        self.last = n - 1 if n else 0
        self.due = None     # set once the last fragment is handed out
        self.tries = 0


class _Slot:
    """A message being reassembled: its fragments by index."""
    __slots__ = ("last", "parts", "missing", "size")

    def __init__(self, last):
        self.last = last
        self.parts = [None] * (last + 1)
        self.missing = last + 1
        self.size = 0


class BleLink:
    def __init__(self, window=WINDOW_MAX, mtu=ATT_MTU_MIN, queue=QUEUE_MAX):
        """window: messages in flight and reassembly slots (a board: 2);
        queue: messages send() holds beyond the window (a board: 2)."""
        if not _WINDOW_MIN <= window <= WINDOW_MAX or not 0 <= queue <= QUEUE_MAX:
            raise BleLocalError("ble_window", __debug__ and "window must be %d..%d, queue 0..%d" % (_WINDOW_MIN, WINDOW_MAX, QUEUE_MAX))
        self.window = window
        self.queue_max = queue
        self.mtu = ATT_MTU_MIN
        self.set_mtu(mtu)
        self.failed = None        # a code once the link has failed
        # sender
        self._next = 0            # seq of the next message sent
        self._flight = []         # [_Out], oldest first, at most the window
        self._queue = []          # bytes waiting for room in the window
        self._tx = []             # [[_Out, next idx]]: fragments to hand out
        self._credit = _WINDOW_MIN
        # receiver
        self._expected = 0        # seq of the next message delivered
        self._slots = {}          # seq -> _Slot (complete ones wait for their turn)
        self._done = {}           # seq -> message, complete, not yet delivered
        self._acks = []
        self._inbox = []
        # counters (status, tests, benchmarks)
        self.bad = 0
        self.retransmits = 0
        self.duplicates = 0
        self.fragments_sent = 0
        self.fragments_received = 0

    # -- configuration ---------------------------------------------------

    def set_mtu(self, mtu):
        """The ATT_MTU negotiated for this connection (_IRQ_MTU_EXCHANGED)."""
        if not isinstance(mtu, int) or mtu < self.mtu or mtu > ATT_MTU_MAX:
            raise BleLocalError("ble_mtu", __debug__ and "ATT_MTU %r: must be %d..%d and never shrink"
                                % (mtu, self.mtu, ATT_MTU_MAX))
        self.mtu = mtu

    # -- sending ------------------------------------------------------------

    def send(self, data, now):
        """Queue one message. Raises BleLocalError: too long, queue full,
        link failed."""
        if self.failed is not None:
            raise BleLocalError("ble_failed", __debug__ and "the link failed (%s): reconnect" % self.failed)
        if not data or len(data) > MESSAGE_MAX:
            raise BleLocalError("ble_message_length", __debug__ and "a message is 1..%d bytes, not %d" % (MESSAGE_MAX, len(data)))
        self._admit(now)
        if len(self._queue) >= self.queue_max and not self._room():
            raise BleLocalError("ble_queue_full", __debug__ and "%d messages wait for the peer's acks" % len(self._queue))
        self._queue.append(bytes(data))
        self._admit(now)

    def can_send(self):
        return self.failed is None and (len(self._queue) < self.queue_max or self._room())

    def _room(self):
        room = min(self.window, self._credit)
        base = self._flight[0].seq if self._flight else self._next
        return not self._queue and (self._next - base) % _SEQ_MOD < room

    def in_flight(self):
        return len(self._flight) + len(self._queue)

    def _admit(self, now):
        # Seqs stay within room of the oldest unacknowledged one (not just
        # room messages in flight): the receiver's window starts at the
        # oldest message it has not delivered, which is never later.
        room = min(self.window, self._credit)
        base = self._flight[0].seq if self._flight else self._next
        while self._queue and (self._next - base) % _SEQ_MOD < room:
            chunk = payload_max(self.mtu) - HEADER
            o = _Out(self._next, self._queue.pop(0), chunk)
            self._next = (self._next + 1) % _SEQ_MOD
            self._flight.append(o)
            self._tx.append([o, 0])

    def fragments_to_send(self, limit=FRAGMENTS_MAX, now=None):
        """Up to ``limit`` fragments to write or notify, acks first. A
        fragment the radio refuses is simply lost: retransmission covers it.
        ``now`` starts the retransmission timer of messages fully handed out."""
        out = []
        if self._acks and limit > 0:
            n = min(len(self._acks), payload_max(self.mtu) - 2)
            out.append(bytes([_KIND_ACK, self.window]) + bytes(self._acks[:n]))
            del self._acks[:n]
        tx = self._tx
        while tx and len(out) < limit:
            ent = tx[0]
            o, i = ent
            c = o.chunk
            out.append(bytes([KIND_DATA, o.seq, i, o.last]) + o.data[i * c:(i + 1) * c])
            self.fragments_sent += 1
            if i >= o.last:
                tx.pop(0)
                if now is not None:
                    o.due = clock.add(now, self._rto(o))
            else:
                ent[1] = i + 1
        return out

    def _rto(self, o):
        rto = _RTO_BASE_MS + (o.last + 1) * _RTO_PER_FRAGMENT_MS
        for _ in range(o.tries):
            rto *= 2
            if rto >= RTO_MAX_MS:
                return RTO_MAX_MS
        return rto

    def poll(self, now):
        """Retransmit what timed out; fail the link after RETRIES_MAX."""
        if self.failed is not None:
            return
        for o in self._flight:
            if o.due is None or not clock.due(now, o.due):
                continue
            if o.tries >= RETRIES_MAX:
                self._fail("ble_no_ack")
                return
            o.tries += 1
            o.due = None
            self.retransmits += 1
            for ent in self._tx:
                if ent[0] is o:
                    ent[1] = 0
                    break
            else:
                self._tx.append([o, 0])

    def next_deadline(self):
        d = None
        if self.failed is None:
            for o in self._flight:
                if o.due is not None:
                    d = clock.earliest(d, o.due)
        return d

    def _fail(self, code):
        self.failed = code
        self._queue = []
        self._flight = []
        self._tx = []
        self._slots = {}
        self._done = {}

    # -- receiving ----------------------------------------------------------

    def receive(self, frag, now):
        """One notification or write value from the peer. Raises
        BleRemoteError for a malformed fragment (dropped; the link fails
        after BAD_FRAGMENTS_MAX of them)."""
        if self.failed is not None:
            return
        self.fragments_received += 1
        try:
            self._receive(frag, now)
        except BleRemoteError:
            self.bad += 1
            if self.bad >= BAD_FRAGMENTS_MAX:
                self._fail("ble_bad_fragments")
            raise

    def _receive(self, frag, now):
        n = len(frag)
        if n > payload_max(self.mtu):
            raise BleRemoteError("ble_fragment_too_long", __debug__ and "%d bytes at ATT_MTU %d" % (n, self.mtu))
        if n < 2:
            raise BleRemoteError("ble_fragment_truncated", __debug__ and "%d bytes" % n)
        kind = frag[0]
        if kind == _KIND_ACK:
            self._on_ack(frag, now)
            return
        if kind != KIND_DATA:
            raise BleRemoteError("ble_fragment_kind", __debug__ and "kind %d" % kind)
        if n <= HEADER:
            raise BleRemoteError("ble_fragment_truncated", __debug__ and "%d bytes" % n)
        seq = frag[1]
        idx = frag[2]
        last = frag[3]
        if idx > last:
            raise BleRemoteError("ble_fragment_index", __debug__ and "fragment %d of 0..%d" % (idx, last))
        ahead = (seq - self._expected) % _SEQ_MOD
        if ahead >= self.window:
            if ahead >= _SEQ_MOD - WINDOW_MAX:   # delivered already: our ack was lost
                self.duplicates += 1
                self._ack(seq)
                return
            raise BleRemoteError("ble_seq_window", __debug__ and "message %d outside the window at %d" % (seq, self._expected))
        if seq in self._done:
            self.duplicates += 1
            self._ack(seq)
            return
        slot = self._slots.get(seq)
        if slot is None:
            slot = self._slots[seq] = _Slot(last)
        elif slot.last != last:
            raise BleRemoteError("ble_fragment_mismatch", __debug__ and "message %d has %d or %d fragments" % (
                seq, slot.last + 1, last + 1))
        if slot.parts[idx] is not None:
            self.duplicates += 1
            return
        chunk = bytes(frag[HEADER:])
        if slot.size + len(chunk) > MESSAGE_MAX:
            del self._slots[seq]
            raise BleRemoteError("ble_message_too_long", __debug__ and "message %d passes %d bytes" % (seq, MESSAGE_MAX))
        slot.parts[idx] = chunk
        slot.size += len(chunk)
        slot.missing -= 1
        if slot.missing:
            return
        del self._slots[seq]
        self._done[seq] = b"".join(slot.parts)
        self._ack(seq)
        while self._expected in self._done:
            self._inbox.append(self._done.pop(self._expected))
            self._expected = (self._expected + 1) % _SEQ_MOD

    def _ack(self, seq):
        if seq in self._acks:
            return
        if len(self._acks) >= _ACKS_MAX:
            self._acks.pop(0)   # the peer retransmits and we ack again
        self._acks.append(seq)

    def _on_ack(self, frag, now):
        credit = frag[1]
        if credit < 1 or credit > WINDOW_MAX:
            raise BleRemoteError("ble_credit", __debug__ and "credit %d" % credit)
        self._credit = credit
        for i in range(2, len(frag)):
            seq = frag[i]
            for k in range(len(self._flight)):
                o = self._flight[k]
                if o.seq == seq:
                    self._flight.pop(k)
                    for j in range(len(self._tx)):
                        if self._tx[j][0] is o:
                            self._tx.pop(j)
                            break
                    break
        self._admit(now)

    def messages(self):
        """Messages received complete, in order, each once."""
        m = self._inbox
        if m:
            self._inbox = []
        return m

    def held(self):
        """Bytes held for reassembly and queued for sending (tests: bounded)."""
        n = 0
        for s in self._slots.values():
            n += s.size
        for m in self._done.values():
            n += len(m)
        for o in self._flight:
            n += len(o.data)
        for m in self._queue:
            n += len(m)
        return n
