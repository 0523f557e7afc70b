"""Relay-free dissemination on the topic rings (PolderCast section 3.4,
after RingCast: Voulgaris, van Steen, "Hybrid Dissemination: Adding
Determinism to Probabilistic Multicasting in Large-Scale P2P Systems",
Middleware 2007).

Fanout F (default 2). A proxy that receives a topic's message for the
first time delivers it and forwards it:

- from one of its ring neighbours for the topic: to the nearest neighbour on
  the *opposite* side, plus F - 1 random subscribers of the topic;
- from any other proxy, or published locally: to its nearest successor and
  nearest predecessor, plus F - 2 random subscribers.

"Random subscribers" are peers of its VICINITY and CYCLON views that are
confirmed subscribers of the topic (rings.py), never the sender and never a
target already chosen. The ring part makes delivery complete once the rings
are right; the random part cuts the hop count to O(log n). A bounded
seen-set of message ids stops duplicates: a message seen before is counted
and dropped. Nothing is ever sent to a proxy not known to subscribe, and a
proxy refuses messages of topics it does not subscribe to.

Deviations from ocaml-p2p (which these tests pin): there, the side a message
came from was decided by comparing the sender's id with one's own (not
wrap-aware: the ring's largest and smallest ids are neighbours, and a
non-neighbour sender was taken for a ring neighbour), the random targets
came from the ring view only and could include the sender.

If the sender is a ring neighbour on one side but not the nearest one there
(rings still converging), the nearest on that side gets the message too: the
peers between the sender and this proxy would otherwise be skipped.
"""
from shared_protocol.wire import envelope
from shared_protocol.overlay import common, ids
from shared_protocol.overlay.common import OverlayConfigError, OverlayError, Outgoing

DEFAULT_FANOUT = 2
FANOUT_MAX = 8
# Message ids remembered: at one publication per second per topic on a
# proxy of 100 topics, 4096 ids cover 40 s, far longer than a message takes
# to cross the overlay (a few hops of a few ms).
DEFAULT_SEEN = 4096
SEEN_MAX = 65536
MSG_ID_MAX = 32
# A payload is one sealed session-layer message (the session's own limit
# is below this).
PAYLOAD_MAX = 8192
HOPS_MAX = 255

DATA = envelope.REGISTRY.add((102, "overlay_data", (
    "topic", envelope.BYTES, ids.ID_LEN,
    "msg_id", envelope.BYTES, MSG_ID_MAX,
    "sender", envelope.BYTES, ids.ID_LEN,
    "hops", envelope.UINT, HOPS_MAX,
    "payload", envelope.BYTES, PAYLOAD_MAX,
), 5))


class Delivery:
    """A message for this proxy's own subscribers."""

    __slots__ = ("topic", "msg_id", "payload", "hops")

    def __init__(self, topic, msg_id, payload, hops):
        self.topic = topic
        self.msg_id = msg_id
        self.payload = payload
        self.hops = hops

    def __repr__(self):
        return "<Delivery %s hops=%d>" % (self.msg_id.hex(), self.hops)


class SeenSet:
    """The last ``size`` message ids, FIFO (a set for lookups, a ring
    buffer for eviction that grows to ``size`` as ids arrive: a proxy that
    sees few messages does not hold ``size`` empty slots)."""

    def __init__(self, size):
        self.size = size
        self._set = set()
        self._ring = []
        self._next = 0

    def __contains__(self, mid):
        return mid in self._set

    def __len__(self):
        return len(self._set)

    def add(self, mid):
        ring = self._ring
        if len(ring) < self.size:
            ring.append(mid)
        else:
            self._set.discard(ring[self._next])
            ring[self._next] = mid
            self._next = (self._next + 1) % self.size
        self._set.add(mid)


def choose(rng, sender, succ, pred, pool, fanout):
    """The forwarding targets (ids) of one message.

    sender: the id it came from (None when published here); succ, pred: the
    topic's ring neighbours, nearest first; pool: ids of confirmed
    subscribers of the topic (PolderCast.random_pool), or a function that
    returns them, called only when random targets are needed (at F = 2,
    not for a message from off the ring)."""
    out = []
    s_side = succ.index(sender) if sender in succ else -1
    p_side = pred.index(sender) if sender in pred else -1
    if s_side >= 0 and (p_side < 0 or s_side <= p_side):
        # From the successor side: go on towards the predecessors.
        if pred and pred[0] != sender:
            out.append(pred[0])
        if s_side > 0 and succ[0] != sender and succ[0] not in out:
            out.append(succ[0])
        extra = fanout - 1
    elif p_side >= 0:
        if succ and succ[0] != sender:
            out.append(succ[0])
        if p_side > 0 and pred[0] != sender and pred[0] not in out:
            out.append(pred[0])
        extra = fanout - 1
    else:
        if succ and succ[0] != sender:
            out.append(succ[0])
        if pred and pred[0] != sender and pred[0] not in out:
            out.append(pred[0])
        extra = fanout - 2
    if extra > 0:
        if callable(pool):
            pool = pool()
        cands = [p for p in pool if p != sender and p not in out]
        out.extend(common.pick(rng, cands, extra))
    return out


class Disseminator:
    """Seen-set and counters of one proxy's dissemination."""

    def __init__(self, node_id, rng, fanout=DEFAULT_FANOUT, seen=DEFAULT_SEEN):
        if not (2 <= fanout <= FANOUT_MAX):
            raise OverlayConfigError(common.E_CONFIG, __debug__ and "fanout must be 2..%d" % FANOUT_MAX)
        if not (1 <= seen <= SEEN_MAX):
            raise OverlayConfigError(common.E_CONFIG, __debug__ and "seen-set size must be 1..%d" % SEEN_MAX)
        self.id = node_id
        self.rng = rng
        self.fanout = fanout
        self.seen = SeenSet(seen)
        self.duplicates = 0
        self.delivered = 0

    def check(self, values, subscribed):
        """Raise OverlayError unless a DATA message may be accepted. Pure."""
        topic, mid, sender, hops, payload = values
        if not common.check_id(topic) or not common.check_id(sender):
            raise OverlayError(common.E_ENTRY, __debug__ and "topic and sender ids are %d bytes" % ids.ID_LEN)
        if not mid:
            raise OverlayError(common.E_ENTRY, __debug__ and "a message id is 1..%d bytes" % MSG_ID_MAX)
        if sender == self.id:
            raise OverlayError(common.E_SELF, __debug__ and "a message that claims to come from this proxy")
        if not subscribed:
            # Relay-free: only subscribers carry a topic.
            raise OverlayError(common.E_NOT_SUBSCRIBED, __debug__ and "message of a topic this proxy does not subscribe to")

    def forward(self, topic, mid, sender, hops, payload, targets, addr_of):
        """Outgoing DATA to each target (ids); addr_of(id) -> address."""
        out = []
        if hops >= HOPS_MAX:
            return out
        for t in targets:
            out.append(Outgoing(t, addr_of(t), envelope.Message(DATA, [topic, mid, self.id, hops + 1, payload])))
        return out
