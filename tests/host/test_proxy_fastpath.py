"""The proxy's host-side batching: UDP datagrams taken in batches per wake-up,
and WAL checkpoints moved off the commit path (with a bound on the WAL)."""
import asyncio
import os
import socket
import time

from upsycle.proxy import fastpath
from upsycle.proxy import store as S
from upsycle.proxy import store_tail, store_tx


class Recorder:
    def __init__(self):
        self.got = []
        self.errors = []

    def connection_made(self, tr):
        self.tr = tr

    def datagram_received(self, data, addr):
        self.got.append(data)

    def error_received(self, exc):
        self.errors.append(exc)


def test_udp_endpoint_drains_a_burst_in_one_wake_up_and_sends():
    async def main():
        proto = Recorder()
        ep, _ = await fastpath.open_udp(proto, ("127.0.0.1", 0), 1300)
        port = ep.get_extra_info("sockname")[1]
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.bind(("127.0.0.1", 0))
        try:
            for i in range(100):
                c.sendto(b"%d" % i, ("127.0.0.1", port))
            time.sleep(0.1)
            ep._read_many()      # one wake-up: a batch, not one datagram
            assert proto.got == [b"%d" % i for i in range(fastpath.UDP_BATCH_MAX)]
            ep._read_many()
            assert len(proto.got) == 100
            # oversized datagrams arrive cut at max_size + nothing else: the
            # server sees a datagram over its limit and counts a fault
            c.sendto(b"x" * 2000, ("127.0.0.1", port))
            time.sleep(0.05)
            ep._read_many()
            assert len(proto.got[-1]) == 1300
            ep.sendto(b"back", c.getsockname())
            c.settimeout(2)
            assert c.recvfrom(100)[0] == b"back"
            assert ep.dropped == 0
        finally:
            c.close()
            ep.close()
        ep.sendto(b"after close", ("127.0.0.1", 9))   # a no-op, not an error
        assert ep.is_closing()

    asyncio.run(main())


class BatchRecorder(Recorder):
    def __init__(self):
        Recorder.__init__(self)
        self.batches = []

    def datagrams_done(self):
        self.batches.append(len(self.got))


def test_udp_endpoint_says_when_a_batch_ends():
    """The proxy pumps and flushes the links a batch touched once, after it."""
    async def main():
        proto = BatchRecorder()
        ep, _ = await fastpath.open_udp(proto, ("127.0.0.1", 0), 1300)
        port = ep.get_extra_info("sockname")[1]
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for i in range(70):
                c.sendto(b"%d" % i, ("127.0.0.1", port))
            time.sleep(0.1)
            ep._read_many()
            ep._read_many()
            ep._read_many()    # nothing queued: an empty batch ends too
            assert proto.batches == [fastpath.UDP_BATCH_MAX, 70, 70]
        finally:
            c.close()
            ep.close()

    asyncio.run(main())


def _db_size(path):
    return os.path.getsize(os.path.join(path, S.DB_NAME))


def test_checkpoint_thread_moves_committed_pages_into_the_database(tmp_path, monkeypatch):
    monkeypatch.setattr(store_tx, "CHECKPOINT_BYTES", 64 * 1024)

    async def main():
        st = S.Store(str(tmp_path))
        st.open()
        done = asyncio.Event()
        st.start(asyncio.get_running_loop(), lambda batch, res: done.set())
        try:
            size0 = _db_size(tmp_path)
            topic = os.urandom(16)
            for i in range(300):   # ~100 KB: over the threshold set here, far below SQLite's own (4 MB)
                st.submit_publish(topic, b"m%d" % i, os.urandom(300), None)
            await asyncio.wait_for(done.wait(), 20)
            end = time.monotonic() + 10
            while _db_size(tmp_path) <= size0 and time.monotonic() < end:
                await asyncio.sleep(0.1)
            assert _db_size(tmp_path) > size0 + 50000, "the rows never reached the database file"
        finally:
            st.close()

    asyncio.run(main())


def test_the_writer_bounds_the_wal_when_no_checkpoint_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(store_tx, "WAL_BYTES_MAX", 256 * 1024)
    st = S.Store(str(tmp_path))
    st.open()     # no start(): no checkpoint thread; the writer alone
    try:
        topic = os.urandom(16)
        size0 = _db_size(tmp_path)
        for b in range(20):
            st._commit([("pub", topic, b"m%d-%d" % (b, i), os.urandom(500), None, None) for i in range(100)], {}, False)
        wal = os.path.getsize(os.path.join(str(tmp_path), S.DB_NAME + "-wal"))
        # 1 MB written: the WAL was checkpointed (and reused) along the way
        assert _db_size(tmp_path) > size0 + 500000
        assert wal < 1024 * 1024, wal
    finally:
        st.close()


