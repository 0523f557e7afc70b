"""Publishing through every proxy: config ``"proxy_mode": "all"``
(docs/federation.md, "Several proxies per node"). Imported only then.

The node's ProxyLink (firmware/proxy_link.py) keeps its one session with
the subscriptions, the deliveries and the failover. Every other proxy of
the list gets a Mirror: a session of its own, without subscriptions, that
publishes every message the link publishes, under the same message id and
with the same sealed bytes (the federation stores it once). The first
acknowledgement, from whichever proxy, takes the reading off the outbox and
out of every other session's window: a proxy that died, the link's own
included, holds nothing up while another answers. A mirror whose window is
full (its proxy slow or gone) is skipped: the federation brings its proxy
the message.
"""
import socket

from shared_protocol import clock
from shared_protocol.session.client import ClientSession
from shared_protocol.session.secure_client import SecureLink

from firmware import platform

try:
    from micropython import const
except ImportError:   # CPython, where the host tests run this module
    def const(x):
        return x

# Mirror datagrams are read when the loop turns: it turns at least this
# often while mirrors run (the link's socket is the one the loop waits on).
_POLL_MS = const(50)
# Publishes in flight per mirror: each keeps its sealed datagram (~350
# bytes) for resends; the link's window is 8, and a mirror is the spare.
_WINDOW = const(4)
# Datagrams read per mirror per turn.
_RX_PER_TURN = const(8)
# The proxy link's largest read (runtime.RX_MAX).
_RX_MAX = const(1200)


class Mirror:
    def __init__(self, pl, index, plain):
        self.pl = pl
        self.index = index
        s = pl.session
        self.session = ClientSession(s.node_id, _WINDOW, s.keepalive_ms, s.aliases)
        if plain:
            from firmware.plain_link import PlainLink
            self.link = PlainLink(self.session)
        else:
            self.link = SecureLink(self.session, pl.static, True, None)
        self.sock = None
        self.poller = None

    def open(self, now):
        host, port, key = self.pl.proxies[self.index]
        log = self.pl.node.log
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setblocking(False)
            s.bind(platform.sockaddr("0.0.0.0", 0))
            s.connect(platform.sockaddr(host, port))
        except OSError as e:
            log("upsycle: cannot open a socket to %s:%d: %s" % (host, port, e))
            return
        self.sock = s
        self.poller = platform.Poller(s)
        if hasattr(self.link, "proxy_key"):
            self.link.proxy_key = key
        self.link.start(now, platform.random_bytes(32))
        log("upsycle: also publishing through %s:%d" % (host, port))

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def io(self, now):
        """Datagrams in, events, datagrams out."""
        if self.sock is None:
            return
        link = self.link
        p = self.poller
        n = 0
        while n < _RX_PER_TURN and p.ready():
            n += 1
            try:
                data = p.recv(_RX_MAX)
            except OSError:
                break
            link.receive(data, now)
        link.poll(now)
        for ev in link.events():
            kind = ev[0]
            if kind == "acked":
                self.pl.acked(ev[1])
            elif kind == "lost" or kind == "link_failed":
                link.start(now, platform.random_bytes(32))   # what it held goes again on the new link
        for m in link.data_to_send():
            try:
                self.sock.send(m)
            except OSError:
                pass   # no route yet: the session retransmits


class Mirrors:
    def __init__(self, pl, plain):
        self.pl = pl
        self.plain = plain
        self.by_index = {}

    def around(self, current):
        """A mirror for every proxy of the list but the link's ``current``
        one (the link moved: the proxy it left gets a mirror)."""
        now = platform.ticks_ms()
        for i in range(len(self.pl.proxies)):
            m = self.by_index.get(i)
            if i == current:
                if m is not None:
                    m.close()
                    del self.by_index[i]
            elif m is None:
                m = self.by_index[i] = Mirror(self.pl, i, self.plain)
                m.open(now)

    def publish(self, topic, mid, payload, now):
        for m in self.by_index.values():
            s = m.session
            if s.can_publish():
                s.publish(topic, mid, payload, now)

    def drop(self, mid):
        for m in self.by_index.values():
            m.session.drop(mid)

    def io(self, now):
        for m in self.by_index.values():
            m.io(now)

    def deadline(self, d):
        """The link's deadline ``d``, or sooner: the loop must turn to read
        the mirrors' sockets."""
        return clock.earliest(d, clock.add(platform.ticks_ms(), _POLL_MS))
