"""The proxy's store (upsycle/proxy/store.py) on its own: real SQLite in a
temp directory, its writer thread, results handed back to an asyncio loop."""
import asyncio

from shared_protocol.session import messages as W
from upsycle.proxy import store as store_mod
from upsycle.proxy.store import Retention, Store

T1 = b"\x01" * 16
T2 = b"\x02" * 16
NODE = b"node-0001"


class Rig:
    """A started Store whose commits are awaited by token."""

    def __init__(self, path, **kw):
        self.store = Store(str(path), **kw)
        self.store.open()
        self.results = {}
        self.waiters = {}

    def start(self):
        self.store.start(asyncio.get_running_loop(), self._on_commit)
        return self

    def _on_commit(self, batch, results):
        for i, item in enumerate(batch):
            tok = item[4]
            res = results["error"] if results["error"] is not None else results["items"][i]
            self.results[tok] = res
            w = self.waiters.pop(tok, None)
            if w is not None and not w.done():
                w.set_result(res)

    async def wait(self, tok, timeout=10):
        if tok in self.results:
            return self.results[tok]
        fut = self.waiters[tok] = asyncio.get_running_loop().create_future()
        return await asyncio.wait_for(fut, timeout)

    async def publish(self, topic, msg_id, payload):
        tok = ("pub", topic, msg_id, len(self.results), object())
        refused = self.store.submit_publish(topic, msg_id, payload, tok)
        if refused is not None:
            return ("refused", refused[0])   # (code, detail)
        return await self.wait(tok)

    async def subscribe(self, node, topic):
        tok = ("sub", node, topic, object())
        self.store.submit_subscribe(node, topic, tok)
        return await self.wait(tok)

    def close(self):
        self.store.close()


def test_committed_publishes_survive_a_reopen_in_order(tmp_path):
    async def main():
        r = Rig(tmp_path).start()
        try:
            got = [await r.publish(T1, b"m%d" % i, b"payload %d" % i) for i in range(3)]
            return got, r.store.proxy_id
        finally:
            r.close()
    got, proxy_id = asyncio.run(main())
    assert got == [("ok", 1), ("ok", 2), ("ok", 3)]
    again = Store(str(tmp_path))
    again.open()
    try:
        assert again.proxy_id == proxy_id
        v = again.topics[T1]
        assert (v.first_seq, v.last_seq, v.count()) == (1, 3, 3)
        assert [(s, bytes(m), bytes(p)) for s, m, p in again.fetch(T1, 0, 10)] == [
            (1, b"m0", b"payload 0"), (2, b"m1", b"payload 1"), (3, b"m2", b"payload 2")]
        assert again.fetch(T1, 2, 10)[0][0] == 3
    finally:
        again.close()


def test_a_message_id_is_stored_once_per_topic(tmp_path):
    async def main():
        r = Rig(tmp_path).start()
        try:
            first = await r.publish(T1, b"same", b"x")
            second = await r.publish(T1, b"same", b"x")     # a retransmission
            other = await r.publish(T2, b"same", b"y")      # another topic: its own id space
            return first, second, other, len(r.store.fetch(T1, 0, 10))
        finally:
            r.close()
    assert asyncio.run(main()) == (("ok", 1), ("dup", None), ("ok", 1), 1)


def test_retention_by_count_keeps_the_newest_and_counts_the_drops(tmp_path):
    async def main():
        r = Rig(tmp_path, retention=Retention(max_count=2, max_age_s=0, max_bytes=0)).start()
        try:
            for i in range(5):
                await r.publish(T1, b"m%d" % i, b"p")
            v = r.store.topics[T1]
            return (v.first_seq, v.last_seq), dict(r.store.drops), [s for s, _, _ in r.store.fetch(T1, 0, 10)]
        finally:
            r.close()
    span, drops, seqs = asyncio.run(main())
    assert span == (4, 5) and seqs == [4, 5]
    assert drops == {"retention_count": 3}


def test_retention_by_bytes_deletes_oldest_first(tmp_path):
    async def main():
        r = Rig(tmp_path, retention=Retention(max_count=0, max_age_s=0, max_bytes=250)).start()
        try:
            for i in range(4):
                await r.publish(T1, b"m%d" % i, b"x" * 100)
            return r.store.topics[T1].bytes, [s for s, _, _ in r.store.fetch(T1, 0, 10)], dict(r.store.drops)
        finally:
            r.close()
    nbytes, seqs, drops = asyncio.run(main())
    assert nbytes == 200 and seqs == [3, 4] and drops == {"retention_bytes": 2}


