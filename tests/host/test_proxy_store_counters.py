"""The per-topic counters the store keeps in its topics table (lo: the first
stored sequence, nbytes: payload bytes stored), which start-up reads instead
of scanning every message (host/upsycle/proxy/store_open.py count_topics):
a data directory from before them opens with them right, one an older proxy
wrote to since is recounted, and they stay right across SIGKILLs of a real
process in the middle of its transactions (real SQLite throughout)."""
import os
import random
import signal
import sqlite3
import subprocess
import sys

from proxy_rig import ENV, ROOT
from upsycle.proxy.store import DB_NAME, Retention, Store

TOPICS = [bytes([k]) * 16 for k in range(1, 6)]
NODE = b"node-counters"


def counters(data):
    """{topic: (next_seq, lo, nbytes)} as the topics table holds them."""
    db = sqlite3.connect(os.path.join(str(data), DB_NAME))
    try:
        return dict((bytes(t), (n, lo, b)) for t, n, lo, b in db.execute(
            "SELECT topic, next_seq, lo, nbytes FROM topics"))
    finally:
        db.close()


def recount(data):
    """The same, computed from the messages themselves."""
    db = sqlite3.connect(os.path.join(str(data), DB_NAME))
    try:
        out = {}
        for t, n in db.execute("SELECT topic, next_seq FROM topics"):
            lo, b = db.execute("SELECT MIN(seq), COALESCE(SUM(length(payload)), 0) FROM messages WHERE topic=?",
                               (t,)).fetchone()
            out[bytes(t)] = (n, n if lo is None else lo, b)
        return out
    finally:
        db.close()


def views(store):
    return dict((t, (v.last_seq + 1, v.first_seq, v.bytes)) for t, v in store.topics.items())


def fill(data, retention, rounds=30, seed=1):
    """Publishes of varied sizes over TOPICS through the writer's own
    transactions, retention deleting as they go; a subscriber on an extra
    topic that never gets a message."""
    rng = random.Random(seed)
    st = Store(str(data), retention)
    st.open()
    try:
        st._commit([("sub", NODE, b"\x09" * 16, None, None, NODE)], {}, False)
        k = 0
        for _ in range(rounds):
            batch = []
            for _ in range(rng.randrange(1, 20)):
                k += 1
                batch.append(("pub", rng.choice(TOPICS), b"id-%d" % k, os.urandom(rng.randrange(1, 300)), None, None))
            st._commit(batch, {}, False)
        # (the writer's own state; the event loop's views follow it in _finish)
        return dict((t, tuple(w)) for t, w in st._w_topics.items())
    finally:
        st.close()


def test_counters_are_kept_in_the_same_transactions_as_the_messages(tmp_path):
    seen = fill(tmp_path, Retention(max_count=25, max_age_s=0, max_bytes=4000))
    c = counters(tmp_path)
    assert c == recount(tmp_path) == seen
    # retention did delete (lo moved) and a topic is empty (lo == next_seq)
    assert any(lo > 1 for _, lo, _ in c.values())
    assert c[b"\x09" * 16][1] == c[b"\x09" * 16][0]


def _make_old(data):
    """The data directory as a proxy from before the counters left it: no
    lo/nbytes columns, no 'counted' stamp."""
    db = sqlite3.connect(os.path.join(str(data), DB_NAME))
    db.execute("ALTER TABLE topics DROP COLUMN lo")
    db.execute("ALTER TABLE topics DROP COLUMN nbytes")
    db.execute("DELETE FROM meta WHERE key='counted'")
    db.commit()
    db.close()


def test_a_data_directory_from_before_the_counters_opens_with_them_right(tmp_path):
    seen = fill(tmp_path, Retention(max_count=20, max_age_s=0, max_bytes=3000))
    _make_old(tmp_path)
    assert "lo" not in [r[1] for r in sqlite3.connect(str(tmp_path / DB_NAME)).execute("PRAGMA table_info(topics)")]
    st = Store(str(tmp_path))
    st.open()
    try:
        assert views(st) == seen
        assert counters(tmp_path) == recount(tmp_path) == seen
        # and it goes on from there: more messages, the counters follow
        st._commit([("pub", TOPICS[0], b"after", b"z" * 77, None, None)], {}, False)
        assert counters(tmp_path) == recount(tmp_path)
        assert counters(tmp_path)[TOPICS[0]][2] == seen[TOPICS[0]][2] + 77
    finally:
        st.close()


def test_an_older_proxy_that_wrote_since_makes_the_next_start_recount(tmp_path):
    fill(tmp_path, Retention(max_count=0, max_age_s=0, max_bytes=0))
    # An older proxy starts (it stamps 'opened', not 'counted'), stores a
    # message and deletes two without touching the counters.
    db = sqlite3.connect(str(tmp_path / DB_NAME))
    t = TOPICS[1]
    nxt, lo, _ = counters(tmp_path)[t]
    db.execute("INSERT OR REPLACE INTO meta VALUES('opened', 12345.0)")
    db.execute("INSERT INTO messages VALUES(?,?,?,?,?,NULL,NULL)", (t, nxt, b"old-proxy", b"q" * 50, 1.0))
    db.execute("UPDATE topics SET next_seq=? WHERE topic=?", (nxt + 1, t))
    db.execute("DELETE FROM messages WHERE topic=? AND seq<?", (t, lo + 2))
    db.commit()
    db.close()
    assert counters(tmp_path) != recount(tmp_path)
    st = Store(str(tmp_path))
    st.open()
    try:
        right = recount(tmp_path)
        assert counters(tmp_path) == right and views(st) == right
        assert right[t][1] == lo + 2
    finally:
        st.close()
    # A start of this version after its own: no recount needed, and none
    # made (counters left wrong on purpose stay as they are).
    db = sqlite3.connect(str(tmp_path / DB_NAME))
    db.execute("UPDATE topics SET nbytes=nbytes+1 WHERE topic=?", (t,))
    db.commit()
    db.close()
    st = Store(str(tmp_path))
    st.open()
    try:
        assert st.topics[t].bytes == right[t][2] + 1
    finally:
        st.close()


