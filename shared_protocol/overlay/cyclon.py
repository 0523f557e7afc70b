"""CYCLON peer sampling, sans-I/O (Voulgaris, Gavidia, van Steen, "CYCLON:
Inexpensive Membership Management for Unstructured P2P Overlays", Journal of
Network and Systems Management 13(2), 2005).

Each node keeps a *view* (the paper's cache) of at most ``view_size`` (c)
entries: a peer id, the address to reach it, and an age. Once per period the
node runs the paper's enhanced shuffling:

1. increase the age of every entry by one;
2. select the oldest peer Q and ``shuffle_len - 1`` (l - 1) other random
   entries;
3. replace Q's entry with a fresh entry (age 0) for itself;
4. send that subset of l entries to Q;
5. receive from Q a subset of at most l of Q's entries;
6. discard entries pointing at itself and entries already in the view;
7. store the rest, first in empty slots, then in place of the entries it sent
   to Q.

Q answers with a random subset of at most l of its own entries (leaving out
P's, which P would discard) and merges what it received by the same rules
(its "sent" entries are those in the reply).

Q's entry stays in P's view while the exchange is pending: in the subset
sent it was replaced by P's own entry, so in step 7 Q's slot is the first
"sent" entry the reply replaces. A request that gets no answer within
``reply_timeout`` removes Q from the view: because the oldest entry is the
one contacted, entries of dead peers are found and dropped as they age
(the paper's self-healing argument). The exchange is then forgotten, and a
late reply is refused as belonging to no exchange.

The object never reads a clock or a random source: ``now`` (monotonic
milliseconds, compared through clock.py) and an ``Rng`` are passed in. It returns messages; the caller
sends them. Two levels of API:

- bytes: ``tick(now)`` -> Outgoing or None; ``receive(data, now)`` -> Outgoing
  or None; ``Outgoing.data()`` gives the datagram bytes;
- objects: ``handle(msg, now)`` takes an ``envelope.Message`` built by a peer's
  ``tick``/``handle`` (the simulator's path; the same decisions, no bytes).

Ages are kept as a per-node period counter and a stamp per entry (age = clock
- stamp), so step 1 is O(1) instead of a pass over the view; the ages on the
wire are exactly the paper's.
"""

from shared_protocol import clock
from shared_protocol.wire import envelope, framing
from shared_protocol.errors import LocalError, RemoteError, kind

try:
    from micropython import const
except ImportError:   # CPython (host and tests)
    def const(x):
        return x

# --- limits ---------------------------------------------------------------

# A peer id is a public key (32 bytes) or a shorter board id.
ID_MAX = const(32)
# An address is opaque to CYCLON (the transport's own encoding): IPv4 or IPv6
# plus port, a BLE MAC, or "host:port" text of a proxy; 64 bytes holds a
# 52-character DNS name with a port.
ADDR_MAX = 64
# Ages above this saturate: after 65535 periods without contact an entry is
# certainly the oldest in any view, so more precision tells nothing.
AGE_MAX = 0xFFFF
# Entries in one shuffle message. One entry of the largest size encodes in at
# most 1 + (2 + 32) + (2 + 64) + 3 = 104 bytes, and 10 of them plus the header
# (about 15 bytes) fit framing.DATAGRAM_MAX (1200) with room to spare, so a
# shuffle is never fragmented on WiFi or the core overlay's UDP.
SHUFFLE_LEN_MAX = const(10)
# View size limit: the paper's experiments use c up to 50; a proxy needs no
# more, and a board's view must stay a few KB.
VIEW_MAX = 50
# Requests in flight. A node sends one per period; a reply later than a few
# periods is useless, so older pending requests are dropped at this bound.
PENDING_MAX = 4

# --- defaults --------------------------------------------------------------

# Boards on one LAN or radio range: a handful to a few dozen nodes. c=8, l=4
# keeps the whole CYCLON state near 1.1 KB of heap and a shuffle (request and
# reply) under 200 bytes with 8-byte board ids (measured in the VM by
# tools/bench/bench_cyclon.py), and still gives each node 8 random contacts
# for gossip on a LAN of a few dozen boards.
BOARD_VIEW = 8
BOARD_SHUFFLE = 4
# Proxies in the core overlay: c=20, l=8, the setting whose overlay the
# simulator measures against random graphs at 1,000 and 10,000 nodes.
PROXY_VIEW = 20
PROXY_SHUFFLE = 8
# A reply must arrive within this many milliseconds, else the exchange is
# forgotten and the peer dropped. We plan shuffle periods of ~10 s on boards
# and ~5 s on proxies; 2 s covers a WiFi round trip with retries and is still
# well inside one period.
DEFAULT_REPLY_TIMEOUT_MS = 2000

