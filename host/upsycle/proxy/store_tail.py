"""The newest committed messages of each topic, kept in memory so live
deliveries need no query.

A query on the event loop's reader connection lets go of the GIL and waits
to win it back from the store's writer thread (up to the switch interval,
0.5 ms), once per subscriber and topic: with 1,000 sessions that queued
deliveries for seconds (tools/bench/bench_scale.py). The store's commit
callback (in the event loop) puts each committed publish at the tail of its
topic; ``Store.fetch`` answers from the tail when it covers the range asked
for, and from SQLite otherwise.

A topic's tail is always a contiguous run of sequence numbers ending at the
newest stored message, and never holds a message the store no longer has:
retention trims it (``trim``) and a forgotten topic loses it (``forget``).
"""
import collections

# Messages kept per topic: a live subscriber is rarely further behind than
# one group commit adds to a topic (a publisher's window, up to WINDOW_MAX,
# or a few publishers'); with 32, commits of 60+ messages per topic sent
# every subscriber to SQLite (a query per fetch, and the GIL lost and won
# back around it) for most of what it was sent.
TAIL_PER_TOPIC = 512
# Memory kept over all topics, counted as CPython holds it (payloads, ids
# and the overhead below); the topics written least recently lose theirs
# first (anything older comes from SQLite as before).
TAIL_BYTES_MAX = 8 * 1024 * 1024
# What an entry costs besides its payload and id bytes (64-bit CPython
# 3.11, sys.getsizeof): the 3-tuple 64, the sequence int 28, two bytes
# objects' headers 33 each, the deque slot 8. Counting payload bytes only
# let 10,000 topics of small messages hold several times TAIL_BYTES_MAX.
TAIL_ENTRY_OVERHEAD = 166
# What a topic's tail costs while it has one: the deque with its first block
# (760), the topic id bytes and the OrderedDict entry (~880 measured).
TAIL_TOPIC_OVERHEAD = 900


def _cost(row):
    return TAIL_ENTRY_OVERHEAD + len(row[1]) + len(row[2])


def _tail_cost(tail):
    return TAIL_TOPIC_OVERHEAD + sum(_cost(r) for r in tail)


class Tail:
    """topic -> deque of (seq, msg_id, payload), least recently written first."""

    def __init__(self):
        self.per_topic = TAIL_PER_TOPIC
        self.bytes_max = TAIL_BYTES_MAX
        self.bytes = 0
        self._tails = collections.OrderedDict()

    def __len__(self):
        return len(self._tails)

    def get(self, topic, after, limit):
        """Up to limit messages of topic with seq > after, or None if the
        tail does not cover them (the caller asks SQLite)."""
        tail = self._tails.get(topic)
        if not tail:
            return None
        start = after + 1 - tail[0][0]   # the run is contiguous: index by sequence
        if start < 0:
            return None
        n = len(tail)
        if start >= n:
            return []
        end = min(n, start + limit)
        if start == 0 and end == n:
            return list(tail)
        # A live subscriber asks for the newest few of up to TAIL_PER_TOPIC:
        # islice would walk every older entry to reach them (some 30 us a
        # fetch with 512 kept: tools/bench/profile_proxy.py --rate 1000);
        # a deque's index is found from its nearer end.
        return [tail[i] for i in range(start, end)]

    def add(self, topic, seq, msg_id, payload):
        """A committed message, the newest of its topic."""
        tail = self._open(topic, seq)
        row = (seq, msg_id, payload)
        tail.append(row)
        self.bytes += _cost(row)
        if len(tail) > self.per_topic:
            self.bytes -= _cost(tail.popleft())
        self._evict()

    def extend(self, topic, rows):
        """Committed messages of topic, (seq, msg_id, payload) in order, the
        newest of it: as add of each, with one lookup for the topic."""
        first = rows[0][0]
        if len(rows) == 1 or rows[-1][0] - first != len(rows) - 1:
            for r in rows:   # (one, or not a contiguous run: never from one transaction)
                self.add(topic, r[0], r[1], r[2])
            return
        tail = self._open(topic, first)
        tail.extend(rows)
        self.bytes += sum(_cost(r) for r in rows)
        for _ in range(len(tail) - self.per_topic):
            self.bytes -= _cost(tail.popleft())
        self._evict()

    def _open(self, topic, first):
        """topic's tail, made most recently written, ready to take seq first
        next (emptied if it would not be contiguous)."""
        tails = self._tails
        tail = tails.get(topic)
        if tail is None:
            tail = tails[topic] = collections.deque()
            self.bytes += TAIL_TOPIC_OVERHEAD
        else:
            tails.move_to_end(topic)
        if tail and tail[-1][0] != first - 1:
            self.bytes -= sum(_cost(r) for r in tail)   # not contiguous: start over
            tail.clear()
        return tail

    def _evict(self):
        """Over the bound: the topics written least recently lose their tails."""
        tails = self._tails
        while self.bytes > self.bytes_max and tails:
            _topic, old = tails.popitem(last=False)
            self.bytes -= _tail_cost(old)

    def trim(self, topic, first_seq):
        """Retention deleted the messages of topic below first_seq."""
        tail = self._tails.get(topic)
        if tail is None:
            return
        while tail and tail[0][0] < first_seq:
            self.bytes -= _cost(tail.popleft())
        if not tail:
            del self._tails[topic]
            self.bytes -= TAIL_TOPIC_OVERHEAD

    def forget(self, topic):
        """The topic was forgotten (no message, no subscriber)."""
        tail = self._tails.pop(topic, None)
        if tail is not None:
            self.bytes -= _tail_cost(tail)
