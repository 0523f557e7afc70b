"""PolderCast's Rings module, sans-I/O (Setty, van Steen, Vitenberg,
Voulgaris, "PolderCast: Fast, Robust, and Scalable Architecture for P2P
Topic-based Pub/Sub", Middleware 2012, section 3.3), with T-Man's rule for
what an exchange carries (Jelasity, Montresor, Babaoglu, "T-Man:
Gossip-based fast overlay topology construction", Computer Networks 2009).

For every topic it subscribes, a proxy keeps its 2 nearest successors and 2
nearest predecessors among the topic's subscribers, ordered by proxy id on a
ring that wraps: the successor of the largest id is the smallest
(ids.cw/ccw). They are the nearest, on each side, of the topic's *known*
subscribers: up to KNOWN_MAX confirmed subscribers anywhere on the ring,
sorted by ring position, the nearest KEEP per side always kept and the rest
the most recently heard of.

Once per period a proxy runs one exchange with one peer covering every
topic the two share: each side names, for each shared topic, itself and the
KEEP known subscribers nearest to *the other side* on each side of it, and
each remembers what it got. Topics with empty ring slots (*needy*) go first
in a message. The partner, in this order: a VICINITY or CYCLON peer that
gives a topic its first neighbour; one period in REFRESH_EVERY the peer
that would improve the most of this proxy's rings (it subscribes, by its
filter or by what it said before, and its id falls nearer than a current
neighbour); a ring neighbour known only from others (it learns of us and
we of its side of the ring); the oldest ring neighbour (liveness: a silent
one is dropped from every ring after ``reply_timeout``, like CYCLON's
oldest). On top of that, up to INTRODUCE_MAX nearest neighbours known only
from others are contacted in the same period (``introduce``): a newcomer
gets no message until its neighbours have heard of it.

Exact topics are named only here, and only for topics the peer's Bloom
filter (or its earlier messages) say it has. A peer that names a topic (or
is named as a subscriber of it by a peer that did) is *confirmed* for it:
dissemination sends a topic's messages only to confirmed subscribers,
never on the strength of a filter, whose false positives would break
relay-freedom.

Entries age by one per period; a ring neighbour older than ``max_age`` is
dropped (a live one is refreshed far sooner: it and its own neighbours talk
to this proxy every few periods), and an older known subscriber is no
longer passed on.
"""
from shared_protocol.wire import envelope
from shared_protocol.overlay import common, ids
from shared_protocol.overlay.common import OverlayConfigError, OverlayError, Outgoing
from shared_protocol.overlay.profile import topic_mask

from shared_protocol.overlay.ringview import KEEP, SIDE, RingView, bisect

try:
    from micropython import const
except ImportError:   # CPython (host and tests)
    def const(x):
        return x

# Topics in one exchange: needy ones first. 16 x (topic + 8 entries of at
# most 79 bytes) stays under common.OVERLAY_FRAME_MAX; a proxy with more
# shared topics covers the rest in later periods.
RING_TOPICS_MAX = 16
# One exchange from tick(), INTRODUCE_MAX introductions, one verification,
# one slot free (introduce, verify).
PENDING_MAX = 6
# Peers remembered as having named, in one exchange with us, every topic we
# share (so their filter's false positives are not asked again): the ring
# neighbours of a proxy's topics and its VICINITY and CYCLON views.
_DIRECT_MAX = const(256)
# Discovery partners asked recently, skipped for a while so one bad match
# (a filter false positive) is not asked every other period.
_RECENT_MAX = const(16)
# A neighbour's entry is dropped past this age. Dead neighbours normally go
# sooner: the oldest is contacted and a silent one removed, and the transport
# reports links that fail (``remove``). Live ones are refreshed by every
# exchange with them or with a common neighbour, far more often than this.
DEFAULT_MAX_AGE = 30
# One period in this many the exchange goes to the discovery peer, the
# others to a neighbour known only from others or the oldest neighbour.
_REFRESH_EVERY = const(2)
# A peer that gives a topic its first ring neighbour counts as this many
# improvements: from one neighbour the rest of the ring follows through
# Rings exchanges, while a topic without any waits on VICINITY.
_ORPHAN_GAIN = const(4)
# Introductions per period on top of the period's exchange (introduce):
# a proxy that just joined has 2 per topic to make.
INTRODUCE_MAX = 3
# A ring neighbour not heard of (directly or through a common neighbour)
# for this many periods is contacted at once (probe), on top of the
# period's exchange: a live one is refreshed every 1-3 periods (95% of them
# are younger than this at N = 600 under 1% churn), while under churn the
# period's own exchange nearly always goes to discovery or to a neighbour
# known only from others, so the oldest (a crashed one) waited up to 20
# periods for its turn.
STALE_AGE = 5
# Peers removed as dead, remembered so that a neighbour's stale entry for
# them is not taken back (until they speak to us themselves).
_DEAD_MAX = const(64)
# A topic with at most this many known subscribers is small enough that
# a complete ring of it may be only a part of its subscribers, and its
# member whose successor wraps stays needy for it (``wraps``): 2 * KEEP,
# what one exchange names per side. A larger part is found by VICINITY's
# own ranking (its members share a topic with many proxies), and every
# topic of up to 9 subscribers costs one needy proxy per part.
RARE_KNOWN_MAX = 2 * KEEP
DEFAULT_REPLY_TIMEOUT_MS = 2000