# A writer in a process of its own: publishes (varied sizes, several topics,
# some retransmitted), retention by count, bytes and age (its clock runs 1 s
# per transaction), the age sweep every third transaction; it prints the
# number of each transaction once committed.
WRITER = r"""
import os, random, sys
from upsycle.proxy.store import Retention, Store
data, start = sys.argv[1], int(sys.argv[2])
topics = [bytes([k]) * 16 for k in range(1, 6)]
clock = [1000.0 + start]
st = Store(data, Retention(max_count=60, max_age_s=40, max_bytes=9000), clock=lambda: clock[0])
st.open()
rng = random.Random(start)
i = start
while True:
    i += 1
    clock[0] += 1.0
    batch = [("pub", rng.choice(topics), b"m%d" % rng.randrange(i * 8), os.urandom(rng.randrange(1, 400)),
              None, None) for _ in range(rng.randrange(1, 40))]
    st._commit(batch, {}, i % 3 == 0)
    print(i, flush=True)
"""


def test_counters_stay_right_across_sigkill_mid_transaction(tmp_path):
    data = str(tmp_path / "d")
    rng = random.Random(7)
    start = 0
    deleted = False
    for kill in range(8):
        p = subprocess.Popen([sys.executable, "-c", WRITER, data, str(start)], env=ENV, cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            last = start
            for _ in range(rng.randrange(5, 120)):
                line = p.stdout.readline()
                assert line, p.stderr.read().decode()[-2000:]
                last = int(line)
        finally:
            p.send_signal(signal.SIGKILL)
            p.wait(10)
            p.stdout.close()
            p.stderr.close()
        # What the killed process committed, before any Store opens it.
        c = counters(data)
        assert c == recount(data), "after kill %d" % kill
        deleted = deleted or any(lo > 1 for _, lo, _ in c.values())
        st = Store(data)
        st.open()
        try:
            assert views(st) == c
        finally:
            st.close()
        start = last + 1000   # the next process numbers its messages apart
    assert deleted, "retention never deleted: the test did not test it"


def test_the_age_sweep_spreads_over_bounded_transactions_and_skips_young_topics(tmp_path, monkeypatch):
    from upsycle.proxy import store_tx
    monkeypatch.setattr(store_tx, "SWEEP_WORK_MAX", 50)
    clock = [1000.0]
    st = Store(str(tmp_path), Retention(max_count=6, max_age_s=100, max_bytes=0), clock=lambda: clock[0])
    st.open()
    scans = []
    st._db.set_trace_callback(lambda sql: scans.append(sql) if sql.startswith("SELECT seq, ts") else None)
    try:
        topics = [b"%016d" % k for k in range(40)]
        for t in range(10):   # 40 topics x 10 messages at t = 1000..1009; count retention keeps 6
            clock[0] = 1000.0 + t
            st._commit([("pub", tp, b"m%d" % t, b"x" * (t + 1), None, None) for tp in topics], {}, False)
        # Nothing expired yet: each topic looked at once (count retention
        # moved their starts, so their oldest times were not known)...
        clock[0] = 1050.0
        res = st._commit([], {}, True)
        assert not res["sweep_more"] and len(scans) == 40 and not res["drops"]
        # ... and not again while they are young.
        del scans[:]
        assert not st._commit([], {}, True)["drops"] and scans == []
        # Past the age of 4 of the 6 kept: 40 x (1 + 4) of work in parts of 50.
        clock[0] = 1108.0
        parts = []
        while True:
            res = st._commit([], {}, True)
            parts.append(sum(res["drops"].values()))
            if not res["sweep_more"]:
                break
        assert len(parts) == 4 and sum(parts) == 40 * 4 and max(parts) <= 50
        assert counters(tmp_path) == recount(tmp_path)
        assert all(st._w_topics[tp][1:] == [9, 19] for tp in topics)   # seqs 9, 10 left: 9 + 10 bytes
        # A topic that empties (and is forgotten: no subscriber) and fills
        # again starts its age from then.
        clock[0] = 1300.0
        while st._commit([], {}, True)["sweep_more"]:
            pass
        assert all(tp not in st._w_topics for tp in topics) and st._w_oldest == {}
        st._commit([("pub", topics[0], b"late", b"y", None, None)], {}, False)
        del scans[:]
        clock[0] = 1399.0
        st._commit([], {}, True)
        assert scans == [] and st._w_topics[topics[0]][1] == 11
        clock[0] = 1401.0
        res = st._commit([], {}, True)
        assert len(scans) == 1 and res["drops"] == {"retention_age": 1} and topics[0] not in st._w_topics
        assert counters(tmp_path) == recount(tmp_path)
    finally:
        st.close()
