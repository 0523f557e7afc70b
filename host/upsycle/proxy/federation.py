"""The proxy's part in the core overlay (docs/federation.md).

``Federation`` (owned by the Proxy) runs one PolderCast node
(shared_protocol/overlay/poldercast.py) over links to other proxies
(peers.py) and carries topics between them:

- Topics: a proxy carries a topic (joins its ring) while one of its own
  nodes holds a durable subscription to it, or published to it within
  PUBLISHER_HOLD_S; never otherwise (relay-free). It refuses any message of
  a topic it does not carry (``fed_ack not_subscribed``).
- Forwarding: a message stored here for the first time, published by our
  own session or received from a peer, goes to the targets of PolderCast's
  dissemination rule (dissemination.choose: ring neighbours and F-1 or F-2
  confirmed subscribers, never back to the sender). Each target has an
  Outbox: the message is resent until the target acknowledges it, which it
  does only once the message is durable in its store (or it already had
  it). So an acknowledged publish survives any single proxy's crash on
  the way.
- Deduplication by (topic, message id) is the store's; order and catch-up
  are catchup.py's.

Every overlay message's sender must be the proxy its link's key proves
(a peer cannot speak for another); bad input is counted per cause and logged
once (the proxy's Faults).
"""
import asyncio
import ipaddress
import logging
import os
import time

from shared_protocol.errors import RemoteError
from shared_protocol.overlay import cyclon as cy, dissemination, ids, poldercast, rings, vicinity
from shared_protocol.overlay.common import Outgoing
from shared_protocol.rand import Rng
from shared_protocol.session.secure_client import node_id_for
from shared_protocol.wire import envelope as E
from upsycle.proxy import peer_wire, peers
from upsycle.proxy.catchup import (CATCHUP_BATCH_MAX, GAP_ASK_S, SUMMARY_TOPICS_MAX, Held, Reorder,
                                   Summaries)
from upsycle.proxy.links import kv

log = logging.getLogger("upsycle.proxy")

# The federation's timer; gossip, catch-up and dials run on multiples of it.
FED_TICK_S = 0.1
# How often the topics carried follow the durable subscriptions (a walk
# over all of them; a local publish to a new topic joins at once).
TOPIC_SYNC_S = 1.0
# A topic our nodes published to (without subscribing) stays carried this
# long after the last publish, so the site's messages keep reaching the
# subscribers elsewhere.
PUBLISHER_HOLD_S = 600.0
# Gossip messages waiting for a link being dialled, per peer.
GOSSIP_PENDING_MAX = 4
# Gossip messages a peer may send per second (token bucket), beyond which
# they are dropped: one period's exchanges need a handful.
GOSSIP_RATE = 50.0
GOSSIP_BURST = 100.0
# A dial that failed is retried after this, doubling up to the maximum.
DIAL_RETRY_S = 0.5
DIAL_RETRY_MAX_S = 30.0
# Keepalive on links we dialled: a ping when we sent nothing for this long;
# a link silent for PEER_DEAD_S is closed (the peer's session layer closes
# its side after three missed keepalives of its own).
PEER_PING_S = 15.0
PEER_DEAD_S = 60.0
# An outbox of a peer without a link for this long is dropped (catch-up
# brings it what it missed when it comes back).
OUTBOX_FORGET_S = 300.0
# Peer links at most (both directions), so gossip about many proxies
# cannot make us hold as many links.
PEER_LINKS_MAX = 64

GOSSIP_TYPES = (poldercast.SHUFFLE, poldercast.SHUFFLE_REPLY, vicinity.REQUEST, vicinity.REPLY,
                rings.REQUEST, rings.REPLY)


def _claimed_sender(msg):
    """The proxy id a PolderCast message says it comes from."""
    t, v = msg.type, msg.values
    if t is poldercast.SHUFFLE or t is vicinity.REQUEST or t is vicinity.REPLY:
        es = v[1]
        return es[0][0] if es and type(es[0]) is list and es[0] else None
    return v[1]   # shuffle reply, rings request and reply: the sender field


