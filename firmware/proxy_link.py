"""The node's link to its proxy: socket, session window, acks, refill.

The proxy link is the edge session inside a Noise XX link over UDP
(shared_protocol/session/secure_client.py; the node's static key is the X25519
form of its Ed25519 node key, so its session id is bound to its identity).
``"link": "plaintext"`` in the config selects the unencrypted session, for
a proxy run with --insecure. Either way the payloads are sealed end to end
with the group keys (docs/private-groups.md): a proxy stores ciphertext.

Durability rule: a delivery is acknowledged to the proxy (``consumed``)
only after the op it carried is in the replica file on flash
(``ack_consumed`` runs after the node's save); an op leaves the outbox
only when the proxy's ack names it.
"""
import socket

from shared_protocol import clock
from shared_protocol.session import messages as W
from shared_protocol.errors import UpsycleError
from shared_protocol.session.secure_client import SecureLink, node_id_for
from shared_protocol.session.client import ClientSession

from firmware import platform
from firmware.topic import message_seq

try:
    from micropython import const
except ImportError:   # CPython, where the host tests run this module
    def const(x):
        return x

# Publishes in flight to the proxy: each holds its sealed datagram (~350
# bytes) for retransmission, so 8 keep ~3 KB of the 48 KB budget.
_WINDOW = const(8)
# A board pings every 10 s: NAT mappings live 30 s or more, and a proxy
# notices a node gone within 30 s.
_KEEPALIVE_MS = const(10000)
# Link failures in a row (a link lost, a handshake unanswered) after which a
# node with several proxies moves to the next one in its list: a proxy that
# restarts answers the first new handshake, a dead one costs two failures
# (about 30 s of silence, then 8 s of handshake, on a board's keepalive).
_FAILOVER_AFTER = const(2)
# A refill (a topic whose replica was set aside, started over at the proxy)
# is over once the proxy has confirmed it and then sent nothing for the topic
# this long while the link was up: the proxy sends its backlog back to back
# (a window of 8 every second or so even in the VM, where each delivery costs
# an Ed25519 verify), so 20 s of silence means it has nothing more.
REFILL_IDLE_MS = const(20000)


