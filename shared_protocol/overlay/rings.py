"""PolderCast's Rings module, sans-I/O (Setty, van Steen, Vitenberg,
Voulgaris, "PolderCast: Fast, Robust, and Scalable Architecture for P2P
Topic-based Pub/Sub", Middleware 2012, section 3.3).

For every topic it subscribes, a proxy keeps its 2 nearest successors and 2
nearest predecessors among the topic's subscribers, ordered by proxy id on a
ring that wraps: the successor of the largest id is the smallest
(ids.cw/ccw). Once per period it runs one exchange with one peer covering
every topic the two share: each side names, for each shared topic, itself
and its ring neighbours, and each keeps the nearest of what it knew and what
it got. Topics with empty ring slots (*needy*) go first in a message. The
partner: the VICINITY or CYCLON peer that would improve the most of this
proxy's rings (it subscribes, by its filter or by what it said before, and
its id falls nearer than a current neighbour or into an empty slot); one
period in REFRESH_EVERY, or when no peer improves anything, the oldest ring
neighbour (refresh; a silent one is dropped from every ring after
``reply_timeout``, like CYCLON's oldest).

Exact topics are named only here, and only for topics the peer's Bloom
filter (or its earlier messages) say it has. A peer that names a topic (or
is named as a ring neighbour for it by a peer that did) is *confirmed* for
it: dissemination sends a topic's messages only to confirmed subscribers,
never on the strength of a filter, whose false positives would break
relay-freedom.

Entries age by one per period; one older than ``max_age`` is dropped (a live
neighbour is refreshed much sooner: it and its own neighbours talk to this
proxy every few periods).
"""
from shared_protocol.wire import envelope
from shared_protocol.overlay import common, ids
from shared_protocol.overlay.common import OverlayConfigError, OverlayError, Outgoing
from shared_protocol.overlay.profile import topic_mask

SIDE = 2                 # successors and predecessors used per topic (paper)
# Successors and predecessors *kept* per topic and sent in exchanges: the 2
# used plus 2 more on each side. A peer then learns the ring up to 4 hops
# away from each exchange (as T-Man sends the entries nearest to the
# receiver), which is what closes the last gaps of a 1,000-proxy ring
# within 30 periods, and a dead neighbour has a replacement at hand.
KEEP = 4
# Topics in one exchange: needy ones first. 16 x (topic + 8 entries of at
# most 79 bytes) stays under common.OVERLAY_FRAME_MAX; a proxy with more
# shared topics covers the rest in later periods.
RING_TOPICS_MAX = 16
PENDING_MAX = 4
# Peers whose confirmed topics are remembered: a proxy's ring neighbours
# (4 per topic) plus its VICINITY and CYCLON views with room to spare.
CONFIRMED_MAX = 512
# Discovery partners asked recently, skipped for a while so one bad match
# (a filter false positive) is not asked every other period.
RECENT_MAX = 16
# A neighbour's entry is dropped past this age. Dead neighbours normally go
# sooner: the oldest is contacted and a silent one removed, and the transport
# reports links that fail (``remove``). Live ones are refreshed by every
# exchange with them or with a common neighbour, far more often than this.
DEFAULT_MAX_AGE = 30
# One period in this many the exchange refreshes the oldest ring neighbour
# (liveness) even when a discovery partner would improve a ring.
REFRESH_EVERY = 2
# A peer that gives a topic its first ring neighbour counts as this many
# improvements: from one neighbour the rest of the ring follows through
# Rings exchanges, while a topic without any waits on VICINITY.
ORPHAN_GAIN = 4
# Confirmed subscribers remembered per topic, anywhere on its ring (the
# most recently heard): the pool an exchange draws the entries nearest to
# the *peer* from. Among 64 spread over a ring of 1,000, the nearest to any
# position is about 8 places away, one or two exchanges from the truth.
KNOWN_MAX = 64
# Introductions per period on top of the period's exchange (introduce):
# a proxy that just joined has up to 2 per topic to make, and is not
# counted on for messages until they are made.
INTRODUCE_MAX = 3
# Peers removed as dead, remembered so that a neighbour's stale entry for
# them is not taken back (until they speak to us themselves).
DEAD_MAX = 64
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
    for item in topics:
        if type(item) is not list or len(item) != 2 or not common.check_id(item[0]):
            raise OverlayError(common.E_ENTRY, "a ring topic is [topic_id, entries]")
        es = item[1]
        if type(es) is not list or len(es) > 2 * KEEP:
            raise OverlayError(common.E_ENTRY, "a ring topic carries at most %d entries" % (2 * KEEP))
        for e in es:
            if type(e) is not list or len(e) != 3:
                raise OverlayError(common.E_ENTRY, "a ring entry is [peer_id, addr, age]")
            common.check_peer(e[0], e[1])
            if type(e[2]) is not int or not (0 <= e[2] <= common.AGE_MAX):
                raise OverlayError(common.E_ENTRY, "age must be 0..%d" % common.AGE_MAX)


