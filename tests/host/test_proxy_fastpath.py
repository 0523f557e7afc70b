"""The proxy's host-side batching: UDP datagrams taken in batches per wake-up,
and WAL checkpoints moved off the commit path (with a bound on the WAL)."""
import asyncio
import os
import socket
import time

from upsycle.proxy import fastpath
from upsycle.proxy import store as S


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


def _db_size(path):
    return os.path.getsize(os.path.join(path, S.DB_NAME))


def test_checkpoint_thread_moves_committed_pages_into_the_database(tmp_path, monkeypatch):
    monkeypatch.setattr(S, "CHECKPOINT_BYTES", 64 * 1024)

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
    monkeypatch.setattr(S, "WAL_BYTES_MAX", 256 * 1024)
    st = S.Store(str(tmp_path))
    st.open()     # no start(): no checkpoint thread; the writer alone
    try:
        topic = os.urandom(16)
        size0 = _db_size(tmp_path)
        for b in range(20):
            st._commit([("pub", topic, b"m%d-%d" % (b, i), os.urandom(500), None) for i in range(100)], {}, False)
        wal = os.path.getsize(os.path.join(str(tmp_path), S.DB_NAME + "-wal"))
        # 1 MB written: the WAL was checkpointed (and reused) along the way
        assert _db_size(tmp_path) > size0 + 500000
        assert wal < 1024 * 1024, wal
    finally:
        st.close()


def test_multi_row_statements_keep_idempotency_and_cursor_rules(tmp_path, monkeypatch):
    monkeypatch.setattr(S, "ROWS_PER_STATEMENT", 3)   # several statements per batch, and partial ones
    st = S.Store(str(tmp_path))
    st.open()
    try:
        a, b = b"A" * 16, b"B" * 16
        n1, n2 = b"n1", b"n2"
        res = st._commit([("pub", a, b"m1", b"x", None), ("pub", a, b"m2", b"yy", None),
                          ("sub", n1, a, None, None), ("pub", b, b"m1", b"z", None),
                          ("pub", a, b"m1", b"x", None),      # a retransmission in the same batch
                          ("pub", a, b"m3", b"w", None), ("sub", n2, b, None, None)], {}, False)
        assert res["error"] is None
        assert res["items"] == [("ok", 1), ("ok", 2), ("ok", 0), ("ok", 1), ("dup", None), ("ok", 3), ("ok", 0)]
        assert res["topics"] == {a: (4, 1, 4), b: (2, 1, 1)}
        res = st._commit([("pub", a, b"m2", b"yy", None), ("pub", a, b"m4", b"v", None)],
                         {(n1, a): 2, (n2, b): 1}, False)   # a retransmission across commits
        assert res["items"] == [("dup", None), ("ok", 4)]
        res = st._commit([], {(n1, a): 1}, False)           # a cursor never moves back
        rows = dict(((bytes(n), bytes(t)), c) for n, t, c in st._db.execute("SELECT node, topic, cursor FROM subs"))
        assert rows == {(n1, a): 2, (n2, b): 1}
        seqs = [r[0] for r in st._db.execute("SELECT seq FROM messages WHERE topic=? ORDER BY seq", (a,))]
        assert seqs == [1, 2, 3, 4]      # contiguous: no sequence lost to the failed statement
        assert [r[0] for r in st._db.execute("SELECT next_seq FROM topics ORDER BY topic")] == [5, 2]
    finally:
        st.close()


def test_live_tail_answers_fetch_like_the_database_and_stays_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(S, "TAIL_PER_TOPIC", 5)
    monkeypatch.setattr(S, "TAIL_BYTES_MAX", 3000)

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
            assert st._tail_bytes <= 3000
            assert sum(len(r[2]) for tl in st._tail.values() for r in tl) == st._tail_bytes
            assert any(st._tail.values()), "nothing served from memory"
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
