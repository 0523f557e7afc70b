"""A node that uses several proxies (docs/federation.md, "Several proxies").

    async with MultiClient([("a.example", 7883, key_a), ("b.example", 7883, None)]) as c:
        await c.publish("greenhouse/temp", b"21.5")    # durable at one proxy
        await c.subscribe("greenhouse/temp")
        d = await c.next_delivery(timeout=5)

A node's identity (its static key, so its node id) and its data do not
depend on any one proxy: every proxy of a federation carries the topic, so
the node may publish and subscribe through whichever answers. Each proxy is
an ordinary ``Client`` (its own Noise link; pinned key per proxy, or trust
on first use per address).

- ``mode="failover"`` (default): one proxy at a time, the first that
  answers in list order. A publish not acknowledged within ``failover_s``,
  or a link without a welcome for that long, moves the node to the next
  proxy; what was in flight is published again there under the *same*
  message id, so the federation stores it once (the stores deduplicate by
  topic and message id) and the subscribers see it once.
- ``mode="all"``: publish through every proxy (done when the first
  acknowledges; the others carry the same message id) and subscribe at
  every proxy.

Deliveries are deduplicated by (topic, message id) on the node, over the
last ``SEEN_MAX`` of them: a subscriber that switches proxies is handed the
new proxy's backlog from its cursor there (from the oldest message kept, the
first time), and gets none of it twice. Message ids come from one counter
for all the proxies (node id | microseconds at start + n), so two proxies
never see two messages under one id.
"""
import asyncio
import collections
import logging
import os
import time

from shared_protocol.errors import RemoteError
from shared_protocol.session import messages as W
from upsycle import topics
from upsycle.client import Client, PlainCodec

log = logging.getLogger("upsycle.multi_client")

# A publish unacknowledged this long, or a link down this long, moves a
# failover node to the next proxy (a proxy restart takes well under 1 s;
# a dead one is given up after this).
FAILOVER_S = 3.0
# (topic, message id) pairs remembered for deduplication: a switch replays
# at most a topic's retention (10,000 by default) per topic.
SEEN_MAX = 65536
# Of those, kept between runs in ``seen_file`` (about 40 bytes each).
SEEN_FILE_MAX = 16384
MODES = ("failover", "all")


