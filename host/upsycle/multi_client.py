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
import time

from shared_protocol.session import messages as W
from upsycle import topics
from upsycle.client import Client

# A publish unacknowledged this long, or a link down this long, moves a
# failover node to the next proxy (a proxy restart takes well under 1 s;
# a dead one is given up after this).
FAILOVER_S = 3.0
# (topic, message id) pairs remembered for deduplication: a switch replays
# at most a topic's retention (10,000 by default) per topic.
SEEN_MAX = 65536


class MultiClient:
    def __init__(self, proxies, mode="failover", failover_s=FAILOVER_S, seen_max=SEEN_MAX, **client_kw):
        if not proxies:
            raise ValueError("at least one proxy")
        if mode not in ("failover", "all"):
            raise ValueError("mode is failover or all")
        self.proxies = [tuple(p) + (None,) * (3 - len(p)) for p in proxies]
        self.mode = mode
        self.failover_s = failover_s
        self.client_kw = client_kw
        self.clients = [None] * len(self.proxies)
        self.current = 0
        self.switches = 0
        self.duplicates = 0
        self._seq = time.time_ns() // 1000
        self._seen = collections.OrderedDict()
        self._seen_max = seen_max
        self._subs = []
        self._inbox = asyncio.Queue()
        self._pumps = {}
        self._watch = None
        self.node_id = None

    def _client(self, i):
        c = self.clients[i]
        if c is None:
            host, port, key = self.proxies[i]
            c = self.clients[i] = Client(host, port, proxy_key=key, **self.client_kw)
            self.node_id = c.node_id
            self._pumps[i] = asyncio.ensure_future(self._pump(i, c))
        return c

    async def _pump(self, i, c):
        """Deliveries of proxy i into the node's inbox, deduplicated."""
        while True:
            d = await c.next_delivery(consume=False)
            if not d.missed:
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

    async def connect(self, timeout=10.0):
        if self.mode == "all":
            results = await asyncio.gather(*(self._client(i).connect(timeout) for i in range(len(self.proxies))),
                                           return_exceptions=True)
            if all(isinstance(r, BaseException) for r in results):
                raise ConnectionError("no proxy answered: %s" % "; ".join(str(r) for r in results))
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
            except (ConnectionError, OSError) as e:
                errors.append(str(e))
                await self._drop(i)
                continue
            if i != self.current:
                old = self.current
                self.current = i
                self.switches += 1
                await self._drop(old)
            for topic in self._subs:
                await c.subscribe(topic)
            return c
        raise ConnectionError("no proxy answered: %s" % "; ".join(errors))

    async def _watchdog(self):
        down_since = None
        while True:
            await asyncio.sleep(0.2)
            c = self.clients[self.current]
            if c is not None and c.connected:
                down_since = None
                continue
            t = time.monotonic()
            down_since = down_since or t
            if t - down_since >= self.failover_s:
                try:
                    await self._failover(self.failover_s)
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

    def next_msg_id(self):
        self._seq += 1
        return W.message_id(self.node_id, self._seq)

    async def publish(self, topic, data, msg_id=None):
        """Publish; returns the message id once a proxy says it is durable."""
        mid = msg_id or self.next_msg_id()
        if self.mode == "all":
            futs = []
            for c in self.clients:
                if c is not None and c.connected:
                    futs.append(await c.publish_nowait(topic, data, msg_id=mid))
            if not futs:
                raise ConnectionError("no proxy connected")
            done, _ = await asyncio.wait(futs, return_when=asyncio.FIRST_COMPLETED)
            for f in futs:
                if f not in done:
                    f.add_done_callback(lambda f: f.exception())   # the others finish on their own
            return next(iter(done)).result()
        while True:
            c = self.clients[self.current] or await self._failover(self.failover_s, first=True)
            fut = await c.publish_nowait(topic, data, msg_id=mid)
            try:
                return await asyncio.wait_for(asyncio.shield(fut), self.failover_s)
            except (asyncio.TimeoutError, ConnectionError):
                fut.add_done_callback(lambda f: f.exception())
                await self._failover(self.failover_s)

    async def subscribe(self, topic, timeout=10.0):
        tid = topics.resolve(topic)
        if tid not in self._subs:
            self._subs.append(tid)
        if self.mode == "all":
            for c in self.clients:
                if c is not None and c.connected:
                    await c.subscribe(tid, timeout)
        else:
            await self.clients[self.current].subscribe(tid, timeout)

    async def next_delivery(self, timeout=None):
        """The next delivery (never one the node had already); acknowledged
        to the proxy it came from as consumed, if that link still exists
        (else that proxy hands it again, and it is dropped here as seen)."""
        if timeout is None:
            c, d = await self._inbox.get()
        else:
            c, d = await asyncio.wait_for(self._inbox.get(), timeout)
        if c in self.clients:
            c.consumed(d.topic, d.seq)
        return d
