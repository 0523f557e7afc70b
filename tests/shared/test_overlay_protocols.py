# Runs on CPython and in the MicroPython VM: the core overlay's protocols,
# each pinned against the defect of P2Pcollab's ocaml-p2p named in its test.
import hashlib

from rig import raises
from shared_protocol.wire import cbor, envelope
from shared_protocol.overlay import common, dissemination, ids, profile, rings, urps, vicinity
from shared_protocol.overlay.poldercast import PolderCast
from shared_protocol.rand import Rng

ADDR = b"\x0a\x00\x00\x01\x1f\x90"
BITS = 256
K = profile.DEFAULT_HASHES


def pid(x):
    """An 8-byte proxy id at ring position x."""
    return x.to_bytes(8, "big")


def topic(name):
    return ids.topic_id(name)


def prof(topics, needy=()):
    f = profile.make_filter(topics, BITS, K)
    n = profile.make_filter(needy, BITS, K)
    return (f, n, common.join_profile(f, n, BITS))


def ventry(i, age, topics):
    p = prof(topics)
    return [pid(i), ADDR, age, p[2]]


# --- ids --------------------------------------------------------------------

def test_ids_are_uniform_over_the_whole_ring():
    # ocaml-p2p draws ids in [0, max_int) of a 63-bit int: the top half of
    # the ring (top bit set) is never used. Hashing the static key spreads
    # ids over all 8 octants evenly, even for keys that differ in one byte.
    buckets = [0] * 8
    for i in range(800):
        buckets[ids.proxy_id(b"key" + bytes([i & 255, i >> 8])) [0] >> 5] += 1
    for b in buckets:
        assert 60 <= b <= 140, buckets
    assert sum(buckets[4:]) > 300
    assert ids.proxy_id(b"k") == hashlib.sha256(b"k").digest()[:8]
    assert ids.topic_id("garden") != ids.proxy_id(b"garden")
    e = raises(ids.IdError, ids.proxy_id, b"")
    assert e.code == ids.E_CONFIG


def test_ring_distances_wrap():
    top = ids.RING - 1
    assert ids.cw(top, 0) == 1          # the successor of the largest id is the smallest
    assert ids.ccw(0, top) == 1
    assert ids.cw(5, 3) == ids.RING - 2


# --- profiles and BLIP --------------------------------------------------------

def test_profile_versions_are_immutable_and_blip_flips_once_per_version():
    # ocaml-p2p shares one mutable Bloom filter between profiles: adding a
    # topic to one changes what was already handed out. Here a filter is an
    # int: a profile handed out never changes, and another proxy's is its own.
    a = profile.Subscriptions(Rng(1), BITS, K, 3000)
    b = profile.Subscriptions(Rng(2), BITS, K, 3000)
    a.set([topic("t1"), topic("t2")])
    b.set([topic("t1"), topic("t2")])
    sent = a.wire
    exact = a.exact
    a.add(topic("t3"))
    assert sent != a.wire and exact != a.exact
    assert b.exact == exact             # b's filter is b's own
    assert a.version == 2
    # BLIP: the same version always travels with the same flips.
    node = PolderCast(b"key-1", ADDR, Rng(5), topics=[topic("t1")], blip_milli=3000)
    p1 = node.profile()[2]
    for _ in range(5):
        node.tick(0)
        assert node.profile()[2] == p1
    assert node.profile()[1] == 0       # no needy filter under BLIP
    node.subscribe(topic("t2"))
    assert node.profile()[2] != p1      # a new version, a new draw


def test_adding_topics_one_by_one_gives_what_setting_them_gives():
    n = len(topic("x"))
    ts = [hashlib.sha256(("t%d" % i).encode()).digest()[:n] for i in range(profile.TOPICS_MAX + 1)]
    one = profile.Subscriptions(Rng(1), BITS, K)
    for i, t in enumerate(ts[:40]):
        assert one.add(t) and one.version == i + 1
        assert not one.add(t) and one.version == i + 1
    whole = profile.Subscriptions(Rng(1), BITS, K)
    whole.set(ts[:40])
    assert (one.topics, one.exact, one.wire) == (whole.topics, whole.exact, whole.wire)
    assert one.remove(ts[7]) and one.exact == profile.make_filter(ts[:7] + ts[8:40], BITS, K)
    # BLIP: a new draw per added topic, as per set
    b = profile.Subscriptions(Rng(3), BITS, K, 3000)
    b.add(ts[0])
    w = b.wire
    b.add(ts[1])
    assert b.exact == profile.make_filter(ts[:2], BITS, K) and b.version == 2 and b.wire != w
    # the limit holds for one at a time as for a whole set
    full = profile.Subscriptions(Rng(1), BITS, K)
    full.set(ts[:-2])
    assert full.add(ts[-2]) and len(full.topics) == profile.TOPICS_MAX
    raises(profile.ProfileConfigError, full.add, ts[-1])
    assert len(full.topics) == profile.TOPICS_MAX and full.exact == profile.make_filter(ts[:-1], BITS, K)


def test_blip_flip_rate_matches_epsilon():
    # p = 1 / (1 + e^(eps/k)); eps = 2, k = 2: p = 0.2689
    thr = profile.flip_probability(2000, 2)
    assert abs(thr / 4294967296.0 - 0.2689) < 0.001
    rng = Rng(9)
    flips = 0
    for _ in range(40):
        flips += profile.popcount(profile.blip(0, BITS, thr, rng))
    rate = flips / (40.0 * BITS)
    assert 0.25 < rate < 0.29, rate
    assert profile.blip(12345, BITS, 0, rng) == 12345


def test_filters_count_shared_topics():
    ts = [topic("a%d" % i) for i in range(6)]
    f1 = profile.make_filter(ts[:4], BITS, K)
    f2 = profile.make_filter(ts[2:], BITS, K)
    m = profile.topic_mask(ts[3], BITS, K)
    assert f1 & m == m and f2 & m == m
    assert profile.popcount(f1 & f2) >= profile.popcount(profile.make_filter(ts[2:4], BITS, K))
    raises(profile.ProfileConfigError, profile.check_config, 100, 2)
    raises(profile.ProfileConfigError, profile.check_config, 256, 9)


# --- VICINITY -------------------------------------------------------------------

