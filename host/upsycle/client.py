"""Async client API for the edge session: laptops, scripts and tests as nodes.

    async with Client("127.0.0.1", 7883, node_id=b"...") as c:
        await c.publish("greenhouse/temp", b"21.5")   # returns once durable
        await c.subscribe("greenhouse/temp")
        d = await c.next_delivery(timeout=5)           # d.payload, d.msg_id, d.seq

The client runs shared_protocol.session.client.ClientSession over TCP (frames) or UDP
(datagrams), reconnects with backoff when the link drops, and resends what is
still in flight, so a publish awaited here survives proxy restarts.

Secure links (the default; docs/proxy.md "Secure links"): the session runs
inside Noise XX (shared_protocol.session.secure_client.SecureLink). The node's
static key is $UPSYCLE_HOME/node_key (made on first use, mode 0600) and its
node id is derived from it. The proxy's key is pinned with ``proxy_key`` or
learnt on first use and remembered in $UPSYCLE_HOME/known_proxies; a proxy
that later proves another key is refused (``ProxyKeyMismatch``).
``secure=False`` speaks plaintext, which a proxy takes only with
allow_plaintext.

Payload codec: the seam for private groups. ``codec.encode(topic_id, data)``
turns what the app publishes into the bytes the proxy stores, and
``codec.decode(topic_id, payload)`` turns a delivery back; the default,
``PlainCodec``, passes bytes through. An encrypting codec plugs in without
touching the session or the proxy (which never sees plaintext).
A codec may also have messages of its own to publish (``outgoing()`` /
``published(topic_id, epochs)``: the re-keys of private topics this node
administers) and messages it kept and opened later (``released`` on a
decoded value, ``ready(topic_id)`` / ``taken(topic_id, id)``);
upsycle.group_codec says why. The client publishes the outgoing ones after
every welcome, before what the app publishes, and hands released ones out
as deliveries of their own.
"""
import asyncio
import collections
import logging
import os
import time

from shared_protocol import clock
from shared_protocol.session import messages as W
from shared_protocol.crypto import api
from shared_protocol.errors import RemoteError
from shared_protocol.noise.errors import UnexpectedStaticKey
from shared_protocol.session.secure_client import SecureLink, node_id_for
from shared_protocol.session.client import ClientSession, WINDOW_DEFAULT, KEEPALIVE_DEFAULT_MS
from upsycle import identity as identity_mod, topics
from upsycle.transports import now_ms, open_transport, send

log = logging.getLogger("upsycle.client")
PURE_BACKEND = "pure-python"   # crypto/pure.py PureBackend.name

# Reconnect backoff: fast first retry (a proxy restart takes ~100 ms), capped
# so a laptop that lost WiFi does not spin.
RECONNECT_MIN_S = 0.05
RECONNECT_MAX_S = 2.0
# How often the timer task looks at the session's deadlines at most.
TIMER_MAX_S = 0.05
# A new link that is neither welcomed nor lost by then is given up and
# dialled again: a stream-mode Noise handshake has no timer of its own
# (datagram mode resends and times out, noise/udp.py), so a link whose
# proxy went away unseen (killed between accepting the connection and
# answering, a half-open connection) would wait for ever. A proxy
# answers in milliseconds; a loaded one with thousands of handshakes
# queued in seconds.
WELCOME_TIMEOUT_S = 20.0


class PlainCodec:
    """Payloads travel as given (public topics, and before private groups)."""

    def encode(self, topic_id, data):
        return bytes(data)

    def decode(self, topic_id, payload):
        return payload


class PublishRejected(RemoteError):
    """The proxy refused a publish (storage full, read-only, limits...)."""


class ProxyKeyMismatch(RemoteError):
    """The proxy proved a static key other than the pinned or remembered one."""
    code = "proxy_key_mismatch"


class SessionRefused(RemoteError):
    """The proxy refused the session itself (node id not bound to our key,
    plaintext refused); retrying the same way cannot help."""
    code = "session_refused"


