"""Round-based simulation of N proxies, each one the real PolderCast node
from ``shared_protocol.overlay.poldercast`` (CYCLON + URPS, VICINITY, Rings,
profiles, dissemination). Nothing here re-implements a rule of a protocol:
the simulator decides who is up, which messages are lost, and when
publications happen, and it measures.

Delivery. Messages travel as ``envelope.Message`` objects, the objects a
proxy encodes; a sampled fraction (``wire_sample``) goes through bytes
(``Outgoing.data()`` then ``PolderCast.receive``), which also gives the
gossip byte counts: bytes per message type are the mean encoded size of the
sampled messages of that type times the number sent.

Time. A round is one gossip period (``period`` ms). Live proxies tick in a
fresh random order; a request and its reply are delivered at once.

Subscriptions. Each proxy subscribes to ``subs`` distinct topics drawn from
a Zipf distribution over ``topics`` topics (P(topic rank r) ~ r^-zipf), as
in the SpiderCast and PolderCast evaluations.

Determinism. ``random.Random(seed)`` streams for the schedule, the network
and wire sampling, a numpy generator for subscriptions, and one ``Rng`` per
proxy seeded from the schedule stream: a seed fixes the whole run.
"""
import gc
import hashlib
import random

import numpy as np

from shared_protocol.errors import RemoteError
from shared_protocol.overlay import dissemination, ids, poldercast
from shared_protocol.overlay.common import E_NOT_SUBSCRIBED
from shared_protocol.rand import Rng

from upsycle.sim.cyclon_sim import Event, ScenarioError, node_addr

UP = 0
CRASHED = 2

_Delivery = dissemination.Delivery
# A proxy that joined fewer than this many rounds before a publication is
# neither its publisher nor counted among its intended subscribers (it is still finding its
# rings: a CYCLON shuffle, a VICINITY exchange, then one Rings exchange per
# round); it is counted in hit_ratio_all. Every proxy of the initial
# population counts from round 0.
WARMUP = 5


class gc_paused:
    """Cyclic garbage collection off for a block (restored after): the
    protocol objects make no reference cycles, but a round (or a full
    measurement) allocates millions of short-lived lists, and each
    allocation burst made CPython's collector scan every proxy's state
    again (half the CPU of a round at 2,000 proxies). Reference counting
    frees them."""

    def __enter__(self):
        self.was = gc.isenabled()
        gc.disable()
        return self

    def __exit__(self, *exc):
        if self.was:
            gc.enable()
        return False


def static_key(seed, i):
    """A simulated proxy's static public key (32 bytes)."""
    return hashlib.sha256(b"upsycle-sim-proxy/%d/%d" % (seed, i)).digest()


def zipf_weights(topics, exponent):
    w = np.arange(1, topics + 1, dtype=np.float64) ** -float(exponent)
    return w / w.sum()