class Federation:
    def __init__(self, proxy):
        self.proxy = proxy
        c = proxy.config
        self.policy = c.peer_policy
        self.listed = [peers.parse_peer(s) for s in c.peers]
        self.counters = {}
        self.channels = {}        # peer id -> [Channel], newest last
        self.by_link = {}         # inbound Link -> Channel
        self.allowed = set()      # listed peers' ids (keys given, or learned dialling their address)
        self.keys = {}            # peer id -> static key
        self.addrs = {}           # peer id -> address it listens on (bytes)
        self.outbox = {}          # peer id -> peers.Outbox
        self.no_link_since = {}   # peer id -> when its last link closed
        self.pending = {}         # peer id -> gossip waiting for a dial
        self.dialing = set()      # (host, port)
        self.retry = {}           # (host, port) -> [next try, delay]
        self.buckets = {}         # peer id -> [tokens, time]
        self.carried = {}         # overlay topic id -> topic
        self.ov_of = {}           # topic -> overlay topic id (a cache)
        self.published = {}       # topic -> last publish of our own nodes (monotonic s)
        self.gap_asked = {}
        self.pc = None
        self.reorder = Reorder(proxy.store, self._submit, self._ask, self.counters)
        self.summaries = Summaries(proxy.store)
        self._task = None
        self._catchup_rot = 0

    # -- life cycle ----------------------------------------------------------

    def start(self, listen_addr):
        p = self.proxy
        self.key = p.key
        self.public_key = p.public_key
        self.id = ids.proxy_id(self.public_key)
        c = p.config
        host, port = c.advertise if c.advertise else listen_addr
        self.addr = peers.addr_bytes(host, port)
        self.source_host = None
        try:
            ip = ipaddress.ip_address(listen_addr[0])
            if not ip.is_unspecified:
                self.source_host = str(ip)
        except ValueError:
            pass   # a host name: let the system choose
        self.pc = poldercast.PolderCast(self.public_key, self.addr, Rng(int.from_bytes(os.urandom(8), "big")),
                                        fanout=c.fanout)
        for host, port, key in self.listed:
            if key is not None:
                self.allowed.add(ids.proxy_id(key))
        # What our nodes published lately is carried again after a restart:
        # its messages may not have left before the crash, and the ring's
        # summaries fetch them only from a proxy in the ring.
        wall, mono = time.time(), time.monotonic()
        for topic, ts in p.store.origin_topics(self.id, wall - PUBLISHER_HOLD_S).items():
            self.published[topic] = mono - (wall - ts)
        self._task = asyncio.ensure_future(self._run())
        log.info("event=federation_started %s", kv(overlay_id=self.id.hex(), addr=self.addr.decode(),
                                                    peers=len(self.listed), policy=self.policy))

    def stop(self):
        if self._task is not None:
            self._task.cancel()
        for chs in list(self.channels.values()):
            for ch in list(chs):
                if not ch.inbound and ch.dialer.transport is not None:
                    ch.dialer.transport.close()

    def count(self, name, n=1):
        self.counters[name] = self.counters.get(name, 0) + n

    async def _run(self):
        c = self.proxy.config
        next_gossip = next_catchup = next_sync = time.monotonic()
        while True:
            await asyncio.sleep(FED_TICK_S)
            now = time.monotonic()
            try:
                if now >= next_sync:
                    next_sync = now + TOPIC_SYNC_S
                    self._sync_topics(now)
                    self._dial_listed(now)
                if now >= next_gossip:
                    next_gossip = now + c.overlay_period_s
                    self._gossip()
                if now >= next_catchup:
                    next_catchup = now + c.catchup_period_s
                    self._catchup_round()
                self.reorder.tick(now)
                self._links_tick(now)
            except Exception:   # a bug must not stop the overlay for good
                log.exception("event=federation_tick_failed")

    # -- topics carried ------------------------------------------------------

    def _ov(self, topic):
        o = self.ov_of.get(topic)
        if o is None:
            o = self.ov_of[topic] = ids.topic_id(topic)
        return o

    def _sync_topics(self, now):
        want = {}
        for (_node, topic) in self.proxy.store.subs:
            if topic not in want:
                want[topic] = True
        for topic, t in list(self.published.items()):
            if now - t > PUBLISHER_HOLD_S:
                del self.published[topic]
            else:
                want[topic] = True
        carried = self.carried
        for topic in want:
            o = self._ov(topic)
            if o not in carried:
                carried[o] = topic
                self.pc.subscribe(o)
                log.info("event=topic_joined %s", kv(topic=topic))
        for o in [o for o, topic in carried.items() if topic not in want]:
            topic = carried.pop(o)
            self.pc.unsubscribe(o)
            self.reorder.forget_topic(topic)
            log.info("event=topic_left %s", kv(topic=topic))
        if len(self.ov_of) > 4 * len(carried) + 1024:
            self.ov_of = {}

    # -- links ---------------------------------------------------------------

    def _channel(self, peer_id):
        chs = self.channels.get(peer_id)
        return chs[-1] if chs else None

    def _link_count(self):
        return sum(len(v) for v in self.channels.values())

    def on_link_message(self, link, msg):
        """A proxy-link message on an inbound link (routing.py)."""
        ch = self.by_link.get(link)
        if ch is None:
            self._accept_hello(link, msg)
            return
        ch.rx_bytes += len(E.REGISTRY.encode_message(msg)) + 18
        self.on_peer_message(ch, msg)

    def _refuse(self, link, cause, detail):
        p = self.proxy
        p.faults.note(cause, peer=link.name())
        link.ps.error(cause, detail)
        p.flush(link)
        p.close_link(link, cause)

    def _accept_hello(self, link, msg):
        if msg.type is not peer_wire.HELLO:
            self._refuse(link, "peer_no_hello", "a proxy link starts with fed_hello")
            return
        if link.mode != "secure" or link.bound is None or link.kind != "tcp":
            self._refuse(link, "peer_not_secure", "proxy links are Noise links over TCP")
            return
        key = bytes(msg["key"])
        if len(key) != peer_wire.KEY_LEN or node_id_for(key) != link.bound or \
                bytes(link.sec.remote_static) != key:
            # The hello names a key the handshake did not prove.
            self._refuse(link, "peer_key_forged", "fed_hello names another key than this link's")
            return
        pid = ids.proxy_id(key)
        if pid == self.id:
            self._refuse(link, "peer_self", "a link from this proxy's own key")
            return
        if self.policy == "listed" and pid not in self.allowed:
            self._refuse(link, "peer_not_listed", "this proxy links only with its listed peers")
            return
        if self._link_count() >= PEER_LINKS_MAX:
            self._refuse(link, "peer_links_limit", "at most %d proxy links" % PEER_LINKS_MAX)
            return
        addr = bytes(msg["addr"])
        if peers.split_addr(addr) is None:
            self._refuse(link, "peer_bad_addr", "fed_hello's address is not HOST:PORT")
            return
        p = self.proxy
        p._unpend(link)   # not a link that has yet to say hello: never evicted as one
        link.node = b"peer:" + pid   # (no session: keeps the hello timeout off this link)
        link.proto.decoder.limit = peers.PEER_FRAME_MAX
        ch = peers.Channel(pid, key, addr, True, link=link)
        self.by_link[link] = ch
        ch.send(E.REGISTRY.encode("fed_welcome", self.public_key, self.addr))
        self._opened(ch)

    def proved(self, dialer):
        """A dial's handshake proved the key at that address: a listed
        address without a key is that proxy from now on (trust on first
        use), even if it refuses us this time (it may not know our key yet:
        its own dial to us will find it listed)."""
        if self.policy == "listed":
            pid = ids.proxy_id(dialer.remote_key)
            if pid not in self.allowed and any(h == dialer.host and pt == dialer.port and k is None
                                               for h, pt, k in self.listed):
                self.allowed.add(pid)

    def dialled(self, dialer, addr):
        """A link we dialled completed its handshake and was welcomed:
        its Channel, or None if we refuse it."""
        key = dialer.remote_key
        pid = ids.proxy_id(key)
        if pid == self.id:
            self.proxy.faults.note("peer_self", peer="%s:%d" % (dialer.host, dialer.port))
            return None
        if self.policy == "listed" and pid not in self.allowed:
            self.proxy.faults.note("peer_not_listed", peer="%s:%d" % (dialer.host, dialer.port))
            return None
        if self._link_count() >= PEER_LINKS_MAX:
            self.proxy.faults.note("peer_links_limit", peer="%s:%d" % (dialer.host, dialer.port))
            return None
        if peers.split_addr(addr) is None:
            addr = peers.addr_bytes(dialer.host, dialer.port)
        return self._opened(peers.Channel(pid, key, addr, False, dialer=dialer))

    def _opened(self, ch):
        pid = ch.peer_id
        first = pid not in self.channels or not self.channels[pid]
        self.channels.setdefault(pid, []).append(ch)
        old = self.keys.get(pid)
        self.keys[pid] = ch.key
        self.addrs[pid] = ch.addr
        self.no_link_since.pop(pid, None)
        self.pc.cyclon.heard(pid, ch.addr)
        if first:
            log.info("event=peer_open %s", kv(peer=pid.hex(), addr=ch.addr.decode(errors="replace"),
                                              direction="in" if ch.inbound else "out", known=old is not None))
        for data in self.pending.pop(pid, ()):
            ch.send(data)
        self._pump(pid)
        return ch

    def link_closed(self, link):
        ch = self.by_link.pop(link, None)
        if ch is not None:
            self.channel_closed(ch)

    def channel_closed(self, ch):
        if ch.closed:
            return
        ch.closed = True
        chs = self.channels.get(ch.peer_id)
        if chs and ch in chs:
            chs.remove(ch)
        if not chs:
            self.channels.pop(ch.peer_id, None)
            self.no_link_since[ch.peer_id] = time.monotonic()
            ob = self.outbox.get(ch.peer_id)
            if ob is not None:
                ob.unsend()
            log.info("event=peer_closed %s", kv(peer=ch.peer_id.hex()))

    def _dial(self, host, port, key=None, expect_id=None, now=None):
        hp = (host, port)
        if hp in self.dialing:
            return
        now = time.monotonic() if now is None else now
        r = self.retry.get(hp)
        if r is not None and now < r[0]:
            return
        self.dialing.add(hp)

        async def go():
            try:
                d, cause = await peers.dial(self, host, port, key, expect_id)
            finally:
                self.dialing.discard(hp)
            if d is None:
                r = self.retry.setdefault(hp, [0.0, DIAL_RETRY_S])
                r[0] = time.monotonic() + r[1]
                r[1] = min(DIAL_RETRY_MAX_S, r[1] * 2)
                self.count("dial_failed")
                if expect_id is not None:
                    self.pending.pop(expect_id, None)
                    self.pc.unreachable(expect_id)
                    if expect_id not in self.channels:
                        # (its outbox goes after OUTBOX_FORGET_S if it never answers)
                        self.no_link_since.setdefault(expect_id, time.monotonic())
                if cause and not cause.startswith("peer_unreachable"):
                    self.proxy.faults.note(cause.split(":")[0], peer="%s:%d" % hp)
            else:
                self.retry.pop(hp, None)
        asyncio.ensure_future(go())

    def _dial_listed(self, now):
        for host, port, key in self.listed:
            pid = ids.proxy_id(key) if key is not None else None
            if pid is not None and self._channel(pid) is not None:
                continue
            if pid is None and any(ch.addr == peers.addr_bytes(host, port)
                                   for chs in self.channels.values() for ch in chs):
                continue
            self._dial(host, port, key, pid, now)

    def _links_tick(self, now):
        for pid, chs in list(self.channels.items()):
            for ch in list(chs):
                if not ch.inbound:
                    if now - ch.last_rx > PEER_DEAD_S:
                        self.proxy.faults.note("peer_silent", peer=pid.hex())
                        ch.dialer.transport.close()
                        continue
                    if now - ch.last_tx > PEER_PING_S:
                        ch.send(E.REGISTRY.encode("ping", 0))
            self._pump(pid, now)
        for pid, t in list(self.no_link_since.items()):
            if now - t > OUTBOX_FORGET_S:
                del self.no_link_since[pid]
                self.outbox.pop(pid, None)
        for pid in [p for p in self.outbox if p not in self.channels and self.outbox[p]]:
            self._pump(pid, now)

    # -- sending -------------------------------------------------------------

    def _send(self, pid, data, addr=None):
        """Send one message to a peer, dialling it if needed (gossip)."""
        ch = self._channel(pid)
        if ch is not None:
            ch.send(data)
            return
        if self.policy == "listed" and pid not in self.allowed:
            self.count("gossip_unlisted")
            self.pc.unreachable(pid)
            return
        addr = addr or self.addrs.get(pid) or self.pc._addr_of(pid)
        hp = peers.split_addr(addr) if addr else None
        if hp is None:
            self.pc.unreachable(pid)
            return
        q = self.pending.setdefault(pid, [])
        if len(q) < GOSSIP_PENDING_MAX:
            q.append(data)
        self._dial(hp[0], hp[1], self.keys.get(pid), pid)

    def _send_outs(self, outs):
        for o in outs:
            if isinstance(o, Outgoing):
                self._send(o.peer_id, o.data(), o.addr)

    def _gossip(self):
        now = int(time.monotonic() * 1000)
        outs = self.pc.tick(now)
        self.pc.expire(now)
        self._send_outs(outs)

    def _enqueue(self, pid, key, data):
        ob = self.outbox.get(pid)
        if ob is None:
            ob = self.outbox[pid] = peers.Outbox()
        if not ob.add(key, data):
            self.proxy.faults.note("peer_queue_full", peer=pid.hex())
            return False
        return True

    def _pump(self, pid, now=None):
        ob = self.outbox.get(pid)
        if not ob:
            return
        ch = self._channel(pid)
        if ch is None:
            addr = self.addrs.get(pid) or self.pc._addr_of(pid)
            hp = peers.split_addr(addr) if addr else None
            if hp is not None and (self.policy == "open" or pid in self.allowed):
                self._dial(hp[0], hp[1], self.keys.get(pid), pid)
            return
        ob.pump(ch, time.monotonic() if now is None else now)

    # -- messages from peers -------------------------------------------------

    def _rate_ok(self, pid):
        t = time.monotonic()
        b = self.buckets.get(pid)
        if b is None:
            if len(self.buckets) > 4 * PEER_LINKS_MAX:
                self.buckets = {}
            b = self.buckets[pid] = [GOSSIP_BURST, t]
        b[0] = min(GOSSIP_BURST, b[0] + (t - b[1]) * GOSSIP_RATE)
        b[1] = t
        if b[0] < 1.0:
            return False
        b[0] -= 1.0
        return True

    def on_peer_message(self, ch, msg):
        ch.last_rx = time.monotonic()
        t = msg.type
        faults = self.proxy.faults
        if t in GOSSIP_TYPES:
            if _claimed_sender(msg) != ch.peer_id:
                # A proxy speaking for another: refused, whatever it says.
                faults.note("peer_id_forged", peer=ch.peer_id.hex(), type=msg.name)
                return
            if not self._rate_ok(ch.peer_id):
                faults.note("peer_gossip_flood", peer=ch.peer_id.hex())
                return
            try:
                outs = self.pc.handle(msg, int(time.monotonic() * 1000))
            except RemoteError as e:
                faults.note("overlay_" + e.code, peer=ch.peer_id.hex(), type=msg.name)
                return
            self._send_outs(outs)
        elif t is peer_wire.DATA:
            self._on_data(ch, msg.values)
        elif t is peer_wire.ACK:
            ob = self.outbox.get(ch.peer_id)
            if ob is not None and ob.ack((bytes(msg.values[0]), bytes(msg.values[1]))):
                code = msg.values[2]
                self.count("acked_" + (code[:16] if code else "stored"))
                self._pump(ch.peer_id)
        elif t is peer_wire.SUMMARY:
            self._on_summary(ch, msg.values)
        elif msg.name in ("ping", "pong", "fed_welcome", "fed_hello"):
            pass
        elif msg.name == "error":
            faults.note("peer_error", peer=ch.peer_id.hex(), code=str(msg.values[0])[:32])
        else:
            faults.note("peer_unexpected", peer=ch.peer_id.hex(), type=msg.name)

    def _ack(self, pid, topic, msg_id, code):
        ch = self._channel(pid)
        if ch is not None:
            ch.send(E.REGISTRY.encode("fed_ack", topic, msg_id, code))

    def _on_data(self, ch, v):
        topic, msg_id, origin, oseq, hops, catchup, payload = v
        topic, msg_id, origin, payload = bytes(topic), bytes(msg_id), bytes(origin), bytes(payload)
        self.count("received")
        if self._ov(topic) not in self.carried:
            # Relay-free: only a proxy whose own nodes follow a topic keeps it.
            self.count("refused_not_subscribed")
            self.proxy.faults.note("fed_not_subscribed", peer=ch.peer_id.hex(), topic=topic.hex()[:16])
            self._ack(ch.peer_id, topic, msg_id, peer_wire.ACK_NOT_SUBSCRIBED)
            return
        if len(origin) != ids.ID_LEN or oseq == 0 or not msg_id:
            self.proxy.faults.note("fed_bad_origin", peer=ch.peer_id.hex())
            self._ack(ch.peer_id, topic, msg_id, peer_wire.ACK_BAD_ORIGIN)
            return
        if catchup:
            self.count("catchup_received")
        self.reorder.offer(Held(topic, msg_id, origin, oseq, hops, catchup, payload), ch.peer_id,
                           origin == self.id)

    def _submit(self, h):
        refused = self.proxy.store.submit_publish(h.topic, h.msg_id, h.payload, ("fed", h), None, h.origin, h.oseq)
        if refused is not None:
            self.count("store_refused_" + refused[0])
            return False   # not acknowledged: the sender tries again
        return True

    def _ask(self, pid, topic):
        """A gap: send the peer our summary of the topic now (rate-limited)."""
        t = time.monotonic()
        if t - self.gap_asked.get(topic, 0.0) < GAP_ASK_S:
            return
        self.gap_asked[topic] = t
        if len(self.gap_asked) > 4096:
            self.gap_asked = {}
        self.count("gap_asks")
        self._send(pid, E.REGISTRY.encode("fed_summary", *self.summaries.build(topic)))

    # -- store results (routing.py on_commit) ---------------------------------

    def stored(self, h, status, err):
        """A message from a peer was committed (status "ok" or "dup") or
        failed (err)."""
        if err is not None:
            self.reorder.failed(h)
            self.count("store_failed")
            return
        if status == "ok":
            self.count("stored")
            code = peer_wire.ACK_STORED
            if not h.catchup:
                self._forward(h.topic, h.msg_id, h.origin, h.oseq, h.hops, h.payload, h.waiters)
        else:
            self.count("deduplicated")
            code = peer_wire.ACK_DUP
        for pid in h.waiters:
            self._ack(pid, h.topic, h.msg_id, code)

    def local_published(self, topic, msg_id, payload, origin, oseq):
        """Our own session's publish was stored (new): into the overlay."""
        if self.pc is None or origin is None:
            return
        self.published[topic] = time.monotonic()
        o = self._ov(topic)
        if o not in self.carried:
            self._sync_topics(time.monotonic())   # joins now; catch-up brings this one to the others
        self._forward(topic, msg_id, origin, oseq, -1, payload, ())

    def _forward(self, topic, msg_id, origin, oseq, hops, payload, senders):
        """Dissemination rule (PolderCast 3.4): the targets of a message
        received from ``senders`` (empty: published here)."""
        if hops + 1 >= peer_wire.HOPS_MAX:
            return
        o = self._ov(topic)
        r = self.pc.rings
        sender = next(iter(senders)) if senders else None
        targets = dissemination.choose(self.pc.rng, sender, r.successors(o), r.predecessors(o),
                                       self.pc.random_pool(o), self.pc.diss.fanout)
        data = None
        for pid in targets:
            if pid in senders or pid == self.id:
                continue
            if self.policy == "listed" and pid not in self.allowed:
                # A ring neighbour we may not link with (another proxy's
                # peer): the proxies between us carry it there.
                self.count("target_unlisted")
                continue
            if data is None:
                data = E.REGISTRY.encode("fed_data", topic, msg_id, origin, oseq, hops + 1, 0, payload)
            if self._enqueue(pid, (topic, msg_id), data):
                self.count("forwarded")
                self._pump(pid)

    # -- catch-up ------------------------------------------------------------

    def _catchup_round(self):
        topics = sorted(self.carried.items())
        if not topics:
            return
        n = len(topics)
        k = min(n, SUMMARY_TOPICS_MAX)
        start = self._catchup_rot % n
        self._catchup_rot += k
        r = self.pc.rings
        for i in range(k):
            o, topic = topics[(start + i) % n]
            nbrs = []
            for pid in r.successors(o)[:rings.SIDE] + r.predecessors(o)[:rings.SIDE]:
                if pid not in nbrs:
                    nbrs.append(pid)
            if not nbrs:
                continue
            data = E.REGISTRY.encode("fed_summary", *self.summaries.build(topic))
            for pid in nbrs:
                self.count("summaries_sent")
                self._send(pid, data)

    def _on_summary(self, ch, v):
        topic, origins, complete = bytes(v[0]), v[1], v[2]
        self.count("summaries_received")
        if self._ov(topic) not in self.carried:
            self.count("summary_not_subscribed")
            return
        ob = self.outbox.get(ch.peer_id)
        room = min(CATCHUP_BATCH_MAX, peers.PEER_QUEUE_MAX - (len(ob) if ob else 0))
        if room <= 0:
            return
        try:
            missing = self.summaries.answer(topic, origins, complete, room)
        except peer_wire.SummaryError as e:
            self.proxy.faults.note("fed_summary_" + e.args[0] if e.args else "fed_summary",
                                   peer=ch.peer_id.hex())
            return
        for origin, oseq, msg_id, payload in missing:
            data = E.REGISTRY.encode("fed_data", topic, msg_id, origin, oseq, 0, 1, payload)
            if not self._enqueue(ch.peer_id, (topic, msg_id), data):
                break
            self.count("catchup_sent")
        if missing:
            self._pump(ch.peer_id)

    # -- observability -------------------------------------------------------

    def status(self):
        """Compact federation counters for s_status (a 4 KB frame)."""
        r = self.pc.rings if self.pc else None
        topics = {}
        for o, topic in sorted(self.carried.items())[:16]:
            topics[topic.hex()] = [[x.hex() for x in r.successors(o)], [x.hex() for x in r.predecessors(o)]]
        return {
            "overlay_id": self.id.hex() if self.pc else "",
            "peer_policy": self.policy,
            "peer_links": self._link_count(),
            "peers": self.peer_table()[:16],
            "topics_carried": len(self.carried),
            "rings": topics,
            "counters": dict(self.counters),
            "queued": sum(len(ob) for ob in self.outbox.values()),
            "reorder_waiting": self.reorder.total,
            "cyclon_view": len(self.pc.cyclon) if self.pc else 0,
            "vicinity_view": len(self.pc.vicinity) if self.pc else 0,
        }

    def peer_table(self):
        out = []
        for pid in sorted(set(self.channels) | set(self.outbox)):
            chs = self.channels.get(pid, [])
            ob = self.outbox.get(pid)
            out.append({"id": pid.hex(), "addr": self.addrs.get(pid, b"").decode(errors="replace"),
                        "links": "".join("<" if c.inbound else ">" for c in chs),
                        "queued": len(ob) if ob else 0, "in_flight": ob.inflight if ob else 0,
                        "sent": ob.sent if ob else 0, "retransmits": ob.retransmits if ob else 0,
                        "tx_bytes": sum(c.tx_bytes for c in chs), "rx_bytes": sum(c.rx_bytes for c in chs)})
        return out