def test_multi_row_statements_keep_idempotency_and_cursor_rules(tmp_path, monkeypatch):
    monkeypatch.setattr(store_tx, "ROWS_PER_STATEMENT", 3)   # several statements per batch, and partial ones
    st = S.Store(str(tmp_path))
    st.open()
    try:
        a, b = b"A" * 16, b"B" * 16
        n1, n2 = b"n1", b"n2"
        res = st._commit([("pub", a, b"m1", b"x", None, n1), ("pub", a, b"m2", b"yy", None, n1),
                          ("sub", n1, a, None, None, n1), ("pub", b, b"m1", b"z", None, n2),
                          ("pub", a, b"m1", b"x", None, n1),      # a retransmission in the same batch
                          ("pub", a, b"m3", b"w", None, n1), ("sub", n2, b, None, None, n2)], {}, False)
        assert res["error"] is None
        assert res["items"] == [("ok", 1), ("ok", 2), ("ok", 0), ("ok", 1), ("dup", None), ("ok", 3), ("ok", 0)]
        assert res["topics"] == {a: (4, 1, 4), b: (2, 1, 1)}
        res = st._commit([("pub", a, b"m2", b"yy", None, n1), ("pub", a, b"m4", b"v", None, n1)],
                         {(n1, a): 2, (n2, b): 1}, False)   # a retransmission across commits
        assert res["items"] == [("dup", None), ("ok", 4)]
        res = st._commit([], {(n1, a): 1}, False)           # a cursor never moves back
        rows = dict(((bytes(n), bytes(t)), c) for n, t, c in st._db.execute("SELECT node, topic, cursor FROM subs"))
        assert rows == {(n1, a): 2, (n2, b): 1}
        seqs = [r[0] for r in st._db.execute("SELECT seq FROM messages WHERE topic=? ORDER BY seq", (a,))]
        assert seqs == [1, 2, 3, 4]      # contiguous: no sequence lost to the failed statement
        assert [r[0] for r in st._db.execute("SELECT next_seq FROM topics ORDER BY topic")] == [5, 2]
        creators = dict((bytes(t), bytes(c)) for t, c in st._db.execute("SELECT topic, creator FROM topics"))
        assert creators == {a: n1, b: n2}   # who created a topic survives the fallback to one by one
    finally:
        st.close()


def test_live_tail_answers_fetch_like_the_database_and_stays_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(store_tail, "TAIL_PER_TOPIC", 5)
    monkeypatch.setattr(store_tail, "TAIL_BYTES_MAX", 3000)

    async def main():
        st = S.Store(str(tmp_path))
        st.open()
        commits = []
        st.start(asyncio.get_running_loop(), lambda batch, res: commits.append(res))
        try:
            topics = [os.urandom(16) for _ in range(4)]
            for rnd in range(4):
                for t in topics:
                    for i in range(3):
                        st.submit_publish(t, b"%d-%d" % (rnd, i), os.urandom(100 + i), None)
                n = len(commits)
                while len(commits) == n:
                    await asyncio.sleep(0.01)
            assert st._tail.bytes <= 3000
            # counted as held: each topic's and entry's overhead besides payloads and ids
            assert sum(store_tail._tail_cost(tl) for tl in st._tail._tails.values()) == st._tail.bytes
            assert any(st._tail._tails.values()), "nothing served from memory"
            for t in topics:
                last = st.topics[t].last_seq
                for after in range(0, last + 1):
                    for limit in (1, 2, 128):
                        sql = st._rd.execute("SELECT seq, msg_id, payload FROM messages WHERE topic=? AND seq>? "
                                             "ORDER BY seq LIMIT ?", (t, after, limit)).fetchall()
                        assert [tuple(map(lambda v: bytes(v) if isinstance(v, (bytes, memoryview)) else v, r))
                                for r in st.fetch(t, after, limit)] == [tuple(r) for r in sql]
        finally:
            st.close()

    asyncio.run(main())


