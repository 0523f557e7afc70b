"""Links between proxies: Noise XX on the ordinary port, either direction.

A proxy dials a peer over TCP as a Noise XX initiator with its own static
key (the key that is its identity; overlay id = ids.proxy_id(key)) and says
``fed_hello`` inside; the peer's ordinary responder (admission.py) runs the
handshake, and the Federation turns that link into a proxy link when the
hello's key is the one the handshake proved. Both directions then carry the
same messages (peer_wire.py and PolderCast's).

``Channel`` is one open, authenticated link to a peer, whichever side
dialled; ``Dialer`` is the initiator's asyncio protocol. Who may link
(``peers = "listed"`` or ``"open"``) is decided by the Federation.
"""
import asyncio
import collections
import logging
import os
import time

from shared_protocol.errors import RemoteError
from shared_protocol.noise.handshake import Handshake
from shared_protocol.overlay import ids
from shared_protocol.session.secure_client import PROLOGUE
from shared_protocol.wire import envelope as E
from shared_protocol.wire import framing
from upsycle.proxy import fastpath, peer_wire
from upsycle.proxy.config import ConfigError, parse_hostport  # noqa: F401 (lan_peers uses them from here)

log = logging.getLogger("upsycle.proxy")

# A proxy link's largest frame: PolderCast's largest message
# (common.OVERLAY_FRAME_MAX) plus the Noise tag.
PEER_FRAME_MAX = 16384 + 16
# Bytes queued towards a peer before its link is cut as not reading (the
# outboxes hold at most PEER_WINDOW_MAX data messages in flight, ~70 KB).
PEER_WRITE_MAX = 1024 * 1024
# A dial that has not completed the handshake and hello by then is given up.
DIAL_TIMEOUT_S = 5.0


def parse_peer(spec):
    """"HOST:PORT[@KEY]" -> (host, port, key bytes or None)."""
    addr, _, key = str(spec).partition("@")
    host, port = parse_hostport(addr)
    k = None
    if key:
        try:
            k = bytes.fromhex(key)
        except ValueError:
            k = b""
        if len(k) != peer_wire.KEY_LEN:
            raise ConfigError("peer %r: the key after @ is %d hex digits" % (spec, 2 * peer_wire.KEY_LEN))
    return host, port, k


def addr_bytes(host, port):
    return ("%s:%d" % (host, port)).encode()


def split_addr(addr):
    """Overlay address bytes -> (host, port), or None if unusable."""
    try:
        host, port = parse_hostport(bytes(addr).decode())
    except (ConfigError, UnicodeDecodeError):
        return None
    return (host, port) if port else None


class Channel:
    """One authenticated link to a peer proxy (inbound or outbound)."""

    __slots__ = ("peer_id", "key", "addr", "inbound", "link", "dialer", "opened", "last_rx", "last_tx",
                 "closed", "tx_bytes", "rx_bytes")

    def __init__(self, peer_id, key, addr, inbound, link=None, dialer=None):
        self.peer_id = peer_id
        self.key = key
        self.addr = addr          # the address it listens on (its hello), bytes
        self.inbound = inbound
        self.link = link          # inbound: the responder's Link (links.py)
        self.dialer = dialer      # outbound: the Dialer
        self.opened = time.monotonic()
        self.last_rx = self.opened
        self.last_tx = self.opened
        self.closed = False
        self.tx_bytes = 0
        self.rx_bytes = 0

    def send(self, data):
        """Seal and write one message (envelope bytes); False if the link is gone."""
        if self.closed:
            return False
        if self.inbound:
            lk = self.link
            if lk.closed:
                return False
            tr = lk.transport
            body = fastpath.seal_frames(lk.sec.seal, [data], PEER_FRAME_MAX)
        else:
            d = self.dialer
            tr = d.transport
            if tr is None or tr.is_closing():
                return False
            body = fastpath.seal_frames(d.seal, [data], PEER_FRAME_MAX)
        tr.write(body)
        self.tx_bytes += len(body)
        self.last_tx = time.monotonic()
        if tr.get_write_buffer_size() > PEER_WRITE_MAX:
            return False
        return True

    def name(self):
        return "%s%s" % (ids.pos(self.peer_id).to_bytes(8, "big").hex()[:8], "<" if self.inbound else ">")


