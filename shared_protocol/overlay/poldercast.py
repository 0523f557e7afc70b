"""One proxy's PolderCast node: CYCLON (with URPS in front of its input),
VICINITY and Rings, the profile it publishes, and dissemination. Sans-I/O:
``tick(now)`` and ``handle(msg, now)`` return lists of Outgoing (messages to
send) and Delivery (messages for this proxy's own subscribers); the caller
owns sockets, timers and the clock (plain monotonic ms ints) and passes an
``Rng``. Same conventions as CYCLON: typed errors leave the state as it was.

CYCLON's own messages carry no profiles, but VICINITY takes candidates from
the CYCLON view and must rank them, so between proxies a shuffle travels as
``overlay_shuffle`` / ``overlay_shuffle_reply``: CYCLON's fields plus one
profile (or null) per entry. This node unwraps them, passes every entry
through the URPS sampler (an id that URPS does not admit is removed before
CYCLON merges, so flooders cannot take over the view) and hands CYCLON a
plain CYCLON message.
"""
from shared_protocol.wire import envelope
from shared_protocol.overlay import cyclon
from shared_protocol.overlay.cyclon import (Cyclon, SHUFFLE_LEN_MAX, PROXY_SHUFFLE, PROXY_VIEW,
                                            REPLY as C_REPLY, SHUFFLE as C_SHUFFLE, check_entries as c_check_entries)
from shared_protocol.overlay import common, dissemination, ids, rings, urps, vicinity
from shared_protocol.overlay.common import OverlayConfigError, OverlayError, Outgoing
from shared_protocol.overlay.profile import Subscriptions, DEFAULT_BITS, DEFAULT_HASHES, popcount
from shared_protocol.overlay.dissemination import Delivery

# Profiles of peers remembered (the last ones learned, views or not): the
# source of VICINITY's candidates for rare topics (_memory). 256 x ~90 bytes.
PROFILE_CACHE_MAX = 256
# Profiles with a needy filter (the peer has a topic without ring
# neighbours) are remembered apart, in a queue of their own, so the ~40
# profiles a proxy learns per period do not push them out within a few
# periods: at 10,000 proxies a rare topic's 2-4 subscribers were remembered
# by ~1% of the proxies at any time and went 100 periods without meeting.
# A proxy stays needy only while a topic of its has no ring neighbour, so
# in a converged overlay these are the subscribers of rare topics (and of
# topics nobody else has): a few per cent of the proxies. 64 x ~90 bytes
# (docs/overlay.md, "Rare topics").
NEEDY_CACHE_MAX = 64
# Needy profiles a proxy passes on in each overlay shuffle and shuffle reply
# (beyond the profiles of the shuffled entries): the ones of its needy
# memory heard of most recently, so a needy proxy's profile spreads like a
# rumour, each proxy that learns it passing it on in its next exchanges,
# instead of only with the ~20 CYCLON entries of it. Without them, at
# 5,000 proxies, round 15, an orphan topic's subscriber was remembered as
# needy by 1-4% of the proxies (the memories held mostly proxies needy in
# the first rounds and no longer), and at 10,000 proxies rare topics
# stayed split until round 64 (now 36). 2 x ~84 bytes per message
# (docs/overlay.md, "Rare topics").
NEEDY_GOSSIP_MAX = 2
# Needy profiles older than this (periods since their proxy was heard
# with them, directly or through gossip) are not passed on: the proxy has
# likely found its rings since (at 10,000 proxies, all needy at round 0,
# 98% of the ring slots were right at round 10).
NEEDY_RUMOUR_AGE_MAX = 10
# Age given to remembered candidates: older than any view entry of a live
# peer, so a view entry wins a tie.
MEMORY_AGE = 1000

DEFAULT_REPLY_TIMEOUT_MS = 2000

