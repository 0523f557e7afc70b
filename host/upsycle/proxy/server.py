"""The store-and-forward proxy: asyncio runner of the edge session protocol.

Links are TCP connections (frames from framing.StreamDecoder) or UDP peer
addresses (one envelope per datagram). Each link carries one
session_proxy.ProxySession; a hello binds it to a node id, and a newer link
for the same node replaces the older one (a node that roamed). Publishes go
to the Store and are acknowledged from its commit callback, i.e. only once
durable. Deliveries are pumped from the store per subscription, from the
subscriber's cursor, within the session's window.

Memory is bounded whatever clients do: a fixed decoder per TCP connection, a
cap on connections and on pre-hello links per address (the oldest is
evicted, so a stall attack cannot lock out a real node from the same
address), a write-buffer cap (a peer that never reads is cut off), at most
PUBLISH_WINDOW unacknowledged publishes per link, a rate limit per UDP source
address, and bounded session windows. Payloads are never decoded.
"""
import asyncio
import collections
import ipaddress
import logging
import os
import sys
import time

from shared_protocol.wire import envelope as E
from shared_protocol.wire import framing
from shared_protocol.session import messages as W
from shared_protocol.errors import RemoteError, UpsycleError
from shared_protocol.noise.datagram import MAX_DATAGRAM as NOISE_DATAGRAM_MAX
from shared_protocol.noise.handshake import Handshake
from shared_protocol.noise.stream import HandshakeComplete
from shared_protocol.noise.udp import KIND_DATA, KIND_HS1, KIND_HS2, KIND_HS3, UdpSession
from shared_protocol.session.secure_client import PROLOGUE, node_id_for
from shared_protocol.session.proxy import ProxySession
from upsycle.proxy.identity import load_or_create_key, public_key
from upsycle.proxy.store import Store, StorageError  # noqa: F401 (re-exported)

log = logging.getLogger("upsycle.proxy")

# Largest frame we accept on TCP: a publish of PAYLOAD_MAX plus headers is
# ~1.1 KB; 4 KB is framing's default and what boards buffer.
FRAME_LIMIT = framing.STREAM_FRAME_DEFAULT
# Bytes queued towards a peer before we decide it does not read: a full
# delivery window (256 x ~1.1 KB) plus its acks fits well under 1 MB.
WRITE_BUFFER_MAX = 1024 * 1024
# Unacknowledged publishes per link: the client's window is at most
# WINDOW_MAX; a client that ignores it gets typed rejects, not our memory.
PUBLISH_WINDOW = W.WINDOW_MAX
# A link must say hello within this time: a real node does it at once.
HELLO_TIMEOUT_S = 10.0
# Timer resolution for retransmissions and expiry (RTO starts at 250 ms).
TICK_S = 0.05
# Source addresses tracked for UDP rate limiting; least recently seen are
# forgotten first (a forgotten address starts with a full bucket again).
RATE_TABLE_MAX = 4096
# Thread switch interval (CPython's default is 5 ms): see Proxy.start.
GIL_SWITCH_S = 0.0005
# Sent with s_welcome: how many publishes a node may keep in flight.
WELCOME_WINDOW = W.WINDOW_MAX
# Largest UDP payload taken: a plaintext envelope (framing.DATAGRAM_MAX) or a
# secure packet (kind byte + Noise datagram, noise/datagram.py).
UDP_MAX = max(framing.DATAGRAM_MAX, NOISE_DATAGRAM_MAX + 1)


PLAINTEXT_REFUSED_DETAIL = "this proxy takes secure links only (allow_plaintext = false)"


def now_ms():
    return int(time.monotonic() * 1000)


def hexid(b, n=8):
    return bytes(b[:n]).hex() if b is not None else "-"


def kv(**fields):
    """Readable structured log fields: key=value, sorted, bytes as hex."""
    parts = []
    for k in sorted(fields):
        v = fields[k]
        if isinstance(v, (bytes, bytearray)):
            v = hexid(v)
        s = str(v)
        if " " in s or "=" in s or not s:
            s = '"%s"' % s.replace('"', "'")
        parts.append("%s=%s" % (k, s))
    return " ".join(parts)


class SubState:
    __slots__ = ("cursor", "sent_upto")

    def __init__(self, cursor):
        self.cursor = cursor        # consumed by the node (acknowledged)
        self.sent_upto = cursor     # highest sequence handed to the session


