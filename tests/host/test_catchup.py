"""Catch-up summaries and per-origin order (upsycle/proxy/catchup.py,
peer_wire.py), against a real store."""
import asyncio

import pytest

from upsycle.proxy import peer_wire
from upsycle.proxy.catchup import Held, Reorder, Summaries
from upsycle.proxy.store import Retention, Store

T = b"t" * 16
P = b"P" * 8
Q = b"Q" * 8


def test_missing_is_what_a_summary_lacks_above_its_floor():
    mine = [[1, 10], [12, 20]]
    assert peer_wire.missing(mine, 0, [], False) == [[1, 10], [12, 20]]
    assert peer_wire.missing(mine, 4, [[6, 8]], False) == [[5, 5], [9, 10], [12, 20]]
    assert peer_wire.missing(mine, 0, [[1, 20]], False) == []
    # A cut list of runs: only holes below its last run.
    assert peer_wire.missing(mine, 0, [[1, 3], [5, 15]], True) == [[4, 4]]


@pytest.mark.parametrize("bad", [
    [[b"short", 0, []]],
    [[P, -1, []]],
    [[P, 0, [[5, 3]]]],
    [[P, 0, [[1, 5], [4, 8]]]],          # overlapping runs
    [[P, 0, []], [P, 0, []]],            # an origin twice
    [[P, 0, [[1, 2]] * (peer_wire.RUNS_MAX + 1)]],
    [[P, 0]],
])
def test_misshaped_summaries_are_refused(bad):
    with pytest.raises(peer_wire.SummaryError):
        peer_wire.check_summary(bad)


class _Rig:
    def __init__(self, path, retention=None):
        self.now = 1000.0
        self.store = Store(str(path), retention, clock=lambda: self.now)
        self.store.origin_id = b"O" * 8
        self.store.open()

    async def start(self):
        self.waiting = {}
        self.store.start(asyncio.get_running_loop(), self._done)

    def _done(self, batch, results):
        for i, it in enumerate(batch):
            fut = self.waiting.pop(id(it[4]), None)
            if fut is not None:
                fut.set_result(results["items"][i])

    async def put(self, topic, mid, origin=None, oseq=None, payload=b"x"):
        tok = ("t", mid)
        fut = self.waiting[id(tok)] = asyncio.get_running_loop().create_future()
        assert self.store.submit_publish(topic, mid, payload, tok, None, origin, oseq) is None
        return await fut


def test_store_numbers_its_own_messages_per_topic_and_summarises_runs(tmp_path):
    async def main():
        r = _Rig(tmp_path)
        await r.start()
        try:
            for k in range(3):
                await r.put(T, b"own%d" % k)
            await r.put(T, b"own0")                      # a retransmission takes no number
            await r.put(T, b"own3")
            for n in (1, 2, 3, 7, 8):
                await r.put(T, b"p%d" % n, P, n)
            held, floors = r.store.origin_ranges(T)
            summary = Summaries(r.store).build(T)
            return held, floors, summary
        finally:
            r.store.close()
    held, floors, summary = asyncio.run(main())
    assert held == {b"O" * 8: [[1, 4]], P: [[1, 3], [7, 8]]}
    assert floors == {}
    assert summary == [T, [[b"O" * 8, 0, [[1, 4]]], [P, 0, [[1, 3], [7, 8]]]], 1]


def test_retention_leaves_a_floor_so_nothing_deleted_comes_back(tmp_path):
    async def main():
        r = _Rig(tmp_path, Retention(max_count=3, max_age_s=0, max_bytes=0))
        await r.start()
        try:
            for n in range(1, 7):
                await r.put(T, b"p%d" % n, P, n)
            held, floors = r.store.origin_ranges(T)
            # A peer's summary that holds nothing of P: we offer what we
            # keep, once it is old enough not to be on its way still.
            young = Summaries(r.store).answer(T, [], 1, 100)
            r.now += 60
            ans = Summaries(r.store).answer(T, [], 1, 100)
            # Our own summary tells a peer not to send 1..3 again.
            mine = Summaries(r.store).build(T)
            return held, floors, ans, mine, young
        finally:
            r.store.close()
    held, floors, ans, mine, young = asyncio.run(main())
    assert young == []
    assert held == {P: [[4, 6]]} and floors == {P: 3}
    assert [a[1] for a in ans] == [4, 5, 6]
    assert mine[1] == [[P, 3, [[4, 6]]]]


