"""The proxy's links to other proxies, for the Federation (mixed into it).

``PeerTable`` owns the open proxy links (``Channel``s, peers.py) by peer id,
which peers may link (``peer_policy``: the listed ones, or any), dialling
(with backoff), keepalive, the gossip waiting for a dial, the per-peer
``Outbox``es of data messages and the per-peer gossip rate. A link dialled
in is taken as a proxy link on its ``fed_hello`` (the key it names must be
the one its handshake proved); one we dial is taken on ``fed_welcome``.
"""
import asyncio
import logging
import time

from shared_protocol.overlay import ids
from shared_protocol.session.secure_client import node_id_for
from shared_protocol.wire import envelope as E
from upsycle.proxy import peer_wire, peers
from upsycle.proxy.links import kv

log = logging.getLogger("upsycle.proxy")

# Gossip messages waiting for a link being dialled, per peer.
GOSSIP_PENDING_MAX = 4
# Gossip messages a peer may send per second (token bucket), beyond which
# they are dropped: one period's exchanges need a handful.
GOSSIP_RATE = 50.0
GOSSIP_BURST = 100.0
# A dial that failed is retried after this, doubling up to the maximum.
DIAL_RETRY_S = 0.5
DIAL_RETRY_MAX_S = 30.0
# Addresses whose dials failed, remembered for their backoff.
RETRY_TABLE_MAX = 4096
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


class PeerTable:
    """Proxy links by peer id (state: channels, by_link, allowed, keys,
    addrs, outbox, no_link_since, pending, dialing, retry, buckets)."""

    def _init_peers(self):
        self.channels = {}        # peer id -> [Channel], newest last
        self.by_link = {}         # inbound Link -> Channel
        self.allowed = set()      # listed peers' ids (keys given, or proved at a listed address)
        self.keys = {}            # peer id -> static key
        self.addrs = {}           # peer id -> address it listens on (bytes)
        self.outbox = {}          # peer id -> peers.Outbox
        self.no_link_since = {}   # peer id -> when its last link closed (or a dial first failed)
        self.pending = {}         # peer id -> gossip waiting for a dial
        self.dialing = set()      # (host, port)
        self.retry = {}           # (host, port) -> [next try, delay]
        self.buckets = {}         # peer id -> [tokens, time]

    # -- links ---------------------------------------------------------------

    def _channel(self, peer_id):
        chs = self.channels.get(peer_id)
        return chs[-1] if chs else None

    def _link_count(self):
        return sum(len(v) for v in self.channels.values())

    def on_link_message(self, link, msg, size):
        """A proxy-link message (size bytes) on an inbound link (routing.py)."""
        ch = self.by_link.get(link)
        if ch is None:
            self._accept_hello(link, msg)
            return
        ch.rx_bytes += size + 18   # (+ Noise tag and frame length)
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
            hp = peers.split_addr(bytes(msg["addr"]))
            if hp is not None and (hp[0], hp[1], None) in self.listed:
                # It says it is a listed peer whose key we have not met yet:
                # not a fault. Dial it: our handshake there proves its key,
                # and its next dial to us is taken (proved()).
                self.count("first_contact")
                link.ps.error("peer_not_listed", "not yet: dialling you to learn your key")
                self.proxy.flush(link)
                self.proxy.close_link(link, "peer_first_contact")
                self._dial(hp[0], hp[1])
                return
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
        if first:
            self.relinked(pid)
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
                if len(self.retry) >= RETRY_TABLE_MAX:
                    self.retry = {}   # (addresses gossip named once: start their backoff over)
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
                if cause == "peer_refused" and (host, port, None) in self.listed:
                    self.count("first_contact")   # it has not met our key yet (above)
                elif cause and not cause.startswith("peer_unreachable"):
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
        if pid not in self.pending and len(self.pending) >= PEER_LINKS_MAX:
            self.pending = {}   # gossip is best effort: the next period sends afresh
        q = self.pending.setdefault(pid, [])
        if len(q) < GOSSIP_PENDING_MAX:
            q.append(data)
        self._dial(hp[0], hp[1], self.keys.get(pid), pid)

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