class Link:
    __slots__ = ("kind", "addr", "host", "ps", "node", "subs", "unacked", "closed",
                 "transport", "paused", "opened", "proto", "mode", "hs", "udp", "send_cs",
                 "recv_cs", "bound")

    def __init__(self, kind, addr, ps, transport, proto=None):
        self.kind = kind
        self.addr = addr
        self.host = addr[0] if addr else "?"
        self.ps = ps
        self.node = None
        self.subs = {}
        self.unacked = 0
        self.closed = False
        self.transport = transport
        self.paused = False
        self.opened = time.monotonic()
        self.proto = proto
        # "new" (TCP, first frame not seen), "plain", "status" (plaintext,
        # status requests only), "hs" (Noise handshake), "secure"
        self.mode = "new"
        self.hs = None        # TCP: the Handshake in progress
        self.udp = None       # UDP: the UdpSession (handshake, then transport)
        self.send_cs = None   # TCP transport CipherStates
        self.recv_cs = None
        self.bound = None     # secure: the node id the peer's static key proves

    def name(self):
        return "%s:%s/%s" % (self.addr[0], self.addr[1], self.kind) if self.addr else self.kind


class Faults:
    """Counts bad input and drops by cause; logs each cause once."""

    def __init__(self):
        self.counts = {}

    def note(self, cause, n=1, **fields):
        first = cause not in self.counts
        self.counts[cause] = self.counts.get(cause, 0) + n
        if first:
            log.warning("event=fault cause=%s %s (logged once; see `upsycle proxy status` for counts)",
                        cause, kv(**fields))


class TcpProtocol(asyncio.Protocol):
    def __init__(self, proxy):
        self.proxy = proxy
        self.link = None
        self.decoder = None

    def connection_made(self, transport):
        self.decoder = framing.StreamDecoder(FRAME_LIMIT)
        self.link = self.proxy.accept_tcp(self, transport)

    def data_received(self, data):
        link = self.link
        if link is None or link.closed:
            return
        try:
            frames = self.decoder.feed(data)
        except framing.FrameError as e:
            self.proxy.faults.note("frame_" + e.code, peer=link.name())
            link.ps.error("frame_" + e.code, e.message)
            self.proxy.flush(link)
            self.proxy.close_link(link, "bad_frame")
            return
        p = self.proxy
        t = now_ms()
        for f in frames:
            if link.mode != "plain" and link.mode != "status":
                f = p.tcp_frame(link, f)
                if f is None:
                    if link.closed:
                        return
                    continue
            elif link.mode == "status" and not p.status_frame(link, f):
                return
            link.ps.receive(f, t)
            p.handle_events(link)
            if link.closed:
                return
        p.pump(link)
        p.flush(link)

    def eof_received(self):
        return False

    def pause_writing(self):
        if self.link is not None:
            self.link.paused = True

    def resume_writing(self):
        if self.link is not None and not self.link.closed:
            self.link.paused = False
            self.proxy.pump(self.link)
            self.proxy.flush(self.link)

    def connection_lost(self, exc):
        if self.link is not None:
            self.proxy.close_link(self.link, "disconnected")


class UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, proxy):
        self.proxy = proxy

    def datagram_received(self, data, addr):
        self.proxy.on_datagram(data, addr)

    def error_received(self, exc):
        self.proxy.faults.note("udp_socket_error", error=str(exc))


