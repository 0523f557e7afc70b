"""Round-based simulation of N CYCLON nodes, each one the real protocol
object from ``shared_protocol.overlay.cyclon`` (nothing here re-implements a rule of
the protocol: the simulator only decides who is up and what gets delivered).

Delivery. Nodes exchange ``envelope.Message`` objects, the same objects a
node would encode. A sampled fraction (``wire_sample``) instead travels as
bytes: encoded by ``Outgoing.data()`` and parsed by ``Cyclon.receive``, the
path a board uses. Decoding yields the same values, so the protocol decides
the same way: a run with wire_sample=0 and one with wire_sample=1 end with
identical views (a test pins that). Encoding and parsing every message makes
a simulated shuffle about 4x as costly in CPU (tools/bench/bench_cyclon.py:
~130 us against ~33 us), which would put 10,000 nodes x 100 rounds far past
a minute; hence objects, with 1% of the messages on the wire path by default.

Time. A round is one shuffle period (``period`` ms). Each round the live
nodes tick once, in a fresh random order, spread evenly over the period.
With zero latency a request and its reply are delivered at once; with
latency, deliveries are events in a time-ordered queue and may cross rounds.

Determinism. The simulator draws from ``random.Random(seed)`` streams (one
for the schedule and churn, one in the network, one for wire sampling) and
gives each node its own ``Rng`` seeded from the schedule stream, so a seed
fixes the whole run.
"""
import heapq
import itertools
import random

import numpy as np

from shared_protocol.overlay import cyclon
from shared_protocol.errors import RemoteError
from shared_protocol.rand import Rng
from upsycle.errors import SCENARIO, HostError

from upsycle.sim.network import CRASHED, LEFT, UP, Network

BOOTSTRAPS = ("ring", "star", "random")
EVENT_KINDS = ("crash", "leave", "rejoin", "join", "partition", "heal")

# The reply timeout as a share of the period: a board shuffles every 10 s and
# waits 2 s for a reply (cyclon.DEFAULT_REPLY_TIMEOUT_MS), so 1/5.
REPLY_TIMEOUT_SHARE = 5

_TICK = 0
_MSG = 1


class ScenarioError(HostError, ValueError):
    """A simulation parameter or event is not understood."""
    code = SCENARIO


class Event:
    """A scheduled change at the start of a round: kind@round[:value]."""

    __slots__ = ("kind", "round", "value")

    def __init__(self, kind, rnd, value=None):
        if kind not in EVENT_KINDS:
            raise ScenarioError("unknown event %r (one of %s)" % (kind, ", ".join(EVENT_KINDS)))
        if rnd < 0:
            raise ScenarioError("event round must be >= 0")
        if kind in ("crash", "leave", "join", "partition") and value is None:
            raise ScenarioError("%s needs a value: %s@ROUND:VALUE" % (kind, kind))
        self.kind = kind
        self.round = rnd
        self.value = value

    @classmethod
    def parse(cls, text):
        """'crash@50:0.5', 'join@10:100', 'partition@20:2', 'heal@40', 'rejoin@30'."""
        try:
            kind, rest = text.split("@", 1)
            if ":" in rest:
                r, v = rest.split(":", 1)
                value = float(v)
            else:
                r, value = rest, None
            return cls(kind.strip(), int(r), value)
        except ValueError as e:
            if isinstance(e, ScenarioError):
                raise
            raise ScenarioError("bad event %r: write KIND@ROUND[:VALUE], e.g. crash@50:0.5" % text)

    def __repr__(self):
        return "%s@%d%s" % (self.kind, self.round, "" if self.value is None else ":%g" % self.value)


def node_id(i):
    """Simulated node ids: 8 bytes, like a board's id."""
    return i.to_bytes(8, "big")


def node_addr(i):
    """A 6-byte IPv4 + port address, the size a LAN transport would use."""
    return bytes((10, (i >> 16) & 255, (i >> 8) & 255, i & 255, 0x1F, 0x90))