class MultiClient:
    def __init__(self, proxies, mode="failover", failover_s=FAILOVER_S, seen_max=SEEN_MAX, seen_file=None,
                 **client_kw):
        """proxies: [(host, port, key or None), ...]. client_kw go to each
        ``Client`` (codec, transport, secure, home, identity, node_id).
        seen_file: keep the deduplication memory there between runs (the
        command line's subscribers: a next run that starts at another proxy
        prints nothing the last run printed)."""
        if not proxies:
            raise ValueError("at least one proxy")
        if mode not in MODES:
            raise ValueError("mode is failover or all")
        self.proxies = [tuple(p) + (None,) * (3 - len(p)) for p in proxies]
        self.mode = mode
        self.failover_s = failover_s
        self.client_kw = client_kw
        self.codec = client_kw.get("codec") or PlainCodec()
        self.client_kw["codec"] = self.codec
        self.clients = [None] * len(self.proxies)
        self.current = 0
        self.switches = 0
        self.duplicates = 0
        self._seq = time.time_ns() // 1000
        self._seen = collections.OrderedDict()
        self._seen_max = seen_max
        self._seen_file = seen_file
        if seen_file is not None:
            self._load_seen()
        self._subs = []
        self._inbox = asyncio.Queue()
        self._pumps = {}
        self._watch = None
        self._switching = asyncio.Lock()
        self.node_id = None

    # -- the proxies' clients ----------------------------------------------

    def _client(self, i):
        c = self.clients[i]
        if c is None:
            host, port, key = self.proxies[i]
            c = self.clients[i] = Client(host, port, proxy_key=key, **self.client_kw)
            self.node_id = c.node_id
            self._pumps[i] = asyncio.ensure_future(self._pump(i, c))
        return c

    async def _pump(self, i, c):
        """Deliveries of proxy i into the node's inbox, deduplicated before
        they are opened (a private topic's replay window moves once)."""
        while True:
            d = await c.next_delivery(consume=False, decode=False)
            if not d.missed and d.held is None:
                key = (bytes(d.topic), bytes(d.msg_id))
                if key in self._seen:
                    self.duplicates += 1
                    c.consumed(d.topic, d.seq)
                    continue
                self._seen[key] = True
                if len(self._seen) > self._seen_max:
                    self._seen.popitem(last=False)
            self._inbox.put_nowait((c, d))

    async def _drop(self, i):
        c = self.clients[i]
        self.clients[i] = None
        p = self._pumps.pop(i, None)
        if p is not None:
            p.cancel()
        if c is not None:
            await c.close()

    def _live(self):
        return [c for c in self.clients if c is not None and c.connected]

    # -- life cycle --------------------------------------------------------

    async def connect(self, timeout=10.0):
        if self.mode == "all":
            # every client keeps trying on its own (Client reconnects): a
            # proxy down now is used once it answers
            # (the first to answer is enough; the others get failover_s more)
            tasks = [asyncio.ensure_future(self._client(i).connect(timeout)) for i in range(len(self.proxies))]
            pending, up, errors = set(tasks), False, []
            while pending and not up:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    if t.exception() is None:
                        up = True
                    else:
                        errors.append(t.exception())
            if up and pending:
                _done, pending = await asyncio.wait(pending, timeout=self.failover_s)
            for t in pending:
                t.cancel()
            for t in tasks:
                if t.done() and not t.cancelled():
                    t.exception()
            if not up:
                fatal = [e for e in errors if isinstance(e, RemoteError)]
                if fatal:
                    raise fatal[0]
                raise ConnectionError("no proxy answered: %s" % "; ".join(str(e) for e in errors))
        else:
            await self._failover(timeout, first=True)
            self._watch = asyncio.ensure_future(self._watchdog())
        return self

    async def _failover(self, timeout, first=False):
        """Move to the next proxy that answers (starting at the current one
        the first time); subscriptions follow."""
        n = len(self.proxies)
        errors = []
        for k in range(n):
            i = (self.current + (0 if first else 1) + k) % n
            c = self._client(i)
            try:
                await c.connect(min(timeout, self.failover_s))
            except (ConnectionError, OSError, RemoteError) as e:
                errors.append(str(e))
                await self._drop(i)
                continue
            if i != self.current:
                old = self.current
                self.current = i
                self.switches += 1
                log.info("event=proxy_switch to=%s:%d", c.host, c.port)
                await self._drop(old)
            for topic in self._subs:
                await c.subscribe(topic)
            return c
        raise ConnectionError("no proxy answered: %s" % "; ".join(errors))

    async def _switch_from(self, i):
        """Fail over away from proxy i, unless another task did already."""
        async with self._switching:
            c = self.clients[self.current]
            if self.current != i and c is not None and c.connected:
                return c
            # none left (every proxy failed last time): start over at the current one
            return await self._failover(self.failover_s, first=c is None)

    async def _watchdog(self):
        down_since = None
        while True:
            await asyncio.sleep(0.2)
            i = self.current
            c = self.clients[i]
            if c is not None and c.connected:
                down_since = None
                continue
            t = time.monotonic()
            down_since = down_since or t
            if t - down_since >= self.failover_s:
                try:
                    await self._switch_from(i)
                except ConnectionError:
                    pass
                down_since = None

    async def __aenter__(self):
        return await self.connect()

    async def __aexit__(self, *exc):
        await self.close()

    async def close(self):
        if self._watch is not None:
            self._watch.cancel()
        for i in range(len(self.clients)):
            await self._drop(i)
        if self._seen_file is not None:
            self._save_seen()

    # -- the API (Client's, for the command line) ----------------------------

    def next_msg_id(self):
        self._seq += 1
        return W.message_id(self.node_id, self._seq)

    async def publish_nowait(self, topic, data, msg_id=None, raw=False):
        """Queue a publish once a proxy's window has room; return a future of
        its message id, done once a proxy says it is durable. Sealed once:
        every proxy gets the same bytes under the same id."""
        tid = topics.resolve(topic)
        payload = bytes(data) if raw else self.codec.encode(tid, data)
        mid = msg_id or self.next_msg_id()
        if self.mode == "all":
            room = await self._room_all()
            futs = [(c, await c.publish_nowait(tid, payload, msg_id=mid, raw=True)) for c in room]
            return asyncio.ensure_future(self._all_ack(futs, tid, payload, mid))
        while True:
            # Room is waited for here, so publishes reach the proxy in order;
            # a proxy that stops answering is left by _failover_ack.
            i = self.current
            c = self.clients[i] or await self._switch_from(i)
            if await c.wait_room(self.failover_s) and self.clients[i] is c:
                fut = await c.publish_nowait(tid, payload, msg_id=mid, raw=True)
                return asyncio.ensure_future(self._failover_ack(i, fut, tid, payload, mid))

    async def _failover_ack(self, i, fut, tid, payload, mid):
        while True:
            try:
                return await asyncio.wait_for(asyncio.shield(fut), self.failover_s)
            except (asyncio.TimeoutError, ConnectionError):
                fut.add_done_callback(lambda f: f.exception())
            # the same id through the next proxy: the federation stores it once
            c = await self._switch_from(i)
            i = self.current
            try:
                fut = await c.publish_nowait(tid, payload, msg_id=mid, raw=True)
            except ConnectionError:   # dropped meanwhile by another switch
                fut = asyncio.get_running_loop().create_future()
                fut.set_exception(ConnectionError("client closed"))

    async def _room_all(self):
        """The connected proxies whose window has room (waiting, up to
        failover_s without any, until one has). A proxy whose window is full
        (slow, or dead and not noticed yet) is skipped while another has
        room: the federation brings it the message."""
        loop = asyncio.get_running_loop()
        end = loop.time() + self.failover_s
        while True:
            live = self._live()
            room = [c for c in live if c.session.can_publish()]
            if room:
                return room
            if loop.time() >= end:
                raise ConnectionError("no proxy connected" if not live else "no proxy acknowledges")
            await asyncio.sleep(0.02)

    async def _all_ack(self, futs, tid, payload, mid):
        """Done at the first acknowledgement. None within failover_s (the
        proxies it went to are gone): through every connected proxy it has
        not gone to yet, under the same id."""
        while True:
            pending = set(f for _c, f in futs)
            end = asyncio.get_running_loop().time() + self.failover_s
            while pending:
                left = end - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                done, pending = await asyncio.wait(pending, timeout=left, return_when=asyncio.FIRST_COMPLETED)
                for f in done:
                    if f.exception() is None:
                        for p in pending:
                            p.add_done_callback(lambda f: f.exception())   # the others finish on their own
                        return f.result()
            tried = [c for c, f in futs if not f.done()]
            futs = [(c, f) for c, f in futs if not f.done()]
            for c in self._live():
                if c not in tried:
                    futs.append((c, await c.publish_nowait(tid, payload, msg_id=mid, raw=True)))
            if not futs:
                await asyncio.sleep(0.2)   # every proxy down: wait for one (the caller has its deadline)

    async def publish(self, topic, data, msg_id=None):
        """Publish; returns the message id once a proxy says it is durable."""
        return await (await self.publish_nowait(topic, data, msg_id))

    async def subscribe(self, topic, timeout=10.0):
        tid = topics.resolve(topic)
        if tid not in self._subs:
            self._subs.append(tid)
        if self.mode == "all":
            for c in self.clients:
                if c is None:
                    continue
                if c.connected:
                    await c.subscribe(tid, timeout)
                else:   # asked for on its next link (the session keeps it)
                    asyncio.ensure_future(c.subscribe(tid, timeout)).add_done_callback(
                        lambda f: f.cancelled() or f.exception())
        else:
            c = self.clients[self.current] or await self._switch_from(self.current)
            await c.subscribe(tid, timeout)

    async def next_delivery(self, timeout=None):
        """The next delivery (never one the node had already), opened by the
        codec; acknowledged to the proxy it came from as consumed, if that
        link still exists (else that proxy hands it again, and it is dropped
        here as seen)."""
        if timeout is None:
            c, d = await self._inbox.get()
        else:
            c, d = await asyncio.wait_for(self._inbox.get(), timeout)
        if d.sealed:
            d = c.decode(d)
        if d.held is not None:
            self.codec.taken(d.topic, d.held)
        if c in self.clients:
            c.consumed(d.topic, d.seq)
        return d

    async def control_done(self, timeout=None):
        """The codec's own messages (re-keys) acknowledged: True when none is
        left to publish (Client.control_done, through the proxies in use)."""
        ok = True
        for c in self._live():
            ok = await c.control_done(timeout) and ok
        return ok

    # -- the deduplication memory between runs -------------------------------

    def _load_seen(self):
        # records: topic length, topic, message id length, message id
        try:
            with open(self._seen_file, "rb") as f:
                data = f.read(SEEN_FILE_MAX * 66)
        except FileNotFoundError:
            return
        k = 0
        while k < len(data):
            n = data[k]
            m = data[k + 1 + n] if k + 1 + n < len(data) else None
            if m is None or k + 2 + n + m > len(data):
                break   # cut short: what came before stands
            self._seen[(data[k + 1:k + 1 + n], data[k + 2 + n:k + 2 + n + m])] = True
            k += 2 + n + m

    def _save_seen(self):
        from upsycle.identity import make_home, write_private
        out = bytearray()
        for topic, mid in list(self._seen)[-SEEN_FILE_MAX:]:
            if len(topic) < 256 and len(mid) < 256:
                out += bytes([len(topic)]) + topic + bytes([len(mid)]) + mid
        make_home(os.path.dirname(self._seen_file))
        write_private(self._seen_file, bytes(out))