def _bisect(a, x):
    """Index of the first item of sorted list a that is >= x (MicroPython
    has no bisect module)."""
    lo = 0
    hi = len(a)
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


class Rings:
    """One proxy's ring neighbours for each of its topics."""

    def __init__(self, node_id, addr, rng, bits, hashes, max_age=DEFAULT_MAX_AGE,
                 reply_timeout=DEFAULT_REPLY_TIMEOUT_MS):
        common.check_config_peer(node_id, addr)
        if not (1 <= max_age <= common.AGE_MAX):
            raise OverlayConfigError(common.E_CONFIG, "max age must be 1..%d" % common.AGE_MAX)
        if reply_timeout <= 0:
            raise OverlayConfigError(common.E_CONFIG, "reply timeout must be positive")
        self.id = node_id
        self.pos = ids.pos(node_id)
        self.addr = addr
        self.rng = rng
        self.bits = bits
        self.hashes = hashes
        self.max_age = max_age
        self.reply_timeout = reply_timeout
        self.topics = []        # sorted
        # topic -> [entries, succ, pred, kpos, known]: entries [id, addr,
        # stamp, pos, direct] (distinct peers; direct: the peer itself
        # exchanged with this proxy, not only named by a third), succ/pred
        # the nearest ids, nearest first; known: up to KNOWN_MAX confirmed
        # subscribers anywhere on the ring, [id, addr, stamp, pos] sorted by
        # pos (kpos: their positions), the most recently heard kept.
        self._ring = {}
        self._conf = {}         # peer id -> list of confirmed topics
        self._conf_order = []   # least recently confirmed first
        self._recent = []
        self._dead = []
        self._pending = []      # [nonce, peer_id, deadline, addr]
        self._clock = 0

    # --- reading ---------------------------------------------------------

    def successors(self, topic):
        r = self._ring.get(topic)
        return r[1] if r else []

    def predecessors(self, topic):
        r = self._ring.get(topic)
        return r[2] if r else []

    def neighbours(self, topic):
        """Entries [id, addr, age] kept for the topic: its ring neighbours
        and the spares beyond them (KEEP per side)."""
        r = self._ring.get(topic)
        if not r:
            return []
        c = self._clock
        return [[e[0], e[1], c - e[2]] for e in r[0]]

    def addr_of(self, peer_id):
        for t in self.topics:
            for e in self._ring[t][0]:
                if e[0] == peer_id:
                    return e[1]
        return None

    def confirmed(self, peer_id, topic):
        ts = self._conf.get(peer_id)
        return ts is not None and topic in ts[1]

    def needy(self):
        """Topics with an empty successor or predecessor slot, sorted."""
        return [t for t in self.topics if len(self._ring[t][1]) < SIDE or len(self._ring[t][2]) < SIDE]

    def needy_mask(self):
        """Filter bits of the topics VICINITY should find peers for: the
        topics with no ring neighbour at all if there are any (a topic with
        one neighbour completes through Rings exchanges with it), else the
        topics with an empty slot."""
        ts = [t for t in self.topics if not self._ring[t][0]] or self.needy()
        m = 0
        for t in ts:
            m |= topic_mask(t, self.bits, self.hashes)
        return m

    def pending(self):
        return len(self._pending)

    # --- configuration ---------------------------------------------------

    def set_topics(self, topics):
        ts = sorted(topics)
        ring = self._ring
        for t in list(ring.keys()):
            if t not in ts:
                del ring[t]
        for t in ts:
            if t not in ring:
                ring[t] = [[], [], [], [], []]
        self.topics = ts

    def remove(self, peer_id):
        """Drop a peer from every ring (it stopped answering, or its link
        failed); relayed entries for it are refused until it speaks again."""
        dead = self._dead
        if peer_id not in dead:
            dead.append(peer_id)
            if len(dead) > DEAD_MAX:
                dead.pop(0)
        changed = False
        p = ids.pos(peer_id)
        for t in self.topics:
            r = self._ring[t]
            es = r[0]
            for i in range(len(es)):
                if es[i][0] == peer_id:
                    es.pop(i)
                    self._select(t)
                    changed = True
                    break
            kp = r[3]
            k = _bisect(kp, p)
            if k < len(kp) and kp[k] == p:
                kp.pop(k)
                r[4].pop(k)
        if peer_id in self._conf:
            del self._conf[peer_id]
            self._conf_order.remove(peer_id)
        return changed

    # --- the protocol ----------------------------------------------------

    def tick(self, now, my_filter, cands):
        """Start this period's exchange. ``cands``: VICINITY and CYCLON
        entries [id, addr, age, f, n, pbytes] (discovery partners).
        Returns Outgoing or None."""
        self.expire(now)
        self._clock += 1
        clock = self._clock
        floor = clock - self.max_age
        for t in self.topics:
            es = self._ring[t][0]
            old = [e for e in es if e[2] < floor]
            if old:
                for e in old:
                    es.remove(e)
                self._select(t)
        if len(self._pending) >= PENDING_MAX:
            self._forget(0)
        if not self.topics:
            return None
        busy = [p[1] for p in self._pending]
        # Partner, first match: a discovery peer when a topic has no ring
        # neighbour at all; a ring neighbour only named by others so far
        # (introduce ourselves: it learns us, we learn its side of the
        # ring, as T-Man contacts the nearest); every REFRESH_EVERY-th
        # period the oldest neighbour (liveness), otherwise the peer that
        # improves most.
        # The discovery peer is computed once; a topic that no other proxy
        # subscribes stays without neighbours for ever, so an orphan topic
        # wins only when a candidate can fill it.
        disc, gain = self._discovery(cands, busy)
        target = disc if gain >= ORPHAN_GAIN or clock % REFRESH_EVERY else None
        if target is None:
            target = self._unverified(busy)
        if target is None:
            target = self._oldest(busy)
        if target is None:
            target = disc
        if target is None:
            return None
        if target is disc:
            recent = self._recent
            recent.append(disc[0])
            if len(recent) > RECENT_MAX:
                recent.pop(0)
        return self._request(now, my_filter, target)

    def introduce(self, now, my_filter):
        """A second exchange in this period, only when a nearest
        neighbour (rank 1 on a side) is known from others alone: it cannot
        send us a topic's messages before it learns of us, and a proxy that
        just joined has one such neighbour per side and topic to meet.
        Call after tick(). Returns a list of Outgoing (INTRODUCE_MAX at most)."""
        out = []
        for _ in range(INTRODUCE_MAX):
            if len(self._pending) >= PENDING_MAX:
                break
            target = self._unverified([p[1] for p in self._pending], 1)
            if target is None:
                break
            out.append(self._request(now, my_filter, target))
        return out

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
                raise OverlayError(common.E_SELF, "a Rings request carries this proxy's id as sender")
            if len(filt) != self.bits // 8:
                raise OverlayError(common.E_PROFILE, "a Rings filter is %d bytes" % (self.bits // 8))
            check_topics(topics)
            self.expire(now)
            named = [x[0] for x in topics]
            reply = self._offer(sender, int.from_bytes(filt, "big"), named, self.needy())
            self._absorb(sender, addr, topics)
            return Outgoing(sender, addr, envelope.Message(REPLY, [nonce, self.id, reply]))
        if t is REPLY:
            nonce, sender, topics = msg.values
            if not common.check_id(sender):
                raise OverlayError(common.E_ENTRY, "a proxy id is %d bytes" % ids.ID_LEN)
            check_topics(topics)
            self.expire(now)
            pend = self._pending
            for i in range(len(pend)):
                if pend[i][0] == nonce:
                    if pend[i][1] != sender:
                        raise OverlayError(common.E_WRONG_PEER, "Rings reply from another peer than the one asked")
                    ex = pend.pop(i)
                    self._absorb(sender, ex[3], topics)
                    return None
            raise OverlayError(common.E_UNKNOWN, "Rings reply to no pending exchange")
        raise OverlayError(common.E_NOT_MINE, "message %s is not for Rings" % t.name)

    def expire(self, now):
        pend = self._pending
        while pend and now - pend[0][2] >= 0:
            self._forget(0)

    # --- internals -------------------------------------------------------

    def _discovery(self, cands, busy):
        """The candidate that would improve the most rings: for how many of
        my topics it subscribes (exactly, if it told me; else by its filter)
        and would sit nearer than my current farthest successor or
        predecessor (or fill an empty slot). Returns ((id, addr, filter), gain) or (None, 0)."""
        me = self.pos
        bits = self.bits
        k = self.hashes
        info = []
        for t in self.topics:
            r = self._ring[t]
            succ, pred = r[1], r[2]
            sb = ids.cw(me, ids.pos(succ[-1])) if len(succ) >= SIDE else ids.RING
            pb = ids.ccw(me, ids.pos(pred[-1])) if len(pred) >= SIDE else ids.RING
            info.append((t, topic_mask(t, bits, k), sb, pb, succ, pred))
        conf = self._conf
        recent = self._recent
        best = None
        best_g = 0
        ties = 0
        for c in cands:
            i = c[0]
            if i == self.id or i in busy or i in recent:
                continue
            known = conf.get(i)
            direct = known is not None and known[0]
            f = c[3]
            p = ids.pos(i)
            g = 0
            for t, m, sb, pb, succ, pred in info:
                if direct:
                    if t not in known[1]:
                        continue
                elif f & m != m:
                    continue
                if i in succ or i in pred:
                    continue
                if not succ:
                    g += ORPHAN_GAIN
                elif ids.cw(me, p) < sb or ids.ccw(me, p) < pb:
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

    def _unverified(self, busy, depth=SIDE):
        """A ring neighbour within ``depth`` of this proxy on a side that
        only others have named to us: contacting it tells it about us at
        once, where it would otherwise wait for a relay, and confirms it is
        alive. The nearest rank first over all topics (the rank-1
        neighbours carry the messages), then the one on most topics."""
        best = None
        best_k = 0
        for d in range(depth):
            for t in self.topics:
                r = self._ring[t]
                for side in (r[1], r[2]):
                    if len(side) <= d:
                        continue
                    i = side[d]
                    if i in busy:
                        continue
                    for e in r[0]:
                        if e[0] == i:
                            if not e[4]:
                                k = self._rank_count(i, d)
                                if k > best_k:
                                    best, best_k = e, k
                            break
            if best is not None:
                return best[0], best[1], None
        return None

    def _rank_count(self, i, d):
        k = 0
        for t in self.topics:
            r = self._ring[t]
            if i in r[1][:d + 1] or i in r[2][:d + 1]:
                k += 1
        return k

    def _oldest(self, busy):
        """The ring neighbour (the SIDE nearest on each side; the spare
        entries beyond them only age) heard from least recently."""
        best = None
        for t in self.topics:
            r = self._ring[t]
            for e in r[0]:
                i = e[0]
                if (i in r[1] or i in r[2]) and i not in busy and (best is None or e[2] < best[2]):
                    best = e
        if best is None:
            return None
        return best[0], best[1], None

    def _offer(self, q_id, q_filter, named, needy):
        """The [topic, entries] list for peer q: my topics it has (by its
        filter, by naming them, or by being my ring neighbour for them),
        needy topics first, at most RING_TOPICS_MAX."""
        bits = self.bits
        k = self.hashes
        conf = self._conf.get(q_id)
        conf = conf[1] if conf is not None else None
        first = []
        rest = []
        clock = self._clock
        for t in self.topics:
            r = self._ring[t]
            hit = (named is not None and t in named) or (conf is not None and t in conf)
            if not hit and q_filter is not None:
                m = topic_mask(t, bits, k)
                hit = q_filter & m == m
            if not hit:
                for e in r[0]:
                    if e[0] == q_id:
                        hit = True
                        break
            if hit:
                item = [t, self._nearest_to(r, q_id, clock)]
                (first if t in needy else rest).append(item)
        out = first + rest
        return out[:RING_TOPICS_MAX]

    def _nearest_to(self, r, q_id, clock):
        """The KEEP nearest successors and predecessors *of q* among what
        this proxy knows of the topic (its ring entries and the known
        subscribers around q's position), as wire entries: T-Man's rule,
        which lets a proxy far from q on the ring still hand it entries
        next to it, so a newcomer finds its place in one or two exchanges
        instead of walking the ring KEEP positions at a time."""
        q = ids.pos(q_id)
        kp = r[3]
        ke = r[4]
        n = len(kp)
        floor = clock - self.max_age
        cands = {}
        for e in r[0]:
            cands[e[0]] = e
        if n:
            k = _bisect(kp, q)
            for d in range(-KEEP, KEEP + 1):
                e = ke[(k + d) % n]
                if e[2] >= floor and e[0] not in cands:
                    cands[e[0]] = e
            if n <= 2 * KEEP:
                for e in ke:
                    if e[2] >= floor and e[0] not in cands:
                        cands[e[0]] = e
        if q_id in cands:
            del cands[q_id]
        es = list(cands.values())
        if len(es) > 2 * KEEP:
            by_cw = sorted([(ids.cw(q, e[3]), x) for x, e in enumerate(es)])
            by_ccw = sorted([(ids.ccw(q, e[3]), x) for x, e in enumerate(es)])
            pick = []
            for lst in (by_cw, by_ccw):
                for d, x in lst[:KEEP]:
                    if x not in pick:
                        pick.append(x)
            es = [es[x] for x in sorted(pick)]
        return [[e[0], e[1], min(clock - e[2], common.AGE_MAX)] for e in es]

    def _know(self, r, i, a, stamp):
        """Remember a confirmed subscriber of the topic of ring r."""
        kp = r[3]
        ke = r[4]
        p = ids.pos(i)
        k = _bisect(kp, p)
        if k < len(kp) and kp[k] == p:
            e = ke[k]
            if stamp > e[2]:
                e[1] = a
                e[2] = stamp
            return
        kp.insert(k, p)
        ke.insert(k, [i, a, stamp, p])
        if len(kp) > KNOWN_MAX:
            old = 0
            for x in range(1, len(ke)):
                if ke[x][2] < ke[old][2]:
                    old = x
            kp.pop(old)
            ke.pop(old)

    def _absorb(self, sender, addr, topics):
        """Merge what the peer named: itself (age 0) and its neighbours."""
        clock = self._clock
        me = self.id
        # What the sender named is all we share: remember it as exact, so
        # its filter's false positives are not asked again.
        self._confirm(sender, None)
        dead = self._dead
        if sender in dead:
            dead.remove(sender)
        for item in topics:
            t = item[0]
            if t not in self._ring:
                continue    # a filter false positive on its side: ignored
            self._confirm(sender, t)
            es = self._ring[t][0]
            r = self._ring[t]
            changed = self._put(es, sender, addr, clock, True)
            self._know(r, sender, addr, clock)
            for e in item[1]:
                if e[0] == me or e[2] > self.max_age or e[0] in dead:
                    continue
                self._confirm(e[0], t)
                changed = self._put(es, e[0], e[1], clock - e[2], False) or changed
                self._know(r, e[0], e[1], clock - e[2])
            if changed:
                self._select(t)
        # A peer that answered is alive: refresh it everywhere it is a neighbour.
        for t in self.topics:
            for e in self._ring[t][0]:
                if e[0] == sender:
                    e[2] = clock
                    e[4] = True

    def _put(self, es, i, a, stamp, direct):
        for e in es:
            if e[0] == i:
                if stamp > e[2]:
                    e[2] = stamp
                    e[1] = a
                if direct:
                    e[4] = True
                return False
        es.append([i, a, stamp, ids.pos(i), direct])
        return True

    def _select(self, t):
        """Keep the KEEP nearest successors and predecessors (wrap-aware);
        the SIDE nearest of each are the ring neighbours."""
        r = self._ring[t]
        es = r[0]
        me = self.pos
        by_cw = sorted([(ids.cw(me, e[3]), e[0]) for e in es])
        by_ccw = sorted([(ids.ccw(me, e[3]), e[0]) for e in es])
        succ = [x[1] for x in by_cw[:KEEP]]
        pred = [x[1] for x in by_ccw[:KEEP]]
        r[1] = succ[:SIDE]
        r[2] = pred[:SIDE]
        if len(es) > len(succ) + len(pred):
            r[0] = [e for e in es if e[0] in succ or e[0] in pred]

    def _confirm(self, peer_id, topic):
        """Record that peer_id subscribes topic; topic None: the peer itself
        just told us every topic we share (its entry becomes exact)."""
        conf = self._conf
        ts = conf.get(peer_id)
        order = self._conf_order
        if ts is None:
            ts = conf[peer_id] = [False, []]
            order.append(peer_id)
            if len(order) > CONFIRMED_MAX:
                del conf[order.pop(0)]
        if topic is None:
            ts[0] = True
        elif topic not in ts[1]:
            ts[1].append(topic)

    def _forget(self, i):
        ex = self._pending.pop(i)
        self.remove(ex[1])