def test_reorder_stores_each_origin_in_order_and_gives_up_a_gap_in_time(tmp_path):
    async def main():
        r = _Rig(tmp_path)
        await r.start()
        stored = []
        asked = []
        counters = {}

        def submit(h):
            stored.append(h.oseq)
            return r.store.submit_publish(h.topic, h.msg_id, h.payload, ("t", h), None, h.origin, h.oseq) is None
        ro = Reorder(r.store, submit, lambda pid, topic: asked.append(pid), counters)
        try:
            def h(n, origin=P):
                return Held(T, origin + b"%d" % n, origin, n, 0, 0, b"x")
            ro.offer(h(1), b"a", False)
            ro.offer(h(3), b"a", False)          # 2 missing: 3 waits, we ask a
            ro.offer(h(4), b"b", False)
            ro.offer(h(3), b"b", False)          # the same again from b: one more waiter
            assert stored == [1] and asked == [b"a", b"b"]   # (federation.py rate-limits the asks)
            assert ro.held[(T, P)][3].waiters == {b"a", b"b"}
            ro.offer(h(2), b"b", False)          # the gap fills: 2, 3, 4 in order
            assert stored == [1, 2, 3, 4]
            ro.offer(h(1, Q), b"a", False)
            ro.offer(h(5, Q), b"a", False)       # Q's 2..4 never come
            ro.tick(1e12)                        # ... past GAP_WAIT_S
            assert stored == [1, 2, 3, 4, 1, 5] and counters["gap_skipped"] == 3
            ro.offer(h(3, Q), b"a", False)       # a straggler below is still stored
            assert stored[-1] == 3
            assert ro.total == 0
        finally:
            r.store.close()
    asyncio.run(main())


def test_a_message_first_accepted_at_two_proxies_counts_under_both_origins(tmp_path):
    """A node published it through two proxies: the copy numbered by the
    second is a duplicate here, yet its number counts as held, so no summary
    asks for it again; retention removes both and leaves both floors."""
    async def main():
        r = _Rig(tmp_path, Retention(max_count=3, max_age_s=0, max_bytes=0))
        await r.start()
        try:
            for n in (1, 2, 3):
                await r.put(T, b"m%d" % n, P, n)
            dups = [await r.put(T, b"m%d" % n, Q, 10 + n) for n in (1, 2, 3)]
            held, floors = r.store.origin_ranges(T)
            high = r.store.origin_high(T, Q)
            await r.put(T, b"m4", P, 4)                 # retention keeps the newest 3 rows
            held2, floors2 = r.store.origin_ranges(T)
            return dups, held, high, held2, floors2
        finally:
            r.store.close()
    dups, held, high, held2, floors2 = asyncio.run(main())
    assert [d[0] for d in dups] == ["dup"] * 3
    assert held == {P: [[1, 3]], Q: [[11, 13]]}
    assert high == (13, 0)
    assert held2 == {P: [[2, 4]], Q: [[12, 13]]} and floors2 == {P: 1, Q: 11}


def test_one_summaries_object_sees_numbers_held_under_a_second_origin(tmp_path):
    """The summary a proxy sends each period comes from one Summaries object
    that caches per topic. Duplicates that only add origin_alias rows leave
    the topic's sequence range where it was; the summary must still show
    them, or the neighbour answers with the same messages for ever (a
    restarted proxy of two that both took a node's publishes never caught
    up: tests/host/test_cli_multi_proxy.py)."""
    async def main():
        r = _Rig(tmp_path)
        await r.start()
        try:
            for n in (1, 2, 3):
                await r.put(T, b"m%d" % n, P, n)
            s = Summaries(r.store)
            before = s.build(T)
            for n in (1, 2, 3):
                assert (await r.put(T, b"m%d" % n, Q, n))[0] == "dup"
            after = s.build(T)
            answer = s.answer(T, after[1], 1, 100)
            return before, after, answer
        finally:
            r.store.close()
    before, after, answer = asyncio.run(main())
    assert before[1] == [[P, 0, [[1, 3]]]]
    assert after[1] == [[P, 0, [[1, 3]]], [Q, 0, [[1, 3]]]]
    assert answer == []