class PolderCastSim:
    def __init__(self, n, topics=100, zipf=2.3, subs=5, fanout=2, seed=1, loss=0.0,
                 churn=0.0, events=(), blip_milli=0, wire_sample=0.01, period=1000,
                 pubs_per_round=20, publish_from=30, use_urps=True, node_options=None, warmup=WARMUP):
        if n < 2:
            raise ScenarioError("need at least 2 proxies")
        if topics < 1 or subs < 1 or subs > topics:
            raise ScenarioError("need 1 <= subs-per-node <= topics")
        if not (0.0 <= loss < 1.0):
            raise ScenarioError("loss must be in [0, 1)")
        if not (0.0 <= churn < 1.0):
            raise ScenarioError("churn must be a fraction of proxies per round in [0, 1)")
        if not (0.0 <= wire_sample <= 1.0):
            raise ScenarioError("wire sample must be in [0, 1]")
        for e in events:
            if e.kind != "crash":
                raise ScenarioError("sim poldercast supports crash@ROUND:FRACTION events")
        self.seed = seed
        self.fanout = fanout
        self.period = period
        self.loss = loss
        self.churn = churn
        self.blip_milli = blip_milli
        self.pubs_per_round = pubs_per_round
        self.publish_from = publish_from
        self.events = sorted(events, key=lambda e: e.round)
        self.applied_crashes = []
        self.rng = random.Random(seed)
        self.net_rng = random.Random(seed + 1)
        self.wire_rng = random.Random(seed + 2)
        self.np_rng = np.random.default_rng([seed, 0x5B5])
        self.wire_sample = wire_sample
        self.n_topics = topics
        self.topic_ids = [ids.topic_id("topic-%d" % t) for t in range(topics)]
        self.topic_index = {self.topic_ids[t]: t for t in range(topics)}
        self.weights = zipf_weights(topics, zipf)
        self.subs = subs
        self.opts = dict(fanout=fanout, blip_milli=blip_milli, use_urps=use_urps,
                         reply_timeout=max(1, period // 5))
        self.opts.update(node_options or {})
        self.nodes = []
        self.state = bytearray()
        self.index = {}
        self.node_topics = []       # per node: list of topic numbers
        self.joined = []            # per node: the round it joined
        self.warmup = warmup
        self._join_round = 0
        self.round = 0
        self.errors = {}
        self.sent = {}              # message type name -> count
        self.sampled = {}           # type name -> [messages encoded, bytes]
        self.sent_round = 0
        self.lost = 0
        self.to_down = 0
        self.pub_results = []       # one dict per publication
        self._pub_seq = 0
        # (live, settled publishers, topic -> live subscribers) while no
        # proxy crashes or joins: a round's publications share them
        # instead of a pass over every proxy each (_pub_sets).
        self._pub_cache = None
        for _ in range(n):
            self._new_node()
        for i in range(n):
            self._seed_random(i, self.nodes[i].cyclon.view_size)

    # --- population ----------------------------------------------------

    def _new_node(self):
        i = len(self.nodes)
        ts = sorted(int(t) for t in self.np_rng.choice(self.n_topics, self.subs, replace=False, p=self.weights))
        node = poldercast.PolderCast(static_key(self.seed, i), node_addr(i), Rng(self.rng.getrandbits(64)),
                                     topics=[self.topic_ids[t] for t in ts], **self.opts)
        self.nodes.append(node)
        self.node_topics.append(ts)
        self._pub_cache = None
        self.joined.append(self._join_round)
        self.state.append(UP)
        self.index[node.id] = i
        return i

    def _seed_random(self, i, k):
        live = self.live()
        for j in self.rng.sample(live, min(k + 1, len(live))):
            if j != i:
                self.nodes[i].add_seed(self.nodes[j].id, self.nodes[j].addr)

    def live(self):
        st = self.state
        return [i for i in range(len(self.nodes)) if st[i] == UP]

    def _crash(self, value):
        live = self.live()
        k = int(round(value * len(live))) if value < 1 else int(value)
        victims = self.rng.sample(live, min(k, len(live)))
        for i in victims:
            self.state[i] = CRASHED
        self._pub_cache = None
        return victims

    # --- running -------------------------------------------------------

    def run_round(self):
        # The collector runs between rounds as usual (gc_paused).
        with gc_paused():
            self._run_round()

    def _run_round(self):
        r = self.round + 1
        self._join_round = r
        while self.events and self.events[0].round <= r:
            ev = self.events.pop(0)
            self.applied_crashes.append(ev)
            self._crash(ev.value)
        if self.churn:
            victims = self._crash(self.churn)
            for _ in victims:
                self._seed_random(self._new_node(), 1)
        order = self.live()
        self.rng.shuffle(order)
        t0 = (r - 1) * self.period
        step = self.period / max(1, len(order))
        nodes = self.nodes
        for pos in range(len(order)):
            i = order[pos]
            now = t0 + int(pos * step)
            for out in nodes[i].tick(now):
                rep = self._send(i, out, now)
                if rep:
                    for o in rep:
                        self._send(self.index[out.peer_id], o, now)
        end = t0 + self.period
        for i in order:
            if self.state[i] == UP:
                nodes[i].expire(end)
        self.round = r
        if r >= self.publish_from:
            for _ in range(self.pubs_per_round):
                self.publish_random(end)

    def _send(self, i, out, now):
        """Deliver one gossip Outgoing from node i; returns what it answered."""
        name = out.message.name
        self.sent[name] = self.sent.get(name, 0) + 1
        self.sent_round += 1
        j = self.index.get(out.peer_id)
        if j is None:
            return None
        if self.loss and self.net_rng.random() < self.loss:
            self.lost += 1
            return None
        if self.state[j] != UP:
            # A proxy's link to a crashed one fails: its transport says so.
            self.to_down += 1
            self.nodes[i].unreachable(out.peer_id)
            return None
        node = self.nodes[j]
        try:
            if self.wire_sample and self.wire_rng.random() < self.wire_sample:
                data = out.data()
                s = self.sampled.setdefault(name, [0, 0])
                s[0] += 1
                s[1] += len(data)
                return node.receive(data, now)
            return node.handle(out.message, now)
        except RemoteError as e:
            self.errors[e.code] = self.errors.get(e.code, 0) + 1
            return None

    def gossip_bytes(self):
        """Estimated bytes of every gossip message sent so far, by type."""
        out = {}
        for name, count in self.sent.items():
            s = self.sampled.get(name)
            out[name] = count * (s[1] / s[0]) if s and s[0] else None
        return out

    # --- publications --------------------------------------------------

    def subscribers(self, t):
        """Live subscribers of topic number t, ascending."""
        return list(self._pub_sets()[2][t])

    def _pub_sets(self):
        c = self._pub_cache
        if c is None or c[0] != self.round:
            live = self.live()
            # The publisher, like the intended subscribers, is a proxy past
            # its first `warmup` rounds: one that just joined has no
            # neighbours yet.
            settled = self.round - self.warmup
            joined = self.joined
            ready = [i for i in live if joined[i] <= settled] or live
            by_topic = [[] for _ in range(self.n_topics)]
            nt = self.node_topics
            for i in live:
                for t in nt[i]:
                    by_topic[t].append(i)
            c = self._pub_cache = (self.round, live, ready, by_topic)
        return c[1:]

    def publish_random(self, now):
        """One publication on a random topic (with live subscribers) from a
        random live subscriber; disseminated to completion."""
        live, ready, _ = self._pub_sets()
        if not live:
            return None
        i = ready[self.rng.randrange(len(ready))]
        t = self.node_topics[i][self.rng.randrange(len(self.node_topics[i]))]
        return self.publish(i, t, now)

    def publish(self, origin, t, now):
        self._pub_seq += 1
        topic = self.topic_ids[t]
        mid = b"m" + self._pub_seq.to_bytes(8, "big")
        everyone = self._pub_sets()[2][t]
        settled = self.round - self.warmup
        joined = self.joined
        intended = [i for i in everyone if joined[i] <= settled or i == origin]
        nodes = self.nodes
        state = self.state
        index = self.index
        got = {origin: 0}
        received = 0            # DATA messages received by subscribers
        non_sub = 0
        lost = 0
        queue = [(origin, o) for o in nodes[origin].publish(topic, mid, b"x" * 16)]
        k = 0
        while k < len(queue):
            src, out = queue[k]
            k += 1
            j = index.get(out.peer_id)
            if j is None or state[j] != UP:
                # The link fails: the sender is told and may re-route.
                lost += 1
                queue.extend((src, o) for o in nodes[src].send_failed(out))
                continue
            if self.loss and self.net_rng.random() < self.loss:
                lost += 1
                continue
            try:
                res = nodes[j].handle(out.message, now)
            except RemoteError as e:
                if e.code == E_NOT_SUBSCRIBED:
                    non_sub += 1
                self.errors[e.code] = self.errors.get(e.code, 0) + 1
                continue
            received += 1
            for o in res:
                if type(o) is _Delivery:
                    got[j] = o.hops
                else:
                    queue.append((j, o))
        hops = [got[i] for i in intended if i in got and i != origin]
        res = {
            "round": self.round, "topic": t, "size": len(intended),
            "reached": sum(1 for i in intended if i in got),
            "size_all": len(everyone), "reached_all": sum(1 for i in everyone if i in got),
            "messages": len(queue), "received": received, "non_subscriber": non_sub,
            "lost": lost, "hops_mean": (sum(hops) / len(hops)) if hops else 0.0,
            "hops_max": max(hops) if hops else 0,
        }
        self.pub_results.append(res)
        return res
