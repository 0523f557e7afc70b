"""The store's in-memory tail answers exactly what SQLite would, or None."""
import collections
import random
import sys

from upsycle.proxy.store_tail import TAIL_TOPIC_OVERHEAD, Tail, _cost


def _reference(rows, after, limit):
    return [r for r in rows if r[0] > after][:limit]


def test_tail_answers_like_the_rows_or_defers():
    rnd = random.Random(7)
    t = Tail()
    t.per_topic = 40
    rows = []
    seq = 100
    for step in range(2000):
        r = rnd.random()
        if r < 0.7:
            seq += 1
            row = (seq, b"m%d" % seq, b"p" * rnd.randrange(1, 9))
            rows.append(row)
            t.add(b"t", *row)
        elif r < 0.75 and rows:
            first = rows[0][0] + rnd.randrange(0, 5)
            rows = [x for x in rows if x[0] >= first]
            t.trim(b"t", first)
        else:
            after = seq - rnd.randrange(0, 60)
            limit = rnd.randrange(1, 50)
            got = t.get(b"t", after, limit)
            if got is None:
                # Deferred to SQLite only when the tail does not reach back that far.
                kept = t._tails.get(b"t")
                assert not kept or kept[0][0] > after + 1
            else:
                assert got == _reference(rows, after, limit), (after, limit)
    assert t.get(b"other", 0, 5) is None


def test_a_gap_starts_the_tail_over_and_bytes_are_bounded():
    t = Tail()
    t.bytes_max = 2 * TAIL_TOPIC_OVERHEAD + 300   # a topic with one entry, not two
    t.add(b"a", 1, b"m1", b"x" * 30)
    t.add(b"a", 2, b"m2", b"x" * 30)
    t.add(b"a", 5, b"m5", b"x" * 30)   # not contiguous: only 5 is kept
    assert t.get(b"a", 4, 10) == [(5, b"m5", b"x" * 30)]
    assert t.get(b"a", 1, 10) is None
    t.add(b"b", 1, b"n1", b"y" * 80)   # over the bound: the least recently written topic goes
    assert t.get(b"a", 4, 10) is None and t.bytes <= t.bytes_max
    assert t.get(b"b", 0, 10) == [(1, b"n1", b"y" * 80)]


def _held(t):
    """What the tail's entries and topics take in CPython (sys.getsizeof):
    the tuples, ints and bytes it keeps alive, the deques and their keys."""
    n = 0
    for topic, tail in t._tails.items():
        n += sys.getsizeof(tail) + sys.getsizeof(topic) + 8 * len(tail)
        for seq, mid, payload in tail:
            n += sys.getsizeof((seq, mid, payload)) + sys.getsizeof(seq) + sys.getsizeof(mid) + sys.getsizeof(payload)
    return n


def test_the_bound_counts_each_entry_and_topic_not_only_payload_bytes():
    """10,000 sessions each on its own topic publish small messages: counted
    by payload bytes only, the tail held every topic (empty payloads: none
    at all counted). The bound is on memory as held, entries and topics."""
    t = Tail()
    t.bytes_max = 256 * 1024
    for i in range(3000):
        topic = i.to_bytes(16, "big")
        for seq in range(1, 6):
            t.add(topic, seq, b"%016d" % seq, b"")
        assert t.bytes <= t.bytes_max
    assert 0 < len(t) < 3000
    assert _held(t) <= t.bytes <= t.bytes_max
    for topic in list(t._tails)[::2]:
        t.trim(topic, 6)          # retention took every message of the topic
    for topic in list(t._tails):
        t.forget(topic)
    assert t.bytes == 0 and len(t) == 0


def test_extend_keeps_what_adding_each_row_keeps():
    """extend (a commit's rows of one topic at once) against add of each."""
    rnd = random.Random(11)
    for case in range(200):
        a, b = Tail(), Tail()
        per, most = rnd.choice((3, 8, 40)), rnd.choice((50, 200, 10 ** 6))
        for t in (a, b):
            t.per_topic, t.bytes_max = per, most
        seq = {b"x": 0, b"y": 0}
        for step in range(30):
            topic = rnd.choice((b"x", b"y"))
            if rnd.random() < 0.1:
                seq[topic] += rnd.randrange(2, 5)   # a gap: the tail starts over
            run = []
            for _ in range(rnd.randrange(1, 12)):
                seq[topic] += 1
                run.append((seq[topic], b"m%d" % seq[topic], b"p" * rnd.randrange(0, 20)))
            a.extend(topic, run)
            for r in run:
                b.add(topic, *r)
            assert a.bytes == sum(TAIL_TOPIC_OVERHEAD + sum(_cost(r) for r in tl) for tl in a._tails.values()) <= a.bytes_max
            for topic in (b"x", b"y"):
                for after in range(max(0, seq[topic] - 45), seq[topic] + 1):
                    got_a, got_b = a.get(topic, after, 50), b.get(topic, after, 50)
                    # both answer like the rows, or defer to SQLite; a full
                    # byte budget may make one keep less than the other
                    if got_a is not None and got_b is not None:
                        assert got_a == got_b
                if a.bytes_max == 10 ** 6:
                    assert list(a._tails.get(topic, ())) == list(b._tails.get(topic, ()))