class Delivery:
    __slots__ = ("topic", "seq", "msg_id", "payload", "missed", "cause", "held", "sealed")

    def __init__(self, topic, seq, msg_id, payload, missed=0, cause=None, held=None, sealed=False):
        self.topic = topic
        self.seq = seq
        self.msg_id = msg_id
        self.payload = payload
        self.missed = missed      # >0: a notice that this many messages were dropped
        self.cause = cause
        self.held = held          # a message the codec kept and opened later: its id there
        self.sealed = sealed      # payload is as the proxy delivered it, not decoded yet

    def __repr__(self):
        if self.missed:
            return "<Missed %d up to %d (%s)>" % (self.missed, self.seq, self.cause)
        return "<Delivery seq=%d id=%s %r>" % (self.seq, self.msg_id.hex(), self.payload[:32])


# A host (laptop, Pi, script) holds 128 x 1 KB in flight without noticing,
# and with every ack waiting for an fsync a deeper window is what keeps one
# publisher's throughput up (tools/bench/bench_proxy.py: 1 -> 1 went from
# 0.86-1.07x to 1.8x Mosquitto's QoS 1 at 128). Boards keep WINDOW_DEFAULT or less.
HOST_WINDOW_DEFAULT = 4 * WINDOW_DEFAULT


class Client:
    def __init__(self, host="127.0.0.1", port=7883, node_id=None, transport="tcp", codec=None,
                 window=HOST_WINDOW_DEFAULT, keepalive_ms=KEEPALIVE_DEFAULT_MS, reconnect=True,
                 secure=True, identity=None, proxy_key=None, home=None):
        """secure: Noise link (default). identity: the node's 32-byte static
        X25519 key (default $UPSYCLE_HOME/node_key). node_id: defaults to
        the id bound to that key (a different one is refused by the proxy).
        proxy_key: pin the proxy's public key (32 bytes); otherwise trust on
        first use, remembered in $UPSYCLE_HOME/known_proxies."""
        if transport not in ("tcp", "udp"):
            raise ValueError("transport must be tcp or udp")
        self.host = host
        self.port = port
        self.kind = transport
        self.home = home
        self.secure = secure
        self.link = None
        if secure:
            if api.backend_name() == PURE_BACKEND:
                from upsycle import crypto_nacl
                crypto_nacl.install()   # handshake crypto at libsodium speed on the host
            self.identity = identity or identity_mod.node_key(home)
            self.public_key = api.x25519_public(self.identity)
            self.node_id = node_id or node_id_for(self.public_key)
            self.pinned = proxy_key is not None
            self.proxy_key = proxy_key if proxy_key is not None else identity_mod.known_proxy_key(home, host, port)
        else:
            self.node_id = node_id or identity_mod.plaintext_node_id(home)
        self.codec = codec or PlainCodec()
        self.reconnect = reconnect
        self.session = ClientSession(self.node_id, window=window, keepalive_ms=keepalive_ms)
        if secure:
            self.link = SecureLink(self.session, self.identity, datagram=transport == "udp",
                                   proxy_key=self.proxy_key)
        self.fatal = None
        self._fatal = asyncio.Event()
        self._seq = time.time_ns() // 1000   # message ids never repeat across runs
        self._acks = {}
        self._inbox = asyncio.Queue()
        # Deliveries a decode produced besides its own (kept messages a
        # re-key released), handed out before the rest of the inbox.
        self._released = collections.deque()
        self._welcome = asyncio.Event()
        self._room = asyncio.Event()
        self._lost = asyncio.Event()
        self._subs = {}
        self._proto = None
        self._runner = None
        self._timer = None
        self._closing = False
        self._had_welcome = False
        self._flush_pending = False
        self._control = None        # the task publishing the codec's own messages
        self._control_queued = None  # set once they are all in the session
        self._ready_given = set()
        self.errors = []
        self.connects = 0

    # -- life cycle --------------------------------------------------------

    async def connect(self, timeout=10.0):
        """Connect (retrying until timeout) and wait for the proxy's welcome."""
        if self._runner is None:
            self._runner = asyncio.ensure_future(self._run())
            self._timer = asyncio.ensure_future(self._tick())
        waits = [asyncio.ensure_future(self._welcome.wait()), asyncio.ensure_future(self._fatal.wait())]
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        if self.fatal is not None:
            await self.close()
            raise self.fatal
        if not self._welcome.is_set():
            raise ConnectionError("no answer from the proxy at %s:%d (%s) within %.1f s" % (
                self.host, self.port, self.kind, timeout))
        self._kick_control()
        if self._control_queued is not None:
            # the codec's messages (re-keys) go before anything the app sends
            await asyncio.wait_for(asyncio.shield(self._control_queued), timeout)
        return self

    @property
    def connected(self):
        """The proxy welcomed the current link (and it has not been lost)."""
        return self._welcome.is_set()

    async def __aenter__(self):
        return await self.connect()

    async def __aexit__(self, *exc):
        await self.close()

    async def close(self):
        self._closing = True
        self._room.set()   # a publish waiting for room gives up (publish_nowait)
        if self._proto is not None and self._proto.transport is not None:
            self.session.bye()
            self._flush()
            await asyncio.sleep(0)
        for task in (self._runner, self._timer, self._control):
            if task is not None:
                task.cancel()
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()
        for fut in self._acks.values():
            if not fut.done():
                fut.set_exception(ConnectionError("client closed"))
        self._acks = {}

    async def _run(self):
        loop = asyncio.get_running_loop()
        delay = RECONNECT_MIN_S
        while not self._closing:
            self._lost.clear()
            try:
                proto = await open_transport(self)
            except OSError:
                await asyncio.sleep(delay)
                delay = min(2 * delay, RECONNECT_MAX_S)
                continue
            if proto.lost:
                # closed before this task ran again (the proxy was killed
                # as it accepted): on_link_lost did not know it as ours yet
                await asyncio.sleep(delay)
                delay = min(2 * delay, RECONNECT_MAX_S)
                continue
            self._proto = proto
            self._had_welcome = False
            self.connects += 1
            if self.link is not None:
                self.link.start(now_ms(), os.urandom(32))
            else:
                self.session.start(now_ms(), self.kind == "tcp")
            self._flush()
            if not await self._welcomed_or_lost(WELCOME_TIMEOUT_S):
                log.warning("event=link_stalled reason=no_welcome timeout_s=%s", WELCOME_TIMEOUT_S)
                (self.link or self.session).stop("no_welcome")
                self.on_input()
                self._lost.set()     # a handshake never started its session: no "lost" event comes
            await self._lost.wait()
            self._welcome.clear()
            if proto.transport is not None:
                proto.transport.close()
            self._proto = None
            if not self.reconnect or self.fatal is not None:
                break
            # A link that got as far as a welcome was healthy: retry fast.
            delay = RECONNECT_MIN_S if self._had_welcome else min(2 * delay, RECONNECT_MAX_S)
            await asyncio.sleep(delay)

    async def _welcomed_or_lost(self, timeout):
        """False when the link is neither welcomed nor lost within timeout s."""
        waits = [asyncio.ensure_future(self._welcome.wait()), asyncio.ensure_future(self._lost.wait())]
        try:
            done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        return bool(done)

    async def _tick(self):
        while True:
            d = (self.link or self.session).next_deadline()
            wait = TIMER_MAX_S if d is None else min(TIMER_MAX_S, max(0.001, clock.diff(d, now_ms()) / 1000))
            await asyncio.sleep(wait)
            (self.link or self.session).poll(now_ms())
            self.on_input()

    def on_link_lost(self, proto, reason):
        """A transport (transports.py) closed: if it is the current one, the link is lost."""
        if proto is self._proto:
            (self.link or self.session).stop(reason)
            self.on_input()
            # A link lost during its Noise handshake never started its
            # session, whose stop() says "lost": say it here, or the dialling
            # task waits on a dead link.
            self._lost.set()

    # -- session plumbing ---------------------------------------------------

    def _flush_soon(self):
        # Publishes and acks made in one event-loop iteration leave in one
        # write (one syscall, one TCP segment) instead of one each.
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self):
        self._flush_pending = False
        p = self._proto
        msgs = (self.link or self.session).data_to_send()
        if p is None or p.transport is None or not msgs:
            return
        send(p, msgs, framed=self.link is None)

    def _set_fatal(self, err):
        log.error("event=link_refused code=%s detail=%r", err.code, err.message)
        self.fatal = err
        self._fatal.set()
        self._lost.set()

    def on_input(self):
        """Something arrived (transports.py) or a timer ran: act on the
        session's events, then send what it has."""
        for ev in (self.link or self.session).events():
            kind = ev[0]
            if kind == "secured":
                if self.proxy_key is None:
                    # trust on first use: remember this proxy's key
                    self.proxy_key = ev[1]
                    self.link.proxy_key = ev[1]
                    identity_mod.remember_proxy_key(self.home, self.host, self.port, ev[1])
                continue
            if kind == "link_failed":
                if ev[1] == UnexpectedStaticKey.code:
                    self._set_fatal(ProxyKeyMismatch(
                        message="the proxy at %s:%d proved a key other than the %s one (%s); if it "
                                "was reinstalled, check `upsycle proxy status` and pin the new key with "
                                "--proxy-key" % (self.host, self.port, "pinned" if self.pinned else "remembered",
                                                 bytes(self.proxy_key).hex())))
                else:
                    log.warning("event=link_failed code=%s detail=%r", ev[1], ev[2])
                    self._lost.set()
                continue
            if kind == "delivery":
                # Decoded when the app takes it (next_delivery), not here: a
                # codec's state (a private topic's replay window) then moves
                # only for messages the app has, so a client stopped with
                # deliveries still queued gets them again from the proxy
                # instead of refusing them as replays.
                self._inbox.put_nowait(Delivery(ev[1], ev[2], ev[3], ev[4], sealed=True))
            elif kind == "acked":
                fut = self._acks.pop(ev[1], None)
                if fut is not None and not fut.done():
                    fut.set_result(ev[1])
                self._room.set()
            elif kind == "rejected":
                fut = self._acks.pop(ev[1], None)
                if fut is not None and not fut.done():
                    fut.set_exception(PublishRejected(ev[2], ev[3]))
                self._room.set()
            elif kind == "missed":
                self._inbox.put_nowait(Delivery(ev[1], ev[2], b"", None, missed=ev[3], cause=ev[4]))
            elif kind == "welcome":
                self._had_welcome = True
                self._welcome.set()
                self._room.set()
                self._kick_control()
            elif kind == "subscribed":
                w = self._subs.get(ev[1])
                if w is not None and not w.done():
                    w.set_result(ev[2])
            elif kind == "lost":
                self._welcome.clear()
                self._lost.set()
            elif kind == "error":
                if ev[1] in (W.R_NODE_ID, W.R_PLAINTEXT):
                    self._set_fatal(SessionRefused(ev[1], ev[2]))
                self.errors.append((ev[1], ev[2]))
                del self.errors[:-16]
                log.warning("event=proxy_error code=%s detail=%r", ev[1], ev[2])
        self._flush()

    # -- the API ---------------------------------------------------------------

    def next_msg_id(self):
        self._seq += 1
        return W.message_id(self.node_id, self._seq)

    async def publish_nowait(self, topic, data, msg_id=None, raw=False):
        """Queue a publish once the window has room; return a future of its ack.
        raw: publish ``data`` as it is, not through the codec."""
        tid = topics.resolve(topic)
        payload = bytes(data) if raw else self.codec.encode(tid, data)
        if not await self.wait_room():
            raise ConnectionError("client closed")
        mid = msg_id or self.next_msg_id()
        fut = asyncio.get_running_loop().create_future()
        self._acks[mid] = fut
        self.session.publish(tid, mid, payload, now_ms())
        self._flush_soon()
        return fut

    async def wait_room(self, timeout=None):
        """True once the window has room for a publish; False after timeout
        or once the client is closed."""
        loop = asyncio.get_running_loop()
        end = None if timeout is None else loop.time() + timeout
        while not self._closing and not self.session.can_publish():
            self._room.clear()
            if end is None:
                await self._room.wait()
                continue
            try:
                await asyncio.wait_for(self._room.wait(), max(0.0, end - loop.time()))
            except asyncio.TimeoutError:
                return False
        return not self._closing

    async def publish(self, topic, data, msg_id=None):
        """Publish and wait until the proxy says it is durable; return the id."""
        return await (await self.publish_nowait(topic, data, msg_id))

    async def subscribe(self, topic, timeout=10.0):
        """Subscribe; returns the cursor the proxy resumes from."""
        tid = topics.resolve(topic)
        fut = self._subs[tid] = asyncio.get_running_loop().create_future()
        self.session.subscribe(tid, now_ms())
        self._flush()
        cursor = await asyncio.wait_for(fut, timeout)
        ready = getattr(self.codec, "ready", None)
        if ready is not None and tid not in self._ready_given:
            # kept messages opened by a re-key that an earlier run did not hand out
            self._ready_given.add(tid)
            for hid, body in ready(tid):
                self._inbox.put_nowait(Delivery(tid, 0, b"", body, held=hid))
        return cursor

    async def unsubscribe(self, topic):
        self.session.unsubscribe(topics.resolve(topic), now_ms())
        self._flush()

    async def next_delivery(self, timeout=None, consume=True, decode=True):
        """The next delivery (or missed notice); acknowledges it as consumed,
        unless ``consume`` is False: then the caller calls ``consumed`` once
        it has done with it (a bridge, after its broker acknowledged).
        ``decode=False`` (with consume=False): the payload as the proxy sent
        it (``d.sealed``), for the caller to open with ``decode`` if it keeps
        it (upsycle.multi_client drops duplicates first)."""
        if self._released:
            d = self._released.popleft()
        else:
            d = await asyncio.wait_for(self._inbox.get(), timeout) if timeout is not None else await self._inbox.get()
        if d.sealed and decode:
            d = self._decode(d)
        if consume:
            if d.held is not None:
                self.codec.taken(d.topic, d.held)
            self.consumed(d.topic, d.seq)
        return d

    def decode(self, d):
        """Open a delivery taken with ``decode=False``."""
        return self._decode(d) if d.sealed else d

    def _decode(self, d):
        value = self.codec.decode(d.topic, d.payload)
        for hid, body in getattr(value, "released", ()):
            self._released.append(Delivery(d.topic, d.seq, b"", body, held=hid))
        take = getattr(self.codec, "take_introduced", None)
        if take is not None:
            # readings that waited for the introduction this one carried
            for hid, body in take():
                self._released.append(Delivery(d.topic, d.seq, b"", body, held=hid))
        self._kick_control()
        return Delivery(d.topic, d.seq, d.msg_id, value)

    def taken(self, d):
        """A message the codec kept until it could open it (``d.held``), now
        done with by a caller that passed ``consume=False``: the codec
        forgets it. Until then a restart hands it out again."""
        self.codec.taken(d.topic, d.held)

    def consumed(self, topic, seq):
        """Acknowledge deliveries of ``topic`` up to ``seq`` (cumulative): the
        proxy resumes after it on any later link. A seq this link has not
        received (a new link after a proxy restart) is left for the proxy to
        deliver again."""
        try:
            self.session.consumed(topic, seq)
        except LocalError as e:
            log.info("event=consume_skipped topic=%s seq=%d code=%s", bytes(topic).hex(), seq, e.code)
            return
        self._flush_soon()

    # -- the codec's own messages (re-keys of topics this node administers) --

    def _kick_control(self):
        outgoing = getattr(self.codec, "outgoing", None)
        if outgoing is None or self._control is not None or self._closing or not self._welcome.is_set():
            return
        due = outgoing()
        if not due:
            return
        self._control_queued = asyncio.get_running_loop().create_future()
        self._control = asyncio.ensure_future(self._publish_control(due))

    async def _publish_control(self, due):
        queued = self._control_queued
        ok = False
        try:
            futs = []
            for tid, items in due:
                for epoch, part in items:
                    futs.append((tid, epoch, await self.publish_nowait(tid, part, raw=True)))
            if not queued.done():
                queued.set_result(len(futs))
            for tid, epoch, fut in futs:
                await fut
            for tid, items in due:
                self.codec.published(tid, set(e for e, _ in items))
                log.info("event=codec_published topic=%s messages=%d", tid.hex(), len(items))
            ok = True
        except (ConnectionError, PublishRejected) as e:
            log.warning("event=codec_publish_failed detail=%r", e)
        finally:
            if not queued.done():
                queued.set_result(0)
            self._control = None
        if ok:
            self._kick_control()   # asked for again while these were in flight

    def send_codec_messages(self):
        """Publish what the codec has to publish now (re-keys a `topic
        remove` made while this client ran); the client also does it after
        every welcome and delivery."""
        self._kick_control()

    async def control_done(self, timeout=None):
        """Wait until the codec's own messages are acknowledged (or failed);
        True when none is left to publish."""
        task = self._control
        if task is not None:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        outgoing = getattr(self.codec, "outgoing", None)
        return outgoing is None or not outgoing()