def test_the_tail_lets_go_of_what_retention_deletes_and_of_forgotten_topics(tmp_path, monkeypatch):
    monkeypatch.setattr(S, "AGE_SWEEP_S", 0.05)
    now = [1000.0]

    async def until(cond):
        end = time.monotonic() + 10
        while not cond() and time.monotonic() < end:
            await asyncio.sleep(0.02)
        return cond()

    async def main():
        st = S.Store(str(tmp_path), S.Retention(max_count=3, max_age_s=60, max_bytes=0), clock=lambda: now[0])
        st.open()
        st.start(asyncio.get_running_loop(), lambda batch, res: None)
        try:
            t = os.urandom(16)
            for i in range(5):
                st.submit_publish(t, b"m%d" % i, b"p%d" % i, None, b"node")
            assert await until(lambda: t in st.topics and st.topics[t].last_seq == 5)
            # retention kept 3..5: memory holds no message the database lost
            assert [r[0] for r in st._tail._tails[t]] == [3, 4, 5]
            assert st._tail.bytes == store_tail._tail_cost(st._tail._tails[t])
            assert [r[0] for r in st.fetch(t, 0, 10)] == [3, 4, 5]
            now[0] += 120   # all past their age: emptied and forgotten in one sweep
            assert await until(lambda: t not in st.topics)
            assert t not in st._tail._tails and st._tail.bytes == 0
            assert st.fetch(t, 0, 10) == []
        finally:
            st.close()

    asyncio.run(main())


def test_a_quota_puts_the_checkpoint_thresholds_inside_the_wal_share(tmp_path):
    st = S.Store(str(tmp_path / "free"))
    st.open()
    try:
        assert (st.ckpt_bytes, st.wal_cap) == (store_tx.CHECKPOINT_BYTES, store_tx.WAL_BYTES_MAX)
        assert st._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0   # never inside a commit
        assert st._db.execute("PRAGMA journal_size_limit").fetchone()[0] == st.wal_cap
    finally:
        st.close()
    st = S.Store(str(tmp_path / "quota"), max_db_bytes=1024 * 1024)
    st.open()
    try:
        assert st.wal_budget == 256 * 1024
        assert (st.ckpt_bytes, st.wal_cap) == (st.wal_budget // 4, st.wal_budget // 2)
        assert st._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        assert st._db.execute("PRAGMA journal_size_limit").fetchone()[0] == st.wal_cap
    finally:
        st.close()


def test_host_session_makes_the_shared_sessions_bytes():
    """HostProxySession's own acked and deliver: the same output and state
    as the shared ProxySession's."""
    from shared_protocol.session.proxy import ProxySession
    from shared_protocol.session import messages as W
    from shared_protocol.wire import envelope as E
    topic, proxy_id, node = os.urandom(16), os.urandom(16), os.urandom(16)
    outs = []
    for cls in (ProxySession, fastpath.HostProxySession):
        ps = cls(proxy_id, False, 1000)
        ps.receive(E.REGISTRY.encode("s_hello_t", node, 30000, 8, [[topic, 5 << 32]]), 1000)
        ps.accept()
        for mid in (b"", b"m" * 8, b"m" * 23, b"m" * 24, b"m" * 32):
            ps.acked(mid)
        ps.receive(E.REGISTRY.encode("s_pub_a", 0, 7, b"x"), 1001)   # a short publish: s_ack_a
        ev = [e for e in ps.events() if e[0] == "publish"]
        ps.acked(ev[0][2])
        for seq in (1, 2, 300):
            ps.deliver(topic, seq, b"id%d" % seq, b"p" * seq, 1002)
        outs.append((ps.data_to_send(), ps.in_flight(), ps.next_deadline(), ps.room()))
    assert outs[0] == outs[1]
    assert W.decode(outs[1][0][2]) == ("s_puback", [b"m" * 8])


def test_host_session_runs_make_what_one_by_one_makes():
    """deliver_run and acked_many (a commit's deliveries of one topic, its
    acknowledgements of one link): the output and state of deliver and
    acked called for each."""
    topic, proxy_id, node = os.urandom(16), os.urandom(16), os.urandom(16)
    rows = [(seq, os.urandom(16), os.urandom(seq % 200)) for seq in (5, 6, 7, 300, 70000)]
    ids = [os.urandom(n) for n in (0, 8, 16, 23, 24, 32)]
    outs = []
    for runs in (False, True):
        ps = fastpath.HostProxySession(proxy_id, False, 1000)
        ps.receive(W_hello(node), 1000)
        ps.accept()
        if runs:
            ps.acked_many(ids)
            ps.deliver_run(topic, rows, 1002)
        else:
            for m in ids:
                ps.acked(m)
            for r in rows:
                ps.deliver(topic, r[0], r[1], r[2], 1002)
        ps.receive(W_dack(topic, 6), 1003)
        outs.append((ps.data_to_send(), ps.in_flight(), ps.next_deadline(), ps.room(), ps.events()))
    assert outs[0] == outs[1]
    assert outs[0][1] == 3


def W_hello(node):
    from shared_protocol.wire import envelope as E
    return E.REGISTRY.encode("s_hello", node, 30000, 8)


def W_dack(topic, seq):
    from shared_protocol.session import messages as W
    return W.encode_dack(topic, seq)