def _vic(view=3):
    return vicinity.Vicinity(pid(1 << 60), ADDR, Rng(3), BITS, view, 4, 500)


def test_vicinity_keeps_the_most_similar():
    # ocaml-p2p sorted by similarity ascending and kept the head: the LEAST
    # similar peers. The view must keep the most similar ones.
    ts = [topic("v%d" % i) for i in range(5)]
    me = prof(ts[:3])
    v = _vic(3)
    req = envelope.Message(vicinity.REQUEST, [7, [
        ventry(10, 0, ts[3:]),           # the sender: shares nothing
        ventry(11, 1, ts[:3]),           # shares 3
        ventry(12, 1, ts[:2]),           # shares 2
        ventry(13, 1, ts[4:]),           # shares 0
    ]])
    v.handle(req, 0, me, [])
    pool = [[pid(14), ADDR, 0] + list(prof(ts[:1])), [pid(15), ADDR, 0] + list(prof(ts[3:]))]
    req2 = envelope.Message(vicinity.REQUEST, [8, [ventry(16, 0, ts[2:4])]])
    v.handle(req2, 1, me, pool)
    kept = sorted(v.ids)
    assert kept == sorted([pid(11), pid(12), pid(16)]) or kept == sorted([pid(11), pid(12), pid(14)]), kept
    assert pid(11) in kept and pid(12) in kept
    assert pid(13) not in kept and pid(10) not in kept and pid(15) not in kept


def test_vicinity_sends_candidates_closest_to_the_target():
    # ocaml-p2p chose the candidates to send by closeness to ITSELF. They
    # must be the ones closest to the gossip target.
    mine = [topic("m%d" % i) for i in range(3)]
    theirs = [topic("q%d" % i) for i in range(3)]
    me = prof(mine)
    v = _vic(6)
    # the target is the oldest entry; it subscribes `theirs`
    v.handle(envelope.Message(vicinity.REQUEST, [1, [ventry(50, 5, theirs)]]), 0, me, [])
    v._view[0][2] -= 9
    pool = [[pid(20 + i), ADDR, 1] + list(prof(mine)) for i in range(3)]
    pool += [[pid(30 + i), ADDR, 1] + list(prof(theirs[:2 - i % 2])) for i in range(3)]
    out = v.tick(10, me, pool)
    assert out.peer_id == pid(50)
    sent = [e[0] for e in out.message.values[1]]
    assert sent[0] == v.id
    assert sorted(sent[1:]) == sorted([pid(30), pid(31), pid(32)]), sent


def test_vicinity_bad_messages_leave_state_unchanged():
    me = prof([topic("x")])
    v = _vic(3)
    v.handle(envelope.Message(vicinity.REQUEST, [1, [ventry(9, 0, [topic("x")])]]), 0, me, [])
    out = v.tick(0, me, [])
    before = (v.entries(), [list(p) for p in v._pending], v._clock)
    bad = [
        envelope.Message(vicinity.REQUEST, [1, []]),
        envelope.Message(vicinity.REQUEST, [1, [[pid(3), ADDR, 0]]]),
        envelope.Message(vicinity.REQUEST, [1, [[b"short", ADDR, 0, me[2]]]]),
        envelope.Message(vicinity.REQUEST, [1, [[pid(3), ADDR, 0, b"\x00" * 5]]]),
        envelope.Message(vicinity.REQUEST, [1, [[pid(3), ADDR, -1, me[2]]]]),
        envelope.Message(vicinity.REQUEST, [1, [[v.id, ADDR, 0, me[2]]]]),
        envelope.Message(vicinity.REPLY, [out.message.values[0] ^ 1, [ventry(9, 0, [])]]),
        envelope.Message(vicinity.REPLY, [out.message.values[0], [ventry(8, 0, [])]]),
    ]
    for m in bad:
        e = raises(common.OverlayError, v.handle, m, 1, me, [])
        assert isinstance(e, common.RemoteError)
        assert (v.entries(), [list(p) for p in v._pending], v._clock) == before, m
    raises(common.OverlayConfigError, vicinity.Vicinity, pid(1), ADDR, Rng(1), BITS, 0, 4)


# --- Rings ----------------------------------------------------------------------

def _rings(x, topics):
    r = rings.Rings(pid(x), ADDR, Rng(x & 0xFFFF), BITS, K, 8, 500)
    r.set_topics(topics)
    return r


def _exchange(p, q, now=0, others=()):
    """p ticks with q as its discovery candidate; the request goes to
    whichever peer p chose (q, or its oldest ring neighbour among others)."""
    out = p.tick(now, profile.make_filter(p.topics, BITS, K),
                 [[q.id, ADDR, 0, profile.make_filter(q.topics, BITS, K), 0, b""]])
    assert out is not None
    to = q if out.peer_id == q.id else [x for x in others if x.id == out.peer_id][0]
    rep = to.handle(out.message, now)
    p.handle(rep.message, now)
    return to


def test_rings_are_wrap_aware():
    # ocaml-p2p compared raw ids: the largest id had no successor. On a
    # ring the successor of the largest id is the smallest.
    t = topic("ring")
    top = ids.RING - 1
    nodes = [_rings(x, [t]) for x in (top - 10, top - 5, 3, 8, 1 << 62)]
    for _ in range(6):
        for p in nodes:
            for q in nodes:
                if p is not q:
                    _exchange(p, q, 0, nodes)
    hi = nodes[1]                # id top - 5
    assert hi.successors(t) == [pid(3), pid(8)], hi.successors(t)
    assert hi.predecessors(t) == [pid(top - 10), pid(1 << 62)]
    lo = nodes[2]                # id 3
    assert lo.predecessors(t) == [pid(top - 5), pid(top - 10)]
    assert lo.successors(t) == [pid(8), pid(1 << 62)]
    # an exchange named every shared topic and confirmed the peers
    assert lo.confirmed(pid(top - 5), t)


def test_rings_exchange_covers_all_shared_topics_and_ignores_others():
    ts = [topic("r%d" % i) for i in range(4)]
    p = _rings(100, ts[:3])
    q = _rings(200, ts[1:])
    assert _exchange(p, q) is q
    for t in ts[1:3]:
        assert p.successors(t) == [q.id] and q.predecessors(t) == [p.id]
        assert p.confirmed(q.id, t)
    assert p.successors(ts[0]) == [] and not p.confirmed(q.id, ts[3])
    assert p.needy() == ts[:3]


