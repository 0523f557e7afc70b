"""VICINITY: interest clustering, sans-I/O (Voulgaris, van Steen,
"VICINITY: A Pinch of Randomness Brings out the Structure", Middleware 2013),
as PolderCast runs it.

Each proxy keeps a view of ``view_size`` peers with their profiles (the
Bloom filters of profile.py). Once per period it contacts the oldest entry
Q and sends the ``gossip_len - 1`` candidates that are *closest to Q*, taken
from its own view and from the CYCLON view (the paper's "pinch of
randomness"), plus its own fresh entry; Q answers with the candidates
closest to the requester. Each side then keeps the ``view_size`` entries of
(view + received + CYCLON) that are *most* similar to itself.

Proximity to a target with filter F and needy filter N (the target's topics
whose ring slots are still empty), for a candidate with filter C:
first popcount(C & N) (topic priority: peers that can fill the target's
rings), then popcount(C & F) (shared topics), then the younger entry, then
a fresh random draw (so that among the many peers that look alike the
views keep exploring; the Rng makes it the same on every interpreter).

The defects of ocaml-p2p this follows the paper against: it sorted
ascending and kept the *least* similar peers, and it chose the candidates to
send by closeness to *itself* instead of to the gossip target.

A request left unanswered for ``reply_timeout`` ms drops Q (like CYCLON:
the oldest is contacted, so dead entries are found as they age).
"""
from shared_protocol.wire import envelope
from shared_protocol.overlay import common
from shared_protocol.overlay.common import OverlayConfigError, OverlayError, Outgoing
from shared_protocol.overlay.profile import popcount

try:
    from micropython import const
except ImportError:   # CPython (host and tests)
    def const(x):
        return x

# View: PolderCast uses 20; a proxy needs no more than CYCLON's limit.
DEFAULT_VIEW = 20
VIEW_MAX = 50
# Gossip length: PolderCast's 10 would not fit a datagram with 64-byte
# addresses and two 256-bit filters per entry (8 x ~145 bytes does).
DEFAULT_GOSSIP = 8
GOSSIP_MAX = 8
PENDING_MAX = 4
# Remembered peers (beyond the views) offered per exchange: for the target's
# needy topics, or needy peers needing one of the target's topics. A handful
# is enough to introduce the few subscribers of a rare topic, and keeps the
# rest of the gossip the views' own. They take gossip slots of their own
# (ahead of the ranked candidates): a needy peer offered to a proxy whose
# rings are complete would rank below the proxy's similar peers and never
# be sent.
_MEMORY_CANDIDATES = const(3)
# Candidates ranked at once (rank packs the index in 8 bits): view, CYCLON
# pool, received entries and remembered peers together stay far below.
_RANK_MAX = const(256)
DEFAULT_REPLY_TIMEOUT_MS = 2000

# --- wire messages (block "overlay", 96..127) ------------------------------
# An entry is [peer_id, addr, age, profile]; entries[0] is the sender, age 0.
REQUEST = envelope.REGISTRY.register(98, "vicinity_req", (
    ("nonce", envelope.UINT, 0xFFFFFFFF),
    ("entries", envelope.LIST, GOSSIP_MAX),
))
REPLY = envelope.REGISTRY.register(99, "vicinity_reply", (
    ("nonce", envelope.UINT, 0xFFFFFFFF),
    ("entries", envelope.LIST, GOSSIP_MAX),
))


def score(f, target_f, target_n):
    """Proximity of a candidate filter f to a target (higher is closer)."""
    return (popcount(f & target_n) << 16) | popcount(f & target_f)


def rank(cands, target_f, target_n, k, rng):
    """The k candidates closest to the target, closest first.

    cands: list of [id, addr, age, f, n, pbytes] (at most RANK_MAX). Equal
    score and age are broken by a fresh 16-bit draw: a fixed order (say, by
    id) would make every view prefer the same peers among the many that look
    alike (every proxy that follows only popular topics), and VICINITY would
    stop exploring the network for the proxies of rare topics. Each key is
    one int (score, youth, draw, index) so the sort compares ints."""
    pc = popcount
    n = len(cands)
    # Four 16-bit draws per 64-bit output, the i-th candidate's being
    # bits 16*(i % 4) of output i // 4.
    draws = []
    for r in [rng.next64() for _ in range((n + 3) >> 2)]:
        draws += (r & 0xFFFF, (r >> 16) & 0xFFFF, (r >> 32) & 0xFFFF, r >> 48)
    # One comprehension (no needy filter: no topic-priority term), keys
    # all distinct (the index is in them).
    if target_n:
        keyed = [((((pc(c[3] & target_n) << 16 | pc(c[3] & target_f)) << 16
                    | (0xFFFF - (c[2] if c[2] < 0xFFFF else 0xFFFF))) << 16 | draws[i]) << 8 | i)
                 for i, c in enumerate(cands)]
    else:
        keyed = [(((pc(c[3] & target_f) << 16 | (0xFFFF - (c[2] if c[2] < 0xFFFF else 0xFFFF))) << 16
                   | draws[i]) << 8 | i)
                 for i, c in enumerate(cands)]
    keyed.sort(reverse=True)
    return [cands[x & 0xFF] for x in keyed[:k]]


