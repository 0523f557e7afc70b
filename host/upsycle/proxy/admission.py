"""Admission: who may open a link and a session, and at what cost.

``Admission`` (mixed into the Proxy) owns the per-address state that keeps
one address from locking others out: pre-hello TCP links per address, Noise
handshakes in progress (overall and per address), the token buckets for
datagrams and new handshakes per address, and the session count per
address. It classifies a TCP link's first frame (plaintext, status request
or Noise message 1), runs the responder's side of the handshake, turns UDP
datagrams into link input, and admits a hello (node id bound to the key,
session limits).
"""
import collections
import ipaddress
import os
import time

from shared_protocol.wire import envelope as E
from shared_protocol.wire import framing
from shared_protocol.session import messages as W
from shared_protocol.crypto import api
from shared_protocol.errors import RemoteError, UpsycleError
from shared_protocol.noise import known
from shared_protocol.noise.udp import HS1_SIZE, KIND_DATA, KIND_HS1, KIND_HS2, KIND_HS3, no_session_answer
from shared_protocol.session.secure_proxy import SecureResponder
from upsycle.proxy import fastpath
from upsycle.proxy.links import (FRAME_LIMIT, PLAINTEXT_REFUSED_DETAIL, RATE_TABLE_MAX, UDP_MAX, Link,
                                 log, kv, now_ms)


def refusal_within(code, detail, limit):
    """An error envelope no larger than limit bytes (the datagram it answers:
    a refusal must never amplify), the detail cut to fit; None if even the
    bare code does not fit."""
    while True:
        m = E.REGISTRY.encode("error", code, detail)
        if len(m) <= limit:
            return m
        if not detail:
            return None
        detail = detail[:max(0, len(detail) - (len(m) - limit))]


# Keys of nodes seen before, remembered for their hints (~150 bytes each):
# more nodes than the proxy serves sessions, least recently seen forgotten.
KNOWN_KEYS_MAX = 65536
# Ephemeral keys of hinted message 1s taken: a replay of one within this many
# newer hints is refused (a replay older than that is a handshake only the
# node can finish, and it still counts against its one-at-a-time slot).
RECENT_EPHEMERAL_MAX = 4096