class Proxy:
    def __init__(self, config):
        self.config = config
        lim = config.limits
        self.limits = lim
        self.store = Store(config.data, config.retention, max_topics=lim["max_topics"],
                           max_db_bytes=lim["max_db_bytes"])
        self.faults = Faults()
        self.links = set()             # every open link
        self.sessions = {}             # node id -> Link
        self.host_sessions = {}        # host -> number of sessions from it
        self.pending = {}              # host -> deque of pre-hello TCP links
        self.udp_links = {}            # addr -> Link
        self.topic_links = {}          # topic -> set of Links subscribed on this run
        self.rates = collections.OrderedDict()  # UDP addr -> [tokens, last time]
        self.rejects = {}
        self.queue_drops = {}
        self.started = time.time()
        self.tcp_server = None
        self.udp_transport = None
        self.udp_endpoint = None
        self._ticker = None
        self._stopped = asyncio.Event()
        self.addresses = {}
        # The proxy's static X25519 key (Noise XX), kept in the data directory.
        self.key = None               # loaded in start(), after the store checks the directory
        self.public_key = b""
        self.handshakes = {}           # host -> deque of links in a handshake
        self.handshake_count = 0
        self.udp_hs = {}               # addr -> Link in a UDP handshake
        self.hs_rates = collections.OrderedDict()  # host -> [tokens, last time] of new handshakes
        self.secure_sessions = 0       # handshakes completed (a counter)

    # -- life cycle --------------------------------------------------------

    async def start(self):
        loop = asyncio.get_running_loop()
        # The store's writer thread needs the GIL for a moment after each
        # fsync to hand results back; with the default 5 ms switch interval a
        # busy event loop would add up to 5 ms to every acknowledgement.
        sys.setswitchinterval(GIL_SWITCH_S)
        try:
            from upsycle.crypto_nacl import install
            install()   # handshakes at libsodium speed (~0.2 ms each)
        except ImportError:
            log.warning("event=no_libsodium handshakes run in pure Python (slow)")
        self.store.open()
        self.key = load_or_create_key(self.config.data)
        self.public_key = public_key(self.key)
        self.store.start(loop, self.on_commit)
        c = self.config
        self.tcp_server = await loop.create_server(lambda: TcpProtocol(self), c.listen, c.tcp_port,
                                                   reuse_address=True, backlog=256)
        tcp_port = self.tcp_server.sockets[0].getsockname()[1]
        self.addresses["tcp"] = (c.listen, tcp_port)
        udp_port = c.udp_port
        if udp_port == 0 and c.tcp_port == 0:
            udp_port = tcp_port
        if udp_port >= 0:
            self.udp_transport, self.udp_endpoint = await loop.create_datagram_endpoint(
                lambda: UdpProtocol(self), local_addr=(c.listen, udp_port))
            self.addresses["udp"] = (c.listen, self.udp_transport.get_extra_info("sockname")[1])
        self._ticker = asyncio.ensure_future(self._tick())
        n, b = self.store.stored_totals()
        log.info("event=proxy_started %s", kv(
            tcp="%s:%d" % self.addresses["tcp"],
            udp=("%s:%d" % self.addresses["udp"]) if "udp" in self.addresses else "off",
            data=c.data, proxy_id=self.store.proxy_id, topics=len(self.store.topics),
            stored_messages=n, stored_bytes=b, proxy_key=self.public_key.hex(),
            plaintext="allowed" if c.allow_plaintext else "refused"))
        print("upsycle proxy: public key %s" % self.public_key.hex(), file=sys.stderr, flush=True)

    async def stop(self):
        if self._ticker is not None:
            self._ticker.cancel()
        if self.tcp_server is not None:
            self.tcp_server.close()
        for link in list(self.links):
            link.ps._out.append(E.REGISTRY.encode("s_bye", "proxy_shutdown"))
            self.flush(link)
            self.close_link(link, "shutdown")
        if self.udp_transport is not None:
            self.udp_transport.close()
        await asyncio.get_running_loop().run_in_executor(None, self.store.close)
        log.info("event=proxy_stopped %s", kv(commits=self.store.commits))
        self._stopped.set()

    async def _tick(self):
        while True:
            await asyncio.sleep(TICK_S)
            t = now_ms()
            mono = time.monotonic()
            for link in list(self.links):
                if link.closed:
                    continue
                if link.node is None and mono - link.opened > HELLO_TIMEOUT_S:
                    self.faults.note("handshake_timeout" if link.mode == "hs" else "hello_timeout",
                                     peer=link.name())
                    self.close_link(link, "hello_timeout")
                    continue
                if link.mode == "hs":
                    if link.udp is not None:
                        try:
                            link.udp.tick(t)
                        except RemoteError:
                            pass   # the hello timeout above closes it
                        for pkt in link.udp.packets_to_send():
                            self.udp_transport.sendto(pkt, link.addr)
                    continue
                link.ps.poll(t)
                self.handle_events(link)
                if not link.closed:
                    self.flush(link)

    # -- links -------------------------------------------------------------

    def _new_session(self, reliable):
        return ProxySession(self.store.proxy_id, reliable, now_ms(), publish_window=WELCOME_WINDOW)

    def accept_tcp(self, proto, transport):
        addr = transport.get_extra_info("peername") or ("?", 0)
        if len(self.links) >= self.limits["max_connections"]:
            self.faults.note("connection_limit", peer="%s:%s" % addr[:2])
            transport.abort()
            return None
        link = Link("tcp", addr[:2], self._new_session(True), transport, proto)
        q = self.pending.setdefault(link.host, collections.deque())
        while len(q) >= self.limits["max_pending_per_host"]:
            old = q.popleft()
            self.faults.note("pending_per_host_evicted", host=link.host)
            self.close_link(old, "evicted")
        q.append(link)
        self.links.add(link)
        return link

    def on_datagram(self, data, addr):
        addr = addr[:2]
        if not self._rate_ok(addr):
            self.faults.note("udp_flood", peer="%s:%s" % addr)
            return
        if not data or len(data) > UDP_MAX:
            self.faults.note("udp_size", peer="%s:%s" % addr, size=len(data))
            return
        kind = data[0]
        if kind in (KIND_HS1, KIND_HS2, KIND_HS3, KIND_DATA):
            self._secure_datagram(data, addr, kind)
            return
        link = self.udp_links.get(addr)
        if link is not None and link.mode != "plain":
            self.faults.note("udp_plaintext_on_secure", peer="%s:%s" % addr)
            return
        if len(data) > framing.DATAGRAM_MAX:
            self.faults.note("udp_size", peer="%s:%s" % addr, size=len(data))
            return
        if link is None:
            # No session for this address: only a hello may open one, and
            # nothing else gets a reply (no reflection towards forged sources).
            try:
                msg = E.REGISTRY.decode(data)
            except Exception:
                self.faults.note("udp_garbage_no_session", peer="%s:%s" % addr)
                return
            if msg.name != "s_hello":
                self.faults.note("udp_no_session", peer="%s:%s" % addr, type=msg.name)
                return
            if not self.config.allow_plaintext:
                # The refusal is smaller than the hello: no amplification.
                self.faults.note("plaintext_refused", peer="%s:%s" % addr)
                self.udp_transport.sendto(E.REGISTRY.encode(
                    "error", W.R_PLAINTEXT, PLAINTEXT_REFUSED_DETAIL), addr)
                return
            if len(self.udp_links) >= self.limits["max_sessions"]:
                self.faults.note("session_limit", peer="%s:%s" % addr)
                return
            link = Link("udp", addr, self._new_session(False), self.udp_transport)
            link.mode = "plain"
            self.udp_links[addr] = link
            self.links.add(link)
        link.ps.receive(data, now_ms())
        self.handle_events(link)
        if not link.closed:
            self.pump(link)
            self.flush(link)

    def _secure_datagram(self, data, addr, kind):
        """A Noise packet (noise/udp.py kinds). Handshakes run in their own
        link until complete, so an unauthenticated message 1 from a forged
        source never touches an established session."""
        t = now_ms()
        est = self.udp_links.get(addr)
        link = self.udp_hs.get(addr)
        if kind == KIND_DATA:
            link = est
            if link is None or link.mode != "secure":
                self.faults.note("udp_no_session", peer="%s:%s" % addr, type="noise_data")
                return
        elif link is None:
            if est is not None and est.udp is not None and data == est.udp._repeat_of:
                link = est      # its message 2 was lost: the session resends it
            elif kind != KIND_HS1:
                self.faults.note("udp_stale_handshake", peer="%s:%s" % addr)
                return
            else:
                link = Link("udp", addr, self._new_session(False), self.udp_transport)
                if not self._handshake_begin(link):
                    return
                link.udp = UdpSession(Handshake(False, self.key, os.urandom(32), PROLOGUE))
                self.udp_hs[addr] = link
        try:
            evs = link.udp.receive(data, t)
        except RemoteError as e:
            self.faults.note(e.code, peer=link.name())
            if link.mode == "hs" and link.udp._hs._step == 0:
                self.close_link(link, "bad_handshake")   # never started: forget it
            return
        for pkt in link.udp.packets_to_send():
            self.udp_transport.sendto(pkt, addr)
        for ev in evs:
            if isinstance(ev, HandshakeComplete):
                self._handshake_done(link, ev.remote_static)
                if self.udp_hs.get(addr) is link:
                    del self.udp_hs[addr]
                old = self.udp_links.get(addr)
                if old is not None and old is not link:
                    self.close_link(old, "replaced")
                self.udp_links[addr] = link
            else:
                link.ps.receive(ev.data, t)
                self.handle_events(link)
                if link.closed:
                    return
        if link.mode == "secure" and not link.closed:
            self.pump(link)
            self.flush(link)

    # -- secure links (Noise XX responder) ---------------------------------

    def _handshake_begin(self, link):
        """Count a new handshake against the limits; False: refused."""
        lim = self.limits
        if not self._bucket_ok(self.hs_rates, link.host, lim["handshake_rate"], lim["handshake_burst"]):
            self.faults.note("handshake_rate", peer=link.name())
            return False
        if self.handshake_count >= lim["max_handshakes"]:
            self.faults.note("handshake_limit", peer=link.name())
            return False
        q = self.handshakes.setdefault(link.host, collections.deque())
        while len(q) >= lim["max_handshakes_per_host"]:
            self.faults.note("handshakes_per_host_evicted", host=link.host)
            self.close_link(q[0], "evicted")
        q.append(link)
        self.handshake_count += 1
        link.mode = "hs"
        self.links.add(link)
        return True

    def _handshake_end(self, link):
        q = self.handshakes.get(link.host)
        if q is None:
            return
        try:
            q.remove(link)
        except ValueError:
            return
        self.handshake_count -= 1
        if not q:
            del self.handshakes[link.host]

    def _handshake_done(self, link, remote_static):
        self._handshake_end(link)
        link.mode = "secure"
        link.bound = node_id_for(remote_static)
        link.hs = None
        self.secure_sessions += 1

    def tcp_frame(self, link, f):
        """A frame on a TCP link not (yet) known to be plaintext: classify the
        first frame, run the handshake, or decrypt. Returns the session
        message to process, or None."""
        if link.mode == "secure":
            try:
                return link.recv_cs.decrypt_with_ad(b"", f)
            except RemoteError as e:
                return self._bad_frame(link, e)
        if link.mode == "hs":
            try:
                link.hs.read_message(f)
            except RemoteError as e:
                return self._bad_frame(link, e)
            send_cs, recv_cs = link.hs.split()
            link.send_cs, link.recv_cs = send_cs, recv_cs
            self._handshake_done(link, link.hs.remote_static)
            return None
        # First frame: a plaintext envelope, or Noise message 1 (32 random
        # bytes of ephemeral key, which never decode as an envelope).
        try:
            msg = E.REGISTRY.decode(f)
        except UpsycleError:  # the decoder raises only typed errors
            msg = None
        if msg is not None:
            if self.config.allow_plaintext:
                link.mode = "plain"
                return f
            if msg.name == "s_status_req":
                link.mode = "status"
                return f
            self.faults.note("plaintext_refused", peer=link.name())
            link.ps.error(W.R_PLAINTEXT, PLAINTEXT_REFUSED_DETAIL)
            self.flush(link)
            self.close_link(link, "plaintext_refused")
            return None
        if not self._handshake_begin(link):
            self.close_link(link, "handshake_limit")
            return None
        link.hs = Handshake(False, self.key, os.urandom(32), PROLOGUE)
        try:
            link.hs.read_message(f)
        except RemoteError as e:
            return self._bad_frame(link, e)
        link.transport.write(framing.frame(link.hs.write_message(b""), FRAME_LIMIT))
        return None

    def status_frame(self, link, f):
        """Plaintext without allow_plaintext: status requests only."""
        try:
            name = E.REGISTRY.decode(f).name
        except Exception:
            name = None
        if name == "s_status_req":
            return True
        self.faults.note("plaintext_refused", peer=link.name())
        link.ps.error(W.R_PLAINTEXT, PLAINTEXT_REFUSED_DETAIL)
        self.flush(link)
        self.close_link(link, "plaintext_refused")
        return False

    def _rate_ok(self, addr):
        return self._bucket_ok(self.rates, addr, self.limits["udp_rate"], self.limits["udp_burst"])

    def _bucket_ok(self, table, addr, rate, burst):
        t = time.monotonic()
        b = table.get(addr)
        if b is None:
            if len(table) >= RATE_TABLE_MAX:
                table.popitem(last=False)
            b = table[addr] = [float(burst), t]
        else:
            table.move_to_end(addr)
            b[0] = min(float(burst), b[0] + (t - b[1]) * rate)
            b[1] = t
        if b[0] < 1.0:
            return False
        b[0] -= 1.0
        return True

    def _unpend(self, link):
        """Forget link among its address's links that have not said hello yet."""
        q = self.pending.get(link.host)
        if q is not None:
            try:
                q.remove(link)
            except ValueError:
                pass
            if not q:
                del self.pending[link.host]

    def _bad_frame(self, link, err):
        """A frame failed decryption or the handshake: count it, drop the link."""
        self.faults.note(err.code, peer=link.name())
        self.close_link(link, "bad_frame")
        return None

    def close_link(self, link, reason):
        if link.closed:
            return
        link.closed = True
        self.links.discard(link)
        self._handshake_end(link)
        if link.kind == "udp" and self.udp_hs.get(link.addr) is link:
            del self.udp_hs[link.addr]
        self._unpend(link)
        for topic in link.subs:
            s = self.topic_links.get(topic)
            if s is not None:
                s.discard(link)
                if not s:
                    del self.topic_links[topic]
        link.subs = {}
        if link.node is not None and self.sessions.get(link.node) is link:
            del self.sessions[link.node]
            n = self.host_sessions.get(link.host, 1) - 1
            if n > 0:
                self.host_sessions[link.host] = n
            else:
                self.host_sessions.pop(link.host, None)
            log.info("event=session_closed %s", kv(node=link.node, peer=link.name(), reason=reason))
        if link.kind == "udp":
            if self.udp_links.get(link.addr) is link:
                del self.udp_links[link.addr]
        elif link.transport is not None:
            if reason in ("bad_frame", "slow_reader", "evicted", "hello_timeout", "replaced"):
                link.transport.abort() if reason != "bad_frame" else link.transport.close()
            else:
                link.transport.close()

    def flush(self, link):
        msgs = link.ps.data_to_send()
        if not msgs or link.closed or link.mode == "hs":
            return   # (mid-handshake there is no key to send session messages under)
        if link.kind == "tcp":
            tr = link.transport
            cs = link.send_cs
            if cs is not None:
                tr.write(b"".join(framing.frame(cs.encrypt_with_ad(b"", m), FRAME_LIMIT) for m in msgs))
            else:
                tr.write(b"".join(framing.frame(m, FRAME_LIMIT) for m in msgs))
            if tr.get_write_buffer_size() > WRITE_BUFFER_MAX:
                self.faults.note("slow_reader", peer=link.name())
                self.close_link(link, "slow_reader")
        elif link.udp is not None:
            for m in msgs:
                self.udp_transport.sendto(link.udp.send(m), link.addr)
        else:
            for m in msgs:
                self.udp_transport.sendto(m, link.addr)

    # -- session events ------------------------------------------------------

    def handle_events(self, link):
        for ev in link.ps.events():
            kind = ev[0]
            if kind == "publish":
                self._on_publish(link, ev[1], ev[2], ev[3])
            elif kind == "dack":
                st = link.subs.get(ev[1])
                if st is not None:
                    seq = ev[2] if ev[2] <= st.sent_upto else st.sent_upto
                    if seq > st.cursor:
                        st.cursor = seq
                        self.store.move_cursor(link.node, ev[1], seq)
            elif kind == "hello":
                self._on_hello(link, ev[1])
            elif kind == "subscribe":
                self._on_subscribe(link, ev[1])
            elif kind == "unsubscribe":
                topic = ev[1]
                self._unlink_topic(link, topic)
                link.ps.drop_topic(topic)
                self.store.submit_unsubscribe(link.node, topic, ("unsub", link, topic))
            elif kind == "bad":
                self.faults.note(ev[1], peer=link.name(), detail=ev[2])
            elif kind == "bye":
                self.flush(link)
                self.close_link(link, "bye")
            elif kind == "expired":
                self.close_link(link, "expired")
            elif kind == "status":
                if self._trusted(link.host):
                    link.ps.status(self.status())
                else:
                    self.faults.note("status_refused", peer=link.name())
                    link.ps.error("forbidden", "status is served to %s only" % ", ".join(self.config.status_from))
            if link.closed:
                return

    def _trusted(self, host):
        try:
            h = str(ipaddress.ip_address(host))
        except ValueError:
            return False
        return h in self.config.status_from

    def _on_hello(self, link, node):
        if link.mode == "hs" or (link.bound is not None and node != link.bound):
            # The node id must be the one its Noise static key proves
            # (secure_session.node_id_for): nobody takes over another's cursors.
            self.faults.note("node_id_mismatch", peer=link.name())
            link.ps.error(W.R_NODE_ID, "node id %s is not the id of this link's key (%s)" % (
                bytes(node).hex(), bytes(link.bound or b"").hex()))
            self.flush(link)
            self.close_link(link, "node_id_mismatch")
            return
        old = self.sessions.get(node)
        if old is not None and old is not link:
            self.close_link(old, "replaced")
        if old is None and len(self.sessions) >= self.limits["max_sessions"]:
            self.faults.note("session_limit", peer=link.name())
            link.ps.error(W.R_LIMIT, "the proxy serves %d sessions at most" % self.limits["max_sessions"])
            self.flush(link)
            self.close_link(link, "session_limit")
            return
        if (old is None or old.host != link.host) and \
                self.host_sessions.get(link.host, 0) >= self.limits["max_sessions_per_host"]:
            self.faults.note("sessions_per_host", peer=link.name())
            link.ps.error(W.R_LIMIT, "at most %d sessions per address" % self.limits["max_sessions_per_host"])
            self.flush(link)
            self.close_link(link, "session_limit")
            return
        self._unpend(link)
        link.node = node
        self.sessions[node] = link
        self.host_sessions[link.host] = self.host_sessions.get(link.host, 0) + 1
        link.ps.accept()
        log.info("event=session_open %s", kv(node=node, peer=link.name()))

    def _on_publish(self, link, topic, msg_id, payload):
        # The store keeps one message per (topic, message id), so an id must
        # belong to its publisher: otherwise any session could publish first
        # under another node's next id (ids are node id | sequence, easy to
        # predict) and that node's message would be taken for a retransmission
        # and dropped. The node id itself is bound to the link's key.
        if not W.message_id_is_from(msg_id, link.node):
            self.faults.note("msg_id_foreign", peer=link.name())
            self._reject(link, msg_id, W.R_MSG_ID, "message id must start with the first %d bytes of your node id"
                         % W.MSG_ID_NODE_BYTES)
            return
        if link.unacked >= PUBLISH_WINDOW:
            self.faults.note("publish_window", peer=link.name())
            self._reject(link, msg_id, W.R_LIMIT, "more than %d publishes in flight" % PUBLISH_WINDOW)
            return
        code = self.store.submit_publish(topic, msg_id, payload, ("pub", link, msg_id))
        if code is not None:
            self.faults.note("reject_" + code, peer=link.name())
            self._reject(link, msg_id, code, "publish refused: %s" % code)
            return
        link.unacked += 1

    def _reject(self, link, msg_id, code, detail):
        self.rejects[code] = self.rejects.get(code, 0) + 1
        link.ps.rejected(msg_id, code, detail)

    def _on_subscribe(self, link, topic):
        st = link.subs.get(topic)
        if st is not None:
            link.ps.subscribed(topic, st.cursor)   # a retransmitted subscribe
            return
        if len(link.subs) >= self.limits["max_subscriptions"]:
            self.faults.note("subscription_limit", peer=link.name())
            link.ps.error(W.R_LIMIT, "at most %d subscriptions per session" % self.limits["max_subscriptions"])
            return
        if (link.node, topic) not in self.store.subs and len(self.store.subs) >= self.limits["max_total_subscriptions"]:
            # Durable subscriptions live in memory too (cursor map): a client
            # inventing node ids must not grow it without bound.
            self.faults.note("total_subscription_limit", peer=link.name())
            link.ps.error(W.R_LIMIT, "the proxy keeps %d subscriptions at most" % self.limits["max_total_subscriptions"])
            return
        self.store.submit_subscribe(link.node, topic, ("sub", link, topic))

    def _unlink_topic(self, link, topic):
        link.subs.pop(topic, None)
        s = self.topic_links.get(topic)
        if s is not None:
            s.discard(link)
            if not s:
                del self.topic_links[topic]

    # -- store results ---------------------------------------------------------

    def on_commit(self, batch, results):
        err = results["error"]
        touched = set()
        if err is not None:
            self.faults.note("storage_" + err[0], error=err[1])
        items = results["items"]
        for i, it in enumerate(batch):
            tok = it[4]
            kind, link = tok[0], tok[1]
            if kind == "pub":
                link.unacked -= 1
            if link.closed:
                continue
            touched.add(link)
            if err is not None:
                if kind == "pub":
                    self._reject(link, tok[2], err[0], "storage failed: %s" % err[1][:150])
                else:
                    link.ps.error(err[0], "storage failed: %s" % err[1][:150])
                continue
            if kind == "pub":
                link.ps.acked(tok[2])
            elif kind == "sub":
                topic = tok[2]
                if link.node != it[1] or topic in link.subs:
                    continue
                cursor = items[i][1]
                link.subs[topic] = SubState(cursor)
                self.topic_links.setdefault(topic, set()).add(link)
                link.ps.subscribed(topic, cursor)
            else:
                link.ps.unsubscribed(tok[2])
        if err is None:
            for topic in results["topics"]:
                s = self.topic_links.get(topic)
                if s:
                    touched.update(s)
        for link in touched:
            if not link.closed:
                self.pump(link)
                self.flush(link)

    def pump(self, link):
        """Hand stored messages to the session while its window has room."""
        if link.paused or not link.subs:
            return
        ps = link.ps
        room = ps.room()
        if room <= 0:
            return
        t = None
        qmax = self.limits["subscriber_queue"]
        for topic in sorted(link.subs):
            st = link.subs[topic]
            tv = self.store.topics.get(topic)
            while room > 0 and tv is not None and st.sent_upto < tv.last_seq:
                if t is None:
                    t = now_ms()
                if st.sent_upto + 1 < tv.first_seq:
                    self._missed(link, topic, st, tv.first_seq - 1, tv.cause, t)
                    room -= 1
                    continue
                if qmax and tv.last_seq - st.sent_upto > qmax:
                    self._missed(link, topic, st, tv.last_seq - qmax, W.MISSED_QUEUE, t)
                    room -= 1
                    continue
                rows = self.store.fetch(topic, st.sent_upto, room)
                if not rows:
                    break
                for seq, msg_id, payload in rows:
                    if seq != st.sent_upto + 1:
                        # Retention removed rows between our checks.
                        self._missed(link, topic, st, seq - 1, tv.cause, t)
                        room -= 1
                        if room <= 0:
                            break
                    ps.deliver(topic, seq, msg_id, payload, t)
                    st.sent_upto = seq
                    room -= 1
                    if room <= 0:
                        break

    def _missed(self, link, topic, st, upto, cause, t):
        count = upto - st.sent_upto
        link.ps.missed(topic, upto, count, cause, t)
        st.sent_upto = upto
        if cause == W.MISSED_QUEUE:
            self.queue_drops[cause] = self.queue_drops.get(cause, 0) + count
        self.faults.note("missed_" + cause, n=0, node=link.node, topic=topic, count=count)

    # -- observability -----------------------------------------------------------

    def status(self):
        stored_n, stored_b = self.store.stored_totals()
        queued = 0
        for (node, topic), cursor in self.store.subs.items():
            tv = self.store.topics.get(topic)
            if tv is not None and tv.last_seq > cursor:
                queued += min(tv.last_seq - max(cursor, tv.first_seq - 1), max(0, tv.count()))
        drops = dict(self.store.drops)
        for k, v in self.queue_drops.items():
            drops[k] = drops.get(k, 0) + v
        return {
            "uptime_s": int(time.time() - self.started),
            "sessions": len(self.sessions),
            "links": len(self.links),
            "topics": len(self.store.topics),
            "subscriptions": len(self.store.subs),
            "stored_messages": stored_n,
            "stored_bytes": stored_b,
            "queued_messages": queued,
            "pending_write_bytes": self.store.pending_bytes(),
            "commits": self.store.commits,
            "drops": drops,
            "rejects": dict(self.rejects),
            "faults": dict((k, v) for k, v in self.faults.counts.items() if not k.startswith("missed_")),
            "proxy_key": self.public_key.hex(),
            "plaintext": "allowed" if self.config.allow_plaintext else "refused",
            "handshakes_in_progress": self.handshake_count,
            "secure_handshakes": self.secure_sessions,
        }