# --- wire messages (block "cyclon", 16..31) --------------------------------

# An entry on the wire is the array [peer_id, addr, age].
SHUFFLE = envelope.REGISTRY.add((16, "cyclon_shuffle", (
    "nonce", "uint", 0xFFFFFFFF,           # matches the reply to the request
    "entries", "list", SHUFFLE_LEN_MAX,    # entries[0] is the sender, age 0
), 2))
REPLY = envelope.REGISTRY.add((17, "cyclon_reply", (
    "nonce", "uint", 0xFFFFFFFF,
    "sender", "bytes", ID_MAX,             # who answers (must be the peer asked)
    "entries", "list", SHUFFLE_LEN_MAX,
), 3))

# --- errors ----------------------------------------------------------------

E_ENTRY = "bad_entry"          # an entry is not [id, addr, age] within limits
E_EMPTY = "empty_shuffle"      # a request without the sender's own entry
E_SELF = "from_self"           # a request that claims to come from this node
E_UNKNOWN = "unknown_exchange"  # a reply to no pending request (or a late one)
E_WRONG_PEER = "wrong_peer"    # a reply from another peer than the one asked
E_NOT_CYCLON = "not_cyclon"    # a valid envelope of another protocol
E_CONFIG = "config"            # bad constructor argument or API use


# Name, base, code (a line each; made on first use, see
# shared_protocol.errors.kind; this module raises them through _error, others
# name them through the module, e.g. cyclon.CyclonError):
# - CyclonError: a shuffle message from outside was refused; the view did
#   not change.
# - CyclonConfigError: the caller configured or used the CYCLON object wrongly.
KINDS = """
CyclonError RemoteError cyclon
CyclonConfigError LocalError cyclon_config
"""
# The kinds made so far (shared_protocol.errors.kind), under their names,
# and the module name they carry.
_MADE = {"__name__": __name__}


def _error(name):
    return _MADE.get(name) or kind(name, KINDS, _MADE)


__getattr__ = _error


def check_entries(entries, least):
    """Raise CyclonError unless entries is a list of valid [id, addr, age].

    Pure: looks, never changes anything. ``least``: minimum count.
    """
    if type(entries) is not list:
        raise _error("CyclonError")(E_ENTRY, __debug__ and "entries must be an array")
    n = len(entries)
    if n < least:
        raise _error("CyclonError")(E_EMPTY, __debug__ and "a shuffle request must carry the sender's own entry")
    if n > SHUFFLE_LEN_MAX:
        raise _error("CyclonError")(E_ENTRY, __debug__ and "%d entries, limit %d" % (n, SHUFFLE_LEN_MAX))
    for e in entries:
        if type(e) is not list or len(e) != 3:
            raise _error("CyclonError")(E_ENTRY, __debug__ and "an entry must be [peer_id, addr, age]")
        i, a, g = e
        # One combined test on the hot path; the detail only when it fails.
        if (type(i) is not bytes or type(a) is not bytes or type(g) is not int
                or not 0 < len(i) <= ID_MAX or len(a) > ADDR_MAX or not 0 <= g <= AGE_MAX):
            if type(i) is not bytes or not (0 < len(i) <= ID_MAX):
                raise _error("CyclonError")(E_ENTRY, __debug__ and "peer id must be 1..%d bytes" % ID_MAX)
            if type(a) is not bytes or len(a) > ADDR_MAX:
                raise _error("CyclonError")(E_ENTRY, __debug__ and "address must be at most %d bytes" % ADDR_MAX)
            raise _error("CyclonError")(E_ENTRY, __debug__ and "age must be 0..%d" % AGE_MAX)