def test_a_new_subscriber_starts_at_the_oldest_kept_and_its_cursor_persists(tmp_path):
    async def main():
        r = Rig(tmp_path, retention=Retention(max_count=2, max_age_s=0, max_bytes=0)).start()
        try:
            for i in range(4):
                await r.publish(T1, b"m%d" % i, b"p")
            cursor = await r.subscribe(NODE, T1)
            r.store.move_cursor(NODE, T1, 4)
            await r.publish(T2, b"flush", b"p")   # a transaction the cursor rides in
            return cursor
        finally:
            r.close()
    assert asyncio.run(main()) == ("ok", 2)        # messages 3 and 4 are kept: it has "consumed" 2
    again = Store(str(tmp_path))
    again.open()
    try:
        assert again.subs[(NODE, T1)] == 4
    finally:
        again.close()


def test_limits_refuse_publishes_with_typed_codes_before_queueing(tmp_path, monkeypatch):
    monkeypatch.setattr(store_mod, "PENDING_BYTES_MAX", 10)

    async def main():
        r = Rig(tmp_path, max_topics=1).start()
        try:
            big = await r.publish(T1, b"big", b"x" * 11)
            ok = await r.publish(T1, b"small", b"x" * 10)
            second_topic = await r.publish(T2, b"m", b"x")
            return big, ok, second_topic, r.store.pending_bytes()
        finally:
            r.close()
    assert asyncio.run(main()) == (("refused", W.R_OVERLOAD), ("ok", 1), ("refused", W.R_TOO_MANY_TOPICS), 0)


def test_a_run_of_subscribes_in_one_transaction_answers_as_one_by_one(tmp_path):
    st = Store(str(tmp_path), Retention(max_count=2, max_age_s=0, max_bytes=0))
    st.open()
    try:
        for i in range(5):
            st._commit([("pub", T1, b"m%d" % i, b"p", None, None)], {}, False)   # T1 keeps 4, 5
        st._commit([("sub", NODE, T1, None, None, NODE)], {}, False)
        st._commit([], {(NODE, T1): 5}, False)                                    # NODE consumed all
        other = b"node-0002"
        batch = [("sub", NODE, T1, None, None, NODE),      # existing: its cursor
                 ("sub", other, T1, None, None, other),    # new: the oldest kept - 1
                 ("sub", other, T2, None, None, other),    # new topic: created, cursor 0 (floor 1)
                 ("sub", other, T1, None, None, other),    # again in the run: the cursor just made
                 ("unsub", other, T2, None, None, other),
                 ("sub", other, T2, None, None, other)]    # after the unsub: new again
        res = st._commit(batch, {}, False)
        assert res["items"] == [("ok", 5), ("ok", 3), ("ok", 0), ("ok", 3), ("ok", None), ("ok", 0)]
        rows = sorted((bytes(n), bytes(t), c) for n, t, c in st._db.execute("SELECT node, topic, cursor FROM subs"))
        assert rows == [(NODE, T1, 5), (other, T1, 3), (other, T2, 0)]
        assert T2 in st._w_topics and res["creators"] == {T2: other}
    finally:
        st.close()


def test_origin_topics_finds_the_topics_an_origin_wrote_to_lately(tmp_path):
    clock = [1000.0]
    st = Store(str(tmp_path), Retention(max_count=0, max_age_s=0, max_bytes=0), clock=lambda: clock[0])
    st.open()
    a, b = b"origin-a", b"origin-b"
    T3 = b"\x03" * 16
    st._on_commit = lambda batch, results: None
    try:
        def pub(topic, mid, origin, oseq, t):
            clock[0] = t
            batch = [("pub", topic, mid, b"p", None, None, origin, oseq)]
            # Committed and published to the event loop's side, as after a
            # sync: reads stop at what was published (Store._durable_seq).
            st._finish(batch, st._commit(batch, {}, False))
        pub(T1, b"1", a, 1, 1000.0)
        pub(T1, b"2", b, 1, 1100.0)
        pub(T1, b"3", a, 2, 1200.0)     # a's newest in T1
        pub(T1, b"4", b, 2, 1300.0)     # b's after it: T1 is read back past it
        pub(T2, b"5", a, 1, 900.0)      # a's, but before since
        pub(T2, b"6", b, 3, 1250.0)
        pub(T3, b"7", b, 4, 1250.0)     # b only
        st._commit([("sub", NODE, b"\x04" * 16, None, None, NODE)], {}, False)   # an empty topic
        assert st.origin_topics(a, 1150.0) == {T1: 1200.0}
        assert st.origin_topics(a, 850.0) == {T1: 1200.0, T2: 900.0}
        assert st.origin_topics(b, 1150.0) == {T1: 1300.0, T2: 1250.0, T3: 1250.0}
        assert st.origin_topics(a, 1250.0) == {}
    finally:
        st.close()


