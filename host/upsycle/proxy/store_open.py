"""Opening the store: the data directory's lock, modes and marker
(datadir.py), the database's header and integrity, its schema and the
quota's share for the WAL. Everything that makes start-up refuse with a
clear StorageError (exit 3) instead of starting on the wrong data.
"""
import os
import sqlite3

from shared_protocol.session import messages as W
from upsycle.errors import HostError
from upsycle.proxy import datadir
from upsycle.identity import PROXY_KEY_FILE as KEY_FILE

DB_NAME = "proxy.sqlite3"
# Start-up refusals (exit 3; never sent on the wire).
R_STORAGE_LOCKED = "storage_locked"    # another proxy runs on the data directory
R_STORAGE_DAMAGED = "storage_damaged"  # the database is missing, empty, foreign or damaged
# The first 16 bytes of every SQLite database file (sqlite.org/fileformat.html, 1.3).
SQLITE_HEADER = b"SQLite format 3\x00"
# With a quota (max_db_bytes) the WAL gets 1/WAL_SHARE_DIV of it, at least
# WAL_SHARE_MIN (a few pages per checkpoint), and SHM_BYTES are set aside
# for the WAL index (one 32 KB block covers a WAL of ~4000 pages). The
# checkpoint thread and the writer's WAL cap (store_tx.py) then work within
# that share instead of their own, larger thresholds.
WAL_SHARE_DIV = 4
WAL_SHARE_MIN = 32 * 1024
SHM_BYTES = 32 * 1024

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value BLOB);
CREATE TABLE IF NOT EXISTS topics(topic BLOB PRIMARY KEY, next_seq INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages(
    topic BLOB NOT NULL, seq INTEGER NOT NULL, msg_id BLOB NOT NULL,
    payload BLOB NOT NULL, ts REAL NOT NULL, origin BLOB, oseq INTEGER, PRIMARY KEY(topic, seq)) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS messages_id ON messages(topic, msg_id);
CREATE TABLE IF NOT EXISTS subs(node BLOB NOT NULL, topic BLOB NOT NULL, cursor INTEGER NOT NULL,
    PRIMARY KEY(node, topic)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS drops(cause TEXT PRIMARY KEY, count INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS subs_topic ON subs(topic);
CREATE TABLE IF NOT EXISTS nodes(node BLOB PRIMARY KEY, last_seen REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS known_keys(kid BLOB PRIMARY KEY, node BLOB NOT NULL, secret BLOB NOT NULL,
    last_seen REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS origin_seq(topic BLOB PRIMARY KEY, next INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS origin_alias(topic BLOB NOT NULL, origin BLOB NOT NULL, oseq INTEGER NOT NULL,
    seq INTEGER NOT NULL, PRIMARY KEY(topic, origin, oseq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS origin_floor(topic BLOB NOT NULL, origin BLOB NOT NULL, floor INTEGER NOT NULL,
    PRIMARY KEY(topic, origin)) WITHOUT ROWID;
"""


def count_topics(db):
    """Make sure every topic row carries its counters: lo (the first stored
    sequence, next_seq if none is stored) and nbytes (payload bytes stored).
    The writer keeps them in the transactions that insert and delete
    messages (store_tx.py), so start-up needs no scan of the messages.
    Recounted here, inside the caller's transaction, for a database from
    before the counters (the columns are added), and for one an older proxy
    opened since (it moves messages without them: its start-up rewrote
    'opened' but not 'counted'). One pass over the messages, once."""
    cols = [r[1] for r in db.execute("PRAGMA table_info(topics)")]
    if "lo" not in cols:
        db.execute("ALTER TABLE topics ADD COLUMN lo INTEGER")
        db.execute("ALTER TABLE topics ADD COLUMN nbytes INTEGER")
    else:
        row = db.execute("SELECT (SELECT value FROM meta WHERE key='opened') IS (SELECT value FROM meta WHERE "
                         "key='counted')").fetchone()
        if row[0]:
            return False
    db.execute("UPDATE topics SET lo = COALESCE((SELECT MIN(seq) FROM messages WHERE messages.topic = topics.topic), "
               "next_seq), nbytes = (SELECT COALESCE(SUM(length(payload)), 0) FROM messages WHERE "
               "messages.topic = topics.topic)")
    return True


class StorageError(HostError):
    """The data directory cannot be used (with a code from session/messages.py R_*)."""

    def __init__(self, code, message):
        HostError.__init__(self, "%s: %s" % (code, message), code)
        self.message = message


def classify(exc):
    """Map an sqlite3/OS error to one of our reject codes."""
    text = str(exc).lower()
    if "full" in text or isinstance(exc, sqlite3.OperationalError) and getattr(exc, "sqlite_errorcode", 0) == 13:
        return W.R_STORAGE_FULL
    if "readonly" in text or "read-only" in text or "read only" in text or "permission" in text:
        return W.R_STORAGE_READONLY
    return W.R_STORAGE


class Opening:
    """Store start-up (mixed into Store)."""

    def open(self):
        """Lock and check the data directory, open or create the database;
        raise StorageError with a clear cause."""
        d = self.data_dir
        try:
            datadir.make_private(d)
        except OSError as e:
            raise StorageError(classify(e), "cannot create data directory %s: %s" % (d, e))
        if not os.access(d, os.W_OK):
            raise StorageError(W.R_STORAGE_READONLY, "data directory %s is not writable" % d)
        try:
            self._lock = datadir.lock(d)
        except datadir.DataDirError as e:
            raise StorageError(R_STORAGE_LOCKED, e.message)
        except OSError as e:
            raise StorageError(classify(e), "cannot lock data directory %s: %s" % (d, e))
        try:
            self._open_db()
        except BaseException:
            datadir.unlock(self._lock)
            self._lock = None
            raise

    def _open_db(self):
        d = self.data_dir
        try:
            marker = datadir.read_marker(d)
        except datadir.DataDirError as e:
            raise StorageError(R_STORAGE_DAMAGED, e.message)
        held = marker is not None or os.path.exists(os.path.join(d, KEY_FILE))
        size = os.path.getsize(self.path) if os.path.exists(self.path) else -1
        if size <= 0 and held:
            # A proxy ran here (its key or marker is here) but the database
            # is gone or empty: starting empty would forget every stored
            # message, subscription and cursor without a word.
            raise StorageError(R_STORAGE_DAMAGED, "the database %s is %s, but this data directory held a "
                               "proxy's data (%s); restore the database from a backup, or move the directory "
                               "away to start a new, empty proxy" % (
                                   self.path, "missing" if size < 0 else "empty (0 bytes)",
                                   "proxy id %s" % marker.hex() if marker else KEY_FILE))
        if size > 0:
            with open(self.path, "rb") as f:
                head = f.read(len(SQLITE_HEADER))
            if head != SQLITE_HEADER:
                raise StorageError(R_STORAGE_DAMAGED, "%s is not an SQLite database (its header is damaged); "
                                   "restore it from a backup" % self.path)
        # Unchanged since this proxy closed it cleanly (datadir.py): no
        # need to read every page for damage.
        try:
            clean = datadir.take_clean(d)
            unchanged = size > 0 and clean is not None and clean == datadir.file_stamp(self.path) and \
                not os.path.exists(self.path + "-wal")
        except OSError as e:
            raise StorageError(classify(e), "cannot use the data directory %s: %s" % (d, e))
        self.checked = size > 0 and not unchanged   # the scan ran (for tests and the benchmark)
        try:
            for name in (self.path, self.path + "-wal", self.path + "-shm"):
                if name == self.path:
                    datadir.private_file(name)   # SQLite gives -wal/-shm its mode
                else:
                    datadir.tighten(name)
        except OSError as e:
            raise StorageError(classify(e), "cannot use the database %s: %s" % (self.path, e))
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            # No checkpoint inside a commit: the checkpoint thread does it,
            # and the writer before a commit once the WAL passes its cap.
            db.execute("PRAGMA wal_autocheckpoint=0")
            self._wal_defaults()
            if self.max_db_bytes:
                self._set_quota(db)
            # A WAL reused after a checkpoint is cut back to the cap, so its
            # file size says how far it grew since (store_tx.py _commit).
            db.execute("PRAGMA journal_size_limit=%d" % self.wal_cap)
            if self.checked:
                bad = [r[0] for r in db.execute("PRAGMA quick_check(5)")]
                if bad != ["ok"]:
                    db.close()
                    raise StorageError(R_STORAGE_DAMAGED, "the database %s is damaged (%s); restore it from "
                                       "a backup" % (self.path, "; ".join(str(b) for b in bad)[:300]))
            db.executescript(SCHEMA)
            if "creator" not in [r[1] for r in db.execute("PRAGMA table_info(topics)")]:
                db.execute("ALTER TABLE topics ADD COLUMN creator BLOB")   # databases from before it
            if "origin" not in [r[1] for r in db.execute("PRAGMA table_info(messages)")]:
                # Databases from before proxies federated: their rows have no
                # origin and stay out of summaries (federation.md).
                db.execute("ALTER TABLE messages ADD COLUMN origin BLOB")
                db.execute("ALTER TABLE messages ADD COLUMN oseq INTEGER")
            db.execute("CREATE INDEX IF NOT EXISTS messages_origin ON messages(topic, origin, oseq)")
            row = db.execute("SELECT value FROM meta WHERE key='proxy_id'").fetchone()
            if row is None:
                if held:
                    db.close()
                    raise StorageError(R_STORAGE_DAMAGED, "the database %s holds no proxy id, but this data "
                                       "directory held a proxy's data; restore the database from a backup"
                                       % self.path)
                self.proxy_id = os.urandom(16)
                db.execute("INSERT INTO meta VALUES('proxy_id', ?)", (self.proxy_id,))
            else:
                self.proxy_id = bytes(row[0])
            if marker is not None and marker != self.proxy_id:
                db.close()
                raise StorageError(R_STORAGE_DAMAGED, "the database %s belongs to proxy %s, but this data "
                                   "directory held proxy %s; put the right database back" % (
                                       self.path, self.proxy_id.hex(), marker.hex()))
            # A write that is synced proves the directory works now, not later.
            db.execute("BEGIN IMMEDIATE")
            count_topics(db)
            db.execute("INSERT OR REPLACE INTO meta VALUES('opened', ?)", (self.clock(),))
            db.execute("INSERT OR REPLACE INTO meta SELECT 'counted', value FROM meta WHERE key='opened'")
            db.execute("COMMIT")
            # Start with an empty WAL: what opening wrote (a new schema is
            # ~25 pages) goes into the database before any quota counts it.
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            self._db = db
            self._load()
        except sqlite3.DatabaseError as e:
            code = classify(e)
            if code == W.R_STORAGE and ("malformed" in str(e) or "not a database" in str(e)):
                code = R_STORAGE_DAMAGED
            raise StorageError(code, "cannot use the database %s: %s" % (self.path, e))
        if marker is None:
            try:
                datadir.write_marker(d, self.proxy_id)
            except OSError as e:
                raise StorageError(classify(e), "cannot write %s: %s" % (datadir.MARKER_FILE, e))
        self._rd = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._rd.execute("PRAGMA query_only=1")
        self._ckpt = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        # A checkpoint syncs the WAL before it copies frames into the
        # database and the database before the log may restart (with FULL or
        # NORMAL alike): commits the writer made with NORMAL (store_sync.py)
        # are never overwritten before they are on disk.
        self._ckpt.execute("PRAGMA synchronous=FULL")
        self.disk_bytes = self.on_disk()

    def _set_quota(self, db):
        """Keep database + WAL + SHM under max_db_bytes: the WAL gets a
        share of the quota (the checkpoint thread looks from a quarter of
        it, the writer checkpoints before a commit past half of it, and a
        WAL reused after a checkpoint is cut back to that half), the
        database pages the rest. One transaction writes at most a quarter
        of the WAL share (see _batch_len)."""
        page = db.execute("PRAGMA page_size").fetchone()[0]
        q = self.max_db_bytes
        wal = max(WAL_SHARE_MIN, q // WAL_SHARE_DIV)
        self.wal_budget = wal
        db.execute("PRAGMA max_page_count=%d" % max(16, (q - wal - SHM_BYTES) // page))
        self.ckpt_bytes = min(self.ckpt_bytes, wal // 4)
        self.wal_cap = min(self.wal_cap, wal // 2)

    def on_disk(self):
        """Bytes the database takes on disk: the file, its WAL and SHM."""
        n = 0
        for name in (self.path, self.path + "-wal", self.path + "-shm"):
            try:
                n += os.path.getsize(name)
            except OSError:
                pass
        return n
