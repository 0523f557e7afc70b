"""Node-to-node on the LAN, sans-I/O: discovery, peer sampling, sealed sync.

Three things travel between members' nodes over UDP, without a proxy:
- ``lan_announce`` [node id, port]: "I am here". A board sends it to the
  LAN broadcast address; where there is no broadcast (the virtual boards on
  loopback) to a configured list of addresses. A receiver puts the sender
  in its CYCLON view (``Cyclon.heard``), with the source IP and the port
  from the message as its address.
- CYCLON shuffles (shared_protocol/overlay/cyclon.py) keep a small random view of
  the nodes around, so anti-entropy partners are picked at random without
  anyone knowing the whole membership.
- DMC anti-entropy (shared_protocol/dmc/sync.py) with one random peer of
  the view per round, for every topic both hold. Each sync datagram is
  sealed with the topic's current epoch key (``dmc_sealed``: ChaCha20-
  Poly1305, random nonce, AAD = topic | epoch), so a node outside the
  group learns nothing and cannot inject operations. Operations travel
  as they are (not re-signed by their authors): members trust members, as
  in any shared-key group; what the proxy stores stays signed per author.

Addresses are bytes "a.b.c.d:port" (CYCLON treats them as opaque).
Nothing here reads a clock or a random source: ``now`` (ms) and
``random_bytes`` are passed in.
"""
from shared_protocol.wire import envelope
from shared_protocol.crypto import api
from shared_protocol.crypto import errors as cerr
from shared_protocol.overlay.cyclon import Cyclon, ID_MAX, BOARD_VIEW, BOARD_SHUFFLE
from shared_protocol.dmc.sync import Sync
from shared_protocol.wire.envelope import REGISTRY
from shared_protocol.errors import UpsycleError
from shared_protocol.rand import Rng

try:
    from micropython import const
except ImportError:   # CPython (host and tests)
    def const(x):
        return x

# Field specs as constant tuples (session/messages.py); other modules'
# limits written out for that (tests/shared/test_lan.py checks them):
_ID = const(32)               # cyclon.ID_MAX
_DATAGRAM = const(1200)       # framing.DATAGRAM_MAX

_NONCE = const(12)
TAG = const(16)
# A sealed sync datagram: one sync datagram (at most DATAGRAM_MAX) plus the
# AEAD tag; the wrapper's header adds ~40 bytes. Loopback and Ethernet
# carry that in one packet (1500-byte MTU).
SEALED_MAX = const(_DATAGRAM + TAG)
# cyclon block: the LAN announcement that feeds Cyclon.heard.
ANNOUNCE = REGISTRY.add((18, "lan_announce", (
    "node", "bytes", _ID,
    "port", "uint", 65535,
), 2))
# dmc block: a dmc_summary/dmc_ops/dmc_snap datagram sealed for a topic.
REGISTRY.add((36, "dmc_sealed", (
    "topic", "bytes", 32,
    "epoch", "uint", 0xFFFFFFFF,
    "nonce", "bytes", _NONCE,
    "sealed", "bytes", SEALED_MAX,
), 4))
# Sync partners remembered (one Sync per peer and topic): the CYCLON view
# bounds the peers; past this the oldest is forgotten (it restarts fresh).
_SYNCS_MAX = const(16)
# Errors counted, not raised: a LAN may carry anything.
_LAN_ERRORS = const(("decode", "auth", "sync", "cyclon"))


def _aad(topic, epoch):
    return topic + epoch.to_bytes(4, "big")


def seal_sync(member, datagram, nonce):
    ek = member.epoch_key()
    sealed = api.aead_encrypt(ek.sym, nonce, datagram, _aad(member.topic, member.epoch))
    return REGISTRY.encode("dmc_sealed", member.topic, member.epoch, nonce, sealed)


def open_sync(member, values):
    topic, epoch, nonce, sealed = values
    ek = member.epoch_key(epoch) if epoch == member.epoch else None
    if ek is None or not ek.readable or len(nonce) != _NONCE:
        raise cerr.AuthenticationFailed(message=__debug__ and "no key for this sealed sync")
    return api.aead_decrypt(ek.sym, nonce, sealed, _aad(topic, epoch))


class LanTopic:
    """What the LAN layer needs of one topic: its member and replica."""

    def __init__(self, member, replica, changed=None):
        self.member = member
        self.replica = replica
        self.changed = changed   # called after a sync applied something


