"""The proxy's durable store: SQLite in WAL mode with group commit.

One writer thread owns the write connection. Publishes, subscription changes
and cursor moves queue up while a transaction is being synced; the next
transaction takes all of them at once, so many messages share one fsync
(group commit). ``synchronous=FULL`` in WAL mode syncs the WAL on every
commit (SQLite docs, "PRAGMA synchronous"): when a publish's callback says
"stored", the message survives a crash or power cut, and only then does the
proxy send the acknowledgement.

Layout (all ids are opaque blobs; payloads are never opened):
  topics(topic, next_seq)                   sequence numbers are never reused
  messages(topic, seq, msg_id, payload, ts) unique (topic, msg_id): idempotency
  subs(node, topic, cursor)                 a subscriber's consumed position
  drops(cause, count)                       retention drops, for status
  meta(key, value)                          the proxy id

Retention per topic (count, age, bytes) deletes the oldest messages; the
rows of a topic are always the contiguous range first_seq..last_seq, which is
what lets the proxy tell a subscriber exactly how many it missed.

The event loop reads (``fetch``) on its own connection: WAL readers never
block the writer and see every committed transaction.
"""
import logging
import os
import sqlite3
import threading
import time

from shared_protocol.session import messages as W

log = logging.getLogger("upsycle.proxy.store")

