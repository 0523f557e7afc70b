"""Links: one per TCP connection or UDP peer address, each carrying a
session/proxy.py ProxySession, and the asyncio protocols that feed them.

``LinkTable`` (mixed into the Proxy) owns the set of open links and the
node id -> link table, closes links (releasing what admission, routing and
delivery hold for them) and writes a session's output to its transport
under the link's cipher. The shared helpers (clock, log fields, fault
counter) live here too, since every part of the proxy uses them.
"""
import asyncio
import heapq
import logging
import time

from shared_protocol.wire import framing
from shared_protocol.session import messages as W
from shared_protocol.session.client import DEAD_AFTER
from shared_protocol.noise.datagram import DATAGRAM_MAX as NOISE_DATAGRAM_MAX
from upsycle.proxy import fastpath

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
# Timer resolution for retransmissions (RTO starts at 250 ms; the timer
# visits a link only when its deadline passed, see server.py).
TICK_S = 0.05
# The timer keeps deadlines to this grain: a link is visited up to this
# late, never early (hello timeouts of 10 s, silences of 3 keepalives).
# Links due in one grain share a list: a link costs the timer one list
# slot (8 bytes), not a heap entry (~140 bytes).
TIMER_GRAIN_S = 0.25
# Timer entries beyond two per open link before closed links' entries are
# dropped (a pass over them, once per as many closes): a closed link is
# otherwise held until its deadline, up to 3 keepalives away.
TIMER_SLACK = 1024
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
    __slots__ = ("kind", "addr", "host", "ps", "node", "subs", "pending_subs", "unacked", "closed",
                 "transport", "paused", "opened", "proto", "mode", "sec", "bound", "active",
                 "known", "due")

    def __init__(self, kind, addr, ps, transport, proto=None):
        self.kind = kind
        self.addr = addr
        self.host = addr[0] if addr else "?"
        self.ps = ps
        self.node = None
        self.subs = {}
        # Subscribes queued for the store, not yet committed: a set while
        # there are any (routing.py), else the empty tuple (an empty set
        # per session is 216 bytes).
        self.pending_subs = ()
        self.unacked = 0
        self.closed = False
        self.transport = transport
        self.paused = False
        self.opened = time.monotonic()
        self.active = self.opened   # last hello, publish, subscription change or ack (not pings)
        self.proto = proto
        # "new" (TCP, first frame not seen), "plain", "status" (plaintext,
        # status requests only), "hs" (Noise handshake), "secure"
        self.mode = "new"
        # The Noise XX responder (session/secure_proxy.py): the handshake,
        # then the transport keys; None on plaintext links.
        self.sec = None
        self.bound = None     # secure: the node id the peer's static key proves
        self.known = None     # handshake admitted on a "seen before" hint: that node id
        self.due = 0          # the timer slot it is armed in (LinkTable.arm_timer); others are stale

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
    __slots__ = ("proxy", "link", "decoder")   # one per connection: no __dict__

    def __init__(self, proxy):
        self.proxy = proxy
        self.link = None
        self.decoder = None

    def connection_made(self, transport):
        self.decoder = fastpath.StreamDecoder(FRAME_LIMIT)
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
        ps = link.ps
        if link.mode == "plain":
            # The data path: every frame of this read into the session, then
            # its events in order, once (not a pass per frame).
            for f in frames:
                ps.receive(f, t)
        else:
            for f in frames:
                mode = link.mode
                if mode != "plain" and mode != "status":
                    f = p.tcp_frame(link, f)
                    if f is None:
                        if link.closed:
                            return
                        continue
                elif mode == "status" and not p.status_frame(link, f):
                    return
                ps.receive(f, t)
                if mode != "secure":   # before a session runs, each frame is acted on at once
                    p.handle_events(link)
                    if link.closed:
                        return
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
    """The proxy's UDP socket (fastpath.UdpEndpoint reads datagrams in
    batches): each datagram goes into its link's session at once; the
    links that got input are pumped and flushed once per batch, so a burst
    of publishes or acks from one node costs one pass over its
    subscriptions, not one per datagram."""

    def __init__(self, proxy):
        self.proxy = proxy
        self.touched = set()

    def datagram_received(self, data, addr):
        self.proxy.on_datagram(data, addr, self.touched)

    def datagrams_done(self):
        touched = self.touched
        if not touched:
            return
        self.touched = set()
        p = self.proxy
        for link in touched:
            if not link.closed:
                p.pump(link)
                p.flush(link)

    def error_received(self, exc):
        self.proxy.faults.note("udp_socket_error", error=str(exc))



