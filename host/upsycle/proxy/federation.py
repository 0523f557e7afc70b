"""The proxy's part in the core overlay (docs/federation.md).

``Federation`` (owned by the Proxy) runs one PolderCast node
(shared_protocol/overlay/poldercast.py) over links to other proxies
(peers.py, peer_table.py) and carries topics between them:

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
from shared_protocol.overlay import dissemination, ids, poldercast, profile, rings, vicinity
from shared_protocol.overlay.common import Outgoing
from shared_protocol.rand import Rng
from shared_protocol.wire import envelope as E
from upsycle.proxy import lan_peers, peer_wire, peers
from upsycle.proxy.catchup import (CATCHUP_BATCH_MAX, GAP_ASK_S, SUMMARY_TOPICS_MAX, Held, Reorder,
                                   Summaries)
from upsycle.proxy.links import kv
from upsycle.proxy.peer_table import PeerTable

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
# Overlay ids of topics remembered beyond the ones carried (a cache: the
# hash is recomputed once it is dropped), and topics whose last gap ask is
# remembered (GAP_ASK_S): both are cleared whole past these.
TOPIC_ID_CACHE_MAX = 1024
GAP_ASKED_MAX = 4096
# Peers remembered as carriers of topics we share (their summaries and data
# say so), and topics per peer: beyond the rings, they get our summaries.
CARRIERS_MAX = 256
CARRIER_TOPICS_MAX = 1024

GOSSIP_TYPES = (poldercast.SHUFFLE, poldercast.SHUFFLE_REPLY, vicinity.REQUEST, vicinity.REPLY,
                rings.REQUEST, rings.REPLY)


def _claimed_sender(msg):
    """The proxy id a PolderCast message says it comes from."""
    t, v = msg.type, msg.values
    if t is poldercast.SHUFFLE or t is vicinity.REQUEST or t is vicinity.REPLY:
        es = v[1]
        return es[0][0] if es and type(es[0]) is list and es[0] else None
    return v[1]   # shuffle reply, rings request and reply: the sender field


class Federation(PeerTable):
    def __init__(self, proxy):
        self.proxy = proxy
        c = proxy.config
        self.policy = c.peer_policy
        self.listed = [peers.parse_peer(s) for s in c.peers]
        self.counters = {}
        self._init_peers()
        self.carried = {}         # overlay topic id -> topic
        self.ov_of = {}           # topic -> overlay topic id (a cache)
        self.published = {}       # topic -> last publish of our own nodes (monotonic s), oldest first
        # Wanted topics the full overlay profile left out (TOPICS_MAX), joined
        # as room frees; one entry per topic at most (the store's max_topics).
        self.waiting = set()
        self._recheck = set()     # topics the next sync looks at besides the store's changes
        self.gap_asked = {}
        self.pc = None
        self.reorder = Reorder(proxy.store, self._submit, self._ask, self.counters)
        self.summaries = Summaries(proxy.store)
        self._task = None
        self._catchup_rot = 0
        self._nbr_rot = 0
        self.carriers = {}        # peer id -> topics it showed it carries (its summaries, its data)
        self.lan = None

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
                                        fanout=c.fanout, blip_milli=int(round(c.blip_epsilon * 1000)))
        for host, port, key in self.listed:
            if key is not None:
                self.allowed.add(ids.proxy_id(key))
        # What our nodes published lately is carried again after a restart:
        # its messages may not have left before the crash, and the ring's
        # summaries fetch them only from a proxy in the ring.
        wall, mono = time.time(), time.monotonic()
        for topic, ts in sorted(p.store.origin_topics(self.id, wall - PUBLISHER_HOLD_S).items(),
                                key=lambda kv: kv[1]):
            self.published[topic] = mono - (wall - ts)
        self._recheck = set(self.published)   # joined by the first sync
        p.store.follow_sub_topics()
        self._task = asyncio.ensure_future(self._run())
        log.info("event=federation_started %s", kv(overlay_id=self.id.hex(), addr=self.addr.decode(),
                                                    peers=len(self.listed), policy=self.policy))

    async def start_lan(self, listen_host):
        """Announce and listen on the LAN (lan_discovery), if configured."""
        spec = self.proxy.config.lan_discovery
        if spec:
            self.lan = await lan_peers.open_lan(self, spec, listen_host)
            log.info("event=lan_discovery %s", kv(group=spec, iface=self.lan.iface))

    def heard_on_lan(self, pid, key, addr):
        """A proxy announced itself on the LAN (lan_peers.py): a CYCLON
        seed, its key pinned for the dial."""
        if self.policy == "listed" and pid not in self.allowed:
            self.count("lan_unlisted")
            return
        self.count("lan_heard")
        self.keys[pid] = key
        if pid not in self.channels:
            self.addrs[pid] = addr
        self.pc.cyclon.heard(pid, addr)

    def stop(self):
        if self.lan is not None and self.lan.transport is not None:
            self.lan.transport.close()
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
        """Carry the topics that became wanted since the last sync, leave the
        ones that stopped being wanted. Work in proportion to what changed:
        a walk over every subscription and publisher each second took tens of
        ms with 10,000 sessions, a stall for every message behind it
        (tools/bench/bench_scale.py)."""
        store = self.proxy.store
        changed = store.take_sub_topics_changed()
        if self._recheck:
            changed |= self._recheck
            self._recheck = set()
        published = self.published
        # Oldest publish first (local_published_many keeps the order).
        while published:
            topic = next(iter(published))
            if now - published[topic] <= PUBLISHER_HOLD_S:
                break
            del published[topic]
            changed.add(topic)
        carried = self.carried
        for topic in changed:
            o = self._ov(topic)
            if topic in published or topic in store.topic_subs:
                if o not in carried and not self._join(o, topic):
                    self.waiting.add(topic)
            else:
                self.waiting.discard(topic)
                if carried.pop(o, None) is not None:
                    self.pc.unsubscribe(o)
                    self.reorder.forget_topic(topic)
                    log.info("event=topic_left %s", kv(topic=topic))
        # Topics left out while the overlay profile was full, as it has room.
        while self.waiting and len(carried) < profile.TOPICS_MAX:
            topic = self.waiting.pop()
            o = self._ov(topic)
            if o not in carried and (topic in published or topic in store.topic_subs):
                self._join(o, topic)
        if len(self.ov_of) > TOPIC_ID_CACHE_MAX + len(carried):
            self.ov_of = {}

    def _join(self, o, topic):
        """Carry one topic in the overlay; False when the profile is full."""
        if len(self.carried) >= profile.TOPICS_MAX:
            # The overlay's profile holds TOPICS_MAX topics: the rest stay
            # local (each try would fail, and the topic ids of thousands
            # would be derived again every second).
            self.count("overlay_topics_full")
            return False
        self.pc.subscribe(o)
        self.carried[o] = topic
        log.info("event=topic_joined %s", kv(topic=topic))
        return True

    # -- sending -------------------------------------------------------------

    def _send_outs(self, outs):
        for o in outs:
            if isinstance(o, Outgoing):
                self._send(o.peer_id, o.data(), o.addr)

    def _gossip(self):
        now = int(time.monotonic() * 1000)
        outs = self.pc.tick(now)
        self.pc.expire(now)
        self._send_outs(outs)
        if self.lan is not None:
            self.lan.announce()

    # -- messages from peers -------------------------------------------------

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
        elif msg.name in ("ping", "pong", "fed_welcome", "fed_hello", "s_bye"):
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
        if origin == self.id and oseq > self.proxy.store.origin_high(topic, origin)[0]:
            # Numbered as ours beyond anything we numbered: forged (taking it
            # would shadow our own next message in everyone's summaries).
            self.proxy.faults.note("fed_forged_origin", peer=ch.peer_id.hex())
            self._ack(ch.peer_id, topic, msg_id, peer_wire.ACK_BAD_ORIGIN)
            return
        self._carries(ch.peer_id, topic)
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
        if len(self.gap_asked) > GAP_ASKED_MAX:
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

    def local_published_many(self, msgs):
        """Our own sessions' publishes of one commit were stored (new), each
        (topic, msg_id, payload, origin, oseq), in order: into the overlay.
        What does not depend on the message (the topic's time, its joins,
        whether any proxy is known to carry it) is done once per topic, so a
        proxy on its own pays nothing per message."""
        if self.pc is None:
            return
        now = time.monotonic()
        targets = {}   # topic -> whether a proxy is known to carry it
        for topic, msg_id, payload, origin, oseq in msgs:
            if origin is None:
                continue
            t = targets.get(topic)
            if t is None:
                published = self.published
                published.pop(topic, None)   # to the end: the dict stays oldest first
                published[topic] = now
                o = self._ov(topic)
                if o not in self.carried and len(self.carried) >= profile.TOPICS_MAX:
                    self.waiting.add(topic)   # joined by _sync_topics as the profile has room
                elif o not in self.carried:
                    # Join this one topic now (catch-up brings it to the
                    # others), not a whole _sync_topics: that walks every
                    # subscription and publisher, and with more topics than
                    # the profile holds it ran for every publish to one left
                    # out (10,000 sessions each on its own topic: ~20 ms per
                    # publish, seconds of backlog at 1,000 msg/s;
                    # tools/bench/bench_scale.py).
                    self._join(o, topic)
                r = self.pc.rings
                t = targets[topic] = bool(r.successors(o) or r.predecessors(o) or r.known_map(o))
            if t:
                self._forward(topic, msg_id, origin, oseq, -1, payload, ())

    def _forward(self, topic, msg_id, origin, oseq, hops, payload, senders):
        """Dissemination rule (PolderCast 3.4): the targets of a message
        received from ``senders`` (empty: published here)."""
        if hops + 1 >= peer_wire.HOPS_MAX:
            return
        o = self._ov(topic)
        r = self.pc.rings
        succ, pred = r.successors(o), r.predecessors(o)
        if not succ and not pred and not r.known_map(o):
            return   # no proxy known to carry the topic (a proxy on its own): no target, per message
        sender = next(iter(senders)) if senders else None
        targets = dissemination.choose(self.pc.rng, sender, succ, pred,
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
            # Linked peers that showed they carry the topic count too: after
            # a partition each side has dropped the other from its rings, and
            # the rings may take long to meet again; the data must not wait.
            for pid in self.channels:
                if topic in self.carriers.get(pid, ()) and pid not in nbrs:
                    nbrs.append(pid)
            if not nbrs:
                continue
            # One neighbour per topic and period, in turn (PolderCast's one
            # exchange per period): a summary sent to all four would be
            # answered four times with the same missing messages.
            pid = nbrs[self._nbr_rot % len(nbrs)]
            self.count("summaries_sent")
            self._send(pid, E.REGISTRY.encode("fed_summary", *self.summaries.build(topic)))
        self._nbr_rot += 1

    def _carries(self, pid, topic):
        ts = self.carriers.get(pid)
        if ts is None:
            if len(self.carriers) >= CARRIERS_MAX:
                self.carriers = {}
            ts = self.carriers[pid] = set()
        if topic not in ts and len(ts) < CARRIER_TOPICS_MAX:
            ts.add(topic)

    def relinked(self, pid):
        """A link to pid is up (again): the topics it carries with us get
        our summary now, so what either side missed meanwhile flows at once."""
        for topic in sorted(self.carriers.get(pid, ()))[:SUMMARY_TOPICS_MAX]:
            if self._ov(topic) in self.carried:
                self.count("summaries_sent")
                self._send(pid, E.REGISTRY.encode("fed_summary", *self.summaries.build(topic)))

    def _on_summary(self, ch, v):
        topic, origins, complete = bytes(v[0]), v[1], v[2]
        self.count("summaries_received")
        if self._ov(topic) not in self.carried:
            self.count("summary_not_subscribed")
            return
        self._carries(ch.peer_id, topic)
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