def check_entries(entries, bits, least):
    """Raise OverlayError unless entries are valid [id, addr, age, profile];
    returns them as [id, addr, age, f, n, pbytes]. Pure."""
    if len(entries) < least:
        raise OverlayError(common.E_ENTRY, __debug__ and "a VICINITY message carries its sender's entry first")
    out = []
    for e in entries:
        if type(e) is not list or len(e) != 4:
            raise OverlayError(common.E_ENTRY, __debug__ and "an entry is [peer_id, addr, age, profile]")
        common.check_peer(e[0], e[1])
        g = e[2]
        if type(g) is not int or not (0 <= g <= common.AGE_MAX):
            raise OverlayError(common.E_ENTRY, __debug__ and "age must be 0..%d" % common.AGE_MAX)
        f, n = common.split_profile(e[3], bits)
        out.append([e[0], e[1], g, f, n, e[3]])
    return out


class Vicinity:
    """One proxy's VICINITY view and its exchanges in flight."""

    def __init__(self, node_id, addr, rng, bits, view_size=DEFAULT_VIEW, gossip_len=DEFAULT_GOSSIP,
                 reply_timeout=DEFAULT_REPLY_TIMEOUT_MS):
        common.check_config_peer(node_id, addr)
        if not (1 <= view_size <= VIEW_MAX):
            raise OverlayConfigError(common.E_CONFIG, __debug__ and "VICINITY view must be 1..%d" % VIEW_MAX)
        if not (2 <= gossip_len <= GOSSIP_MAX):
            raise OverlayConfigError(common.E_CONFIG, __debug__ and "VICINITY gossip length must be 2..%d" % GOSSIP_MAX)
        if reply_timeout <= 0:
            raise OverlayConfigError(common.E_CONFIG, __debug__ and "reply timeout must be positive")
        self.id = node_id
        self.addr = addr
        self.rng = rng
        self.bits = bits
        self.view_size = view_size
        self.gossip_len = gossip_len
        self.reply_timeout = reply_timeout
        # The view: [id, addr, stamp, f, n, pbytes] per entry, slot order.
        self._view = []
        self._clock = 0
        self._pending = []      # [nonce, peer_id, deadline], oldest first

    @property
    def ids(self):
        return [e[0] for e in self._view]

    def __len__(self):
        return len(self._view)

    def __contains__(self, peer_id):
        for e in self._view:
            if e[0] == peer_id:
                return True
        return False

    def entries(self):
        """A copy: list of [id, addr, age, f, n, pbytes]."""
        c = self._clock
        return [[e[0], e[1], c - e[2], e[3], e[4], e[5]] for e in self._view]

    def pending(self):
        return len(self._pending)

    def remove(self, peer_id):
        v = self._view
        for i in range(len(v)):
            if v[i][0] == peer_id:
                v.pop(i)
                return True
        return False

    # --- the protocol ----------------------------------------------------

    def tick(self, now, me, pool, fallback=(), memory=None):
        """Start this period's exchange. ``me``: (f, n, pbytes), this proxy's
        profile; ``pool``: CYCLON view entries with known profiles, as
        [id, addr, age, f, n, pbytes]; ``fallback``: (id, addr) of CYCLON
        peers whose profile is not known yet, contacted only when the view
        and the pool are empty (start-up); ``memory(f, needy, exclude, k)``:
        up to k more entries for a target of filter f and needy filter
        needy (the node's profile memory), sent ahead of the ranked
        candidates. Returns Outgoing or None."""
        self.expire(now)
        self._clock += 1
        if len(self._pending) >= PENDING_MAX:
            self._forget(0)
        busy = [p[1] for p in self._pending]
        target = None
        clock = self._clock
        for e in self._view:
            if e[0] not in busy and (target is None or e[2] < target[2]):
                target = e
        if target is not None:
            t = [target[0], target[1], clock - target[2], target[3], target[4], target[5]]
        else:
            # Empty view (start-up): contact a random CYCLON peer.
            free = [c for c in pool if c[0] not in busy and c[0] != self.id]
            if not free:
                free = [[c[0], c[1], 0, 0, 0, None] for c in fallback if c[0] not in busy and c[0] != self.id]
            if not free:
                return None
            t = free[self.rng.next64() % len(free)]
        return self._ask(now, t, me, pool, memory)

    def explore(self, now, me, pool, memory=None):
        """A second exchange this period, with a random CYCLON peer outside
        the view: PolderCast asks it only of a proxy with a needy topic
        (docs/overlay.md, "Needy proxies explore"). The view holds the
        peers most similar to this proxy, and the oldest of them is
        contacted once per period, so the same ~20 peers, in turn, are
        asked for the rare topic's subscribers; a random peer of the
        CYCLON view is a fresh sample each time, and its answer is tailored
        to this proxy as any other (``memory`` first). Returns Outgoing or
        None (no such peer, or PENDING_MAX exchanges open)."""
        self.expire(now)
        pend = self._pending
        if len(pend) >= PENDING_MAX:
            return None
        busy = [p[1] for p in pend]
        inview = [e[0] for e in self._view]
        free = [c for c in pool if c[0] not in busy and c[0] not in inview and c[0] != self.id]
        if not free:
            return None
        return self._ask(now, free[self.rng.next64() % len(free)], me, pool, memory)

    def _ask(self, now, t, me, pool, memory):
        """The request to target entry t, its exchange noted as pending."""
        send = self._choose(pool, t, memory)
        nonce = self.rng.next64() & 0xFFFFFFFF
        self._pending.append([nonce, t[0], now + self.reply_timeout])
        return Outgoing(t[0], t[1], envelope.Message(REQUEST, [nonce, self._wire(send, me)]))

    def handle(self, msg, now, me, pool, memory=None):
        """A decoded VICINITY message -> Outgoing (reply) or None. Raises
        OverlayError (state unchanged) on a bad one."""
        t = msg.type
        if t is REQUEST:
            nonce, entries = msg.values
            got = check_entries(entries, self.bits, 1)
            p = got[0]
            if p[0] == self.id:
                raise OverlayError(common.E_SELF, __debug__ and "a VICINITY request carries this proxy's id as sender")
            self.expire(now)
            send = self._choose(pool, p, memory)
            out = Outgoing(p[0], p[1], envelope.Message(REPLY, [nonce, self._wire(send, me)]))
            self._merge(got, pool, me)
            return out
        if t is REPLY:
            nonce, entries = msg.values
            got = check_entries(entries, self.bits, 1)
            self.expire(now)
            pend = self._pending
            for i in range(len(pend)):
                if pend[i][0] == nonce:
                    if pend[i][1] != got[0][0]:
                        raise OverlayError(common.E_WRONG_PEER, __debug__ and "VICINITY reply from another peer than the one asked")
                    pend.pop(i)
                    self._merge(got, pool, me)
                    return None
            raise OverlayError(common.E_UNKNOWN, __debug__ and "VICINITY reply to no pending exchange")
        raise OverlayError(common.E_NOT_MINE, __debug__ and "message %s is not for VICINITY" % t[1])

    def expire(self, now):
        pend = self._pending
        while pend and now - pend[0][2] >= 0:
            self._forget(0)

    # --- internals -------------------------------------------------------

    def _wire(self, send, me):
        out = [[self.id, self.addr, 0, me[2]]]
        for c in send:
            out.append([c[0], c[1], c[2] if c[2] < common.AGE_MAX else common.AGE_MAX, c[5]])
        return out

    def _choose(self, pool, t, memory):
        """The gossip_len - 1 entries to send to target entry t: remembered
        peers for it first (MEMORY_CANDIDATES at most), then the view and
        CYCLON pool entries closest to it."""
        cands, seen = self._candidates(pool, t[0])
        # one ranked slot at least (gossip_len can be 2)
        k = self.gossip_len - 2
        if k > _MEMORY_CANDIDATES:
            k = _MEMORY_CANDIDATES
        mem = memory(t[3], t[4], seen, k) if memory is not None and k > 0 else []
        return mem + rank(cands, t[3], t[4], self.gossip_len - 1 - len(mem), self.rng)

    def _candidates(self, pool, exclude):
        """View + CYCLON pool as [id, addr, age, f, n, pbytes], without
        ``exclude`` (the target: it knows itself) and duplicates; and the
        ids taken (with the target)."""
        c = self._clock
        out = []
        seen = {exclude: 1}
        for e in self._view:
            if e[0] not in seen:
                seen[e[0]] = 1
                out.append([e[0], e[1], c - e[2], e[3], e[4], e[5]])
        for e in pool:
            if e[0] not in seen:
                seen[e[0]] = 1
                out.append(e)
        return out, seen

    def _merge(self, got, pool, me):
        """Keep the view_size entries of view + received + pool most similar
        to this proxy; a peer seen twice keeps its youngest age."""
        c = self._clock
        best = {}
        order = []
        for src in (self.entries(), got, pool):
            for e in src:
                i = e[0]
                if i == self.id:
                    continue
                old = best.get(i)
                if old is None:
                    best[i] = e
                    order.append(i)
                elif e[2] < old[2]:
                    best[i] = e
        cands = [best[i] for i in order]
        keep = rank(cands, me[0], me[1], self.view_size, self.rng)
        self._view = [[e[0], e[1], c - e[2], e[3], e[4], e[5]] for e in keep]

    def _forget(self, i):
        ex = self._pending.pop(i)
        self.remove(ex[1])