class CyclonSim:
    def __init__(self, n, view=cyclon.PROXY_VIEW, shuffle=cyclon.PROXY_SHUFFLE, seed=1,
                 loss=0.0, latency=(0, 0), period=1000, reply_timeout=None,
                 bootstrap="ring", wire_sample=0.01, events=(), churn=0.0):
        if n < 2:
            raise ScenarioError("need at least 2 nodes")
        if bootstrap not in BOOTSTRAPS:
            raise ScenarioError("bootstrap must be one of %s" % ", ".join(BOOTSTRAPS))
        if not (0.0 <= wire_sample <= 1.0):
            raise ScenarioError("wire sample must be in [0, 1]")
        if not (0.0 <= churn < 1.0):
            raise ScenarioError("churn must be a fraction of nodes per round in [0, 1)")
        if latency[1] >= period:
            raise ScenarioError("latency must stay below the period (%d ms)" % period)
        self.view = view
        self.shuffle = shuffle
        self.seed = seed
        self.period = period
        # A reply is due within a fifth of the period, and at least twice
        # the worst round trip.
        self.reply_timeout = reply_timeout or max(period // REPLY_TIMEOUT_SHARE, 2 * latency[1] + 1)
        self.rng = random.Random(seed)
        self.net = Network(seed + 1, loss, latency)
        self.wire_rng = random.Random(seed + 2)
        self.wire_sample = wire_sample
        self.events = sorted(events, key=lambda e: e.round)
        self.churn = churn
        self.nodes = []
        self.state = bytearray()
        self.index = {}
        self.round = 0
        self.errors = {}
        self.wire_msgs = 0
        self.wire_bytes = 0
        self._queue = []
        self._seq = 0
        self._partition_groups = 0
        self.applied_crashes = []
        for _ in range(n):
            self._new_node()
        self._bootstrap(bootstrap)

    # --- population ----------------------------------------------------

    def _new_node(self):
        i = len(self.nodes)
        nid = node_id(i)
        node = cyclon.Cyclon(nid, node_addr(i), Rng(self.rng.getrandbits(64)),
                             self.view, self.shuffle, self.reply_timeout)
        self.nodes.append(node)
        self.state.append(UP)
        self.index[nid] = i
        return node

    def _bootstrap(self, kind):
        nodes = self.nodes
        n = len(nodes)
        c = self.view
        if kind == "ring":
            # ring lattice: node i knows its c successors
            for i in range(n):
                for k in range(1, min(c, n - 1) + 1):
                    j = (i + k) % n
                    nodes[i].add_seed(node_id(j), node_addr(j))
        elif kind == "star":
            # every node knows only node 0; node 0 knows its c successors
            for i in range(1, n):
                nodes[i].add_seed(node_id(0), node_addr(0))
            for j in range(1, min(c, n - 1) + 1):
                nodes[0].add_seed(node_id(j), node_addr(j))
        else:
            for i in range(n):
                for j in self.rng.sample(range(n - 1), min(c, n - 1)):
                    j = j if j < i else j + 1
                    nodes[i].add_seed(node_id(j), node_addr(j))

    def live(self):
        return [i for i in range(len(self.nodes)) if self.state[i] == UP]

    def _pick_up(self, value):
        live = self.live()
        k = int(round(value * len(live))) if value < 1 else int(value)
        k = min(k, len(live))
        return self.rng.sample(live, k)

    def _apply(self, ev):
        if ev.kind == "crash":
            self.applied_crashes.append(ev)
            for i in self._pick_up(ev.value):
                self.state[i] = CRASHED
        elif ev.kind == "leave":
            for i in self._pick_up(ev.value):
                self.state[i] = LEFT
        elif ev.kind == "rejoin":
            for i in range(len(self.nodes)):
                if self.state[i] == LEFT:
                    self.state[i] = UP
        elif ev.kind == "join":
            self._join(int(ev.value))
        elif ev.kind == "partition":
            k = max(2, int(ev.value))
            self.net.partition([self.rng.randrange(k) for _ in range(len(self.nodes))])
            self._partition_groups = k
        elif ev.kind == "heal":
            self.net.heal()

    def _join(self, count):
        """New nodes, each bootstrapped with one random live node as seed."""
        live = self.live()
        for _ in range(count):
            node = self._new_node()
            if live:
                j = live[self.rng.randrange(len(live))]
                node.add_seed(node_id(j), node_addr(j))
            if self.net.group is not None:
                self.net.group.append(self.rng.randrange(self._partition_groups))

    # --- running -------------------------------------------------------

    def run_round(self):
        """Run the next round. Rounds count from 1; round 0 is the bootstrap
        overlay, and an event@R applies at the start of round R."""
        r = self.round + 1
        while self.events and self.events[0].round <= r:
            self._apply(self.events.pop(0))
        if self.churn:
            victims = self._pick_up(self.churn)
            for i in victims:
                self.state[i] = CRASHED
            self._join(len(victims))
        order = self.live()
        self.rng.shuffle(order)
        t0 = (r - 1) * self.period
        step = self.period / max(1, len(order))
        if self.net.latency[1] == 0 and not self._queue:
            self._round_sync(order, t0, step)
        else:
            self._round_queued(order, t0, step)
        # Reply timers: a node's timer fires at its exchange's deadline; here
        # the deadlines that fell within the round are handled at its end,
        # before the round is measured (never later than a real timer would
        # by more than the rest of the round).
        end = t0 + self.period
        nodes = self.nodes
        state = self.state
        for i in order:
            if state[i] == UP:
                nodes[i].expire(end)
        self.round = r

    def _round_sync(self, order, t0, step):
        # The hot loop of the simulator (10,000 x 100 x 2 deliveries), with
        # its look-ups bound once; Network.passes draws from the loss stream
        # in the same order as the queued mode does.
        nodes = self.nodes
        state = self.state
        index = self.index
        net = self.net
        passes = net.passes
        deliver = self._deliver
        for pos in range(len(order)):
            i = order[pos]
            now = t0 + int(pos * step)
            out = nodes[i].tick(now)
            if out is None:
                continue
            j = index[out.peer_id]
            if not passes(i, j):
                continue
            if state[j] != UP:
                net.to_down += 1
                continue
            rep = deliver(nodes[j], out, now)
            if rep is not None and passes(j, i):
                deliver(nodes[i], rep, now)

    def _push(self, t, kind, a, b, out):
        self._seq += 1
        heapq.heappush(self._queue, (t, self._seq, kind, a, b, out))

    def _round_queued(self, order, t0, step):
        for pos in range(len(order)):
            self._push(t0 + int(pos * step), _TICK, order[pos], -1, None)
        end = t0 + self.period
        q = self._queue
        nodes = self.nodes
        state = self.state
        net = self.net
        while q and q[0][0] < end:
            now, _, kind, a, b, out = heapq.heappop(q)
            if kind == _TICK:
                if state[a] != UP:
                    continue
                out = nodes[a].tick(now)
                if out is None:
                    continue
                b = self.index[out.peer_id]
            else:
                if state[b] != UP:
                    net.to_down += 1
                    continue
                out = self._deliver(nodes[b], out, now)
                if out is None:
                    continue
                a, b = b, a
            if net.passes(a, b):
                self._push(now + net.delay(), _MSG, a, b, out)

    def _deliver(self, node, out, now):
        try:
            if self.wire_sample and self.wire_rng.random() < self.wire_sample:
                data = out.data()
                self.wire_msgs += 1
                self.wire_bytes += len(data)
                return node.receive(data, now)
            return node.handle(out.message, now)
        except RemoteError as e:
            self.errors[e.code] = self.errors.get(e.code, 0) + 1
            return None

    # --- observing -----------------------------------------------------

    def snapshot(self):
        """The overlay among live nodes, as numpy arrays.

        Returns dict: n (live nodes), src/dst (directed links between live
        nodes, numbered 0..n-1 in node order), dead (entries pointing at
        crashed nodes), absent (at nodes that left), empty (free slots).
        """
        live = self.live()
        total = len(self.nodes)
        n = len(live)
        remap = np.full(total, -1, dtype=np.int64)
        remap[live] = np.arange(n)
        nodes = self.nodes
        views = [nodes[i].ids for i in live]
        lens = list(map(len, views))
        # Simulated ids are node numbers as 8 big-endian bytes: read them all
        # at once instead of one dict lookup per entry.
        tgt = np.frombuffer(b"".join(itertools.chain.from_iterable(views)), dtype=">u8").astype(np.int64)
        total_entries = len(tgt)
        src = np.repeat(np.arange(n, dtype=np.int64), lens)
        st = np.frombuffer(bytes(self.state), dtype=np.uint8)[tgt] if len(tgt) else np.zeros(0, np.uint8)
        up = st == UP
        return {
            "n": n,
            "src": src[up],
            "dst": remap[tgt[up]],
            "dead": int((st == CRASHED).sum()),
            "absent": int((st == LEFT).sum()),
            "empty": int(n * self.view - total_entries),
        }

    def views_digest(self):
        """A stable summary of every view (for determinism checks)."""
        import hashlib
        h = hashlib.sha256()
        for i, node in enumerate(self.nodes):
            h.update(i.to_bytes(4, "big"))
            for pid, addr, age in node.entries():
                h.update(pid + addr + age.to_bytes(4, "big"))
        return h.hexdigest()