def test_rings_answer_with_the_subscribers_nearest_to_the_asker():
    # T-Man's rule: a proxy far from the asker on the ring hands it the
    # known subscribers next to the asker, not its own ring neighbours
    # (with those, a newcomer walked the ring KEEP places per exchange).
    t = topic("tman")
    p = _rings(1000, [t])
    step = ids.RING // 40
    known = [pid(1000 + step * k) for k in range(1, 40)]
    p._absorb(known[0], ADDR, [[t, [[x, ADDR, 0] for x in known[1:8]]]])
    for k in range(8, 39, 8):
        p._absorb(known[k], ADDR, [[t, [[x, ADDR, 0] for x in known[k + 1:k + 8]]]])
    q = _rings(1000 + step * 20 + 5, [t])     # just after known[19]
    req = envelope.Message(rings.REQUEST, [9, q.id, ADDR, b"\x00" * (BITS // 8), [[t, []]]])
    reply = p.handle(req, 0).message.values[2]
    sent = sorted(e[0] for e in reply[0][1])
    want = sorted(known[16:24])               # 4 on each side of the asker
    assert sent == want, (sent, want)
    # its own ring neighbours are the nearest to itself, not what it sent
    assert p.successors(t) == known[:2]


def test_rings_introduce_to_nearest_neighbours_heard_of_through_others():
    # A neighbour that only a third proxy named does not know this proxy:
    # it would send none of the topic's messages here until a relay told
    # it. introduce() contacts it in the same period.
    t = topic("intro")
    p = _rings(5000, [t])
    s1, s2, p1 = pid(5010), pid(5020), pid(4990)
    p._absorb(s2, ADDR, [[t, [[s1, ADDR, 0], [p1, ADDR, 0]]]])
    assert p.successors(t) == [s1, s2] and p.predecessors(t)[0] == p1
    outs = p.introduce(0, 0)
    assert sorted(o.peer_id for o in outs) == sorted([s1, p1]), outs
    assert all(o.message.type is rings.REQUEST for o in outs)
    # once they answered, nothing more to introduce
    for o in outs:
        nonce = o.message.values[0]
        p.handle(envelope.Message(rings.REPLY, [nonce, o.peer_id, [[t, []]]]), 1)
    assert p.introduce(2, 0) == []


def test_rings_introductions_leave_a_slot_so_no_live_partner_is_dropped():
    # introduce() used to fill every pending slot: the next tick() then
    # forgot the oldest exchange before its reply was due and dropped that
    # (live) peer from every ring. Many neighbours known only from others,
    # no reply yet: tick + introduce leave one slot free, and the next
    # period, before any deadline, every neighbour is still there.
    ts = [topic("slot-%d" % k) for k in range(4)]
    p = _rings(5000, ts)
    for k in range(4):
        s1, s2, p1, p2 = pid(5010 + k), pid(5100 + k), pid(4990 - k), pid(4900 - k)
        p._absorb(pid(7000 + k), ADDR, [[ts[k], [[s1, ADDR, 0], [s2, ADDR, 0], [p1, ADDR, 0], [p2, ADDR, 0]]]])
    before = [(p.successors(t), p.predecessors(t)) for t in ts]
    outs = [p.tick(0, 0, [])] + p.introduce(0, 0)
    assert len(outs) == 1 + rings.INTRODUCE_MAX
    assert p.pending() <= rings.PENDING_MAX - 1
    # a verification still fits, then nothing more
    assert len(p.verify(0, 0, [[pid(9000), ADDR, 0, (1 << BITS) - 1]])) == 1
    assert p.introduce(0, 0) == [] and p.verify(0, 0, [[pid(9001), ADDR, 0, (1 << BITS) - 1]]) == []
    assert p.pending() == rings.PENDING_MAX - 1
    # next period, well before the reply timeout: nothing forgotten
    p.tick(10, 0, [])
    assert p.pending() == rings.PENDING_MAX
    assert [(p.successors(t), p.predecessors(t)) for t in ts] == before
    assert p.introduce(10, 0) == []


def test_rings_drop_a_silent_partner_and_bad_messages_change_nothing():
    t = topic("z")
    p = _rings(100, [t])
    q = _rings(200, [t])
    _exchange(p, q, 0)
    out = p.tick(1000, 0, [])             # refresh: the oldest neighbour, q
    assert out.peer_id == q.id
    before = (p.neighbours(t), [list(x) for x in p._pending], p._clock)
    nonce = out.message.values[0]
    for m in [
        envelope.Message(rings.REPLY, [nonce, pid(999), []]),
        envelope.Message(rings.REPLY, [nonce ^ 1, q.id, []]),
        envelope.Message(rings.REPLY, [nonce, q.id, [[t, [[pid(5), ADDR]]]]]),
        envelope.Message(rings.REPLY, [nonce, q.id, [[b"xx", []]]]),
        envelope.Message(rings.REPLY, [nonce, q.id, [[t, [[pid(5), ADDR, 1]] * (2 * rings.KEEP + 1)]]]),
        envelope.Message(rings.REQUEST, [1, p.id, ADDR, b"\x00" * 32, []]),
        envelope.Message(rings.REQUEST, [1, pid(7), ADDR, b"\x00" * 3, []]),
        envelope.Message(vicinity.REQUEST, [1, []]),
    ]:
        raises(common.OverlayError, p.handle, m, 1001)
        assert (p.neighbours(t), [list(x) for x in p._pending], p._clock) == before, m
    p.expire(1000 + 500)                  # no answer: q leaves every ring
    assert p.successors(t) == [] and p.pending() == 0


# --- dissemination ---------------------------------------------------------------

def test_dissemination_rule_opposite_side_and_never_back():
    rng = Rng(4)
    s1, s2, p1, p2 = pid(11), pid(12), pid(21), pid(22)
    pool = [pid(30 + i) for i in range(6)] + [s1, p1]
    for _ in range(50):
        # from the nearest successor: on to the nearest predecessor + F-1 random
        out = dissemination.choose(rng, s1, [s1, s2], [p1, p2], pool, 2)
        assert out[0] == p1 and len(out) == 2 and s1 not in out
        # from the nearest predecessor: on to the nearest successor
        out = dissemination.choose(rng, p1, [s1, s2], [p1, p2], pool, 3)
        assert out[0] == s1 and len(out) == 3 and p1 not in out
        # local publication: both sides + F-2
        out = dissemination.choose(rng, None, [s1, s2], [p1, p2], pool, 3)
        assert out[:2] == [s1, p1] and len(out) == 3
    # a two-proxy ring: the only neighbour is both; never sent back to it
    assert dissemination.choose(rng, s1, [s1], [s1], [s1], 2) == []


def test_dissemination_sender_off_the_ring_goes_both_ways():
    # ocaml-p2p decided the direction by comparing the sender's id with its
    # own: any sender with a larger id counted as "the successor", so a
    # message from a random (non-ring) peer went one way only, and a message
    # from the wrap-around neighbour went the wrong way.
    me = 1 << 40
    s1, p1 = pid(me + 5), pid(me - 5)
    stranger = pid(me + 1000)            # larger id, not a ring neighbour
    out = dissemination.choose(Rng(1), stranger, [s1], [p1], [], 2)
    assert out == [s1, p1]
    # wrap: my predecessor has the LARGEST id; from it, go to the successor
    top = pid(ids.RING - 3)
    out = dissemination.choose(Rng(1), top, [s1], [top], [], 2)
    assert out == [s1]


def test_dissemination_random_targets_come_from_vicinity_and_cyclon():
    # ocaml-p2p drew the random targets from the ring view only (and could
    # pick the sender). They come from the VICINITY/CYCLON views, confirmed
    # subscribers only, never the sender.
    t = topic("news")
    node = PolderCast(b"key-9", ADDR, Rng(2), topics=[t])
    me = ids.pos(node.id)
    near = [pid((me + d) % ids.RING) for d in (1, 2, -1, -2)]
    ring_peer = near[0]                   # the nearest successor
    friend = pid((me + ids.RING // 2) % ids.RING)  # in VICINITY, confirmed, far from the ring slots
    stranger = pid(78)                    # in CYCLON, never said it subscribes
    node.rings._absorb(ring_peer, ADDR, [[t, [[p, ADDR, 0] for p in near[1:]]]])
    node.rings._absorb(friend, ADDR, [[t, []]])
    assert node.rings.successors(t) == near[:2] and node.rings.confirmed(friend, t)
    node.vicinity._view.append([friend, ADDR, 0, 0, 0, b""])
    node.cyclon.add_seed(stranger, ADDR)
    assert node.random_pool(t) == [friend]
    targets = set()
    for i in range(20):
        outs = node.handle(envelope.Message(dissemination.DATA, [t, b"m%d" % i, ring_peer, 1, b"x"]), 0)
        assert type(outs[0]) is dissemination.Delivery
        for o in outs[1:]:
            targets.add(o.peer_id)
            assert o.message.values[2] == node.id and o.message.values[3] == 2
    # the opposite ring neighbour, and the random one from the views: never
    # back to the ring peer, never the stranger, never a ring spare
    assert targets == set([near[2], friend]), targets


def test_dissemination_random_targets_include_known_subscribers_across_the_ring():
    # On a large ring few VICINITY/CYCLON peers are confirmed for a topic:
    # with random targets from the views alone most messages only walked
    # the ring (hops far above log2 of the topic size). The known
    # subscribers beyond the ring neighbours and their spares (confirmed
    # by Rings, spread over the ring) are random targets too; never the
    # spares, never a stale entry, never a peer the views only guess at.
    t = topic("wide")
    node = PolderCast(b"key-10", ADDR, Rng(3), topics=[t])
    me = ids.pos(node.id)
    near = [pid((me + d) % ids.RING) for d in (1, 2, 3, 4, -1, -2, -3, -4)]
    far = [pid((me + (k + 1) * (ids.RING // 8)) % ids.RING) for k in range(6)]
    node.rings._absorb(near[0], ADDR, [[t, [[p, ADDR, 0] for p in near[1:]]]])
    node.rings._absorb(far[0], ADDR, [[t, [[p, ADDR, 0] for p in far[1:]]]])
    assert node.rings.successors(t) == near[:2] and node.rings.predecessors(t) == near[4:6]
    stranger = pid(78)                    # in CYCLON, never said it subscribes
    node.cyclon.add_seed(stranger, ADDR)
    assert sorted(node.random_pool(t)) == sorted(far)
    targets = set()
    for i in range(60):
        outs = node.handle(envelope.Message(dissemination.DATA, [t, b"w%d" % i, near[0], 1, b"x"]), 0)
        for o in outs[1:]:
            targets.add(o.peer_id)
    assert targets == set([near[4]] + far), targets
    # entries not heard of within max_age periods are not targets
    for _ in range(node.rings.max_age + 1):
        node.rings._clock += 1
    assert node.random_pool(t) == []


def test_random_pool_follows_every_change_of_what_it_is_computed_from():
    # random_pool keeps its answer per topic (a publication reaches a proxy
    # many times with nothing changed): a change of either view, of the
    # topic's known subscribers or of what peers named must show at once,
    # and a caller shuffling the answer must not change the next one.
    t = topic("cache")
    node = PolderCast(b"key-12", ADDR, Rng(7), topics=[t])
    a, b, c = pid(1111), pid(2222), pid(3333)
    node.vicinity._view.append([a, ADDR, 0, 0, 0, b""])
    node.cyclon.add_seed(b, ADDR)
    node.cyclon.add_seed(c, ADDR)
    assert node.random_pool(t) == []
    node.rings._ring[t].know(a, ADDR, 0, False, node.rings.pos, node.rng)   # a known subscriber
    assert node.random_pool(t) == [a]
    node.rings._absorb(b, ADDR, [[t, []]])                                 # b names the topic
    pool = node.random_pool(t)
    assert pool == [a, b]
    pool.reverse()
    assert node.random_pool(t) == [a, b]
    node.vicinity.remove(a)                                                # a leaves VICINITY
    assert node.random_pool(t) == [b]
    node.cyclon.add_seed(a, ADDR)                                          # and comes through CYCLON
    assert node.random_pool(t) == [b, a]
    node.unreachable(b)                                                    # b's link fails
    assert node.random_pool(t) == [a]


def test_rings_verify_confirms_a_vicinity_peer_for_the_topics_it_names():
    # A VICINITY peer whose filter has our topic is not a random target
    # until it names the topic itself: verify() asks it, its reply names
    # exactly what we share, and from then on it is confirmed for those
    # topics (even if it is no known subscriber of the ring), not for a
    # topic its filter only seems to have.
    a, b = topic("va"), topic("vb")
    node = PolderCast(b"key-11", ADDR, Rng(5), topics=[a, b])
    peer = pid(424242)
    fake = profile.make_filter([a, b], BITS, K)     # its filter claims both
    node.vicinity._view.append([peer, ADDR, 0, fake, 0, b""])
    assert node.random_pool(a) == [] and not node.rings.confirmed(peer, a)
    outs = node.rings.verify(0, node.subs.wire, node.vicinity._view)
    assert [o.peer_id for o in outs] == [peer] and outs[0].message.type is rings.REQUEST
    nonce = outs[0].message.values[0]
    node.handle(envelope.Message(rings.REPLY, [nonce, peer, [[a, []]]]), 1)
    assert node.rings.confirmed(peer, a) and not node.rings.confirmed(peer, b)
    assert node.rings.named(peer) == [a]
    assert node.random_pool(a) == [peer] and node.random_pool(b) == []
    # asked once: not again
    assert node.rings.verify(2, node.subs.wire, node.vicinity._view) == []


def test_data_is_relay_free_and_deduplicated():
    t = topic("a")
    node = PolderCast(b"key-3", ADDR, Rng(2), topics=[t])
    other = topic("b")
    m = envelope.Message(dissemination.DATA, [other, b"id1", pid(5), 0, b"x"])
    e = raises(common.OverlayError, node.handle, m, 0)
    assert e.code == common.E_NOT_SUBSCRIBED and node.diss.delivered == 0
    m = envelope.Message(dissemination.DATA, [t, b"id1", pid(5), 0, b"x"])
    assert type(node.handle(m, 0)[0]) is dissemination.Delivery
    assert node.handle(m, 0) == [] and node.diss.duplicates == 1
    raises(common.OverlayConfigError, node.publish, other, b"id2", b"x")
    seen = dissemination.SeenSet(3)
    for i in range(5):
        seen.add(i)
    assert 0 not in seen and 1 not in seen and 4 in seen and len(seen) == 3


# --- URPS -----------------------------------------------------------------------

def test_urps_memory_never_shrinks_on_repeats():
    # ocaml-urps, on an id already in the sample memory, removed a member and
    # re-added the id: the memory shrank. It must stay full.
    s = urps.Sampler(Rng(1), 10)
    for i in range(10):
        assert s.feed(pid(i))
    for r in range(200):
        assert s.feed(pid(r % 10))
        assert len(s) == 10
    for r in range(500):
        s.feed(pid(100 + r % 40))
        assert len(s) == 10
    assert len(set(s.ids)) == 10


def test_urps_limits_flooders_in_its_output():
    # 10 adversarial ids send 20% of the stream; the rest is 190 honest ids.
    rng = Rng(7)
    s = urps.Sampler(Rng(3), 20, 256, 4)
    adv = 0
    total = 0
    for step in range(6000):
        if rng.next64() % 5 == 0:
            x = pid(1000 + rng.next64() % 10)
        else:
            x = pid(rng.next64() % 190)
        s.feed(x)
        if step > 1000:
            o = s.sample()
            total += 1
            adv += o[0:6] == pid(1000)[0:6] and ids.pos(o) >= 1000
    share = adv / total
    fair = 10 / 200.0
    assert share <= 1.5 * fair, share   # without URPS it would be 0.20


# --- wire limits ----------------------------------------------------------------

def test_worst_case_messages_fit_their_limits():
    big = b"a" * common.ADDR_MAX
    p = b"\xff" * (BITS // 4)
    e = [pid(ids.RING - 1), big, common.AGE_MAX, p]
    d = envelope.REGISTRY.encode("vicinity_req", 0xFFFFFFFF, [e] * vicinity.GOSSIP_MAX)
    assert len(d) <= 1200, len(d)
    re = [pid(1), big, common.AGE_MAX]
    item = [pid(2), [re] * (2 * rings.KEEP)]
    d = envelope.REGISTRY.encode("rings_req", 0xFFFFFFFF, pid(1), big, b"\xff" * (profile.BITS_MAX // 8),
                                 [item] * rings.RING_TOPICS_MAX)
    assert len(d) <= common.OVERLAY_FRAME_MAX, len(d)
    # a shuffle with its needy profiles passed on: one datagram at the
    # defaults (8 entries, 6-byte addresses), one frame at the limits
    from shared_protocol.overlay import cyclon, poldercast
    for n, a, limit in ((cyclon.PROXY_SHUFFLE, ADDR, 1200), (cyclon.SHUFFLE_LEN_MAX, big, common.OVERLAY_FRAME_MAX)):
        ce = [pid(ids.RING - 1), a, common.AGE_MAX]
        d = envelope.REGISTRY.encode("overlay_shuffle_reply", 0xFFFFFFFF, pid(1), [ce] * n, [p] * n,
                                     [[pid(2), a, p, common.AGE_MAX]] * poldercast.NEEDY_GOSSIP_MAX)
        assert len(d) <= limit, (n, len(d))
    d = envelope.REGISTRY.encode("overlay_data", pid(1), b"i" * dissemination.MSG_ID_MAX, pid(2), 255,
                                 b"x" * dissemination.PAYLOAD_MAX)
    assert len(d) <= common.OVERLAY_FRAME_MAX
    bad = cbor.encode([1, 102, pid(1), b"i", pid(2), 1, b"x" * (dissemination.PAYLOAD_MAX + 1)])
    raises(envelope.EnvelopeError, envelope.REGISTRY.decode, bad)


def test_a_failed_link_reroutes_data_to_the_next_ring_neighbour():
    t = topic("f")
    node = PolderCast(b"key-4", ADDR, Rng(2), topics=[t])
    me = ids.pos(node.id)
    s1, s2 = pid((me + 10) % ids.RING), pid((me + 20) % ids.RING)
    node.rings._absorb(s1, ADDR, [[t, [[s2, ADDR, 0]]]])
    assert node.rings.successors(t) == [s1, s2]
    outs = node.publish(t, b"m1", b"x")
    dead = [o for o in outs if o.peer_id == s1][0]
    again = node.send_failed(dead)
    assert [o.peer_id for o in again] == [s2]
    assert again[0].message.values[:4] == [t, b"m1", node.id, 1]
    assert node.rings.successors(t) == [s2] and not node.rings.confirmed(s1, t)
    # a gossip message to a dead peer: dropped, nothing to resend
    node.cyclon.add_seed(s2, ADDR)
    assert node.send_failed(node.tick(0)[0]) == []


def test_vicinity_introduces_remembered_peers_of_a_rare_topic():
    # The views show a proxy ~40 peers; the profile memory (the last 256
    # profiles learned) lets it introduce the few subscribers of a rare
    # topic that a needy requester is missing.
    rare = topic("rare")
    common_t = topic("common")
    node = PolderCast(b"key-5", ADDR, Rng(6), topics=[common_t])
    holder = pid(1234)
    node._learn(holder, prof([common_t, rare])[2], b"addr-1234")
    assert holder not in node.vicinity and holder not in node.cyclon
    asker = [pid(99), ADDR, 0, prof([common_t, rare], needy=[rare])[2]]
    out = node.handle(envelope.Message(vicinity.REQUEST, [3, [asker]]), 0)[0]
    sent = [(e[0], e[1]) for e in out.message.values[1]]
    assert (holder, b"addr-1234") in sent
    # a requester without needy topics gets the views only
    node2 = PolderCast(b"key-6", ADDR, Rng(6), topics=[common_t])
    node2._learn(holder, prof([common_t, rare])[2], b"addr-1234")
    calm = [pid(98), ADDR, 0, prof([common_t, rare])[2]]
    out = node2.handle(envelope.Message(vicinity.REQUEST, [4, [calm]]), 0)[0]
    assert holder not in [e[0] for e in out.message.values[1]]


def test_needy_profiles_outlast_a_full_profile_memory():
    # The profile memory was one first-in first-out queue: ~40 profiles
    # learned per period pushed a rare topic's needy subscriber out within
    # a few periods, so at 10,000 proxies ~1% of them remembered it at any
    # time and its partner never met it in 100 periods. Needy profiles have
    # a queue of their own (NEEDY_CACHE_MAX), each queue bounded.
    from shared_protocol.overlay import poldercast
    rare = topic("rare")
    common_t = topic("common")
    node = PolderCast(b"key-7", ADDR, Rng(8), topics=[common_t])
    lonely = pid(4321)
    node._learn(lonely, prof([common_t, rare], needy=[rare])[2], b"addr-4321")
    for i in range(poldercast.PROFILE_CACHE_MAX + 10):
        node._learn(pid(10000 + i), prof([common_t])[2], ADDR)
    assert lonely in node._profiles
    asker = [pid(99), ADDR, 0, prof([common_t, rare], needy=[rare])[2]]
    out = node.handle(envelope.Message(vicinity.REQUEST, [5, [asker]]), 0)[0]
    assert (lonely, b"addr-4321") in [(e[0], e[1]) for e in out.message.values[1]]
    for i in range(poldercast.NEEDY_CACHE_MAX + 10):
        node._learn(pid(20000 + i), prof([common_t], needy=[common_t])[2], ADDR)
    assert lonely not in node._profiles
    assert len(node._need_order) == poldercast.NEEDY_CACHE_MAX
    assert len(node._prof_order) == poldercast.PROFILE_CACHE_MAX
    assert len(node._profiles) == poldercast.PROFILE_CACHE_MAX + poldercast.NEEDY_CACHE_MAX
    # a needy peer that found its rings moves to the ordinary queue
    p = pid(20000 + poldercast.NEEDY_CACHE_MAX + 9)
    node._learn(p, prof([common_t])[2], ADDR)
    assert p in node._prof_order and p not in node._need_order
    assert len(node._need_order) == poldercast.NEEDY_CACHE_MAX - 1
    raises(common.OverlayConfigError, PolderCast, b"key-8", ADDR, Rng(1), needy_cache=poldercast.NEEDY_CACHE_MAX + 1)
    raises(common.OverlayConfigError, PolderCast, b"key-8", ADDR, Rng(1), profile_cache=0)


def _ring_of_three(node, t, d1, d2):
    """Complete node's ring of topic t with two peers at ring distances d1
    and d2 from it, each named by the other; node's ring position."""
    me = ids.pos(node.id)
    a, b = pid((me + d1) % ids.RING), pid((me + d2) % ids.RING)
    node.rings._absorb(a, ADDR, [[t, [[b, ADDR, 0]]]])
    node.rings._absorb(b, ADDR, [[t, [[a, ADDR, 0]]]])
    return me


def test_a_complete_ring_meets_a_late_needy_subscriber():
    # A topic's 4th subscriber that missed the ring its 3 others had
    # formed stayed alone for 100 periods at 10,000 proxies: the 3, their
    # rings complete, asked VICINITY for nobody, and VICINITY ranks peers
    # by similarity to the proxy itself, so one sharing a single rare topic
    # rarely stays in view. A remembered needy peer is offered to a proxy
    # that has its needy topics (even one needing nothing), in a gossip slot
    # of its own, and Rings' discovery weighs it.
    rare = topic("rare")
    common_t = topic("common")
    late = pid(777)
    late_p = prof([common_t, rare], needy=[rare])[2]
    node = PolderCast(b"key-9", ADDR, Rng(9), topics=[common_t])
    node._learn(late, late_p, b"addr-777")
    calm = [pid(98), ADDR, 0, prof([common_t, rare])[2]]
    out = node.handle(envelope.Message(vicinity.REQUEST, [6, [calm]]), 0)[0]
    sent = [e[0] for e in out.message.values[1]]
    assert late in sent
    # ... and a ring member that remembers it asks it for a Rings exchange
    member = PolderCast(b"key-10", ADDR, Rng(10), topics=[rare])
    me = _ring_of_three(member, rare, 1000, 2000)
    assert member.rings.needy() == [] and member.profile()[1] == 0
    near = pid((me + 500) % ids.RING)
    member._learn(near, late_p, b"addr-near")
    asked = [o.peer_id for o in member.tick(0) if o.message.type is rings.REQUEST]
    assert near in asked, asked


def test_a_complete_small_ring_keeps_its_member_whose_successor_wraps_needy():
    # 3 of a topic's 6 subscribers that found each other have every ring
    # slot filled, like a whole topic of 3: none of them was needy, so the
    # part looked for nobody and met the other 3 only through CYCLON's
    # samples (20-30 rounds at 10,000 proxies). In each part exactly one
    # member's first successor wraps around the ring (the part's highest
    # id): that member keeps a small topic in its needy filter.
    rare = topic("rare")
    m = profile.make_filter([rare], BITS, K)
    member = PolderCast(b"key-11", ADDR, Rng(11), topics=[rare])
    _ring_of_three(member, rare, 1000, 2000)
    assert member.rings.needy() == [] and member.rings.wraps() == [] and member.profile()[1] == 0
    top = PolderCast(b"key-12", ADDR, Rng(12), topics=[rare])
    me = _ring_of_three(top, rare, -2000, -1000)
    assert top.rings.needy() == [] and top.rings.wraps() == [rare]
    assert top.profile()[1] & m == m
    # a topic with more known subscribers than one exchange names is not
    # small: its highest member looks for nobody
    for k in range(rings.RARE_KNOWN_MAX - 1):
        top.rings._absorb(pid((me - 3000 - 100 * k) % ids.RING), ADDR, [[rare, []]])
    assert top.rings.wraps() == [] and top.profile()[1] == 0
    # topics without a neighbour, then with an empty slot, come first
    other = topic("other")
    top.subscribe(other)
    mo = profile.make_filter([other], BITS, K)
    assert top.profile()[1] == mo


def test_a_proxy_with_an_orphan_topic_still_looks_for_its_other_needy_topics():
    # A topic no other proxy subscribes has no ring neighbour for ever;
    # with the topics without any neighbour listed alone, such a proxy's
    # needy filter never named its rare topic with an empty slot, whose
    # other subscribers then met it only through CYCLON's samples
    # (tools/bench/poldercast_split.py, N = 5,000).
    orphan, rare = topic("orphan"), topic("rare-2")
    node = PolderCast(b"key-15", ADDR, Rng(15), topics=[orphan, rare])
    me = ids.pos(node.id)
    node.rings._absorb(pid((me + 1000) % ids.RING), ADDR, [[rare, []]])
    assert node.rings.needy() == sorted([orphan, rare])
    want = profile.make_filter([orphan, rare], BITS, K)
    assert node.profile()[1] & want == want


def test_a_needy_proxy_also_asks_a_random_cyclon_peer_each_period():
    # VICINITY contacts the oldest of its ~20 most similar peers once per
    # period, so a needy proxy asked the same few peers, in turn, for its
    # rare topic's subscribers: at 5,000 proxies an isolated subscriber of
    # a 14-proxy topic went 15 periods unmatched although 2,435 proxies
    # remembered one of them (tools/bench/poldercast_split.py). A needy
    # proxy now also asks a random CYCLON peer outside its view, whose
    # answer is tailored to it; a proxy with no needy topic does not.
    rare, common_t = topic("rare-3"), topic("common-3")
    similar = [pid(100 + i) for i in range(3)]
    randoms = [pid(200 + i) for i in range(4)]

    def setup(topics):
        node = PolderCast(b"key-16", ADDR, Rng(16), topics=topics)
        p = prof([common_t])
        node.vicinity._view = [[x, ADDR, 0, p[0], p[1], p[2]] for x in similar]
        for x in randoms + similar:
            node.cyclon.add_seed(x, ADDR)
            node._learn(x, p[2], ADDR)
        return node

    node = setup([common_t, rare])
    assert node.profile()[1]
    reqs = [o for o in node.tick(0) if o.message.type is vicinity.REQUEST]
    assert len(reqs) == 2, reqs
    assert reqs[0].peer_id in similar and reqs[1].peer_id in randoms
    # the explored peer's reply is taken like any other: it names a
    # subscriber of the rare topic, which joins the view ahead of the
    # similar peers (topic priority)
    sub = pid(999)
    reply = envelope.Message(vicinity.REPLY, [reqs[1].message.values[0], [
        [reqs[1].peer_id, ADDR, 0, prof([common_t])[2]],
        [sub, ADDR, 0, prof([common_t, rare])[2]]]])
    assert node.handle(reply, 1) == []
    assert sub in node.vicinity and node.vicinity.pending() == 1
    # a reply from another peer than the explored one is refused
    forged = envelope.Message(vicinity.REPLY, [reqs[0].message.values[0], [
        [reqs[1].peer_id, ADDR, 0, prof([common_t])[2]]]])
    raises(common.OverlayError, node.handle, forged, 1)
    # at most PENDING_MAX exchanges open: the exploration waits
    node.vicinity._pending = [[i, pid(300 + i), 10 ** 9] for i in range(vicinity.PENDING_MAX)]
    assert node.vicinity.explore(1, node.profile(), node._pool(), node._memory) is None
    # nothing needy (no topic at all here): one exchange per period
    calm = setup([])
    assert calm.profile()[1] == 0
    reqs = [o for o in calm.tick(0) if o.message.type is vicinity.REQUEST]
    assert [o.peer_id in similar for o in reqs] == [True]


def test_shuffles_pass_on_remembered_needy_profiles():
    # A needy proxy's profile travelled only with its own CYCLON entries
    # (~20 at a time): at 5,000 proxies an orphan topic's subscriber was
    # remembered as needy by 1-4% of the proxies at round 15, and at
    # 10,000 rare topics stayed split until round 64. Each shuffle and
    # reply now carries the needy profiles its sender heard of most
    # recently (NEEDY_GOSSIP_MAX, with their ages), each receiver
    # remembering them and passing them on in turn.
    from shared_protocol.overlay import poldercast
    rare = topic("rare")
    common_t = topic("common")
    lonely = pid(4321)
    lonely_p = prof([common_t, rare], needy=[rare])[2]
    a = PolderCast(b"key-13", ADDR, Rng(13), topics=[common_t])
    b = PolderCast(b"key-14", ADDR, Rng(14), topics=[common_t])
    a._learn(lonely, lonely_p, b"addr-4321")
    for i in range(poldercast.NEEDY_GOSSIP_MAX):
        a._learn(pid(5000 + i), prof([common_t], needy=[common_t])[2], ADDR)
    a.add_seed(b.id, b.addr)
    req = [o for o in a.tick(0) if o.message.type is poldercast.SHUFFLE][0]
    passed = [x[0] for x in req.message.values[3]]
    # the newest first, at most NEEDY_GOSSIP_MAX
    assert passed == [pid(5000 + i) for i in range(poldercast.NEEDY_GOSSIP_MAX - 1, -1, -1)], passed
    # a peer that became needy again is the newest
    a2 = PolderCast(b"key-17", ADDR, Rng(17), topics=[common_t])
    a2._learn(lonely, lonely_p, b"addr-4321")
    a2._learn(pid(5000), prof([common_t], needy=[common_t])[2], ADDR)
    a2._learn(lonely, prof([common_t])[2], b"addr-4321")
    a2._learn(lonely, lonely_p, b"addr-4321")
    a2.add_seed(b.id, b.addr)
    req = [o for o in a2.tick(0) if o.message.type is poldercast.SHUFFLE][0]
    assert req.message.values[3][0] == [lonely, b"addr-4321", lonely_p, 1]
    rep = b.handle(envelope.Message(poldercast.SHUFFLE, req.message.values), 2000)
    assert lonely in b._need_order
    # ... and b passes it on in its reply (newest first)
    assert rep[0].message.values[4][0][0] == lonely
    # a copy never replaces a profile the receiver has (it may be older)
    c = PolderCast(b"key-15", ADDR, Rng(15), topics=[common_t])
    calm = prof([common_t, rare])[2]
    c._learn(lonely, calm, b"addr-4321")
    c.handle(envelope.Message(poldercast.SHUFFLE, req.message.values), 2000)
    assert c._profiles[lonely][2] == calm and lonely not in c._need_order
    # a misshaped one: typed error, nothing learned
    d = PolderCast(b"key-16", ADDR, Rng(16), topics=[common_t])
    v = list(req.message.values)
    for bad in ([lonely, b"addr-4321", b"short", 0], [b"x", b"addr-4321", lonely_p, 0],
                [lonely, b"addr-4321", lonely_p, -1], [lonely, b"addr-4321", lonely_p]):
        v[3] = [bad]
        raises(common.OverlayError, d.handle, envelope.Message(poldercast.SHUFFLE, v), 2000)
    assert d._profiles == {} and len(d.cyclon) == 0
    # a shuffle without the field (a proxy from before it) is accepted
    d.handle(envelope.Message(poldercast.SHUFFLE, v[:3]), 2000)
    assert len(d.cyclon) > 0 and lonely not in d._profiles
    # a full needy memory forgets the peer heard of least recently (most
    # proxies needy in the first periods are not any more), and passes on
    # none heard of more than NEEDY_RUMOUR_AGE_MAX periods ago
    e = PolderCast(b"key-18", ADDR, Rng(18), topics=[common_t], needy_cache=2)
    needy_p = prof([common_t], needy=[common_t])[2]
    e._learn(pid(1), needy_p, ADDR, 0)
    e._learn(pid(2), needy_p, ADDR, 5)
    e._learn(pid(3), needy_p, ADDR, 0)
    assert e._need_order == [pid(1), pid(3)]
    e._learn(pid(4), needy_p, ADDR, poldercast.NEEDY_RUMOUR_AGE_MAX + 1)
    e.add_seed(b.id, b.addr)
    req = [o for o in e.tick(0) if o.message.type is poldercast.SHUFFLE][0]
    assert [x[0] for x in req.message.values[3]] == [pid(3)], req.message.values[3]


# --- rings after a partition ------------------------------------------------

def _period(nodes, by, now, split):
    """One period: every node ticks, its messages (and the answers) go
    through unless they cross the split (then the sender is told)."""
    from shared_protocol.errors import RemoteError
    from shared_protocol.overlay.common import Outgoing
    for n in nodes:
        for o in n.tick(now):
            dst = by[o.peer_id]
            if split and split(n) != split(dst):
                n.unreachable(o.peer_id)
                continue
            try:
                rep = dst.handle(o.message, now)
            except RemoteError:
                continue
            for x in rep:
                if type(x) is Outgoing:
                    back = by[x.peer_id]
                    if split and split(dst) != split(back):
                        dst.unreachable(x.peer_id)
                        continue
                    try:
                        back.handle(x.message, now)
                    except RemoteError:
                        pass
        n.expire(now)


def test_rings_of_a_small_overlay_meet_again_after_a_partition():
    # Four proxies of one topic, split in two pairs long enough for each
    # side to drop the other from every view, then linked again (the
    # transport tells CYCLON it hears them). A peer left in Rings' "asked
    # recently" list was never asked again (it only moves on when discovery
    # picks someone new): the rings stayed split for good.
    t = topic("t")
    nodes = [PolderCast(bytes([i + 1]) * 32, bytes([10, 0, 0, i]), Rng(i + 7), topics=[t]) for i in range(4)]
    by = {}
    for n in nodes:
        by[n.id] = n
    for n in nodes:
        for m in nodes:
            if m is not n:
                n.add_seed(m.id, m.addr)

    def side(n):
        return nodes.index(n) // 2

    def seen(n):
        return len(set(n.rings.successors(t) + n.rings.predecessors(t)))
    now = 0
    for _ in range(10):
        now += 1000
        _period(nodes, by, now, None)
    assert [seen(n) for n in nodes] == [3, 3, 3, 3]
    for _ in range(10):
        now += 1000
        _period(nodes, by, now, side)
    assert [seen(n) for n in nodes] == [1, 1, 1, 1]
    for n in nodes:
        for m in nodes:
            if side(m) != side(n):
                n.cyclon.heard(m.id, m.addr)
    for _ in range(10):
        now += 1000
        _period(nodes, by, now, None)
    assert [seen(n) for n in nodes] == [3, 3, 3, 3]
