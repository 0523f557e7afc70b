# Runs on CPython and in the MicroPython VM: 12 proxies running the real
# PolderCast code, passing encoded bytes to each other, give the same
# per-seed digest on both interpreters.
import hashlib

from shared_protocol.overlay import ids
from shared_protocol.overlay.dissemination import Delivery
from shared_protocol.overlay.poldercast import PolderCast
from shared_protocol.rand import Rng

TOPICS = [ids.topic_id("topic-%d" % t) for t in range(4)]


def run_scenario(n, rounds, seed, publications):
    """n proxies (3 topics each out of 4), every message through bytes.
    Returns (nodes, per-publication reach, digest)."""
    rng = Rng(seed)
    nodes = []
    by_id = {}
    for i in range(n):
        ts = [TOPICS[t] for t in range(4) if (i + t) % 4 != 0]
        node = PolderCast(b"proxy-key-%d" % i, bytes([10, 0, 0, i, 0x1F, 0x90]), Rng(seed * 1000 + i),
                          topics=ts, reply_timeout=400, urps_memory=16)
        nodes.append(node)
        by_id[node.id] = node
    for i in range(n):
        for k in (1, 2, 3):
            nodes[i].add_seed(nodes[(i + k) % n].id, nodes[(i + k) % n].addr)
    h = hashlib.sha256()

    def deliver(src, out, now, queue):
        dst = by_id[out.peer_id]
        for o in dst.receive(out.data(), now):
            if type(o) is Delivery:
                h.update(dst.id + o.msg_id + bytes([o.hops]))
            else:
                queue.append((dst, o))

    for r in range(rounds):
        order = list(nodes)
        rng.shuffle(order)
        now = r * 1000
        for node in order:
            for out in node.tick(now):
                rep = []
                deliver(node, out, now + 1, rep)
                for _, o in rep:
                    deliver(by_id[out.peer_id], o, now + 2, [])
        for node in nodes:
            node.expire(now + 1000)
    reach = []
    for p in range(publications):
        origin = nodes[rng.randbelow(n)]
        t = origin.topics[rng.randbelow(len(origin.topics))]
        mid = b"pub-%d" % p
        queue = [(origin, o) for o in origin.publish(t, mid, b"reading")]
        k = 0
        while k < len(queue):
            src, out = queue[k]
            k += 1
            deliver(src, out, rounds * 1000, queue)
        subs = [x for x in nodes if t in x.topics]
        reach.append((len([x for x in subs if mid in x.diss.seen]), len(subs)))
    for node in nodes:
        h.update(node.id)
        for i in node.cyclon.ids:
            h.update(i)
        for i in node.vicinity.ids:
            h.update(i)
        for t in node.topics:
            for i in node.rings.successors(t) + node.rings.predecessors(t):
                h.update(t + i)
    return nodes, reach, h.digest().hex()


def test_twelve_proxies_converge_and_deliver_everything():
    nodes, reach, _ = run_scenario(12, 15, 3, 6)
    for got, want in reach:
        assert got == want, reach
    # rings: each proxy's successors are the true nearest on every topic
    for node in nodes:
        for t in node.topics:
            subs = sorted(x.id for x in nodes if t in x.topics)
            k = subs.index(node.id)
            s = len(subs)
            assert node.rings.successors(t) == [subs[(k + 1) % s], subs[(k + 2) % s]]
            assert node.rings.predecessors(t) == [subs[(k - 1) % s], subs[(k - 2) % s]]


def test_same_digest_on_both_interpreters():
    _, _, digest = run_scenario(12, 12, 5, 4)
    assert digest == SCENARIO_DIGEST, digest


# Changed with the needy profile memory (poldercast.NEEDY_CACHE_MAX): needy
# peers are offered in VICINITY gossip slots of their own and weighed by
# Rings' discovery, so the 12 proxies choose other partners; changed again
# when shuffles began to pass on remembered needy profiles
# (NEEDY_GOSSIP_MAX), profiles got ages (an older copy no longer replaces
# a newer one; a full needy memory forgets the one heard of least
# recently) and a small ring's member whose successor wraps stayed needy
# (Rings.wraps); and when a proxy with a topic no other proxy has began
# to look for its other needy topics too (Rings.needy_mask); and when a
# needy proxy began to ask a random CYCLON peer too (Vicinity.explore).
# Same digest on both interpreters.
SCENARIO_DIGEST = "4bed5191d8024aa423b07ec22af0d5ea6439c12c0306514a6ff6d811b2b52f70"
