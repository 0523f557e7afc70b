"""What one stored message costs SQLite, by layout, and what a sync costs.

    .venv/bin/python tools/bench/bench_store_rows.py [--commits N] [--dir DIR]

Part 1 inserts 64-byte messages the way the proxy's writer does (one
multi-row INSERT per transaction, WAL mode, on a file in DIR) and prints the
writer's CPU per row and the WAL bytes per row for the proxy's schema (the
anchor: its messages table and both indexes, store_open.py) and for
variants of it: without the origin index, without both indexes, other page
sizes; each with one topic and with ten topics per commit (1 -> 1 and
10 -> 10), at 127 rows per commit (a window of 128) and at 500 (ten
windows). synchronous=OFF here: part 1 is the CPU and the bytes, not the
disk. Ratios are variant / proxy schema in the same run.

Part 2 times fdatasync (what SQLite calls for a WAL commit with
synchronous=FULL) and fsync after appending or overwriting 4 to 96 KB in
DIR: whether the bytes of a commit change its sync.

Single-threaded, no clients: nothing else's CPU to report.
"""
import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import table  # noqa: E402

TABLE = """CREATE TABLE messages(topic BLOB NOT NULL, seq INTEGER NOT NULL, msg_id BLOB NOT NULL,
    payload BLOB NOT NULL, ts REAL NOT NULL, origin BLOB, oseq INTEGER, PRIMARY KEY(topic, seq)) WITHOUT ROWID;"""
IDX_ID = "CREATE UNIQUE INDEX messages_id ON messages(topic, msg_id);"
IDX_ORIGIN = "CREATE INDEX messages_origin ON messages(topic, origin, oseq);"
LAYOUTS = (
    ("proxy schema (anchor)", TABLE + IDX_ID + IDX_ORIGIN, 4096),
    ("without the origin index", TABLE + IDX_ID, 4096),
    ("without both indexes", TABLE, 4096),
    ("page size 1 KB", TABLE + IDX_ID + IDX_ORIGIN, 1024),
    ("page size 8 KB", TABLE + IDX_ID + IDX_ORIGIN, 8192),
)


def insert_cost(d, schema, page, topics, rows, commits):
    """(CPU us per row, WAL bytes per row) of commits of rows messages
    spread over topics, in a fresh database in d."""
    path = os.path.join(d, "rows.sqlite3")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA page_size=%d" % page)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.executescript(schema)
    names = [os.urandom(16) for _ in range(topics)]
    origin = os.urandom(8)
    node = os.urandom(8)
    seqs = [1] * topics
    sql = "INSERT INTO messages VALUES " + ",".join(["(?,?,?,?,?,?,?)"] * rows)
    cpu = 0.0
    n = 0
    for _ in range(commits):
        params = []
        for i in range(rows):
            k = i * topics // rows   # each topic's rows side by side, as a batch holds them
            s = seqs[k]
            seqs[k] += 1
            params += (names[k], s, node + n.to_bytes(8, "big"), b"p" * 64, time.time(), origin, s)
            n += 1
        t = time.thread_time()
        db.execute("BEGIN IMMEDIATE")
        db.execute(sql, params)
        db.execute("COMMIT")
        cpu += time.thread_time() - t
    wal = os.path.getsize(path + "-wal")
    db.close()
    return 1e6 * cpu / n, wal / n


def sync_cost(d, size, overwrite, use_fsync, n=60):
    """(p50, p90) ms of a sync after writing size bytes at the end of a
    file (append) or over bytes already synced (overwrite)."""
    path = os.path.join(d, "sync.bin")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if overwrite:
            os.write(fd, b"\0" * (size * n))
            os.fsync(fd)
        buf = b"x" * size
        out = []
        for i in range(n):
            os.pwrite(fd, buf, i * size)
            t = time.perf_counter()
            (os.fsync if use_fsync else os.fdatasync)(fd)
            out.append(1e3 * (time.perf_counter() - t))
    finally:
        os.close(fd)
        os.unlink(path)
    out.sort()
    return statistics.median(out), out[int(len(out) * 0.9)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--commits", type=int, default=200, help="transactions per layout and shape")
    ap.add_argument("--dir", default=None, help="where the files go (default: a temporary directory)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        rows_out = []
        for topics, rows in ((1, 127), (10, 127), (10, 500)):
            commits = max(10, args.commits * 127 // rows)
            base = None
            for name, schema, page in LAYOUTS:
                us, wal = insert_cost(d, schema, page, topics, rows, commits)
                if base is None:
                    base = us
                rows_out.append(("%d topic%s, %d rows/commit" % (topics, "s" if topics > 1 else "", rows), name,
                                 "%.2f" % us, "%.0f" % wal, "%.2fx" % (us / base)))
        print(table.render("SQLite per stored message (WAL, synchronous=OFF: CPU and bytes only; %d commits of 127 "
                           "rows per shape)" % args.commits,
                           ("shape", "layout", "writer CPU us/row", "WAL bytes/row", "CPU / anchor"), rows_out))
        print()
        sync_out = []
        for size in (4096, 16384, 32768, 98304):
            for overwrite in (False, True):
                for use_fsync in (False, True):
                    p50, p90 = sync_cost(d, size, overwrite, use_fsync)
                    sync_out.append((size // 1024, "overwrite" if overwrite else "append",
                                     "fsync" if use_fsync else "fdatasync", "%.2f" % p50, "%.2f" % p90))
        print(table.render("Sync after a write (60 each, in %s)" % (args.dir or tempfile.gettempdir()),
                           ("KB written", "where", "call", "p50 ms", "p90 ms"), sync_out))


if __name__ == "__main__":
    main()