def test_own_numbers_of_many_topics_in_one_transaction_continue_after_a_restart(tmp_path):
    """The next origin number of every topic a commit touched is written
    (one multi-row statement), so a restarted store goes on from it."""
    topics = [bytes([i]) * 16 for i in range(7)]

    async def burst(r, tag):
        loop = asyncio.get_running_loop()
        futs = []
        for t in topics:
            for k in range(3):
                tok = ("t", t, k, tag)
                fut = r.waiting[id(tok)] = loop.create_future()
                assert r.store.submit_publish(t, tag + b"%d" % k, b"x", tok, None) is None
                futs.append(fut)
        await asyncio.gather(*futs)   # submitted in one loop turn: one transaction

    async def main(tag):
        r = _Rig(tmp_path)
        await r.start()
        try:
            await burst(r, tag)
            return dict((t, r.store.origin_ranges(t)[0]) for t in topics)
        finally:
            r.store.close()
    first = asyncio.run(main(b"a"))
    again = asyncio.run(main(b"b"))
    assert all(first[t] == {b"O" * 8: [[1, 3]]} for t in topics)
    assert all(again[t] == {b"O" * 8: [[1, 6]]} for t in topics)


def test_a_restarted_store_still_floors_the_numbers_held_under_a_second_origin(tmp_path):
    """Which topics hold origin_alias rows is read back at start-up: retention
    after a restart still leaves the second origin's floor and deletes its
    alias rows."""
    async def first():
        r = _Rig(tmp_path, Retention(max_count=3, max_age_s=0, max_bytes=0))
        await r.start()
        try:
            for n in (1, 2, 3):
                await r.put(T, b"m%d" % n, P, n)
            assert (await r.put(T, b"m1", Q, 11))[0] == "dup"
        finally:
            r.store.close()

    async def again():
        r = _Rig(tmp_path, Retention(max_count=3, max_age_s=0, max_bytes=0))
        await r.start()
        try:
            await r.put(T, b"m4", P, 4)                 # deletes m1, held under P 1 and Q 11
            held, floors = r.store.origin_ranges(T)
            aliases = r.store._rd.execute("SELECT COUNT(*) FROM origin_alias").fetchone()[0]
            return held, floors, aliases
        finally:
            r.store.close()
    asyncio.run(first())
    held, floors, aliases = asyncio.run(again())
    assert held == {P: [[2, 4]]} and floors == {P: 1, Q: 11} and aliases == 0


def test_retention_in_many_topics_of_one_transaction_leaves_each_floor(tmp_path):
    """The floors of every topic and origin a transaction's retention
    deleted from are written together (one statement): each keeps its own
    highest number, and a later, lower one never lowers it."""
    topics = [bytes([i]) * 16 for i in range(1, 6)]

    async def main():
        r = _Rig(tmp_path, Retention(max_count=2, max_age_s=0, max_bytes=0))
        await r.start()
        loop = asyncio.get_running_loop()
        try:
            futs = []
            for i, t in enumerate(topics):
                for n in range(1, 5):
                    for origin in (P, Q):
                        tok = ("t", t, n, origin)
                        fut = r.waiting[id(tok)] = loop.create_future()
                        assert r.store.submit_publish(t, origin + b"%d" % n, b"x", tok, None, origin,
                                                      10 * i + n) is None
                        futs.append(fut)
            await asyncio.gather(*futs)   # one loop turn: one transaction
            commits = r.store.commits
            return commits, dict((t, r.store.origin_ranges(t)) for t in topics), dict(r.store.drops)
        finally:
            r.store.close()
    commits, ranges, drops = asyncio.run(main())
    for i, t in enumerate(topics):
        # 8 rows, the newest 2 kept: P 10i+4 and Q 10i+4 (stored in that order)
        assert ranges[t] == ({P: [[10 * i + 4, 10 * i + 4]], Q: [[10 * i + 4, 10 * i + 4]]},
                             {P: 10 * i + 3, Q: 10 * i + 3})
    assert drops == {"retention_count": 6 * len(topics)}