class Admission:
    """Per-address admission state and the handshake responder."""

    def _init_admission(self):
        self.host_sessions = {}        # host -> number of sessions from it
        self.pending = {}              # host -> deque of pre-hello TCP links
        self.rates = collections.OrderedDict()  # UDP addr -> [tokens, last time]
        self.handshakes = {}           # host -> deque of links in a handshake
        self.handshake_count = 0
        self.udp_hs = {}               # addr -> Link in a UDP handshake
        self.hs_rates = collections.OrderedDict()  # host -> [tokens, last time] of new handshakes
        self.secure_sessions = 0       # handshakes completed (a counter)
        # Nodes seen before (noise/known.py): key id -> (node id, secret),
        # least recently used first; their hinted handshakes in progress
        # (one per node); the ephemeral keys of hints taken (each once).
        self.known_keys = collections.OrderedDict()
        self.known_hs = {}
        self.recent_e = collections.OrderedDict()
        self.hinted_handshakes = 0     # handshakes admitted on a hint (a counter)

    def accept_tcp(self, proto, transport):
        addr = transport.get_extra_info("peername") or ("?", 0)
        lim = self.limits
        # Room for the newcomer is made, never refused: one address holds at
        # most max_connections_per_host (less than max_connections, so the
        # others always have room), and at either limit the least recently
        # active link goes, taken from the address holding the most. So
        # `upsycle proxy status` and a real node always get a slot.
        mine = self.host_links.get(addr[0])
        if mine and len(mine) >= lim["max_connections_per_host"]:
            self.faults.note("connections_per_host_evicted", host=addr[0])
            self.close_link(self._idlest(mine), "evicted")
        elif len(self.links) >= lim["max_connections"]:
            self.faults.note("connection_limit_evicted", peer="%s:%s" % addr[:2])
            self.close_link(self._idlest(max(self.host_links.values(), key=len)), "evicted")
        link = Link("tcp", addr[:2], self._new_session(True), transport, proto)
        q = self.pending.setdefault(link.host, collections.deque())
        while len(q) >= self.limits["max_pending_per_host"]:
            old = q.popleft()
            self.faults.note("pending_per_host_evicted", host=link.host)
            self.close_link(old, "evicted")
        q.append(link)
        self.add_link(link)
        return link

    def on_datagram(self, data, addr, touched=None):
        """One datagram from addr. ``touched``: a set to put the link in
        when its session has output, for the caller to pump and flush once
        per batch of datagrams (fastpath.UdpEndpoint); None: at once."""
        addr = addr[:2]
        if not self._rate_ok(addr):
            self.faults.note("udp_flood", peer="%s:%s" % addr)
            return
        if not data or len(data) > UDP_MAX:
            self.faults.note("udp_size", peer="%s:%s" % addr, size=len(data))
            return
        kind = data[0]
        if kind in (KIND_HS1, KIND_HS2, KIND_HS3, KIND_DATA):
            self._secure_datagram(data, addr, kind, touched)
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
            if msg.name != "s_hello" and msg.name != "s_hello_t":
                self.faults.note("udp_no_session", peer="%s:%s" % addr, type=msg.name)
                return
            if not self.config.allow_plaintext:
                self.faults.note("plaintext_refused", peer="%s:%s" % addr)
                answer = refusal_within(W.R_PLAINTEXT, PLAINTEXT_REFUSED_DETAIL, len(data))
                if answer is not None:
                    self.udp_transport.sendto(answer, addr)
                return
            if len(self.udp_links) >= self.limits["max_sessions"]:
                self.faults.note("session_limit", peer="%s:%s" % addr)
                return
            link = Link("udp", addr, self._new_session(False), self.udp_transport)
            link.mode = "plain"
            self.udp_links[addr] = link
            self.add_link(link)
        link.ps.receive(data, now_ms())
        self.handle_events(link)
        if not link.closed:
            if touched is not None:
                touched.add(link)
            else:
                self.pump(link)
                self.flush(link)

    def _secure_datagram(self, data, addr, kind, touched=None):
        """A Noise packet (noise/udp.py kinds). Handshakes run in their own
        link until complete, so an unauthenticated message 1 from a forged
        source never touches an established session."""
        t = now_ms()
        est = self.udp_links.get(addr)
        link = self.udp_hs.get(addr)
        fresh = False
        if kind == KIND_DATA:
            link = est
            if link is None or link.mode != "secure":
                # We restarted, or its message 3 was lost: say so (smaller
                # than the packet, so no amplification), and the node starts
                # a new handshake at once instead of after its keepalive dies.
                self.faults.note("udp_no_session", peer="%s:%s" % addr, type="noise_data")
                answer = no_session_answer(data)
                if answer is not None:
                    self.udp_transport.sendto(answer, addr)
                return
        elif kind == KIND_HS1 and len(data) < HS1_SIZE:
            # Message 2 is HS1_SIZE bytes: answering a shorter message 1
            # would amplify a flood towards a forged source.
            self.faults.note("udp_short_handshake", peer="%s:%s" % addr, size=len(data))
            return
        elif link is not None and kind == KIND_HS1 and not link.sec.answers(data):
            # A new message 1 from an address with a handshake in progress:
            # the node gave up on the old one (its message 3 was lost).
            self.close_link(link, "replaced")
            link = None
        if link is None and kind != KIND_DATA:
            if est is not None and est.sec is not None and est.sec.answers(data):
                link = est      # its message 2 was lost: the session resends it
            elif kind != KIND_HS1:
                self.faults.note("udp_stale_handshake", peer="%s:%s" % addr)
                return
            else:
                link = Link("udp", addr, self._new_session(False), self.udp_transport)
                if not self._handshake_begin(link, self._known_node(data[1:])):
                    return
                link.sec = self._responder(True)
                self.udp_hs[addr] = link
                fresh = True
        sec = link.sec
        was_secured = sec.secured
        try:
            msgs = sec.receive(data, t)
        except RemoteError as e:
            self.faults.note(e.code, peer=link.name())
            if fresh:
                self.close_link(link, "bad_handshake")   # never started: forget it
            return
        for pkt in sec.packets_to_send():
            self.udp_transport.sendto(pkt, addr)
        if sec.secured and not was_secured:
            self._handshake_done(link)
            if self.udp_hs.get(addr) is link:
                del self.udp_hs[addr]
            old = self.udp_links.get(addr)
            if old is not None and old is not link:
                self.close_link(old, "replaced")
            self.udp_links[addr] = link
        for m in msgs:
            link.ps.receive(m, t)
            self.handle_events(link)
            if link.closed:
                return
        if link.mode == "secure" and not link.closed:
            if touched is not None:
                touched.add(link)
            else:
                self.pump(link)
                self.flush(link)

    # -- secure links (Noise XX responder) ---------------------------------

    def _responder(self, datagram):
        """The shared responder (session/secure_proxy.py, the same object the
        VM tests run against the node's initiator), with libsodium-backed
        transport ciphers on the host."""
        return SecureResponder(self.key, os.urandom(32), datagram, cipher=fastpath.fast_cipher)

    def _known_node(self, msg1):
        """The node id a valid "seen before" hint in message 1 names (its
        payload follows the 32-byte ephemeral key in plaintext), else None.
        One HMAC, no DH: cheap enough to check before any limit."""
        h = known.split(msg1[32:])
        if h is None:
            return None
        ent = self.known_keys.get(h[0])
        if ent is None:
            return None   # a key from before our restart, or another proxy's
        e = bytes(msg1[:32])
        if not api.constant_time_eq(known.tag(ent[1], e), h[1]):
            self.faults.note("hint_forged", node=ent[0])
            return None
        if e in self.recent_e:
            self.faults.note("hint_replayed", node=ent[0])
            return None
        self.recent_e[e] = True
        if len(self.recent_e) > RECENT_EPHEMERAL_MAX:
            self.recent_e.popitem(last=False)
        self.known_keys.move_to_end(h[0])
        return ent[0]

    def _handshake_begin(self, link, known_node=None):
        """Count a new handshake against the limits; False: refused. A node
        seen before (known_node, from its hint) is not: it takes no slot of
        its address's budget, only its own (one handshake at a time), so a
        flood from its address cannot lock it out."""
        if known_node is not None:
            old = self.known_hs.get(known_node)
            if old is not None:
                self.close_link(old, "replaced")
            self.known_hs[known_node] = link
            link.known = known_node
            self.hinted_handshakes += 1
            link.mode = "hs"
            self.add_link(link)
            return True
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
        self.add_link(link)
        return True

    def _handshake_end(self, link):
        if link.known is not None:
            if self.known_hs.get(link.known) is link:
                del self.known_hs[link.known]
            return
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

    def _handshake_done(self, link):
        self._handshake_end(link)
        link.mode = "secure"
        link.bound = link.sec.node_id
        remote_static = link.sec.remote_static
        self.secure_sessions += 1
        if link.known != link.bound:
            # Seen now: remember the key (one DH) so its next message 1 may
            # carry a hint we can check.
            secret = known.shared_secret(self.key, remote_static)
            kid = known.key_id(secret)
            self._know(kid, link.bound, secret)
            self.store.remember_key(kid, link.bound, secret)

    def _know(self, kid, node, secret):
        self.known_keys[kid] = (node, secret)
        self.known_keys.move_to_end(kid)
        if len(self.known_keys) > KNOWN_KEYS_MAX:
            self.known_keys.popitem(last=False)

    def load_known_keys(self):
        """At start: the nodes seen before this run (kept in the store)."""
        self.store.max_known_keys = KNOWN_KEYS_MAX
        for kid, node, secret in self.store.known_keys(KNOWN_KEYS_MAX):
            self._know(kid, node, secret)

    def tcp_frame(self, link, f):
        """A frame on a TCP link not (yet) known to be plaintext: classify the
        first frame, run the handshake, or decrypt. Returns the session
        message to process, or None."""
        if link.mode == "secure":
            try:
                return link.sec.open(f)
            except RemoteError as e:
                return self._bad_frame(link, e)
        if link.mode == "hs":
            try:
                link.sec.handshake_frame(f)   # message 3: an XX responder is done
            except RemoteError as e:
                return self._bad_frame(link, e)
            self._handshake_done(link)
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
                self._unpend(link)   # not a stalled pre-hello link: never evicted as one
                return f
            self.faults.note("plaintext_refused", peer=link.name())
            link.ps.error(W.R_PLAINTEXT, PLAINTEXT_REFUSED_DETAIL)
            self.flush(link)
            self.close_link(link, "plaintext_refused")
            return None
        if not self._handshake_begin(link, self._known_node(f)):
            self.close_link(link, "handshake_limit")
            return None
        link.sec = self._responder(False)
        try:
            reply = link.sec.handshake_frame(f)
        except RemoteError as e:
            return self._bad_frame(link, e)
        link.transport.write(framing.frame(reply, FRAME_LIMIT))
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

    def _idlest(self, links, sessions=False, idle_before=None):
        """The link to evict among links: one without a session first, then
        the session least recently active (pings do not count); with
        sessions=True sessions only, and with idle_before only one idle
        since then. None if there is none."""
        best = bk = None
        for x in links:
            if x.closed or (sessions and (x.node is None or self.sessions.get(x.node) is not x)):
                continue
            k = (x.node is not None, x.active)
            if best is None or k < bk:
                best, bk = x, k
        if best is not None and idle_before is not None and best.active > idle_before:
            return None
        return best

    def _admission_release(self, link):
        """A link closes: forget its handshake and pre-hello slots."""
        self._handshake_end(link)
        if link.kind == "udp" and self.udp_hs.get(link.addr) is link:
            del self.udp_hs[link.addr]
        self._unpend(link)

    def _session_released(self, link):
        n = self.host_sessions.get(link.host, 1) - 1
        if n > 0:
            self.host_sessions[link.host] = n
        else:
            self.host_sessions.pop(link.host, None)

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


    def _trusted(self, host):
        try:
            h = str(ipaddress.ip_address(host))
        except ValueError:
            return False
        return h in self.config.status_from

    def _on_hello(self, link, node):
        if link.mode == "hs" or (link.bound is not None and node != link.bound):
            # The node id must be the one its Noise static key proves
            # (session/secure_client.py node_id_for): nobody takes over another's cursors.
            self.faults.note("node_id_mismatch", peer=link.name())
            link.ps.error(W.R_NODE_ID, "node id %s is not the id of this link's key (%s)" % (
                bytes(node).hex(), bytes(link.bound or b"").hex()))
            self.flush(link)
            self.close_link(link, "node_id_mismatch")
            return
        old = self.sessions.get(node)
        if old is not None and old is not link:
            self.close_link(old, "replaced")
        idle_before = time.monotonic() - self.limits["session_idle_s"]
        if old is None and len(self.sessions) >= self.limits["max_sessions"]:
            # An idle session (from the address with the most) makes room.
            top = max(self.host_links.values(), key=lambda ls: sum(1 for x in ls if x.node is not None))
            victim = self._idlest(top, sessions=True, idle_before=idle_before)
            if victim is not None:
                self.faults.note("idle_session_evicted", peer=victim.name())
                self.close_link(victim, "evicted")
        if old is None and len(self.sessions) >= self.limits["max_sessions"]:
            self.faults.note("session_limit", peer=link.name())
            link.ps.error(W.R_LIMIT, "the proxy serves %d sessions at most" % self.limits["max_sessions"])
            self.flush(link)
            self.close_link(link, "session_limit")
            return
        if (old is None or old.host != link.host) and \
                self.host_sessions.get(link.host, 0) >= self.limits["max_sessions_per_host"]:
            victim = self._idlest(self.host_links.get(link.host, ()), sessions=True, idle_before=idle_before)
            if victim is not None:
                self.faults.note("idle_session_evicted", peer=victim.name())
                self.close_link(victim, "evicted")
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
        self.store.node_seen(node, True)
        self.host_sessions[link.host] = self.host_sessions.get(link.host, 0) + 1
        link.ps.accept()
        self.arm_session(link)   # from its hello timeout to its session's expiry
        log.info("event=session_open %s", kv(node=node, peer=link.name()))