class Dialer(asyncio.Protocol):
    """The initiator's side of a proxy link: handshake, hello, then frames
    to the Federation (``on_peer_message`` / ``channel_closed``)."""

    def __init__(self, fed, host, port, expect_key=None, expect_id=None):
        self.fed = fed
        self.host = host
        self.port = port
        self.expect_key = expect_key
        self.expect_id = expect_id
        self.transport = None
        self.decoder = fastpath.StreamDecoder(PEER_FRAME_MAX)
        self.hs = None
        self.send_cs = None
        self.recv_cs = None
        self.channel = None
        self.remote_key = None
        self.welcomed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.hs = Handshake(True, self.fed.key, os.urandom(32), PROLOGUE)
        transport.write(framing.frame(self.hs.write_message(b""), PEER_FRAME_MAX))

    def seal(self, m):
        return self.send_cs.encrypt_with_ad(b"", m)

    def _fail(self, cause, **fields):
        if cause != "peer_refused":   # (the dialling side judges a refusal: peer_table.py)
            self.fed.proxy.faults.note(cause, peer="%s:%d" % (self.host, self.port), **fields)
        if not self.welcomed.done():
            self.welcomed.set_result(cause)
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data):
        try:
            frames = self.decoder.feed(data)
        except framing.FrameError as e:
            self._fail("peer_frame_" + e.code)
            return
        for f in frames:
            if self.send_cs is None:
                if not self._handshake(f):
                    return
                continue
            try:
                m = self.recv_cs.decrypt_with_ad(b"", f)
                msg = E.REGISTRY.decode(m)
            except RemoteError as e:
                self._fail("peer_" + e.code)
                return
            if self.channel is None:
                if msg.type is not peer_wire.WELCOME:
                    self._fail("peer_refused", detail=str(msg.get("detail", msg.name))[:100])
                    return
                self.channel = self.fed.dialled(self, bytes(msg["addr"]))
                if not self.welcomed.done():
                    self.welcomed.set_result(None if self.channel is not None else "peer_refused")
                if self.channel is None:
                    self.transport.close()
                    return
                continue
            self.channel.rx_bytes += len(f) + 2
            self.fed.on_peer_message(self.channel, msg)
            if self.channel.closed:
                return

    def _handshake(self, f):
        try:
            self.hs.read_message(f)
        except RemoteError as e:
            self._fail("peer_handshake", detail=e.code)
            return False
        rs = bytes(self.hs.remote_static)
        if self.expect_key is not None and rs != self.expect_key:
            self._fail("peer_key_mismatch", expected=self.expect_key.hex()[:16], got=rs.hex()[:16])
            return False
        if self.expect_id is not None and ids.proxy_id(rs) != self.expect_id:
            # The address now answers with another key than the overlay said.
            self._fail("peer_id_mismatch", expected=self.expect_id.hex(), got=ids.proxy_id(rs).hex())
            return False
        self.remote_key = rs
        self.fed.proved(self)
        self.transport.write(framing.frame(self.hs.write_message(b""), PEER_FRAME_MAX))
        send_cs, recv_cs = self.hs.split()
        self.send_cs, self.recv_cs = fastpath.fast_cipher(send_cs), fastpath.fast_cipher(recv_cs)
        hello = E.REGISTRY.encode("fed_hello", self.fed.public_key, self.fed.addr)
        self.transport.write(fastpath.seal_frames(self.seal, [hello], PEER_FRAME_MAX))
        return True

    def connection_lost(self, exc):
        if not self.welcomed.done():
            self.welcomed.set_result("peer_closed")
        if self.channel is not None:
            self.fed.channel_closed(self.channel)


async def dial(fed, host, port, expect_key=None, expect_id=None):
    """Open a proxy link; returns (Dialer, None) or (None, cause)."""
    loop = asyncio.get_running_loop()
    # From the address we listen on (when it is one address): the peer sees
    # the same address whichever side dialled, and on a multi-homed host the
    # link leaves by the interface the proxy serves.
    local = (fed.source_host, 0) if fed.source_host else None
    try:
        tr, d = await asyncio.wait_for(loop.create_connection(
            lambda: Dialer(fed, host, port, expect_key, expect_id), host, port, local_addr=local), DIAL_TIMEOUT_S)
    except (OSError, asyncio.TimeoutError) as e:
        return None, "peer_unreachable:%s" % (type(e).__name__,)
    try:
        cause = await asyncio.wait_for(asyncio.shield(d.welcomed), DIAL_TIMEOUT_S)
    except asyncio.TimeoutError:
        cause = "peer_timeout"
    if cause is not None:
        tr.close()
        return None, cause
    return d, None