DB_NAME = "proxy.sqlite3"
# Rows per transaction: a bound on the time one commit holds the writer and on
# the memory of one batch; under load a batch this size still shares one sync.
BATCH_MAX = 4096
# Queued writes (bytes of payload) before publishes are refused with
# R_OVERLOAD: bounds memory if the disk stalls while nodes keep sending.
PENDING_BYTES_MAX = 16 * 1024 * 1024
# How often the writer looks for messages past their age limit.
AGE_SWEEP_S = 5.0
# How long dirty cursors may wait for a transaction to ride in (they are not
# urgent: a lost cursor move means a redelivery, which clients deduplicate).
CURSOR_FLUSH_S = 0.2

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value BLOB);
CREATE TABLE IF NOT EXISTS topics(topic BLOB PRIMARY KEY, next_seq INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages(
    topic BLOB NOT NULL, seq INTEGER NOT NULL, msg_id BLOB NOT NULL,
    payload BLOB NOT NULL, ts REAL NOT NULL, PRIMARY KEY(topic, seq)) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS messages_id ON messages(topic, msg_id);
CREATE TABLE IF NOT EXISTS subs(node BLOB NOT NULL, topic BLOB NOT NULL, cursor INTEGER NOT NULL,
    PRIMARY KEY(node, topic)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS drops(cause TEXT PRIMARY KEY, count INTEGER NOT NULL);
"""


class StorageError(Exception):
    """The data directory cannot be used (with a code from session_wire R_*)."""

    def __init__(self, code, message):
        super().__init__("%s: %s" % (code, message))
        self.code = code
        self.message = message


def classify(exc):
    """Map an sqlite3/OS error to one of our reject codes."""
    text = str(exc).lower()
    if "full" in text or isinstance(exc, sqlite3.OperationalError) and getattr(exc, "sqlite_errorcode", 0) == 13:
        return W.R_STORAGE_FULL
    if "readonly" in text or "read-only" in text or "read only" in text or "permission" in text:
        return W.R_STORAGE_READONLY
    return W.R_STORAGE


class Retention:
    """Per-topic limits; 0 means no limit of that kind."""

    def __init__(self, max_count=10000, max_age_s=7 * 86400, max_bytes=16 * 1024 * 1024):
        self.max_count = max_count
        self.max_age_s = max_age_s
        self.max_bytes = max_bytes


class TopicView:
    """What the event loop knows of a topic (updated after each commit)."""

    __slots__ = ("first_seq", "last_seq", "bytes", "cause")

    def __init__(self, first_seq, last_seq, nbytes):
        self.first_seq = first_seq   # oldest stored sequence (last_seq + 1 if empty)
        self.last_seq = last_seq     # newest sequence ever stored (0 if none)
        self.bytes = nbytes
        self.cause = W.MISSED_RETENTION  # the last retention cause, told to subscribers

    def count(self):
        return self.last_seq - self.first_seq + 1


class Store:
    def __init__(self, data_dir, retention=None, max_topics=10000, max_db_bytes=0, clock=time.time):
        self.data_dir = data_dir
        self.path = os.path.join(data_dir, DB_NAME)
        self.retention = retention or Retention()
        self.max_topics = max_topics
        self.max_db_bytes = max_db_bytes
        self.clock = clock
        self.topics = {}       # topic -> TopicView (event-loop side)
        self.subs = {}         # (node, topic) -> durable cursor as last known
        self.drops = {}        # cause -> count (retention drops, persisted)
        self.proxy_id = None
        self._w_topics = {}    # writer side: topic -> [next_seq, first_seq, bytes]
        self._cv = threading.Condition()
        self._pending = []
        self._staged = []
        self._pending_bytes = 0
        self._cursors = {}
        self._closing = False
        self._causes = {}
        self._thread = None
        self._loop = None
        self._on_commit = None
        self._db = None
        self._rd = None
        self.commits = 0

    # -- start-up --------------------------------------------------------

    def open(self):
        """Open or create the database; raise StorageError with a clear cause."""
        try:
            os.makedirs(self.data_dir, exist_ok=True)
        except OSError as e:
            raise StorageError(classify(e), "cannot create data directory %s: %s" % (self.data_dir, e))
        if not os.access(self.data_dir, os.W_OK):
            raise StorageError(W.R_STORAGE_READONLY, "data directory %s is not writable" % self.data_dir)
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            if self.max_db_bytes:
                page = db.execute("PRAGMA page_size").fetchone()[0]
                db.execute("PRAGMA max_page_count=%d" % max(16, self.max_db_bytes // page))
            db.executescript(SCHEMA)
            row = db.execute("SELECT value FROM meta WHERE key='proxy_id'").fetchone()
            if row is None:
                self.proxy_id = os.urandom(16)
                db.execute("INSERT INTO meta VALUES('proxy_id', ?)", (self.proxy_id,))
            else:
                self.proxy_id = bytes(row[0])
            # A write that is synced proves the directory works now, not later.
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT OR REPLACE INTO meta VALUES('opened', ?)", (self.clock(),))
            db.execute("COMMIT")
        except sqlite3.Error as e:
            raise StorageError(classify(e), "cannot use the database %s: %s" % (self.path, e))
        self._db = db
        self._load()
        self._rd = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._rd.execute("PRAGMA query_only=1")

    def _load(self):
        db = self._db
        for topic, next_seq in db.execute("SELECT topic, next_seq FROM topics"):
            topic = bytes(topic)
            self._w_topics[topic] = [next_seq, next_seq, 0]
        for topic, lo, nbytes in db.execute(
                "SELECT topic, MIN(seq), SUM(length(payload)) FROM messages GROUP BY topic"):
            w = self._w_topics[bytes(topic)]
            w[1] = lo
            w[2] = nbytes or 0
        for topic in self._w_topics:
            w = self._w_topics[topic]
            self.topics[topic] = TopicView(w[1], w[0] - 1, w[2])
        for node, topic, cursor in db.execute("SELECT node, topic, cursor FROM subs"):
            self.subs[(bytes(node), bytes(topic))] = cursor
        for cause, count in db.execute("SELECT cause, count FROM drops"):
            self.drops[cause] = count

    def start(self, loop, on_commit):
        """Start the writer; on_commit(results) runs in the loop after each commit."""
        self._loop = loop
        self._on_commit = on_commit
        self._thread = threading.Thread(target=self._run, name="upsycle-store", daemon=True)
        self._thread.start()

    def close(self):
        if self._staged:
            self._hand_over()
        with self._cv:
            self._closing = True
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for c in (self._rd, self._db):
            if c is not None:
                try:
                    c.close()
                except sqlite3.Error:
                    pass

    # -- requests from the event loop ---------------------------------------

    def pending_bytes(self):
        return self._pending_bytes

    def submit_publish(self, topic, msg_id, payload, token):
        """Queue a publish. Returns None, or a reject code if refused now."""
        if self._pending_bytes + len(payload) > PENDING_BYTES_MAX:
            return W.R_OVERLOAD
        if topic not in self.topics and len(self.topics) >= self.max_topics:
            return W.R_TOO_MANY_TOPICS
        self._stage(("pub", topic, msg_id, payload, token))
        self._pending_bytes += len(payload)
        return None

    def submit_subscribe(self, node, topic, token):
        self._stage(("sub", node, topic, None, token))

    def submit_unsubscribe(self, node, topic, token):
        self._stage(("unsub", node, topic, None, token))

    def _stage(self, item):
        # Requests of one event-loop iteration go to the writer together (one
        # lock, one wake-up), so a burst of frames shares a transaction.
        self._staged.append(item)
        if len(self._staged) == 1:
            self._loop.call_soon(self._hand_over)

    def _hand_over(self):
        staged = self._staged
        self._staged = []
        with self._cv:
            self._pending.extend(staged)
            self._cv.notify()

    def move_cursor(self, node, topic, seq):
        """Record a consumed position; written with the next transaction."""
        with self._cv:
            old = self._cursors.get((node, topic), -1)
            if seq > old:
                self._cursors[(node, topic)] = seq

    def fetch(self, topic, after, limit):
        """Up to limit stored messages of topic with seq > after, in order."""
        return self._rd.execute(
            "SELECT seq, msg_id, payload FROM messages WHERE topic=? AND seq>? ORDER BY seq LIMIT ?",
            (topic, after, limit)).fetchall()

    def stored_totals(self):
        n = b = 0
        for t in self.topics.values():
            n += max(0, t.count())
            b += t.bytes
        return n, b

    # -- the writer thread -------------------------------------------------

    def _run(self):
        next_sweep = time.monotonic() + AGE_SWEEP_S
        while True:
            with self._cv:
                while not self._pending and not self._closing:
                    timeout = CURSOR_FLUSH_S if self._cursors else max(0.0, next_sweep - time.monotonic())
                    if not self._cv.wait(timeout=timeout):
                        break
                batch = self._pending[:BATCH_MAX]
                del self._pending[:BATCH_MAX]
                cursors = self._cursors
                self._cursors = {}
                closing = self._closing and not self._pending
            sweep = time.monotonic() >= next_sweep
            if sweep:
                next_sweep = time.monotonic() + AGE_SWEEP_S
            if batch or cursors or sweep:
                try:
                    results = self._commit(batch, cursors, sweep)
                except Exception as e:  # a bug must refuse publishes, not hang them
                    log.exception("event=store_failure")
                    results = {"error": (W.R_STORAGE, repr(e)), "items": None}
                self._loop.call_soon_threadsafe(self._finish, batch, results)
            if closing:
                return

    def _commit(self, batch, cursors, sweep):
        """One transaction for the whole batch. Returns the results."""
        db = self._db
        now = self.clock()
        wt = {}          # writer topic states changed in this transaction
        out = []         # per batch item: (status, value)
        stored = []      # (topic, seq) of new rows
        subs = []        # (node, topic, cursor or None)
        drops = {}
        self._causes = {}
        try:
            db.execute("BEGIN IMMEDIATE")
            # Cursors first, so a re-subscribe in this batch reads the newest.
            for (node, topic), seq in cursors.items():
                db.execute("UPDATE subs SET cursor=? WHERE node=? AND topic=? AND cursor<?",
                           (seq, node, topic, seq))
            for kind, a, b, payload, _tok in batch:
                if kind == "pub":
                    st = wt.get(a)
                    if st is None:
                        st = self._w_topics.get(a)
                        st = list(st) if st is not None else [1, 1, 0]
                        wt[a] = st
                    seq = st[0]
                    cur = db.execute("INSERT OR IGNORE INTO messages VALUES(?,?,?,?,?)",
                                     (a, seq, b, payload, now))
                    if cur.rowcount == 1:
                        st[0] = seq + 1
                        st[2] += len(payload)
                        stored.append((a, seq))
                        out.append(("ok", seq))
                    else:
                        out.append(("dup", None))
                elif kind == "sub":
                    row = db.execute("SELECT cursor FROM subs WHERE node=? AND topic=?", (a, b)).fetchone()
                    if row is None:
                        # A new subscriber starts at the oldest message kept:
                        # retention decides how much history a node gets.
                        st = wt.get(b) or self._w_topics.get(b)
                        cursor = (st[1] - 1) if st is not None else 0
                        db.execute("INSERT INTO subs VALUES(?,?,?)", (a, b, cursor))
                    else:
                        cursor = row[0]
                    subs.append((a, b, cursor))
                    out.append(("ok", cursor))
                else:  # unsub
                    db.execute("DELETE FROM subs WHERE node=? AND topic=?", (a, b))
                    subs.append((a, b, None))
                    out.append(("ok", None))
            for topic, st in wt.items():
                db.execute("INSERT OR REPLACE INTO topics VALUES(?,?)", (topic, st[0]))
                self._retain(db, topic, st, drops)
            if sweep and self.retention.max_age_s:
                self._sweep_age(db, now, wt, drops)
            for cause, n in drops.items():
                db.execute("INSERT INTO drops VALUES(?,?) ON CONFLICT(cause) DO UPDATE SET count=count+?",
                           (cause, n, n))
            db.execute("COMMIT")
        except sqlite3.Error as e:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            code = classify(e)
            return {"error": (code, str(e)), "items": None}
        self.commits += 1
        for topic, st in wt.items():
            self._w_topics[topic] = st
        return {"error": None, "items": out, "topics": dict((t, tuple(s)) for t, s in wt.items()),
                "subs": subs, "drops": drops, "causes": self._causes, "stored": stored, "cursors": cursors}

    def _retain(self, db, topic, st, drops):
        r = self.retention
        last = st[0] - 1
        if r.max_count and last - st[1] + 1 > r.max_count:
            new_first = last - r.max_count + 1
            self._delete_upto(db, topic, st, new_first - 1, "retention_count", drops)
        if r.max_bytes and st[2] > r.max_bytes:
            upto = st[1] - 1
            excess = st[2] - r.max_bytes
            for seq, n in db.execute("SELECT seq, length(payload) FROM messages WHERE topic=? ORDER BY seq",
                                     (topic,)):
                if excess <= 0:
                    break
                excess -= n
                upto = seq
            self._delete_upto(db, topic, st, upto, "retention_bytes", drops)

    def _sweep_age(self, db, now, wt, drops):
        # Walk each topic from its oldest row (primary-key order) and stop at
        # the first young one: the cost is the expired rows plus one per
        # topic, never a scan of the whole table (a Pi's SD card is slow).
        cutoff = now - self.retention.max_age_s
        for topic in list(self._w_topics):
            st = wt.get(topic) or self._w_topics[topic]
            if st[1] >= st[0]:
                continue   # empty
            upto = None
            for seq, ts in db.execute("SELECT seq, ts FROM messages WHERE topic=? ORDER BY seq", (topic,)):
                if ts >= cutoff:
                    break
                upto = seq
            if upto is not None:
                if topic not in wt:
                    st = wt[topic] = list(st)
                self._delete_upto(db, topic, st, upto, "retention_age", drops)

    def _delete_upto(self, db, topic, st, upto, cause, drops):
        if upto < st[1]:
            return
        row = db.execute("SELECT COUNT(*), COALESCE(SUM(length(payload)),0) FROM messages WHERE topic=? AND seq<=?",
                         (topic, upto)).fetchone()
        db.execute("DELETE FROM messages WHERE topic=? AND seq<=?", (topic, upto))
        st[1] = upto + 1
        st[2] -= row[1]
        if row[0]:
            drops[cause] = drops.get(cause, 0) + row[0]
            self._causes[topic] = cause

    def _finish(self, batch, results):
        """In the event loop: publish the committed state, then notify."""
        self._pending_bytes -= sum(len(it[3]) for it in batch if it[0] == "pub")
        if results["error"] is None:
            for topic, st in results["topics"].items():
                v = self.topics.get(topic)
                if v is None:
                    v = self.topics[topic] = TopicView(st[1], st[0] - 1, st[2])
                else:
                    v.first_seq, v.last_seq, v.bytes = st[1], st[0] - 1, st[2]
            drops = results["drops"]
            for topic, cause in results["causes"].items():
                if topic in self.topics:
                    self.topics[topic].cause = cause
            for cause, n in drops.items():
                self.drops[cause] = self.drops.get(cause, 0) + n
            for node, topic, cursor in results["subs"]:
                if cursor is None:
                    self.subs.pop((node, topic), None)
                else:
                    self.subs[(node, topic)] = cursor
            for key, seq in results["cursors"].items():
                if key in self.subs and self.subs[key] < seq:
                    self.subs[key] = seq
        self._on_commit(batch, results)