# "needy": [[peer_id, addr, profile, age], ...], remembered needy profiles
# passed on (NEEDY_GOSSIP_MAX); optional, so a proxy without it still
# speaks to one with it.
SHUFFLE = envelope.REGISTRY.register(96, "overlay_shuffle", (
    ("nonce", envelope.UINT, 0xFFFFFFFF),
    ("entries", envelope.LIST, SHUFFLE_LEN_MAX),
    ("profiles", envelope.LIST, SHUFFLE_LEN_MAX),   # bytes or null, one per entry
    ("needy", envelope.LIST, NEEDY_GOSSIP_MAX),
), min_fields=3)
SHUFFLE_REPLY = envelope.REGISTRY.register(97, "overlay_shuffle_reply", (
    ("nonce", envelope.UINT, 0xFFFFFFFF),
    ("sender", envelope.BYTES, ids.ID_LEN),
    ("entries", envelope.LIST, SHUFFLE_LEN_MAX),
    ("profiles", envelope.LIST, SHUFFLE_LEN_MAX),
    ("needy", envelope.LIST, NEEDY_GOSSIP_MAX),
), min_fields=4)


class PolderCast:
    """The three gossip layers and dissemination of one proxy."""

    def __init__(self, static_key, addr, rng, topics=(), fanout=dissemination.DEFAULT_FANOUT,
                 cyclon_view=PROXY_VIEW, cyclon_shuffle=PROXY_SHUFFLE,
                 vicinity_view=vicinity.DEFAULT_VIEW, vicinity_gossip=vicinity.DEFAULT_GOSSIP,
                 bits=DEFAULT_BITS, hashes=DEFAULT_HASHES, blip_milli=0,
                 urps_memory=urps.DEFAULT_MEMORY, use_urps=True, ring_max_age=rings.DEFAULT_MAX_AGE,
                 reply_timeout=DEFAULT_REPLY_TIMEOUT_MS, seen=dissemination.DEFAULT_SEEN, probe_stale=True,
                 profile_cache=PROFILE_CACHE_MAX, needy_cache=NEEDY_CACHE_MAX):
        node_id = ids.proxy_id(static_key)
        common.check_config_peer(node_id, addr)
        if not (1 <= profile_cache <= PROFILE_CACHE_MAX):
            raise OverlayConfigError(common.E_CONFIG, __debug__ and "profile memory must be 1..%d" % PROFILE_CACHE_MAX)
        if not (0 <= needy_cache <= NEEDY_CACHE_MAX):
            raise OverlayConfigError(common.E_CONFIG, __debug__ and "needy profile memory must be 0..%d" % NEEDY_CACHE_MAX)
        self.id = node_id
        self.addr = addr
        self.rng = rng
        self.subs = Subscriptions(rng, bits, hashes, blip_milli)
        self.cyclon = Cyclon(node_id, addr, rng, cyclon_view, cyclon_shuffle, reply_timeout)
        self.urps = urps.Sampler(rng, urps_memory) if use_urps else None
        self.vicinity = vicinity.Vicinity(node_id, addr, rng, bits, vicinity_view, vicinity_gossip, reply_timeout)
        self.rings = rings.Rings(node_id, addr, rng, bits, hashes, ring_max_age, reply_timeout)
        self.diss = dissemination.Disseminator(node_id, rng, fanout, seen)
        self.bits = bits
        # Rings.probe each period (False: the decisions of runs before it)
        self.probe_stale = probe_stale
        self._profiles = {}     # peer id -> [f, n, pbytes, addr, period last known current]
        self._prof_order = []   # ids of non-needy profiles, least recently learned first
        self._prof_f = []       # their filters, same order (for _memory's scan)
        self._need_order = []   # ids of needy profiles (n != 0), least recently learned first
        self._need_f = []       # their filters and needy filters, same order
        self._need_n = []
        self._need_heard = []   # the period each was last known current (heard from its proxy or fresh gossip)
        self._clock = 0         # periods (tick)
        self._prof_ver = 0
        self._need_ver = 0
        self._wanted_key = None
        self._wanted_val = None
        self.profile_cache = profile_cache
        self.needy_cache = needy_cache
        self._pool_key = None
        self._pool_val = None
        self._rp = {}           # topic -> random_pool's cache (see there)
        self._me = None
        self.subs.set(topics)
        self.rings.set_topics(self.subs.topics)

    # --- subscriptions ---------------------------------------------------

    @property
    def topics(self):
        return self.subs.topics

    def subscribe(self, topic):
        if not common.check_id(topic):
            raise OverlayConfigError(common.E_CONFIG, __debug__ and "a topic id is %d bytes (ids.topic_id)" % ids.ID_LEN)
        if self.subs.add(topic):
            self.rings.set_topics(self.subs.topics)
            return True
        return False

    def unsubscribe(self, topic):
        if self.subs.remove(topic):
            self.rings.set_topics(self.subs.topics)
            self._rp.pop(topic, None)
            return True
        return False

    def add_seed(self, peer_id, addr):
        """A known proxy (configuration, invite): into CYCLON's view."""
        return self.cyclon.add_seed(peer_id, addr)

    # --- profile ---------------------------------------------------------

    def profile(self):
        """(filter, needy filter, wire bytes) as this proxy sends them now.
        With BLIP on, the needy filter stays empty: it changes often and
        each new draw would let peers average the flips away."""
        f = self.subs.wire
        n = 0 if self.subs.epsilon_milli else self.rings.needy_mask()
        me = self._me
        if me is None or me[0] != f or me[1] != n:
            me = self._me = (f, n, common.join_profile(f, n, self.bits))
        return me

    def _pool(self):
        """CYCLON view entries whose profile is known, for VICINITY/Rings.
        Rebuilt only when the CYCLON view, its clock or a profile changed
        (it is read several times per period)."""
        c = self.cyclon
        key = (c._clock, self._prof_ver, tuple(c.ids))
        if key == self._pool_key:
            return self._pool_val
        out = []
        prof = self._profiles
        for e in c.entries():
            p = prof.get(e[0])
            if p is not None:
                out.append([e[0], e[1], e[2], p[0], p[1], p[2]])
        self._pool_key = key
        self._pool_val = out
        return out

    def _memory(self, target_f, target_n, exclude, limit):
        """Up to ``limit`` remembered peers (profile memory, beyond the
        views) for a VICINITY target with filter ``target_f`` and needy
        filter ``target_n``: first peers that have the target's needy
        topics (most needy bits shared first), then needy peers that need
        a topic the target has (its filter has their needy bits). The
        views alone show a proxy only ~40 peers per exchange, too few to
        find the other 2 or 3 subscribers of a rare topic among thousands;
        the second kind lets a rare topic's last subscriber reach a ring
        whose members are no longer needy themselves."""
        k = self.subs.hashes
        pc = popcount
        out = []
        if target_n:
            fl = self._prof_f
            nf = self._need_f
            # One pass over the filters alone (a comprehension), then the
            # few hits. (-shared bits, slot): a total order, the same on
            # every interpreter; needy slots after the others'.
            hits = [x for x in range(len(fl)) if pc(fl[x] & target_n) >= k]
            hits += [x + PROFILE_CACHE_MAX for x in range(len(nf)) if pc(nf[x] & target_n) >= k]
            if hits:
                order = self._prof_order
                need = self._need_order
                keyed = []
                for x in hits:
                    i = order[x] if x < PROFILE_CACHE_MAX else need[x - PROFILE_CACHE_MAX]
                    if i not in exclude:
                        f = fl[x] if x < PROFILE_CACHE_MAX else nf[x - PROFILE_CACHE_MAX]
                        keyed.append((-pc(f & target_n), x, i))
                keyed.sort()
                for h in keyed[:limit]:
                    out.append(self._mem_entry(h[2]))
        if len(out) < limit and target_f:
            nn = self._need_n
            hits = [x for x in range(len(nn)) if pc(nn[x] & target_f) >= k]
            if hits:
                need = self._need_order
                taken = [e[0] for e in out]
                # the most recently learned first: an older one is more
                # likely to have found its ring since
                for x in reversed(hits):
                    i = need[x]
                    if i not in exclude and i not in taken:
                        out.append(self._mem_entry(i))
                        if len(out) >= limit:
                            break
        return out

    def _mem_entry(self, i):
        p = self._profiles[i]
        return [i, p[3], MEMORY_AGE, p[0], p[1], p[2]]

    def _wanted(self, me):
        """Remembered needy peers that Rings' discovery should weigh (with
        the views' entries): those needing a topic this proxy has (its
        filter has their needy bits), and those having one of this proxy's
        needy topics. Without them a ring whose members all have their
        neighbours never looks for a late subscriber of its topic, which
        VICINITY (ranking by similarity to the proxy itself) may not keep
        in view. Cached on the needy memory's version and the profile."""
        key = (self._need_ver, me[0], me[1])
        if key == self._wanted_key:
            return self._wanted_val
        f, n = me[0], me[1]
        k = self.subs.hashes
        pc = popcount
        nf = self._need_f
        nn = self._need_n
        out = [self._mem_entry(self._need_order[x]) for x in range(len(nn))
               if pc(nn[x] & f) >= k or (n and pc(nf[x] & n) >= k)]
        self._wanted_key = key
        self._wanted_val = out
        return out

    def _learn(self, peer_id, pbytes, addr, age=0):
        """Remember a peer's profile, ``age`` periods old (the age of the
        entry it came with: 0 from the peer itself)."""
        prof = self._profiles
        p = prof.get(peer_id)
        heard = self._clock - age
        if p is not None:
            if p[2] == pbytes:
                if heard > p[4]:
                    p[4] = heard
                    if p[1] and self.needy_cache:
                        self._need_heard[self._need_order.index(peer_id)] = heard
                return
            if heard < p[4]:
                # An older copy than the one remembered (a peer's profile
                # travels with every entry of it, and a copy of a needy
                # one outlived the peer's finding its rings): kept out.
                return
        f, n = common.split_profile(pbytes, self.bits)
        needy = n != 0 and self.needy_cache > 0
        if p is not None:
            was = p[1] != 0 and self.needy_cache > 0
            if was == needy:
                # Same queue: updated in place (its learning order stays).
                if needy:
                    x = self._need_order.index(peer_id)
                    self._need_f[x] = f
                    self._need_n[x] = n
                    self._need_heard[x] = heard
                    self._need_ver += 1
                else:
                    self._prof_f[self._prof_order.index(peer_id)] = f
                prof[peer_id] = [f, n, pbytes, addr, heard]
                self._prof_ver += 1
                return
            self._forget_profile(peer_id, was)
        if needy:
            order = self._need_order
            order.append(peer_id)
            self._need_f.append(f)
            self._need_n.append(n)
            self._need_heard.append(heard)
            if len(order) > self.needy_cache:
                # The one heard of least recently goes (not the first
                # learned): most proxies needy in the first periods are
                # not any more, and a first-in first-out queue held
                # mostly them (94% of the entries at 5,000 proxies, round
                # 15). The newcomer stays for now, however old: it may be
                # the very peer a VICINITY partner offered.
                hs = self._need_heard
                old = 0
                for x in range(1, len(order) - 1):
                    if hs[x] < hs[old]:
                        old = x
                self._forget_profile(order[old], True)
            self._need_ver += 1
        else:
            order = self._prof_order
            order.append(peer_id)
            self._prof_f.append(f)
            if len(order) > self.profile_cache:
                self._forget_profile(order[0], False)
        prof[peer_id] = [f, n, pbytes, addr, heard]
        self._prof_ver += 1

    def _forget_profile(self, peer_id, needy):
        if needy:
            x = self._need_order.index(peer_id)
            self._need_order.pop(x)
            self._need_f.pop(x)
            self._need_n.pop(x)
            self._need_heard.pop(x)
            self._need_ver += 1
        else:
            x = self._prof_order.index(peer_id)
            self._prof_order.pop(x)
            self._prof_f.pop(x)
        del self._profiles[peer_id]

    # --- the protocol ----------------------------------------------------

    def tick(self, now):
        """One period of all three layers: a list of Outgoing."""
        out = []
        self._clock += 1
        me = self.profile()
        o = self.cyclon.tick(now)
        if o is not None:
            out.append(self._wrap(o, me))
        pool = self._pool()
        c = self.cyclon
        fallback = [] if pool or len(self.vicinity) else [(c.ids[i], c._addrs[i]) for i in range(len(c))]
        o = self.vicinity.tick(now, me, pool, fallback, self._memory)
        if o is not None:
            out.append(o)
        if me[1]:
            o = self.vicinity.explore(now, me, pool, self._memory)
            if o is not None:
                out.append(o)
        o = self.rings.tick(now, me[0], self.vicinity.entries() + pool, lambda: self._wanted(me))
        if o is not None:
            out.append(o)
        out.extend(self.rings.introduce(now, me[0]))
        out.extend(self.rings.verify(now, me[0], self.vicinity._view))
        if self.probe_stale:
            out.extend(self.rings.probe(now, me[0]))
        return out

    def unreachable(self, peer_id):
        """The transport could not reach this peer (link refused or timed
        out): drop it from every view and ring now rather than at its next
        timeout."""
        self.cyclon.remove(peer_id)
        self.vicinity.remove(peer_id)
        self.rings.remove(peer_id)

    def send_failed(self, out):
        """The transport could not deliver ``out`` (one of this node's
        Outgoing): the peer is dropped (``unreachable``), and a DATA message
        goes instead to the nearest remaining ring neighbour on the same
        side, or to a random confirmed subscriber if it was a random
        target. Returns the list of Outgoing to send."""
        peer = out.peer_id
        m = out.message
        data = m.type is dissemination.DATA
        if data:
            topic = m.values[0]
            side = 1 if peer in self.rings.successors(topic) else (2 if peer in self.rings.predecessors(topic) else 0)
        self.unreachable(peer)
        if not data:
            return []
        r = self.rings
        if side == 1:
            cands = r.successors(topic)[:1]
        elif side == 2:
            cands = r.predecessors(topic)[:1]
        else:
            cands = common.pick(self.rng, self.random_pool(topic), 1)
        return [Outgoing(c, self._addr_of(c), envelope.Message(dissemination.DATA, [topic] + m.values[1:2] + [self.id] + m.values[3:]))
                for c in cands]

    def expire(self, now):
        self.cyclon.expire(now)
        self.vicinity.expire(now)
        self.rings.expire(now)

    def receive(self, data, now):
        """Bytes of one frame from a peer -> list of Outgoing / Delivery."""
        return self.handle(envelope.REGISTRY.decode(data), now)

    def handle(self, msg, now):
        """A decoded overlay message -> list of Outgoing / Delivery. Raises a
        RemoteError subclass (state unchanged) on a bad message."""
        t = msg.type
        # DATA first: a publication is thousands of them, a period a few
        # gossip messages per proxy.
        if t is dissemination.DATA:
            return self._on_data(msg.values)
        if t is SHUFFLE or t is SHUFFLE_REPLY:
            return self._on_shuffle(msg, now)
        if t is vicinity.REQUEST or t is vicinity.REPLY:
            me = self.profile()
            o = self.vicinity.handle(msg, now, me, self._pool(), self._memory)
            for e in msg.values[1]:
                if e[0] != self.id:
                    self._learn(e[0], e[3], e[1], e[2])
            return [o] if o is not None else []
        if t is rings.REQUEST or t is rings.REPLY:
            o = self.rings.handle(msg, now)
            return [o] if o is not None else []
        raise OverlayError(common.E_NOT_MINE, __debug__ and "message %s is not for the overlay" % t[1])

    def publish(self, topic, msg_id, payload):
        """A message of this proxy's own subscribers to the overlay."""
        if topic not in self.subs.topics:
            raise OverlayConfigError(common.E_NOT_SUBSCRIBED, __debug__ and "publish on a topic this proxy does not subscribe to")
        if type(msg_id) is not bytes or not (0 < len(msg_id) <= dissemination.MSG_ID_MAX):
            raise OverlayConfigError(common.E_CONFIG, __debug__ and "message id must be 1..%d bytes" % dissemination.MSG_ID_MAX)
        if type(payload) is not bytes or len(payload) > dissemination.PAYLOAD_MAX:
            raise OverlayConfigError(common.E_CONFIG, __debug__ and "payload must be at most %d bytes" % dissemination.PAYLOAD_MAX)
        if msg_id in self.diss.seen:
            return []
        self.diss.seen.add(msg_id)
        return self._forward(topic, msg_id, None, 0, payload)

    # --- internals -------------------------------------------------------

    def _wrap(self, o, me):
        """CYCLON's Outgoing -> the overlay shuffle with a profile per entry."""
        v = o.message.values
        prof = self._profiles
        ps = []
        for e in v[-1]:
            if e[0] == self.id:
                ps.append(me[2])
            else:
                p = prof.get(e[0])
                ps.append(p[2] if p is not None else None)
        if o.message.type is C_SHUFFLE:
            m = envelope.Message(SHUFFLE, [v[0], v[1], ps, self._rumours(o.peer_id)])
        else:
            m = envelope.Message(SHUFFLE_REPLY, [v[0], v[1], v[2], ps, self._rumours(o.peer_id)])
        return Outgoing(o.peer_id, o.addr, m)

    def _rumours(self, peer_id):
        """The needy profiles passed on to ``peer_id`` (not its own): the
        NEEDY_GOSSIP_MAX heard of most recently, none older than
        NEEDY_RUMOUR_AGE_MAX periods, each [id, addr, profile, age]."""
        order = self._need_order
        hs = self._need_heard
        floor = self._clock - NEEDY_RUMOUR_AGE_MAX
        picked = []
        for _ in range(NEEDY_GOSSIP_MAX):
            best = -1
            # the most recently added first among equals
            for x in range(len(order) - 1, -1, -1):
                if hs[x] >= floor and (best < 0 or hs[x] > hs[best]) and x not in picked and order[x] != peer_id:
                    best = x
            if best < 0:
                break
            picked.append(best)
        prof = self._profiles
        out = []
        for x in picked:
            p = prof[order[x]]
            out.append([order[x], p[3], p[2], self._clock - hs[x]])
        return out

    def _on_shuffle(self, msg, now):
        req = msg.type is SHUFFLE
        v = msg.values
        k = 1 if req else 2
        entries = v[k]
        ps = v[k + 1]
        rumours = v[k + 2] if len(v) > k + 2 else ()
        # Every check first: nothing changes (URPS counts included) unless
        # CYCLON would accept the message.
        c_check_entries(entries, 1 if req else 0)
        plen = self.bits // 4
        if len(ps) != len(entries):
            raise OverlayError(common.E_PROFILE, __debug__ and "one profile (or null) per entry")
        for i in range(len(entries)):
            if len(entries[i][0]) != ids.ID_LEN:
                raise OverlayError(common.E_ENTRY, __debug__ and "a proxy id is %d bytes" % ids.ID_LEN)
            p = ps[i]
            if p is not None and (type(p) is not bytes or len(p) != plen):
                raise OverlayError(common.E_PROFILE, __debug__ and "a profile is %d bytes" % plen)
        for r in rumours:
            if type(r) is not list or len(r) != 4:
                raise OverlayError(common.E_ENTRY, __debug__ and "a needy profile is [peer_id, addr, profile, age]")
            common.check_peer(r[0], r[1])
            if type(r[2]) is not bytes or len(r[2]) != plen:
                raise OverlayError(common.E_PROFILE, __debug__ and "a profile is %d bytes" % plen)
            if type(r[3]) is not int or not (0 <= r[3] <= common.AGE_MAX):
                raise OverlayError(common.E_ENTRY, __debug__ and "age must be 0..%d" % common.AGE_MAX)
        if req:
            if entries[0][0] == self.id:
                raise cyclon.CyclonError("from_self", __debug__ and "a shuffle request carries this node's own id as sender")
        else:
            # CYCLON's own check, done before URPS sees the entries.
            ok = False
            for ex in self.cyclon._pending:
                if ex[0] == v[0]:
                    if ex[1] != v[1]:
                        raise cyclon.CyclonError("wrong_peer", __debug__ and "reply for an exchange with another peer")
                    ok = True
            if not ok:
                raise cyclon.CyclonError("unknown_exchange", __debug__ and "reply to no pending shuffle")
        keep = []
        for i in range(len(entries)):
            e = entries[i]
            if (req and i == 0) or e[0] == self.id or self.urps is None or self.urps.feed(e[0]):
                keep.append(e)
                if ps[i] is not None:
                    self._learn(e[0], ps[i], e[1], e[2])
        # Needy profiles passed on, learned like any other (one older than
        # the profile this proxy has of that peer is kept out). Last first,
        # so that among equals the sender's first is this proxy's first too.
        if self.needy_cache:
            for r in reversed(rumours):
                if r[0] != self.id and int.from_bytes(r[2][plen // 2:], "big"):
                    self._learn(r[0], r[2], r[1], r[3])
        if req:
            o = self.cyclon.handle(envelope.Message(C_SHUFFLE, [v[0], keep]), now)
            return [self._wrap(o, self.profile())]
        self.cyclon.handle(envelope.Message(C_REPLY, [v[0], v[1], keep]), now)
        return []

    def _on_data(self, values):
        topic, mid, sender, hops, payload = values
        d = self.diss
        d.check(values, topic in self.subs.topics)
        if mid in d.seen:
            d.duplicates += 1
            return []
        d.seen.add(mid)
        d.delivered += 1
        out = [Delivery(topic, mid, payload, hops)]
        out.extend(self._forward(topic, mid, sender, hops, payload))
        return out

    def random_pool(self, topic):
        """Confirmed subscribers of the topic in the VICINITY and CYCLON
        views (Rings.confirmed: a known subscriber of the topic's ring, or
        it named the topic in its last Rings exchange with us). If none is,
        the known subscribers beyond the ring neighbours and their spares
        (confirmed, and on a small topic's ring spread all over it)."""
        r = self.rings
        v = r._ring.get(topic)
        if v is None:
            return []
        # VICINITY's peers first, then CYCLON's not already taken (each view
        # holds an id once, so only an id in both can repeat).
        cand = [e[0] for e in self.vicinity._view]
        cand += self.cyclon._ids
        # The answer depends on the two views (cand), the topic's known
        # subscribers (v.ver) and what peers named (_direct_ver): a
        # publication reaches a proxy many times per period with none of
        # them changed, and each time most of its messages need a pool.
        c = self._rp.get(topic)
        if c is not None and c[0] is v and c[1] == v.ver and c[2] == r._direct_ver and c[3] == cand:
            out = list(c[4])
        else:
            kd = v.kd
            direct = r._direct
            out = [i for i in cand if i in kd or topic in direct.get(i, ())]
            if len(out) > 1 and len(set(out)) < len(out):
                seen = set()
                once = []
                for i in out:
                    if i not in seen:
                        seen.add(i)
                        once.append(i)
                out = once
            self._rp[topic] = (v, v.ver, r._direct_ver, cand, tuple(out))
        if not out:
            out = v.far(rings.KEEP, r._clock - r.max_age)
        return out

    def _forward(self, topic, mid, sender, hops, payload):
        r = self.rings
        targets = dissemination.choose(self.rng, sender, r.successors(topic), r.predecessors(topic),
                                       lambda: self.random_pool(topic), self.diss.fanout)
        return self.diss.forward(topic, mid, sender, hops, payload, targets, self._addr_of)

    def _addr_of(self, peer_id):
        a = self.rings.addr_of(peer_id)
        if a is not None:
            return a
        for e in self.vicinity._view:
            if e[0] == peer_id:
                return e[1]
        ids_ = self.cyclon.ids
        if peer_id in ids_:
            return self.cyclon._addrs[ids_.index(peer_id)]
        return b""