def _pick(rng, pool, k):
    """k distinct items of the list ``pool`` (shuffled in place), uniformly.

    Partial Fisher-Yates. Each draw takes 16 bits of one 64-bit output with
    rejection (exactly uniform for pools under 65536), so a shuffle costs one
    or two generator steps instead of one per pick.
    """
    bits = 0
    nbits = 0
    n = len(pool)
    for i in range(k):
        m = n - i
        lim = 65536 - 65536 % m
        while True:
            if nbits < 16:
                bits = rng.next64()
                nbits = 64
            r = bits & 0xFFFF
            bits >>= 16
            nbits -= 16
            if r < lim:
                break
        j = i + r % m
        pool[i], pool[j] = pool[j], pool[i]
    return pool[:k]


class Outgoing:
    """A message to send to one peer: ``peer_id``, ``addr``, ``message``."""

    __slots__ = ("peer_id", "addr", "message")

    def __init__(self, peer_id, addr, message):
        self.peer_id = peer_id
        self.addr = addr
        self.message = message

    def data(self):
        """The datagram bytes (the wire envelope)."""
        return framing.datagram(envelope.REGISTRY.encode_message(self.message))

    def __repr__(self):
        return "<Outgoing %s to %r>" % (self.message.name, self.peer_id)


class Cyclon:
    """One node's CYCLON state: its view and its exchanges in flight."""

    def __init__(self, node_id, addr, rng, view_size=PROXY_VIEW, shuffle_len=PROXY_SHUFFLE,
                 reply_timeout=DEFAULT_REPLY_TIMEOUT_MS):
        if type(node_id) is not bytes or not (0 < len(node_id) <= ID_MAX):
            raise _error("CyclonConfigError")(E_CONFIG, __debug__ and "node id must be 1..%d bytes" % ID_MAX)
        if type(addr) is not bytes or len(addr) > ADDR_MAX:
            raise _error("CyclonConfigError")(E_CONFIG, __debug__ and "address must be at most %d bytes" % ADDR_MAX)
        if not (1 <= view_size <= VIEW_MAX):
            raise _error("CyclonConfigError")(E_CONFIG, __debug__ and "view size must be 1..%d" % VIEW_MAX)
        if not (1 <= shuffle_len <= SHUFFLE_LEN_MAX) or shuffle_len > view_size:
            raise _error("CyclonConfigError")(E_CONFIG, __debug__ and "shuffle length must be 1..min(view size, %d)" % SHUFFLE_LEN_MAX)
        if not 0 < reply_timeout <= clock.SPAN_MAX:
            raise _error("CyclonConfigError")(E_CONFIG, __debug__ and "reply timeout must be 1..%d ms" % clock.SPAN_MAX)
        self.id = node_id
        self.addr = addr
        self.rng = rng
        self.view_size = view_size
        self.shuffle_len = shuffle_len
        self.reply_timeout = reply_timeout
        # The view as three parallel lists, one slot per index: linear scans
        # over at most 50 slots are cheap, use little heap on a board, and
        # keep the same order on MicroPython (whose dicts are unordered) as on
        # CPython, so a seeded run is identical on both.
        self._ids = []
        self._addrs = []
        self._stamps = []   # clock value at which the entry had age 0
        self._clock = 0     # periods elapsed (step 1 ages every entry by one)
        # Exchanges in flight, oldest first:
        # [nonce, peer_id, sent_slots, sent_ids, deadline].
        self._pending = []

    # --- reading the view ------------------------------------------------

    @property
    def ids(self):
        """Peer ids in the view, slot order. Read only: do not mutate."""
        return self._ids

    def __len__(self):
        return len(self._ids)

    def __contains__(self, peer_id):
        return peer_id in self._ids

    def entries(self):
        """A copy of the view: list of (peer_id, addr, age)."""
        c = self._clock
        return [(self._ids[i], self._addrs[i], c - self._stamps[i]) for i in range(len(self._ids))]

    def pending(self):
        """Number of exchanges in flight."""
        return len(self._pending)

    # --- bootstrap -------------------------------------------------------

    def add_seed(self, peer_id, addr):
        """Put a known peer (configured seed, invite, core proxy) in the view.

        Fills an empty slot only: a full view is already a random sample and
        a seed must not bias it. Returns True if added.
        """
        if type(peer_id) is not bytes or not (0 < len(peer_id) <= ID_MAX):
            raise _error("CyclonConfigError")(E_CONFIG, __debug__ and "peer id must be 1..%d bytes" % ID_MAX)
        if type(addr) is not bytes or len(addr) > ADDR_MAX:
            raise _error("CyclonConfigError")(E_CONFIG, __debug__ and "address must be at most %d bytes" % ADDR_MAX)
        if peer_id == self.id or peer_id in self._ids or len(self._ids) >= self.view_size:
            return False
        self._ids.append(peer_id)
        self._addrs.append(addr)
        self._stamps.append(self._clock)
        return True

    def heard(self, peer_id, addr):
        """A peer announced itself on the LAN (multicast, BLE advertisement).

        Same rule as a seed; if the peer is already in the view, its address
        is refreshed (a board that rejoined WiFi may have a new IP). Returns
        True if the view changed.
        """
        if peer_id != self.id and type(addr) is bytes and len(addr) <= ADDR_MAX:
            ids = self._ids
            if peer_id in ids:
                i = ids.index(peer_id)
                if self._addrs[i] != addr:
                    self._addrs[i] = addr
                    return True
                return False
        return self.add_seed(peer_id, addr)

    def remove(self, peer_id):
        """Drop a peer the transport knows is gone (link down, bad auth)."""
        ids = self._ids
        if peer_id in ids:
            self._drop(ids.index(peer_id))
            return True
        return False

    # --- the protocol ----------------------------------------------------

    def tick(self, now):
        """Start this period's shuffle (steps 1-4). Returns Outgoing or None."""
        self.expire(now)
        self._clock += 1
        ids = self._ids
        stamps = self._stamps
        period = self._clock
        pending = self._pending
        if len(pending) >= PENDING_MAX:
            self._forget(0)     # before choosing slots: it may drop one
        n = len(ids)
        if n == 0:
            return None     # isolated: needs a seed or a peer heard on the LAN
        oldest = min(stamps)
        if period - oldest > AGE_MAX:
            # Keeps every age within AGE_MAX until the next tick (merges
            # only add ages already checked), so replies need no check.
            self._clamp_ages()
            oldest = min(stamps)
        # Step 2: the oldest entry (smallest stamp; the first slot on ties),
        # not counting a peer we are still waiting for.
        if pending:
            q = self._oldest_idle()
            if q < 0:
                return None
        else:
            q = stamps.index(oldest)
        q_id = ids[q]
        k = self.shuffle_len - 1
        if k > n - 1:
            k = n - 1
        if k:
            pool = list(range(n))
            pool[q] = n - 1
            pool.pop()
            picks = _pick(self.rng, pool, k)
        else:
            picks = []
        addrs = self._addrs
        # Step 3: Q's entry is replaced, in the subset sent, by our own fresh
        # entry. Q stays in the view until the reply (its slot is the first
        # the reply replaces) or the timeout (then it is removed).
        entries = [[ids[j], addrs[j], period - stamps[j]] for j in picks]
        entries.insert(0, [self.id, self.addr, 0])
        nonce = self.rng.next64() & 0xFFFFFFFF
        # The sent entries as slots and ids: the slot is checked first when
        # the reply comes (O(1)); the id is the truth if the slot changed.
        picks.insert(0, q)
        pending.append([nonce, q_id, picks, [ids[j] for j in picks], clock.add(now, self.reply_timeout)])
        return Outgoing(q_id, addrs[q], envelope.Message(SHUFFLE, [nonce, entries]))

    def _oldest_idle(self):
        busy = [ex[1] for ex in self._pending]
        ids = self._ids
        stamps = self._stamps
        best = -1
        for i in range(len(ids)):
            if ids[i] not in busy and (best < 0 or stamps[i] < stamps[best]):
                best = i
        return best

    def receive(self, data, now):
        """Bytes of a datagram from a peer -> Outgoing (a reply) or None.

        Raises framing.FrameError, cbor.DecodeError, envelope.EnvelopeError
        or CyclonError; after any of them the view is as before.
        """
        framing.check_datagram(data)
        return self.handle(envelope.REGISTRY.decode(data), now)

    def handle(self, msg, now):
        """A decoded message -> Outgoing (a reply to a request) or None."""
        t = msg.type
        if t is SHUFFLE:
            return self._on_request(msg.values, now)
        if t is REPLY:
            self._on_reply(msg.values, now)
            return None
        raise _error("CyclonError")(E_NOT_CYCLON, __debug__ and "message %s is not for CYCLON" % t[1])

    def _on_request(self, values, now):
        nonce, entries = values
        check_entries(entries, 1)
        p_id = entries[0][0]
        if p_id == self.id:
            raise _error("CyclonError")(E_SELF, __debug__ and "a shuffle request carries this node's own id as sender")
        self.expire(now)
        ids = self._ids
        addrs = self._addrs
        stamps = self._stamps
        period = self._clock
        n = len(ids)
        # Answer with up to l random entries, not counting the requester's
        # own (it would discard it at step 6 anyway).
        if p_id in ids:
            p = ids.index(p_id)
            pool = list(range(n))
            pool[p] = n - 1
            pool.pop()
        else:
            pool = list(range(n))
        k = self.shuffle_len
        if k > len(pool):
            k = len(pool)
        picks = _pick(self.rng, pool, k) if k else []
        reply = [[ids[j], addrs[j], period - stamps[j]] for j in picks]
        sent = [ids[j] for j in picks]
        self._merge(entries, picks, sent)
        return Outgoing(p_id, entries[0][1], envelope.Message(REPLY, [nonce, self.id, reply]))

    def _on_reply(self, values, now):
        nonce, sender, entries = values
        check_entries(entries, 0)
        self.expire(now)
        pending = self._pending
        for i in range(len(pending)):
            ex = pending[i]
            if ex[0] == nonce:
                if ex[1] != sender:
                    raise _error("CyclonError")(E_WRONG_PEER, __debug__ and "reply for an exchange with another peer")
                pending.pop(i)
                self._merge(entries, ex[2], ex[3])
                return
        raise _error("CyclonError")(E_UNKNOWN, __debug__ and "reply to no pending shuffle (unknown, or later than the timeout)")

    def _merge(self, received, slots, sent):
        """Steps 6-7: skip self and known ids; fill empty slots; then replace
        the entries sent to the peer (in the order sent), while any is left.

        slots[i] is where sent[i] was when it was sent; an exchange in
        between may have moved or replaced it, so the id is checked.
        """
        ids = self._ids
        addrs = self._addrs
        stamps = self._stamps
        me = self.id
        c = self.view_size
        period = self._clock
        s = 0
        ns = len(sent)
        n = len(ids)
        for e in received:
            pid = e[0]
            if pid == me or pid in ids:
                continue
            if n < c:
                ids.append(pid)
                addrs.append(e[1])
                stamps.append(period - e[2])
                n += 1
                continue
            while s < ns:
                slot = slots[s]
                sid = sent[s]
                s += 1
                if slot < n and ids[slot] == sid:
                    break
                if sid in ids:
                    slot = ids.index(sid)
                    break
            else:
                return      # nothing left to replace: the rest is dropped
            ids[slot] = pid
            addrs[slot] = e[1]
            stamps[slot] = period - e[2]

    def _clamp_ages(self):
        # Rare: an entry older than the wire can say. Saturate (see AGE_MAX).
        floor = self._clock - AGE_MAX
        st = self._stamps
        for i in range(len(st)):
            if st[i] < floor:
                st[i] = floor

    def _drop(self, i):
        # Move the last slot into i: O(1), order stays deterministic.
        ids = self._ids
        last = len(ids) - 1
        if i != last:
            ids[i] = ids[last]
            self._addrs[i] = self._addrs[last]
            self._stamps[i] = self._stamps[last]
        ids.pop()
        self._addrs.pop()
        self._stamps.pop()

    def expire(self, now):
        """Forget exchanges past their deadline, removing their peers.

        tick() and receive() do this themselves; call it from a timer to
        clean up between periods (and before reading the view)."""
        if self._pending and clock.due(now, self._pending[0][4]):
            self._expire(now)

    def _expire(self, now):
        pending = self._pending
        while pending and clock.due(now, pending[0][4]):
            self._forget(0)

    def _forget(self, i):
        # An exchange that got no answer in time: the peer is presumed dead
        # and leaves the view (the paper's self-healing: dead links go when
        # they become the oldest and are contacted).
        ex = self._pending.pop(i)
        ids = self._ids
        if ex[1] in ids:
            self._drop(ids.index(ex[1]))