# Per peer: data messages queued for it (acknowledged ones leave), at most
# PEER_QUEUE_MAX of them and PEER_QUEUE_BYTES_MAX bytes, so a peer that
# never acknowledges holds at most that much of our memory; beyond it a
# message is not queued (counted: peer_queue_full) and reaches the peer
# later by catch-up from the store, where it stays within retention.
PEER_QUEUE_MAX = 2048
PEER_QUEUE_BYTES_MAX = 2 * 1024 * 1024
# Sent and not yet acknowledged, per peer: enough to cover a commit cycle
# of the peer's store (10-40 ms) at a few thousand messages a second.
PEER_WINDOW_MAX = 128
# Retransmission timeout towards a peer: from the first, doubling while
# nothing is acknowledged, up to the last (a peer restarting takes seconds).
RTO_INITIAL_S = 1.0
RTO_MAX_S = 16.0


class Outbox:
    """Data messages for one peer until it acknowledges them. Each call
    costs what it sends, not the queue's length: unsent keys wait in order
    in one deque, sent ones in another in the order they were (re)sent, so
    the oldest is first to time out; acknowledged keys are skipped lazily."""

    __slots__ = ("items", "bytes", "inflight", "rto", "sent", "retransmits", "dropped", "_unsent", "_flying")

    def __init__(self):
        self.items = {}        # (topic, msg_id) -> [data, sent at (0: not yet)]
        self.bytes = 0
        self.inflight = 0
        self.rto = RTO_INITIAL_S
        self.sent = 0
        self.retransmits = 0
        self.dropped = 0
        self._unsent = collections.deque()
        self._flying = collections.deque()

    def __len__(self):
        return len(self.items)

    def add(self, key, data):
        """Queue a message; False if the queue is full (it was not queued).
        A message already queued is not queued twice."""
        if key in self.items:
            return True
        if len(self.items) >= PEER_QUEUE_MAX or self.bytes + len(data) > PEER_QUEUE_BYTES_MAX:
            self.dropped += 1
            return False
        self.items[key] = [data, 0.0]
        self.bytes += len(data)
        self._unsent.append(key)
        return True

    def ack(self, key):
        it = self.items.pop(key, None)
        if it is None:
            return False
        self.bytes -= len(it[0])
        if it[1]:
            self.inflight -= 1
            self.rto = RTO_INITIAL_S   # it answers: back to the first timeout
        return True

    def pump(self, channel, now):
        """Resend what timed out, then send what the window allows. A sent
        message counts in flight until acknowledged."""
        items = self.items
        fly = self._flying
        due = now - self.rto
        resent = False
        while fly:
            it = items.get(fly[0])
            if it is None or not it[1]:
                fly.popleft()          # acknowledged (or sent again since)
                continue
            if it[1] > due:
                break
            if not channel.send(it[0]):
                return
            it[1] = now
            fly.append(fly.popleft())
            self.retransmits += 1
            resent = True
        if resent:
            self.rto = min(RTO_MAX_S, self.rto * 2)
        unsent = self._unsent
        while unsent and self.inflight < PEER_WINDOW_MAX:
            key = unsent[0]
            it = items.get(key)
            if it is None or it[1]:
                unsent.popleft()
                continue
            if not channel.send(it[0]):
                return
            unsent.popleft()
            it[1] = now
            self.inflight += 1
            self.sent += 1
            fly.append(key)
        if len(fly) > 2 * PEER_QUEUE_MAX:
            self._flying = collections.deque(k for k in fly if k in items and items[k][1])

    def unsend(self):
        """The link went down: everything in flight goes again on the next one."""
        keys = [k for k in self._flying if k in self.items and self.items[k][1]]
        for k in keys:
            self.items[k][1] = 0.0
        self._unsent.extendleft(reversed(keys))
        self._flying = collections.deque()
        self.inflight = 0