class LinkTable:
    """The open links and sessions (state: links, sessions, udp_links)."""

    def _init_links(self):
        self.links = set()             # every open link
        self.sessions = {}             # node id -> Link
        self.udp_links = {}            # addr -> Link
        self.host_links = {}           # host -> set of its open links
        self._wheel = {}               # slot (deadline / TIMER_GRAIN_S) -> links due in it (server.py)
        self._slots = []               # heap of the slots in _wheel
        self._armed = 0                # entries in _wheel: one per open link, and closed ones' until dropped

    def _new_session(self, reliable):
        return fastpath.HostProxySession(self.store.proxy_id, reliable, now_ms(), publish_window=WELCOME_WINDOW)


    def _bad_frame(self, link, err):
        """A frame failed decryption or the handshake: count it, drop the link."""
        self.faults.note(err.code, peer=link.name())
        self.close_link(link, "bad_frame")
        return None

    def add_link(self, link):
        self.links.add(link)
        self.host_links.setdefault(link.host, set()).add(link)
        self.arm_timer(link, link.opened + HELLO_TIMEOUT_S + TICK_S)

    def arm_timer(self, link, due):
        """The timer visits link at monotonic time ``due`` (or up to
        TIMER_GRAIN_S after)."""
        slot = int(due / TIMER_GRAIN_S) + 1
        if slot == link.due:
            return
        link.due = slot   # an entry in another slot is stale from now on
        links = self._wheel.get(slot)
        if links is None:
            links = self._wheel[slot] = []
            heapq.heappush(self._slots, slot)
        links.append(link)
        self._armed += 1
        if self._armed > 2 * len(self.links) + TIMER_SLACK:
            self._drop_closed_timers()

    def arm_session(self, link):
        """Arm link's timer at its session's expiry (silent for DEAD_AFTER
        keepalives): nothing else is due on a TCP session, and a UDP one's
        resends go by the tick (server.py)."""
        ps = link.ps
        self.arm_timer(link, (ps.last_rx + DEAD_AFTER * ps.keepalive_ms) / 1000.0)

    def _drop_closed_timers(self):
        armed = 0
        for slot, links in list(self._wheel.items()):
            links[:] = [lk for lk in links if not lk.closed and lk.due == slot]
            if not links:
                del self._wheel[slot]
            armed += len(links)
        self._slots = list(self._wheel)
        heapq.heapify(self._slots)
        self._armed = armed

    def close_link(self, link, reason):
        if link.closed:
            return
        link.closed = True
        link.proto = None   # (its protocol points back at it: no cycle for the collector to find)
        self.links.discard(link)
        mine = self.host_links.get(link.host)
        if mine is not None:
            mine.discard(link)
            if not mine:
                del self.host_links[link.host]
        self._admission_release(link)
        self._routing_release(link)
        if link.node is not None and self.sessions.get(link.node) is link:
            del self.sessions[link.node]
            self._session_released(link)
            self.store.node_seen(link.node, False)
            if reason != "shutdown":   # a shutdown says how many in one line (server.py stop)
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
            sec = link.sec
            if sec is not None:
                tr.write(fastpath.seal_frames(sec.seal, msgs, FRAME_LIMIT))
            else:
                tr.write(fastpath.frames(msgs, FRAME_LIMIT))
            if tr.get_write_buffer_size() > WRITE_BUFFER_MAX:
                self.faults.note("slow_reader", peer=link.name())
                self.close_link(link, "slow_reader")
        elif link.sec is not None:
            seal = link.sec.seal
            for m in msgs:
                self.udp_transport.sendto(seal(m), link.addr)
        else:
            for m in msgs:
                self.udp_transport.sendto(m, link.addr)

    # -- session events ------------------------------------------------------

