"""Per-publisher order and catch-up between proxies (docs/federation.md).

Every message carries its origin (the proxy that first accepted it) and its
number there, 1, 2, 3... per topic without gaps (store_tx.py). So what a
proxy holds of a topic is, per origin, a few runs of numbers, and a gap is
visible:

- ``Reorder`` stores a message from another proxy only once everything
  before it from the same origin is stored (or was never coming: retention,
  or ``GAP_WAIT_S`` passed), so a subscriber sees each site's messages in
  the order that site accepted them, and so each publisher's, whatever path
  and order they took through the overlay. A message that arrives early
  waits in memory (bounded) unacknowledged, and a gap makes the proxy send
  its summary to the sender at once.
- ``Summaries`` is the anti-entropy: each period a proxy sends each ring
  neighbour of a topic its summary (per origin: retention floor and runs
  held, peer_wire.SUMMARY); the neighbour answers with the messages it
  holds that the summary lacks (``fed_data`` with catchup = 1, queued like
  any other and acknowledged hop by hop). Only missing messages travel, and
  only what the sender still keeps (retention).
"""
import time

from upsycle.proxy import peer_wire

# A message ahead of a gap waits this long for the gap to fill (by
# retransmission or catch-up) before the proxy gives up the missing ones
# (retention removed them everywhere, or their origin is gone): a bound on
# how long a lost message can hold back the ones after it.
GAP_WAIT_S = 10.0
# Messages waiting behind gaps: per (topic, origin), and over all.
REORDER_MAX = 512
REORDER_TOTAL_MAX = 8192
# Catch-up messages queued in answer to one summary (the next summary asks
# for the rest once these are acknowledged).
CATCHUP_BATCH_MAX = 256
# Topics summarised per period: a proxy with more topics covers them over
# several periods.
SUMMARY_TOPICS_MAX = 64
# At most one summary per topic sent on a gap within this time.
GAP_ASK_S = 0.5
# Messages newer than everything a summary holds of their origin are sent
# in answer only once stored here this long: younger ones are most likely
# still on their way to the peer by dissemination, and sending them again
# would only make duplicates. Holes below what it holds go at once.
TAIL_AGE_S = 2.0


class Held:
    """A message from a peer on its way into the store."""

    __slots__ = ("topic", "msg_id", "origin", "oseq", "hops", "catchup", "payload", "waiters")

    def __init__(self, topic, msg_id, origin, oseq, hops, catchup, payload):
        self.topic = topic
        self.msg_id = msg_id
        self.origin = origin
        self.oseq = oseq
        self.hops = hops
        self.catchup = catchup
        self.payload = payload
        self.waiters = set()   # peer ids to acknowledge once it is stored


class Reorder:
    """Next expected origin number per (topic, origin) and what waits."""

    def __init__(self, store, submit, ask, counters):
        self.store = store
        self.submit = submit      # submit(Held) -> bool (queued for the store)
        self.ask = ask            # ask(peer_id, topic): send it our summary now
        self.counters = counters
        self.expect = {}          # (topic, origin) -> next origin number to store
        self.held = {}            # (topic, origin) -> {oseq: Held}
        self.since = {}           # (topic, origin) -> when its oldest held message came
        self.total = 0

    def _next(self, key):
        n = self.expect.get(key)
        if n is None:
            hi, floor = self.store.origin_high(key[0], key[1])
            n = self.expect[key] = max(hi, floor) + 1
        return n

    def offer(self, h, peer_id, mine):
        """A message from peer_id. mine: it originated here (no ordering)."""
        key = (h.topic, h.origin)
        if mine:
            self._submit(h, peer_id)
            return
        n = self._next(key)
        if h.oseq < n:
            self._submit(h, peer_id)      # a duplicate, or a gap given up earlier filling in late
            return
        if h.oseq == n:
            self._submit(h, peer_id)
            self.expect[key] = n + 1
            self._drain(key)
            return
        q = self.held.setdefault(key, {})
        old = q.get(h.oseq)
        if old is not None:
            old.waiters.add(peer_id)
            return
        if len(q) >= REORDER_MAX or self.total >= REORDER_TOTAL_MAX:
            # Not taken, not acknowledged: the sender tries again later.
            self.counters["reorder_full"] = self.counters.get("reorder_full", 0) + 1
            if not q:
                del self.held[key]
            return
        h.waiters.add(peer_id)
        q[h.oseq] = h
        self.total += 1
        if key not in self.since:
            self.since[key] = time.monotonic()
        self.ask(peer_id, h.topic)

    def _submit(self, h, peer_id):
        if peer_id is not None:
            h.waiters.add(peer_id)
        if not self.submit(h):
            key = (h.topic, h.origin)
            if key in self.expect and h.oseq < self.expect[key]:
                self.expect[key] = h.oseq   # not stored: still expected

    def _drain(self, key):
        q = self.held.get(key)
        if not q:
            return
        n = self.expect[key]
        while n in q:
            h = q.pop(n)
            self.total -= 1
            self._submit(h, None)
            n = self.expect[key] = max(self.expect[key], n + 1)
        if not q:
            del self.held[key]
            self.since.pop(key, None)
        else:
            self.since[key] = time.monotonic()

    def failed(self, h):
        """The store did not take h: it is expected again."""
        key = (h.topic, h.origin)
        if key in self.expect and h.oseq < self.expect[key]:
            self.expect[key] = h.oseq

    def tick(self, now):
        """Give up gaps older than GAP_WAIT_S: store what waited behind them."""
        for key in [k for k, t in self.since.items() if now - t >= GAP_WAIT_S]:
            q = self.held.get(key)
            if not q:
                self.since.pop(key, None)
                continue
            first = min(q)
            skipped = first - self.expect[key]
            self.counters["gap_skipped"] = self.counters.get("gap_skipped", 0) + skipped
            self.expect[key] = first
            self._drain(key)

    def forget_topic(self, topic):
        for key in [k for k in self.expect if k[0] == topic]:
            self.expect.pop(key, None)
            q = self.held.pop(key, None)
            if q:
                self.total -= len(q)
            self.since.pop(key, None)