def test_retention_by_count_takes_two_statements_per_topic_and_one_for_the_floors(tmp_path):
    """Every statement of the writer is a GIL hand-over it may wait for
    while the event loop is busy (store_tx.py ROWS_PER_STATEMENT): a
    topic's count retention reads the range once (count, bytes, highest
    origin numbers) and deletes it, and the floors of the whole transaction
    go in one statement (it was four statements per topic)."""
    topics = [bytes([i]) * 16 for i in range(1, 4)]

    async def burst(r, tag):
        loop = asyncio.get_running_loop()
        futs = []
        for t in topics:
            for k in range(2):
                tok = ("pub", t, tag, k)
                fut = r.waiters[tok] = loop.create_future()
                assert r.store.submit_publish(t, tag + b"%d" % k, b"p", tok) is None
                futs.append(fut)
        await asyncio.gather(*futs)   # one loop turn: one transaction

    async def main():
        r = Rig(tmp_path, retention=Retention(max_count=2, max_age_s=0, max_bytes=0))
        r.store.origin_id = b"O" * 8
        statements = []
        r.start()
        r.store._db.set_trace_callback(statements.append)
        try:
            await burst(r, b"a")          # fills each topic to the limit: no retention
            before = len(statements)
            await burst(r, b"b")          # the same shape, deleting 2 rows of each topic
            retaining = len(statements) - before
            return before, retaining, dict(r.store.drops), [r.store.origin_ranges(t)[1] for t in topics]
        finally:
            r.close()
    plain, retaining, drops, floors = asyncio.run(main())
    assert drops == {"retention_count": 2 * len(topics)}
    assert floors == [{b"O" * 8: 2}] * len(topics)
    # + the floors' statement + the drops' counter (which was there before too)
    assert retaining - plain == 2 * len(topics) + 2


def test_retention_reads_its_range_by_the_primary_key_whatever_the_statistics(tmp_path):
    """With ANALYZE's statistics SQLite would order the retention read's
    GROUP BY origin through the origin index, reading every row of the
    topic instead of the range it deletes."""
    from upsycle.proxy import store_tx

    async def main():
        r = Rig(tmp_path, retention=Retention(max_count=0, max_age_s=0, max_bytes=0)).start()
        r.store.origin_id = b"O" * 8
        try:
            loop = asyncio.get_running_loop()
            futs = []
            for k in range(300):
                tok = ("pub", k)
                fut = r.waiters[tok] = loop.create_future()
                assert r.store.submit_publish(T1, b"m%d" % k, b"p", tok) is None
                futs.append(fut)
            await asyncio.gather(*futs)
        finally:
            r.close()
    asyncio.run(main())
    import sqlite3
    db = sqlite3.connect(str(tmp_path / store_mod.DB_NAME))
    try:
        db.execute("ANALYZE")
        plan = " ".join(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + store_tx.RETAIN_READ_SQL, (T1, 10)))
    finally:
        db.close()
    assert "PRIMARY KEY" in plan and "messages_origin" not in plan