class ProxyLink:
    def __init__(self, node, cfg):
        self.node = node
        # Short ids on the proxy link: each topic and its replica generation
        # named once per link (the message id's base), so a publish and its ack
        # carry a small index and the DMC sequence (session/messages.py s_pub_a).
        aliases = []
        for t in node.topics:
            aliases.append((t.topic, message_seq(t.author, 0)))
        if cfg.get("link") == "plaintext":
            from firmware.plain_link import PlainLink
            self.session = ClientSession(node.node_id[:16], _WINDOW, _KEEPALIVE_MS, aliases)
            self.link = PlainLink(self.session)
        else:
            from shared_protocol.groups.keys import Identity
            from shared_protocol.crypto import api as crypto
            static = Identity(bytes.fromhex(cfg["node_key"])).x25519_secret
            sid = node_id_for(crypto.x25519_public(static))
            self.session = ClientSession(sid, _WINDOW, _KEEPALIVE_MS, aliases)
            self.link = SecureLink(self.session, static, True, None)
            self.static = static   # the mirrors' links too (proxy_all.py)
        self._dropped_seen = 0
        self.proxies = []
        for p in cfg.get("proxies", []):
            # firmware/config.py has checked the form: host:port[@KEY], or
            # ble[@KEY] (the proxy that connects over Bluetooth LE)
            addr, _, key = p.partition("@")
            host, _, port = addr.rpartition(":") if addr != "ble" else ("ble", "", "0")
            self.proxies.append((host, int(port), bytes.fromhex(key) if key else None))
        self.over_ble = False
        # "all": every other proxy of the list gets a Mirror (firmware/proxy_all.py,
        # imported only then) that publishes what this link publishes
        self.mirrors = None
        if cfg.get("proxy_mode") == "all" and len(self.proxies) > 1:
            from firmware.proxy_all import Mirrors
            self.mirrors = Mirrors(self, cfg.get("link") == "plaintext")
        self.proxy_index = 0
        self.failures = 0        # link failures in a row (_FAILOVER_AFTER)
        self.inflight = {}       # msg_id -> (topic, dmc author, dmc seq)
        self.sent_upto = {}      # topic id -> {dmc author: highest seq handed to the session this link}
        self.pending_consumed = []
        self.cannot_write = {}   # topic id -> why (logged once): its readings stay in the outbox
        self.online = False
        self.refill_quiet = {}   # topic id -> ticks of the refill's last sign of life
        self.sock = None
        self.poller = None
        self.addr = None

    def open(self):
        if not self.proxies:
            return False
        node = self.node
        host, port, key = self.proxies[self.proxy_index % len(self.proxies)]
        if host == "ble":
            # Over BLE (firmware/ble_link.py): the Noise packets travel as
            # whole messages of the connection's BleLink, one per datagram.
            if node.ble is None:
                node.log("upsycle: the proxy is reached over BLE, but the radio is off")
                return False
            self.sock = node.ble.proxy_pipe()
            self.over_ble = True
            return self._start(key, "a BLE central (ble")
        if self.mirrors is not None:
            self.mirrors.around(self.proxy_index % len(self.proxies))
        try:
            self.addr = platform.sockaddr(host, port)
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setblocking(False)
            s.bind(platform.sockaddr("0.0.0.0", 0))
            # connected: only the proxy's datagrams arrive, and recv()
            # needs no sender address (runtime.main)
            s.connect(self.addr)
        except OSError as e:
            node.log("upsycle: cannot open a socket to %s:%d: %s" % (host, port, e))
            return False
        self.sock = s
        self.poller = platform.Poller(s)
        return self._start(key, "%s:%d (udp" % (host, port))

    def _start(self, key, where):
        node = self.node
        now = platform.ticks_ms()
        for t in node.topics:
            self.session.subscribe(t.topic, now)
            if t.refilling:
                # The proxy forgets our cursor and starts the topic over at
                # the oldest message it keeps (shared_protocol/session/client.py).
                self.session.resubscribe(t.topic, now)
                node.log("upsycle: topic %s: asking the proxy for the topic's history again" % t.name)
        for t in node.topics:
            t.member.reintroduce()   # readers behind this proxy may not know our key yet
        plain = not isinstance(self.link, SecureLink)
        if not plain:
            # pinned: the handshake fails against any other key; else first use
            self.link.proxy_key = key
        self.link.start(now, platform.random_bytes(32))
        node.log("upsycle: proxy link to %s, %s)" % (
            where, "plaintext" if plain else ("Noise XX, pinned key" if key else "Noise XX")))
        return True

    def next_proxy(self, now):
        """Move to the next proxy of the list (docs/federation.md): a new
        socket and link; the session resends what is in flight there (the
        same message ids: the federation stores them once) and the new
        proxy numbers the topics its own way (session/client.py)."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
            self.poller = None
        self.proxy_index += 1
        del self.pending_consumed[:]   # the old proxy's numbers: nothing to tell the new one
        self.open()

    def receive(self, data, now):
        self.link.receive(data, now)
        d = self.link.dropped
        if d != self._dropped_seen:
            self._dropped_seen = d
            if self.node.count_error():
                self.node.log("upsycle: a datagram from the proxy failed the secure link's checks: dropped (%d so far)" % d)

    def outgoing(self):
        return self.link.data_to_send()

    def next_deadline(self):
        d = self.link.next_deadline()
        if self.mirrors is not None:
            return self.mirrors.deadline(d)
        return d

    def turn(self, now):
        """Events in, the window filled, refills watched (before the save)."""
        if self.sock is not None:   # no link (offline, no proxy): nothing to poll
            self.link.poll(now)
            self.events(now)
            self._fill_window(now)
        if self.mirrors is not None:
            self.mirrors.io(now)
        if self.refill_quiet:
            self._refill_done(now)

    def ack_consumed(self):
        """Acknowledge deliveries: only after the node saved their ops."""
        pc = self.pending_consumed
        if pc:
            s = self.session
            for topic, seq in pc:
                s.consumed(topic, seq)
            del pc[:]

    def _refill_done(self, now):
        rq = self.refill_quiet
        node = self.node
        for topic in list(rq):
            if not self.online:
                rq[topic] = now    # no word from the proxy while the link is down
                continue
            if clock.diff(now, rq[topic]) < REFILL_IDLE_MS:
                continue
            del rq[topic]
            tp = node.by_id[topic]
            tp.end_refill()
            node.log("upsycle: topic %s: refill from the proxy done, %d readings in the replica" % (
                tp.name, node.readings_held(tp)))

    def events(self, now):
        """Handle what the link has told (deliveries opened and applied,
        acks, link changes). Node.turn calls it, and runtime.main after
        each datagram read: a burst's deliveries are then never all held
        at once while one of them has its signature checked."""
        node = self.node
        counts = node.counts
        for ev in self.link.events():
            kind = ev[0]
            if kind == "delivery":
                self.pending_consumed.append((ev[1], ev[2]))
                node.deliver(ev[1], ev[2], ev[4])
                if ev[1] in self.refill_quiet:
                    self.refill_quiet[ev[1]] = now
            elif kind == "subscribed":
                tp = node.by_id.get(ev[1])
                if tp is not None and tp.refilling:
                    if tp.topic not in self.refill_quiet:   # not a resume on a new link
                        node.log("upsycle: topic %s: the proxy starts it over after its message %d: refilling"
                                 % (tp.name, ev[2]))
                    self.refill_quiet[tp.topic] = now
            elif kind == "missed":
                self.pending_consumed.append((ev[1], ev[2]))
            elif kind == "acked":
                self.acked(ev[1])
            elif kind == "rejected":
                x = self.inflight.pop(ev[1], None)
                if x is not None:
                    node.by_id[x[0]].acked(x[1], x[2])
                    counts["rejected"] += 1
                    node.log("upsycle: proxy refused a reading (%s: %s): dropped" % (ev[2], ev[3]))
            elif kind == "welcome":
                if not self.online:
                    node.log("upsycle: proxy session open")
                self.online = True
                self.failures = 0
            elif kind == "lost" or kind == "link_failed":
                self.online = False
                self.failures += 1
                if len(self.proxies) > 1 and self.failures >= _FAILOVER_AFTER:
                    self.failures = 0
                    node.log("upsycle: proxy link lost (%s): moving to the next proxy" % (ev[1],))
                    self.next_proxy(now)
                    continue
                node.log("upsycle: proxy link lost (%s): retrying" % (ev[1],))
                # The session keeps what is in flight and resends it on
                # the new link (session/client.py).
                self.link.start(now, platform.random_bytes(32))
            elif kind == "secured":
                node.log("upsycle: secure link up, proxy key %s" % bytes(ev[1][:8]).hex())
                platform.forget(platform.HANDSHAKE_ONLY)
            elif kind == "error":
                if node.count_error():
                    node.log("upsycle: bad message from the proxy ignored (%s: %s)" % (ev[1], ev[2]))

    def acked(self, mid):
        """A proxy holds publish ``mid`` (this link's, or a mirror's: then
        no session sends it any more)."""
        x = self.inflight.pop(mid, None)
        if x is None:
            return
        if self.mirrors is not None:
            self.session.drop(mid)
            self.mirrors.drop(mid)
        node = self.node
        node.by_id[x[0]].acked(x[1], x[2])
        counts = node.counts
        counts["acked"] += 1
        if counts["acked"] == 1:
            node.log("upsycle: first reading acknowledged by the proxy")

    def _fill_window(self, now):
        s = self.session
        sealed = False
        now_s = None
        for tp in self.node.topics:
            if not tp.outbox:
                # nothing to send: no allocation on an idle turn (the wall
                # clock is a big int on a 32-bit board, next_message builds
                # a list)
                continue
            upto = self.sent_upto.get(tp.topic)
            if upto is None:
                upto = self.sent_upto[tp.topic] = {}
            if now_s is None:
                now_s = platform.unix_time()
            while s.can_publish():
                try:
                    m = tp.next_message(upto, now_s)
                except UpsycleError as e:
                    # e.g. the write capability expired: readers would refuse
                    # what we send, so nothing is sent and nothing is lost
                    # (by code: a board build's errors carry no text,
                    # shared_protocol/errors.py)
                    if self.cannot_write.get(tp.topic) != e.code:
                        self.cannot_write[tp.topic] = e.code
                        self.node.log("upsycle: topic %s: cannot publish (%s); readings stay in the outbox: "
                                      "flash a new invite" % (tp.name, e))
                    break
                if m is None:
                    break
                # the seal's garbage out of the way of what the session
                # keeps until the ack (the datagram, for resends)
                platform.compact()
                a, seq, payload = m
                # The session's node id: on a Noise link the proxy binds it to
                # the link's key and refuses ids that do not start with it.
                # A batch is named by its last op.
                mid = W.message_id(s.node_id, message_seq(a, seq))
                s.publish(tp.topic, mid, payload, now)
                if self.mirrors is not None:
                    self.mirrors.publish(tp.topic, mid, payload, now)
                self.inflight[mid] = (tp.topic, a, seq)
                upto[a] = seq
                sealed = True
        return sealed