class Summaries:
    """Building our summaries and answering the neighbours'."""

    def __init__(self, store):
        self.store = store
        self._rot = 0
        self._cache = {}   # topic -> ((first seq, last seq, aliases), origin_ranges result)

    def _ranges(self, topic):
        """store.origin_ranges, read again only when the topic's stored
        range changed or a duplicate was recorded under another origin's
        number (every summary sent and answered needs it; a stale one
        would ask the neighbours for the same messages for ever)."""
        v = self.store.topics.get(topic)
        key = (v.first_seq, v.last_seq, v.aliases) if v is not None else None
        c = self._cache.get(topic)
        if c is not None and c[0] == key and key is not None:
            return c[1]
        r = self.store.origin_ranges(topic)
        if len(self._cache) >= SUMMARY_TOPICS_MAX * 4:
            self._cache = {}
        self._cache[topic] = (key, r)
        return r

    def build(self, topic):
        """fed_summary values for topic, from the store."""
        held, floors = self._ranges(topic)
        origins = sorted(set(held) | set(floors))
        complete = 1
        if len(origins) > peer_wire.SUMMARY_ORIGINS_MAX:
            # More sites than fit: a different slice each time.
            self._rot = (self._rot + peer_wire.SUMMARY_ORIGINS_MAX) % len(origins)
            origins = (origins[self._rot:] + origins[:self._rot])[:peer_wire.SUMMARY_ORIGINS_MAX]
            complete = 0
        return [topic, [[o, floors.get(o, 0), held.get(o, [])[:peer_wire.RUNS_MAX]] for o in origins], complete]

    def answer(self, topic, origins, complete, room):
        """What we hold of topic that a summary lacks: up to room
        (origin, oseq, msg_id, payload), oldest first per origin. Raises
        peer_wire.SummaryError on a misshaped summary."""
        theirs = peer_wire.check_summary(origins)
        mine, _floors = self._ranges(topic)
        out = []
        for origin in sorted(mine):
            if len(out) >= room:
                break
            t = theirs.get(origin)
            if t is not None:
                floor, runs = t
                truncated = len(runs) >= peer_wire.RUNS_MAX
            elif complete:
                floor, runs, truncated = 0, [], False
            else:
                continue
            top = runs[-1][1] if runs else floor
            young = self.store.clock() - TAIL_AGE_S
            for lo, hi in peer_wire.missing(mine[origin], floor, runs, truncated):
                want = min(room - len(out), hi - lo + 1)
                if want <= 0:
                    break
                for oseq, msg_id, payload, ts in self.store.fetch_origin(topic, origin, lo - 1, want):
                    if oseq > hi or (oseq > top and ts > young):
                        break
                    out.append((origin, oseq, bytes(msg_id), bytes(payload)))
        return out