def test_no_acknowledgement_or_read_before_the_wal_sync_that_covers_it(tmp_path, monkeypatch):
    """Commits are written with synchronous=NORMAL and made durable by the
    sync thread's fdatasync of the WAL (store_sync.py). The real sync is
    held at a gate: while it is held requests wait for it, or are committed
    once COMMIT_EARLY_ITEMS are queued, but no publish is answered and no
    read (deliveries, federation) sees the rows; every answer follows a
    sync that started after its commit was written."""
    import os
    import threading
    monkeypatch.setattr(store_mod, "SYNC_OFF_LOOP", True)
    monkeypatch.setattr(store_mod, "COMMIT_EARLY_ITEMS", 3)

    order = threading.Lock()
    clock = [0]
    committed_at = {}   # token -> event number when its commit was written
    synced = []         # (event number at the sync's start, at its end)
    gate = threading.Event()
    acked = []

    def tick():
        with order:
            clock[0] += 1
            return clock[0]

    async def main():
        r = Rig(tmp_path, retention=Retention(max_count=0, max_age_s=0, max_bytes=0)).start()
        st = r.store
        assert st._sync is not None   # (SYNC_OFF_LOOP)
        assert st._db.execute("PRAGMA synchronous").fetchone()[0] == 1   # NORMAL: the COMMIT does not sync
        real_commit = st._commit

        def commit(batch, *a, **k):
            res = real_commit(batch, *a, **k)
            n = tick()
            for it in batch:
                committed_at[it[4]] = n
            return res
        st._commit = commit

        def fsync(fd):
            start = tick()
            gate.wait(10)
            os.fdatasync(fd)
            synced.append((start, tick()))
        st._sync.fsync = fsync

        def on_commit(batch, results):
            now = tick()
            for it in batch:
                acked.append(it[4])
                # A sync that started after this commit was written, and ended before now.
                assert any(s > committed_at[it[4]] and e < now for s, e in synced), (it[4], synced)
            r._on_commit(batch, results)
        st._on_commit = on_commit
        try:
            loop = asyncio.get_running_loop()
            futs = []
            wal = st.path + "-wal"
            for k in range(5):   # five loop turns, the first commit's sync held
                tok = ("pub", T1, k)
                futs.append(r.waiters.setdefault(tok, loop.create_future()))
                assert st.submit_publish(T1, b"m%d" % k, b"p%d" % k, tok) is None
                await asyncio.sleep(0.05)
            # m0 committed at once (no sync running); m1, m2 waited; with m3
            # three were queued: committed while the sync was held; m4 waits.
            assert sorted(tok[2] for tok in committed_at) == [0, 1, 2, 3]
            assert os.path.getsize(wal) > 0
            assert acked == [] and not any(f.done() for f in futs)
            assert st.fetch(T1, 0, 10) == [] and st.origin_high(T1, st.origin_id or b"")[0] == 0
            assert st.topics.get(T1) is None   # nothing published to the loop's side
            gate.set()
            got = await asyncio.wait_for(asyncio.gather(*futs), 10)
            return got, [(s, bytes(m)) for s, m, p in st.fetch(T1, 0, 10)], st._sync.syncs
        finally:
            gate.set()
            r.close()
    got, rows, syncs = asyncio.run(main())
    assert got == [("ok", k + 1) for k in range(5)]
    assert rows == [(k + 1, b"m%d" % k) for k in range(5)]
    assert syncs == 3   # m0; m1-m3 (written during the first); m4 (waited for the second)


def test_a_commit_that_would_sync_inside_sqlite_runs_in_the_writer_thread(tmp_path, monkeypatch):
    """With NORMAL, SQLite still syncs inside the COMMIT that writes the
    WAL's header: the first commit into an empty WAL and the first after a
    checkpoint copied every frame (the log restarts). Those run in the
    writer thread; the others in the event loop's thread."""
    import threading
    monkeypatch.setattr(store_mod, "SYNC_OFF_LOOP", True)

    async def main():
        r = Rig(tmp_path).start()
        st = r.store
        where = []
        real_commit = st._commit

        def commit(batch, *a, **k):
            if batch:
                where.append(threading.current_thread().name)
            return real_commit(batch, *a, **k)
        st._commit = commit
        try:
            for k in range(3):
                assert await r.publish(T1, b"a%d" % k, b"p") == ("ok", k + 1)
            busy, frames, done = st._checkpoint(st._ckpt)   # as the checkpoint thread does
            assert (busy, frames == done) == (0, True)
            for k in range(3):
                assert await r.publish(T1, b"b%d" % k, b"p") == ("ok", k + 4)
            return where
        finally:
            r.close()
    loop_thread = threading.current_thread().name
    assert asyncio.run(main()) == ["upsycle-store", loop_thread, loop_thread] * 2