class Lan:
    def __init__(self, node_id, host, port, rng, random_bytes, topics):
        """host: this node's IP as peers reach it (the WLAN address)."""
        self.node_id = node_id[:ID_MAX]
        self.port = port
        self.random_bytes = random_bytes
        self.cyclon = Cyclon(self.node_id, ("%s:%d" % (host, port)).encode(), rng, BOARD_VIEW, BOARD_SHUFFLE)
        self.rng = rng
        self.topics = {}
        for t in topics:
            self.topics[t.member.topic] = t
        self._syncs = []   # [addr, topic, Sync]
        self.errors = {}
        for k in _LAN_ERRORS:
            self.errors[k] = 0
        self.synced_ops = 0

    def _err(self, kind):
        self.errors[kind] += 1

    def announce(self):
        return REGISTRY.encode("lan_announce", self.node_id, self.port)

    def _sync_for(self, addr, topic):
        for s in self._syncs:
            if s[0] == addr and s[1] == topic:
                return s[2]
        if len(self._syncs) >= _SYNCS_MAX:
            self._syncs.pop(0)
        sy = Sync(self.topics[topic].replica, None, 0)
        self._syncs.append([addr, topic, sy])
        return sy

    def _sealed(self, topic, datagrams, addr, out):
        m = self.topics[topic].member
        for d in datagrams:
            out.append((addr, seal_sync(m, d, self.random_bytes(_NONCE))))

    def shuffle(self, now):
        """A CYCLON period: [(addr, datagram)]."""
        self.cyclon.expire(now)
        o = self.cyclon.tick(now)
        return [] if o is None else [(o.addr, o.data())]

    def sync_round(self, now):
        """Anti-entropy with one random peer of the view, every topic."""
        out = []
        ents = self.cyclon.entries()
        if ents:
            addr = ents[self.rng.randbelow(len(ents))][1]
            for topic in sorted(self.topics):
                if self.topics[topic].member.can_read:
                    self._sealed(topic, self._sync_for(addr, topic).start(now), addr, out)
        for s in self._syncs:   # retries of rounds still missing something
            self._sealed(s[1], s[2].poll(now), s[0], out)
        return out

    def receive(self, data, src_ip, src_port, now):
        """One datagram from the LAN socket -> [(addr, datagram)] to send."""
        try:
            msg = REGISTRY.decode(data)
        except UpsycleError:
            self._err("decode")
            return []
        name = msg.name
        if name == "lan_announce":
            node, port = msg.values
            if node != self.node_id:
                self.cyclon.heard(bytes(node), ("%s:%d" % (src_ip, port)).encode())
            return []
        if name == "dmc_sealed":
            tp = self.topics.get(msg.values[0])
            if tp is None:
                return []   # a topic we do not hold
            try:
                inner = open_sync(tp.member, msg.values)
            except cerr.AuthenticationFailed:
                self._err("auth")
                return []
            addr = ("%s:%d" % (src_ip, src_port)).encode()
            sy = self._sync_for(addr, tp.member.topic)
            before = _mark(tp.replica)
            try:
                replies = sy.receive(inner, now)
            except UpsycleError:
                self._err("sync")
                return []
            after = _mark(tp.replica)
            if after != before:
                self.synced_ops += after - before
                if tp.changed is not None:
                    tp.changed()
            out = []
            self._sealed(tp.member.topic, replies, addr, out)
            return out
        if name == "cyclon_shuffle" or name == "cyclon_reply":
            try:
                o = self.cyclon.handle(msg, now)
            except UpsycleError:
                self._err("cyclon")
                return []
            return [] if o is None else [(o.addr, o.data())]
        self._err("decode")
        return []


def _mark(replica):
    # Operations held, summed over authors: grows with every op or snapshot
    # applied (a version vector only grows).
    n = 0
    for a in replica.vv:
        n += replica.vv[a]
    return n


def parse_addr(addr):
    """b"host:port" -> (host, port)."""
    s = addr.decode() if isinstance(addr, (bytes, bytearray)) else addr
    host, _, port = s.rpartition(":")
    return host, int(port)


def node_lan(node_id, addr, port, random_bytes, topics):
    """A node's Lan on one medium (UDP or BLE): its gossip randomness seeded
    from 8 bytes of ``random_bytes``, one LanTopic per topic object (with
    ``member``, ``replica`` and ``mark_synced``, firmware/topic.py)."""
    seed = 0
    for b in random_bytes(8):
        seed = (seed << 8) | b
    lts = []
    for t in topics:
        lts.append(LanTopic(t.member, t.replica, t.mark_synced))
    return Lan(node_id, addr, port, Rng(seed), random_bytes, lts)