# --- wire messages (block "overlay", 96..127) ------------------------------
# topics: [[topic_id, [[peer_id, addr, age], ...]], ...]; the sender itself is
# implicit (age 0) in every topic it names.
REQUEST = envelope.REGISTRY.register(100, "rings_req", (
    ("nonce", envelope.UINT, 0xFFFFFFFF),
    ("sender", envelope.BYTES, ids.ID_LEN),
    ("addr", envelope.BYTES, common.ADDR_MAX),
    ("filter", envelope.BYTES, common.PROFILE_MAX // 2),  # sender's subscription filter
    ("topics", envelope.LIST, RING_TOPICS_MAX),
))
REPLY = envelope.REGISTRY.register(101, "rings_reply", (
    ("nonce", envelope.UINT, 0xFFFFFFFF),
    ("sender", envelope.BYTES, ids.ID_LEN),
    ("topics", envelope.LIST, RING_TOPICS_MAX),
))


def check_topics(topics):
    """Raise OverlayError unless topics is [[topic, [[id, addr, age]...]]...]. Pure."""
    id_len = ids.ID_LEN
    addr_max = common.ADDR_MAX
    age_max = common.AGE_MAX
    for item in topics:
        if type(item) is not list or len(item) != 2 or not common.check_id(item[0]):
            raise OverlayError(common.E_ENTRY, __debug__ and "a ring topic is [topic_id, entries]")
        es = item[1]
        if type(es) is not list or len(es) > 2 * KEEP:
            raise OverlayError(common.E_ENTRY, __debug__ and "a ring topic carries at most %d entries" % (2 * KEEP))
        for e in es:
            if type(e) is not list or len(e) != 3:
                raise OverlayError(common.E_ENTRY, __debug__ and "a ring entry is [peer_id, addr, age]")
            i, a, g = e
            # check_peer and the age inline: this runs for every entry of
            # every exchange.
            if type(i) is not bytes or len(i) != id_len or type(a) is not bytes or len(a) > addr_max:
                common.check_peer(i, a)
            if type(g) is not int or g < 0 or g > age_max:
                raise OverlayError(common.E_ENTRY, __debug__ and "age must be 0..%d" % age_max)


class Rings:
    """One proxy's ring neighbours for each of its topics."""

    def __init__(self, node_id, addr, rng, bits, hashes, max_age=DEFAULT_MAX_AGE,
                 reply_timeout=DEFAULT_REPLY_TIMEOUT_MS):
        common.check_config_peer(node_id, addr)
        if not (1 <= max_age <= common.AGE_MAX):
            raise OverlayConfigError(common.E_CONFIG, __debug__ and "max age must be 1..%d" % common.AGE_MAX)
        if reply_timeout <= 0:
            raise OverlayConfigError(common.E_CONFIG, __debug__ and "reply timeout must be positive")
        self.id = node_id
        self.pos = ids.pos(node_id)
        self.addr = addr
        self.rng = rng
        self.bits = bits
        self.hashes = hashes
        self.max_age = max_age
        self.reply_timeout = reply_timeout
        self.topics = []        # sorted
        self._ring = {}         # topic -> RingView
        self._masks = {}        # topic -> its filter bits
        self._direct = {}       # peer id -> the topics of ours it named in its last exchange
        self._direct_ver = 0    # grows whenever _direct changes (readers' caches check it)
        self._direct_order = []
        self._recent = []
        self._orphan_hope = True
        self._dead = []
        self._pending = []      # [nonce, peer_id, deadline, addr]
        self._clock = 0

    # --- reading ---------------------------------------------------------

    def successors(self, topic):
        r = self._ring.get(topic)
        return r.succ if r else []

    def predecessors(self, topic):
        r = self._ring.get(topic)
        return r.pred if r else []

    def neighbours(self, topic):
        """Entries [id, addr, age] of the KEEP nearest known subscribers
        on each side (the ring neighbours and their spares)."""
        r = self._ring.get(topic)
        if not r:
            return []
        c = self._clock
        return [[e[0], e[1], c - e[2]] for e in r.near(KEEP)]

    def known(self, topic):
        """Ids of the known (confirmed) subscribers of the topic."""
        r = self._ring.get(topic)
        return list(r.kd) if r else []

    def known_map(self, topic):
        """id -> entry of the known subscribers of the topic (read only),
        or None."""
        r = self._ring.get(topic)
        return r.kd if r else None

    def addr_of(self, peer_id):
        for t in self.topics:
            e = self._ring[t].kd.get(peer_id)
            if e is not None:
                return e[1]
        return None

    def confirmed(self, peer_id, topic):
        """The peer is known to subscribe the topic: a known subscriber of
        its ring, or it named the topic in its last exchange with us."""
        r = self._ring.get(topic)
        if r is None:
            return False
        if peer_id in r.kd:
            return True
        d = self._direct.get(peer_id)
        return d is not None and topic in d

    def named(self, peer_id):
        """The topics of ours the peer named in its last exchange with us
        (read only), or None."""
        return self._direct.get(peer_id)

    def needy(self):
        """Topics with an empty successor or predecessor slot, sorted."""
        ring = self._ring
        return [t for t in self.topics if len(ring[t].succ) < SIDE]

    def wraps(self):
        """Small topics (at most RARE_KNOWN_MAX known subscribers) whose
        first successor wraps around the ring (its id is below this
        proxy's), sorted. In every part of a topic's subscribers that
        found each other, exactly one member's successor wraps (the
        member with the part's highest id): a ring whose slots are all
        filled cannot tell a whole topic from a part of it, so that member
        keeps looking for the rest, one searcher per part."""
        ring = self._ring
        me = self.pos
        out = []
        for t in self.topics:
            r = ring[t]
            if r.succ and len(r.kd) <= RARE_KNOWN_MAX and ids.pos(r.succ[0]) < me:
                out.append(t)
        return out

    def needy_mask(self):
        """Filter bits of the topics VICINITY should find peers for: the
        topics with an empty slot (those with no ring neighbour at all
        among them), else the small topics whose successor wraps
        (``wraps``: a complete ring of 3 of a topic's 6 subscribers
        otherwise looked for nobody). The topics without any neighbour
        alone, when there were some, left a proxy whose topic nobody else
        subscribes looking for that one for ever and never for its other
        rare topics (tools/bench/poldercast_split.py at N = 5,000, 500
        topics: split topics at rounds 10 / 15 / 20 49 / 10 / 2 with them
        alone, 45 / 7 / 2 with every needy topic, docs/overlay.md)."""
        ts = self.needy() or self.wraps()
        m = 0
        for t in ts:
            m |= self._masks[t]
        return m

    def pending(self):
        return len(self._pending)

    # --- configuration ---------------------------------------------------

    def set_topics(self, topics):
        ts = sorted(topics)
        keep = set(ts)   # (a list here made a proxy's n joins cost n^3)
        ring = self._ring
        for t in list(ring.keys()):
            if t not in keep:
                del ring[t]
                del self._masks[t]
        for t in ts:
            if t not in ring:
                ring[t] = RingView()
                self._masks[t] = topic_mask(t, self.bits, self.hashes)
        self.topics = ts

    def remove(self, peer_id):
        """Drop a peer from every ring (it stopped answering, or its link
        failed); relayed entries for it are refused until it speaks again."""
        dead = self._dead
        if peer_id not in dead:
            dead.append(peer_id)
            if len(dead) > _DEAD_MAX:
                dead.pop(0)
        changed = False
        p = ids.pos(peer_id)
        for t in self.topics:
            r = self._ring[t]
            if peer_id in r.kd:
                r.drop(bisect(r.kpos, p))
                r.select(self.pos)
                changed = True
        if peer_id in self._direct:
            del self._direct[peer_id]
            self._direct_ver += 1
            self._direct_order.remove(peer_id)
        # Nor is it "asked recently" any more: ``_recent`` only moves on when
        # discovery picks someone new, so in a small overlay (a handful of
        # proxies split by a partition) a peer left in it would never be
        # asked again once it is back, and the rings would stay split.
        if peer_id in self._recent:
            self._recent.remove(peer_id)
        return changed

    # --- the protocol ----------------------------------------------------

    def tick(self, now, my_filter, cands, more=None):
        """Start this period's exchange. ``cands``: VICINITY and CYCLON
        entries [id, addr, age, f, n, pbytes] (discovery partners);
        ``more``: None or a function returning more such entries, called
        only in a period that runs a discovery (the caller's remembered
        peers cost a scan to list, and most periods need none).
        Returns Outgoing or None."""
        self.expire(now)
        self._clock += 1
        clock = self._clock
        floor = clock - self.max_age
        me = self.pos
        for t in self.topics:
            r = self._ring[t]
            old = [e for e in r.near(SIDE) if e[2] < floor]
            if old:
                for e in old:
                    r.drop(bisect(r.kpos, e[3]))
                r.select(me)
        if len(self._pending) >= PENDING_MAX:
            self._forget(0)
        if not self.topics:
            return None
        busy = [p[1] for p in self._pending]
        # The discovery peer is computed only when it may be used; a topic
        # that no other proxy subscribes has no neighbour for ever, so an
        # orphan topic wins only when a candidate can fill it.
        ring = self._ring
        orphan = False
        for t in self.topics:
            if not ring[t].succ:
                orphan = True
                break
        disc = None
        gain = 0
        if more is not None:
            base = cands
            cands = None
        # A topic nobody else subscribes is an orphan for ever: in the
        # periods between discoveries, look only while the last look found
        # a peer for an orphan (half the discovery scans of such a proxy).
        if clock % _REFRESH_EVERY or (orphan and self._orphan_hope):
            if cands is None:
                cands = base + more()
            disc, gain = self._discovery(cands, busy)
            self._orphan_hope = gain >= _ORPHAN_GAIN
        target = disc if gain >= _ORPHAN_GAIN or clock % _REFRESH_EVERY else None
        if target is None:
            target = self._unverified(busy, SIDE)
        if target is None:
            target = self._oldest(busy)
        if target is None:
            if disc is None:
                if cands is None:
                    cands = base + more()
                disc, gain = self._discovery(cands, busy)
            target = disc
        if target is None:
            return None
        if target is disc:
            recent = self._recent
            recent.append(disc[0])
            if len(recent) > _RECENT_MAX:
                recent.pop(0)
        return self._request(now, my_filter, target)

    def introduce(self, now, my_filter):
        """More exchanges in this period, only while a nearest neighbour
        (rank 1 on a side) is known from others alone: it sends us none of
        the topic's messages before it learns of us, and a proxy that just
        joined has one such neighbour per side and topic to meet. Call
        after tick(). Returns a list of Outgoing (INTRODUCE_MAX at most,
        and never the last free pending slot)."""
        out = []
        for _ in range(INTRODUCE_MAX):
            # One pending slot stays free for the next period's exchange:
            # with every slot taken, tick() would forget the oldest
            # exchange (and drop its peer from every ring as dead) before
            # its reply had time to come.
            if len(self._pending) >= PENDING_MAX - 1:
                break
            target = self._unverified([p[1] for p in self._pending], 1)
            if target is None:
                break
            out.append(self._request(now, my_filter, target))
        return out

    def verify(self, now, my_filter, cands):
        """One more exchange in this period, with the first VICINITY peer
        (``cands``: entries [id, addr, age, f, ...], most similar first)
        that has not yet named its topics to us and whose filter has one of
        ours: its reply names exactly the topics we share, so it becomes a
        confirmed random target for each (dissemination never trusts a
        filter). Call after introduce(); never takes the last free pending
        slot. Returns a list of at most one Outgoing."""
        if not self.topics or len(self._pending) >= PENDING_MAX - 1:
            return []
        direct = self._direct
        busy = [p[1] for p in self._pending]
        masks = [self._masks[t] for t in self.topics]
        for c in cands:
            i = c[0]
            if i in direct or i in busy or i == self.id or i in self._dead:
                continue
            f = c[3]
            for m in masks:
                if f & m == m:
                    return [self._request(now, my_filter, (i, c[1], f))]
        return []

    def probe(self, now, my_filter):
        """One more exchange in this period, with the ring neighbour (SIDE
        nearest on a side) heard of least recently, if that was STALE_AGE
        periods ago or more: a crashed neighbour is found (no reply) and
        dropped within a few periods instead of waiting for the period's
        exchange to come to it. Call after verify(); never takes the last
        free pending slot. Returns a list of at most one Outgoing."""
        if len(self._pending) >= PENDING_MAX - 1:
            return []
        e = self._oldest_entry([p[1] for p in self._pending])
        if e is None or self._clock - e[2] < STALE_AGE:
            return []
        return [self._request(now, my_filter, (e[0], e[1], None))]

    def _request(self, now, my_filter, target):
        q_id, q_addr, q_filter = target
        topics = self._offer(q_id, q_filter, None, self.needy())
        nonce = self.rng.next64() & 0xFFFFFFFF
        self._pending.append([nonce, q_id, now + self.reply_timeout, q_addr])
        f = my_filter.to_bytes(self.bits // 8, "big")
        return Outgoing(q_id, q_addr, envelope.Message(REQUEST, [nonce, self.id, self.addr, f, topics]))

    def handle(self, msg, now):
        """A decoded Rings message -> Outgoing (reply) or None. Raises
        OverlayError (state unchanged) on a bad one."""
        t = msg.type
        if t is REQUEST:
            nonce, sender, addr, filt, topics = msg.values
            common.check_peer(sender, addr)
            if sender == self.id:
                raise OverlayError(common.E_SELF, __debug__ and "a Rings request carries this proxy's id as sender")
            if len(filt) != self.bits // 8:
                raise OverlayError(common.E_PROFILE, __debug__ and "a Rings filter is %d bytes" % (self.bits // 8))
            check_topics(topics)
            self.expire(now)
            named = [x[0] for x in topics]
            reply = self._offer(sender, int.from_bytes(filt, "big"), named, self.needy())
            self._absorb(sender, addr, topics)
            return Outgoing(sender, addr, envelope.Message(REPLY, [nonce, self.id, reply]))
        if t is REPLY:
            nonce, sender, topics = msg.values
            if not common.check_id(sender):
                raise OverlayError(common.E_ENTRY, __debug__ and "a proxy id is %d bytes" % ids.ID_LEN)
            check_topics(topics)
            self.expire(now)
            pend = self._pending
            for i in range(len(pend)):
                if pend[i][0] == nonce:
                    if pend[i][1] != sender:
                        raise OverlayError(common.E_WRONG_PEER, __debug__ and "Rings reply from another peer than the one asked")
                    ex = pend.pop(i)
                    self._absorb(sender, ex[3], topics)
                    return None
            raise OverlayError(common.E_UNKNOWN, __debug__ and "Rings reply to no pending exchange")
        raise OverlayError(common.E_NOT_MINE, __debug__ and "message %s is not for Rings" % t[1])

    def expire(self, now):
        pend = self._pending
        while pend and now - pend[0][2] >= 0:
            self._forget(0)

    # --- internals -------------------------------------------------------

    def _discovery(self, cands, busy):
        """The candidate that would improve the most rings: for how many of
        my topics it subscribes (exactly, if it told me; else by its filter)
        and would sit nearer than my current farthest successor or
        predecessor (or fill an empty slot). Returns ((id, addr, filter),
        gain) or (None, 0)."""
        me = self.pos
        info = []
        ring = self._ring
        for t in self.topics:
            r = ring[t]
            succ, pred = r.succ, r.pred
            sb = ids.cw(me, ids.pos(succ[-1])) if len(succ) >= SIDE else ids.RING
            pb = ids.ccw(me, ids.pos(pred[-1])) if len(pred) >= SIDE else ids.RING
            info.append((self._masks[t], sb, pb, r.kd, succ))
        direct = self._direct
        recent = self._recent
        my_id = self.id
        best = None
        best_g = 0
        ties = 0
        for c in cands:
            i = c[0]
            if i == my_id or i in busy or i in recent:
                continue
            exact = i in direct
            f = c[3]
            p = ids.pos(i)
            g = 0
            for m, sb, pb, kd, succ in info:
                if exact:
                    if i not in kd:
                        continue
                elif f & m != m:
                    continue
                if not succ:
                    g += _ORPHAN_GAIN
                elif ((p - me) & ids.MASK) < sb or ((me - p) & ids.MASK) < pb:
                    g += 1
            if g > best_g:
                best, best_g, ties = c, g, 1
            elif g == best_g and g:
                # Reservoir choice among equals: spread discovery over them.
                ties += 1
                if self.rng.next64() % ties == 0:
                    best = c
        if best is None:
            return None, 0
        return (best[0], best[1], best[3]), best_g

    def _unverified(self, busy, depth):
        """A ring neighbour within ``depth`` places on a side that only
        others have named to us: contacting it tells it about us at once,
        where it would otherwise wait for a relay, and confirms it is
        alive. Nearer ranks first over all topics (the rank-1 neighbours
        carry the messages), then the one that is a neighbour on most
        topics."""
        ring = self._ring
        for d in range(depth):
            best = None
            best_k = 0
            for t in self.topics:
                r = ring[t]
                for side in (r.succ, r.pred):
                    if len(side) <= d:
                        continue
                    i = side[d]
                    e = r.kd[i]
                    if e[4] or i in busy:
                        continue
                    k = 0
                    for u in self.topics:
                        ru = ring[u]
                        if i in ru.succ[:d + 1] or i in ru.pred[:d + 1]:
                            k += 1
                    if k > best_k:
                        best, best_k = e, k
            if best is not None:
                return best[0], best[1], None
        return None

    def _oldest(self, busy):
        """The ring neighbour (SIDE nearest on each side) heard from least
        recently."""
        best = self._oldest_entry(busy)
        if best is None:
            return None
        return best[0], best[1], None

    def _oldest_entry(self, busy):
        best = None
        ring = self._ring
        for t in self.topics:
            for e in ring[t].near(SIDE):
                if e[0] not in busy and (best is None or e[2] < best[2]):
                    best = e
        return best

    def _offer(self, q_id, q_filter, named, needy):
        """The [topic, entries] list for peer q: my topics it has (by
        naming them, by being confirmed for them, or by its filter), needy
        topics first, at most RING_TOPICS_MAX."""
        first = []
        rest = []
        clock = self._clock
        ring = self._ring
        for t in self.topics:
            r = ring[t]
            hit = (named is not None and t in named) or q_id in r.kd
            if not hit and q_filter is not None:
                m = self._masks[t]
                hit = q_filter & m == m
            if hit:
                item = [t, r.nearest_to(q_id, clock, clock - self.max_age)]
                (first if t in needy else rest).append(item)
        out = first + rest
        return out[:RING_TOPICS_MAX]

    def _absorb(self, sender, addr, topics):
        """Remember what the peer named: itself (age 0) for every topic it
        named, and the subscribers it named with them."""
        clock = self._clock
        me = self.id
        # What the sender named is all we share: remember that, so its
        # filter's false positives are not asked again.
        direct = self._direct
        ring = self._ring
        named = [item[0] for item in topics if item[0] in ring]
        if sender not in direct:
            order = self._direct_order
            order.append(sender)
            if len(order) > _DIRECT_MAX:
                del direct[order.pop(0)]
        direct[sender] = named
        self._direct_ver += 1
        dead = self._dead
        if sender in dead:
            dead.remove(sender)
        max_age = self.max_age
        pos = self.pos
        rng = self.rng
        for item in topics:
            r = ring.get(item[0])
            if r is None:
                continue    # a filter false positive on its side: ignored
            changed = r.know(sender, addr, clock, True, pos, rng)
            kd = r.kd
            for e in item[1]:
                i = e[0]
                g = e[2]
                if g > max_age or i == me:
                    continue
                # RingView.know's path for a subscriber already known,
                # inline (most entries of an exchange are): a known one is
                # never in ``dead`` (remove() drops it from every ring).
                k = kd.get(i)
                if k is not None:
                    g = clock - g
                    if g > k[2]:
                        k[1] = e[1]
                        k[2] = g
                elif i not in dead and r.know(i, e[1], clock - g, False, pos, rng):
                    changed = True
            if changed:
                r.select(pos)
        # A peer that answered is alive: refresh it wherever we know it.
        for t in self.topics:
            e = ring[t].kd.get(sender)
            if e is not None:
                e[2] = clock
                e[4] = True

    def _forget(self, i):
        ex = self._pending.pop(i)
        self.remove(ex[1])
