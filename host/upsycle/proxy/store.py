"""The proxy's durable store: SQLite in WAL mode with group commit.

One writer thread commits. Publishes, subscription changes and cursor moves
queue up while a transaction is being synced; the next transaction takes all
of them at once, so many messages share one fsync (group commit).
``synchronous=FULL`` in WAL mode syncs the WAL on every commit (SQLite docs,
"PRAGMA synchronous"): when a publish's callback says "stored", the message
survives a crash or power cut, and only then does the proxy send the
acknowledgement.

With SYNC_OFF_LOOP (off: it measured no better on our box, docs/proxy.md
"Fourth round") ordinary commits run in the event loop's thread with
``synchronous=NORMAL`` (no sync inside the COMMIT) and a thread of their own
fdatasyncs the WAL (store_sync.py); only after that sync are a transaction's
results published. Requests that arrive while a sync runs are committed
together when it returns (COMMIT_EARLY_ITEMS) and share the next sync. The
writer thread then runs what must not block the loop (age sweeps, commits
that checkpoint or restart the WAL, see ``_may_commit_here``); one lock
keeps the two apart.

Layout (all ids are opaque blobs; payloads are never opened):
  topics(topic, next_seq, creator, lo, nbytes)  sequence numbers are never reused;
                                            lo, nbytes: first stored seq, payload bytes
  messages(topic, seq, msg_id, payload, ts) unique (topic, msg_id): idempotency
  subs(node, topic, cursor)                 a subscriber's consumed position
  nodes(node, last_seen)                    subscribers, for expiry
  known_keys(kid, node, secret, last_seen)  nodes seen before (noise/known.py hints)
  drops(cause, count)                       retention drops, for status
  meta(key, value)                          the proxy id, the sequence floor

Topics with no message and no subscriber are forgotten (a sweep); a topic
created later starts above every number a forgotten one used (meta
seq_floor). Subscriptions of a node not seen for ``sub_expiry_s`` expire.
Limits that one node could use up are counted per node id, with what is
still queued for the writer counted as taken (``may_publish``,
``may_subscribe``).

Retention per topic (count, age, bytes) deletes the oldest messages; the
rows of a topic are always the contiguous range first_seq..last_seq, which is
what lets the proxy tell a subscriber exactly how many it missed.

The event loop reads (``fetch``) on its own connection: WAL readers never
block the writer and see every committed transaction. The newest messages
of each topic are also kept in memory (store_tail.py), so live deliveries
need no query. WAL checkpoints run in a thread of their own, not inside a
commit (store_tx.py).
"""
import collections
import logging
import os
import sqlite3
import threading
import time

from shared_protocol.session import messages as W
from upsycle.proxy import datadir
from upsycle.proxy.store_open import DB_NAME, Opening, StorageError, classify  # noqa: F401 (re-exported)
from upsycle.proxy.store_sync import WalSync
from upsycle.proxy.store_tail import Tail
from upsycle.proxy.store_tx import Transactions

log = logging.getLogger("upsycle.proxy.store")

# Queued writes (bytes of payload) before publishes are refused with
# R_OVERLOAD: bounds memory if the disk stalls while nodes keep sending.
PENDING_BYTES_MAX = 16 * 1024 * 1024
# How often the writer looks for messages past their age limit.
AGE_SWEEP_S = 5.0
# Runs of origin numbers read per origin for a catch-up summary or answer
# (summaries send 8; the rest follow as holes fill).
RUNS_SCAN_MAX = 256
# How long dirty cursors may wait for a transaction to ride in (they are not
# urgent: a lost cursor move means a redelivery, which clients deduplicate).
CURSOR_FLUSH_S = 0.2
# Commit in the event loop's thread with synchronous=NORMAL and sync the WAL
# in a thread of its own (store_sync.py), instead of committing with FULL in
# the writer thread. Off: in four sittings on the shared 2-core box it moved
# neither throughput nor p99 against Mosquitto past the noise, while the
# event loop, the proxy's busiest thread, took on the SQL (docs/proxy.md,
# "Fourth round"); a disk whose sync is long against the SQL (an SD card)
# is where it may pay: measure with profile_proxy.py --sync-off-loop.
SYNC_OFF_LOOP = False
# While a WAL sync runs, requests wait for it to return (then one commit
# takes them all and its sync starts at once) unless this many are queued.
# A commit costs 5-8 statements whatever it holds: committing every loop turn
# made commits of 34 items at 10,000-12,000 msg/s and cost 38-54 us/msg of
# proxy CPU against 31-32 with the writer thread's commits of 70-210
# (docs/proxy.md, fourth round). A burst this large is written while the
# disk syncs; 128 is one publisher's window.
COMMIT_EARLY_ITEMS = 128

class Retention:
    """Per-topic limits; 0 means no limit of that kind."""

    def __init__(self, max_count=10000, max_age_s=7 * 86400, max_bytes=16 * 1024 * 1024):
        self.max_count = max_count
        self.max_age_s = max_age_s
        self.max_bytes = max_bytes


class TopicView:
    """What the event loop knows of a topic (updated after each commit)."""

    __slots__ = ("first_seq", "last_seq", "bytes", "cause", "creator", "aliases")

    def __init__(self, first_seq, last_seq, nbytes, creator=None):
        self.first_seq = first_seq   # oldest stored sequence (last_seq + 1 if empty)
        self.last_seq = last_seq     # newest sequence ever stored (0 if none)
        self.bytes = nbytes
        self.cause = W.MISSED_RETENTION  # the last retention cause, told to subscribers
        self.creator = creator           # node id that created it (None: before it was kept)
        # Changes whenever a commit records one of its messages under a
        # second origin number (origin_alias): what we hold of it grew
        # without its sequence range moving (catchup.Summaries caches on both).
        self.aliases = 0

    def count(self):
        return self.last_seq - self.first_seq + 1


class Store(Opening, Transactions):
    def __init__(self, data_dir, retention=None, max_topics=10000, max_db_bytes=0, clock=time.time,
                 max_topics_per_node=0, max_node_subscriptions=0, max_total_subscriptions=0, sub_expiry_s=0):
        self.data_dir = data_dir
        self.path = os.path.join(data_dir, DB_NAME)
        self.retention = retention or Retention()
        self.max_topics = max_topics
        self.max_db_bytes = max_db_bytes
        self.max_topics_per_node = max_topics_per_node
        self.max_node_subscriptions = max_node_subscriptions
        self.max_total_subscriptions = max_total_subscriptions
        self.sub_expiry_s = sub_expiry_s
        self.clock = clock
        self.created_by = {}   # node -> topics it created that exist
        self.node_subs = {}    # node -> its durable subscriptions
        self._creating = {}    # topic -> node: a publish/subscribe queued would create it
        self._creating_by = {}  # node -> topics it is creating
        self._subscribing = {}  # (node, topic) -> requests queued for a new subscription
        self._subscribing_by = {}  # node -> its (node, topic) keys in _subscribing
        self._seen = {}        # node -> when last seen (written with the next transaction)
        self._live = set()     # nodes with a session now (never expired)
        self._keys = {}        # key id -> (node, secret, time): known keys to write
        self.max_known_keys = 0  # rows kept in known_keys (set by the proxy)
        self._seq_floor = 1    # writer: first number of a new topic
        self.topics = {}       # topic -> TopicView (event-loop side)
        self.subs = {}         # (node, topic) -> durable cursor as last known
        self.topic_subs = {}   # topic -> its durable subscriptions (how many nodes)
        # Topics whose durable subscriptions went from none to some or back
        # since the follower (federation.py) last took them; None while
        # nobody follows. At most one entry per topic (max_topics).
        self.sub_topics_changed = None
        self.drops = {}        # cause -> count (retention drops, persisted)
        self.proxy_id = None
        self.origin_id = None  # this proxy's overlay id: the origin of its own sessions' publishes
        self._w_oseq = {}      # writer: topic -> next origin sequence of our own publishes
        self._w_topics = {}    # writer side: topic -> [next_seq, first_seq, bytes]
        self._w_oldest = {}    # writer side: topic -> time of its oldest stored message, where known
        self._w_alias_topics = set()  # writer side: topics that have (or had) origin_alias rows
        self._floors = {}      # writer: (topic, origin) -> highest origin number retention deleted, this transaction
        self._sweep_more = False
        self._oldest_seen = {}
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
        self._lock = None
        self.wal_budget = 0      # with a quota: the WAL's share of it
        self.disk_bytes = 0      # database + WAL + SHM after the last commit
        self.commits = 0
        self._tail = Tail()      # event-loop side: the newest messages per topic
        self._ckpt = None        # the checkpoint thread's connection
        self._ckpt_thread = None
        # The write connection is used by one thread at a time: the event
        # loop (ordinary commits) or the writer thread (sweeps, timed flushes,
        # commits the loop must not block on); whoever holds this lock also
        # takes the queued items, so commits keep the order of arrival.
        self._wlock = threading.Lock()
        self._sync = None        # WalSync (SYNC_OFF_LOOP): commits wait in _unsynced for it
        self._unsynced = collections.deque()   # (commit number, batch, results), in commit order
        self._commit_no = 0
        self.checked = False     # start-up scanned every page for damage (store_open.py)

    # -- start-up --------------------------------------------------------

    def _load(self):
        db = self._db
        # The counters kept with each topic (store_open.py): no scan of the
        # messages.
        for topic, next_seq, lo, nbytes, creator in db.execute(
                "SELECT topic, next_seq, lo, nbytes, creator FROM topics"):
            topic = bytes(topic)
            self._w_topics[topic] = [next_seq, lo, nbytes]
            v = self.topics[topic] = TopicView(lo, next_seq - 1, nbytes)
            if creator is not None:
                v.creator = bytes(creator)
                self.created_by[v.creator] = self.created_by.get(v.creator, 0) + 1
        for topic, nxt in db.execute("SELECT topic, next FROM origin_seq"):
            self._w_oseq[bytes(topic)] = nxt
        self._w_alias_topics = set(bytes(t) for (t,) in db.execute("SELECT DISTINCT topic FROM origin_alias"))
        row = db.execute("SELECT value FROM meta WHERE key='seq_floor'").fetchone()
        self._seq_floor = int(row[0]) if row is not None else 1
        for node, topic, cursor in db.execute("SELECT node, topic, cursor FROM subs"):
            node = bytes(node)
            topic = bytes(topic)
            self.subs[(node, topic)] = cursor
            self.node_subs[node] = self.node_subs.get(node, 0) + 1
            self.topic_subs[topic] = self.topic_subs.get(topic, 0) + 1
        # Subscribers from before nodes were kept count as seen now.
        db.execute("INSERT OR IGNORE INTO nodes SELECT DISTINCT node, ? FROM subs", (self.clock(),))
        for cause, count in db.execute("SELECT cause, count FROM drops"):
            self.drops[cause] = count

    def start(self, loop, on_commit):
        """Start the writer; on_commit(results) runs in the loop after each commit."""
        self._loop = loop
        self._on_commit = on_commit
        if SYNC_OFF_LOOP:
            try:
                self._sync = WalSync(self.path + "-wal", loop, self._synced)
            except OSError as e:   # (the WAL exists from open(): its start-up commit)
                log.warning("event=wal_sync_unavailable error=%r (commits sync inside SQLite)", str(e))
            else:
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._sync.start()
        self._thread = threading.Thread(target=self._run, name="upsycle-store", daemon=True)
        self._thread.start()
        self._ckpt_thread = threading.Thread(target=self._checkpoints, name="upsycle-checkpoint", daemon=True)
        self._ckpt_thread.start()

    def close(self):
        with self._cv:
            # What is still staged goes to the writer thread's last commits
            # (not committed here: the loop may be stopping).
            self._pending.extend(self._staged)
            self._staged = []
            self._closing = True
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._ckpt_thread is not None:
            self._ckpt_thread.join(timeout=10)
        if self._sync is not None:
            self._sync.stop()   # (the last commits synced)
        clean = self._db is not None
        for c in (self._rd, self._ckpt, self._db):
            if c is not None:
                try:
                    c.close()
                except sqlite3.Error:
                    clean = False
        self._rd = self._ckpt = self._db = None
        if self._sync is not None:
            self._sync.close_fd()
        # Closing the last connection checkpointed every page into the file
        # and removed the WAL: the next start may skip the scan for damage
        # if the file is still as it is now (datadir.py).
        writing = self._thread is not None and self._thread.is_alive()
        if clean and not writing and not os.path.exists(self.path + "-wal"):
            try:
                datadir.write_clean(self.data_dir, datadir.file_stamp(self.path))
            except OSError as e:
                log.warning("event=clean_close_unrecorded error=%r", str(e))
        datadir.unlock(self._lock)
        self._lock = None

    # -- requests from the event loop ---------------------------------------

    def pending_bytes(self):
        return self._pending_bytes

    def _may_create(self, node, topic):
        """None if node may create topic (or it exists), else why not."""
        if topic in self.topics or topic in self._creating:
            return None
        if len(self.topics) + len(self._creating) >= self.max_topics:
            return "the proxy keeps %d topics at most" % self.max_topics
        n = self.created_by.get(node, 0) + self._creating_by.get(node, 0)
        if self.max_topics_per_node and n >= self.max_topics_per_node:
            return "a node may create %d topics at most (until they are empty and unsubscribed)" % \
                self.max_topics_per_node
        return None

    def _mark_creating(self, node, topic):
        if topic not in self.topics and topic not in self._creating:
            self._creating[topic] = node
            self._creating_by[node] = self._creating_by.get(node, 0) + 1

    def may_subscribe(self, node, topic):
        """None if a new subscription (node, topic) fits the limits, counting
        the ones queued, else (code, detail)."""
        key = (node, topic)
        if key in self.subs or key in self._subscribing:
            return None
        if self.max_total_subscriptions and \
                len(self.subs) + len(self._subscribing) >= self.max_total_subscriptions:
            return "total", "the proxy keeps %d subscriptions at most" % self.max_total_subscriptions
        if self.max_node_subscriptions and self.node_subs.get(node, 0) + self._subscribing_by.get(node, 0) >= \
                self.max_node_subscriptions:
            return "node", "a node keeps %d subscriptions at most; unsubscribe from some" % \
                self.max_node_subscriptions
        why = self._may_create(node, topic)
        if why is not None:
            return "topics", why
        return None

    def submit_publish(self, topic, msg_id, payload, token, node=None, origin=None, oseq=None):
        """Queue a publish. Returns None, or (reject code, detail) if refused now.
        origin, oseq: where a message from another proxy was first accepted
        and its number there (federation.md); None for a publish of our own
        sessions, which the writer numbers under ``origin_id``."""
        n = len(payload)
        if self._pending_bytes + n > PENDING_BYTES_MAX:
            return W.R_OVERLOAD, "publish refused: %s" % W.R_OVERLOAD
        if topic not in self.topics:   # (an existing topic: nothing to create or count)
            why = self._may_create(node, topic)
            if why is not None:
                return W.R_TOO_MANY_TOPICS, why
            self._mark_creating(node, topic)
        # _stage inline (once per message)
        staged = self._staged
        staged.append(("pub", topic, msg_id, payload, token, node, origin, oseq))
        if len(staged) == 1:
            self._loop.call_soon(self._hand_over)
        self._pending_bytes += n
        return None

    def submit_subscribe(self, node, topic, token):
        key = (node, topic)
        if key not in self.subs:
            n = self._subscribing.get(key, 0)
            if not n:
                self._subscribing_by[node] = self._subscribing_by.get(node, 0) + 1
            self._subscribing[key] = n + 1
            self._mark_creating(node, topic)
        self._stage(("sub", node, topic, None, token, node))

    def submit_unsubscribe(self, node, topic, token):
        self._stage(("unsub", node, topic, None, token, node))

    def remember_key(self, kid, node, secret):
        """A node's hint key (noise/known.py), kept across restarts."""
        with self._cv:
            self._keys[kid] = (node, secret, self.clock())

    def known_keys(self, limit):
        """The most recently seen hint keys, oldest first: [(kid, node, secret)]."""
        rows = self._rd.execute("SELECT kid, node, secret FROM known_keys ORDER BY last_seen DESC LIMIT ?",
                                (limit,)).fetchall()
        return [(bytes(k), bytes(n), bytes(x)) for k, n, x in reversed(rows)]

    def node_seen(self, node, live):
        """A node opened (live) or closed a session: its subscriptions do
        not expire while it has one, and count from its last one."""
        with self._cv:
            self._seen[node] = self.clock()
            if live:
                self._live.add(node)
            else:
                self._live.discard(node)

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
            if self._sync is not None and self._sync.busy() and len(self._pending) < COMMIT_EARLY_ITEMS:
                return   # _synced commits them when the sync under way returns
            if not self._may_commit_here() or not self._wlock.acquire(blocking=False):
                self._cv.notify()   # the writer thread commits them
                return
        more = False
        try:
            with self._cv:
                batch, cursors, seen, keys, live = self._take()
                more = bool(self._pending)
            if batch or cursors or seen or keys:
                self._committed(batch, self._commit_safely(batch, cursors, False, seen, live, keys))
        finally:
            self._wlock.release()
        if more:
            self._loop.call_soon(self._hand_over)

    def _may_commit_here(self):
        """May the event loop run the next commit itself? Only where the
        COMMIT cannot sync or wait: WAL syncs go to the sync thread, but a
        commit that must checkpoint first (the WAL past its cap), keep a
        quota (checkpoints inside the commit) or restart the log (a header
        sync) runs in the writer thread, as do the age sweeps."""
        return self._sync is not None and not self.max_db_bytes and not self._sync.header_sync_due() and \
            self._wal_size() <= self.wal_cap

    def _take(self, sweep=False):
        """(Holding _wlock and _cv.) What the next transaction takes; the
        nodes with a session only for a sweep (_expire_nodes), the one
        reader: a copy per commit was a sixth of the writer's CPU with
        10,000 sessions (perf; tools/bench/bench_scale.py)."""
        n = self._batch_len()
        batch = self._pending[:n]
        del self._pending[:n]
        cursors = self._cursors
        self._cursors = {}
        seen = self._seen
        self._seen = {}
        keys = self._keys
        self._keys = {}
        return batch, cursors, seen, keys, frozenset(self._live) if sweep else frozenset()

    def _commit_safely(self, batch, cursors, sweep, seen, live, keys):
        try:
            return self._commit(batch, cursors, sweep, seen, live, keys)
        except Exception as e:  # a bug must refuse publishes, not hang them
            log.exception("event=store_failure")
            return {"error": (W.R_STORAGE, repr(e)), "items": None}

    def _committed(self, batch, results):
        """(Holding _wlock.) A transaction ended: its results go to the event
        loop once it is durable: at once with FULL (the COMMIT synced), after
        the sync thread's next sync with NORMAL."""
        if self._sync is None:
            self._loop.call_soon_threadsafe(self._finish, batch, results)
            return
        self._commit_no += 1
        self._unsynced.append((self._commit_no, batch, results))
        self._sync.note(self._commit_no)

    def _synced(self, upto, error):
        """In the event loop: commits up to number upto are on disk (or the
        sync failed: then they are reported as failed)."""
        q = self._unsynced
        while q and q[0][0] <= upto:
            _, batch, results = q.popleft()
            if error is not None and results["error"] is None:
                results = {"error": (W.R_STORAGE, error), "items": None}
            self._finish(batch, results)
        if self._pending:
            self._hand_over()   # what waited for this sync (COMMIT_EARLY_ITEMS)

    def move_cursor(self, node, topic, seq):
        """Record a consumed position; written with the next transaction."""
        with self._cv:
            old = self._cursors.get((node, topic), -1)
            if seq > old:
                self._cursors[(node, topic)] = seq

    def _durable_seq(self, topic):
        """The newest sequence of topic known durable (what _finish
        published). The read connection also sees commits the sync thread
        has not synced yet: every read for a subscriber or a peer stops here,
        so nobody is told of a message a power cut could take back."""
        v = self.topics.get(topic)
        return v.last_seq if v is not None else 0

    def fetch(self, topic, after, limit):
        """Up to limit stored messages of topic with seq > after, in order."""
        rows = self._tail.get(topic, after, limit)
        if rows is not None:
            return rows
        return self._rd.execute(
            "SELECT seq, msg_id, payload FROM messages WHERE topic=? AND seq>? AND seq<=? ORDER BY seq LIMIT ?",
            (topic, after, self._durable_seq(topic), limit)).fetchall()

    def fetch_origin(self, topic, origin, after, limit):
        """Up to limit messages of topic first accepted at origin, with
        origin sequence > after, in that order: [(oseq, msg_id, payload, ts)]."""
        return self._rd.execute(
            "SELECT oseq, msg_id, payload, ts FROM messages WHERE topic=? AND origin=? AND oseq>? AND seq<=? "
            "ORDER BY oseq LIMIT ?",
            (topic, origin, after, self._durable_seq(topic), limit)).fetchall()

    def origin_ranges(self, topic):
        """What this proxy holds of a topic, per origin: {origin: [[lo, hi], ...]}
        (runs of consecutive origin sequences, ascending), and the floors
        retention left: {origin: highest origin sequence deleted}."""
        held = {}
        # Numbers held: the rows', and those of messages we hold under
        # another origin's number (origin_alias; usually none, then the
        # cheap path). Most origins hold one run (nothing missing): an
        # index-only count tells (8x cheaper than finding runs); only an
        # origin with holes gets the runs query (gaps and islands), its
        # first RUNS_SCAN_MAX.
        upto = self._durable_seq(topic)
        if self._rd.execute("SELECT 1 FROM origin_alias WHERE topic=? LIMIT 1", (topic,)).fetchone():
            src = ("(SELECT origin, oseq FROM messages WHERE topic=?1 AND origin IS NOT NULL AND seq<=?4 UNION "
                   "SELECT origin, oseq FROM origin_alias WHERE topic=?1 AND seq<=?4)")
        else:
            src = "(SELECT origin, oseq FROM messages WHERE topic=?1 AND origin IS NOT NULL AND seq<=?4)"
        for origin, lo, hi, n in self._rd.execute(
                "SELECT origin, MIN(oseq), MAX(oseq), COUNT(*) FROM %s GROUP BY origin" % src,
                (topic, None, None, upto)):
            origin = bytes(origin)
            if n == hi - lo + 1:
                held[origin] = [[lo, hi]]
                continue
            held[origin] = [[a, b] for a, b in self._rd.execute(
                "SELECT MIN(oseq), MAX(oseq) FROM (SELECT oseq, oseq - ROW_NUMBER() OVER (ORDER BY oseq) AS g "
                "FROM %s WHERE origin=?2) GROUP BY g ORDER BY 1 LIMIT ?3" % src, (topic, origin, RUNS_SCAN_MAX, upto))]
        floors = dict((bytes(o), f) for o, f in self._rd.execute(
            "SELECT origin, floor FROM origin_floor WHERE topic=?", (topic,)))
        return held, floors

    def origin_topics(self, origin, since):
        """{topic: time of its newest message from origin} for messages
        stored since then (a restarted proxy keeps carrying what its own
        nodes published lately). A topic's rows are stamped in the order
        of their sequence numbers: one statement finds the topics whose
        newest row is that recent, and each of those is read from its newest
        row back to the first older than since, so the cost is one row per
        topic plus the rows stored since then, not a scan of every message
        (0.8-2 s at start-up with 10^6 stored; tools/bench/bench_scale.py)."""
        out = {}
        rd = self._rd
        recent = [bytes(t) for (t,) in rd.execute(
            "SELECT topic FROM topics WHERE (SELECT ts FROM messages WHERE messages.topic = topics.topic "
            "ORDER BY seq DESC LIMIT 1) >= ?", (since,))]
        for topic in recent:
            for ts, o in rd.execute("SELECT ts, origin FROM messages WHERE topic=? AND seq<=? ORDER BY seq DESC",
                                    (topic, self._durable_seq(topic))):
                if ts < since:
                    break
                if o is not None and bytes(o) == origin:
                    out[topic] = ts
                    break
        return out

    def origin_high(self, topic, origin):
        """(highest origin sequence held, retention floor) of (topic, origin)."""
        row = self._rd.execute("SELECT MAX(m) FROM (SELECT MAX(oseq) AS m FROM messages WHERE topic=?1 AND origin=?2 "
                               "AND seq<=?3 UNION ALL SELECT MAX(oseq) FROM origin_alias WHERE topic=?1 AND origin=?2 "
                               "AND seq<=?3)", (topic, origin, self._durable_seq(topic))).fetchone()
        fl = self._rd.execute("SELECT floor FROM origin_floor WHERE topic=? AND origin=?", (topic, origin)).fetchone()
        return (row[0] or 0), (fl[0] if fl else 0)

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
            with self._wlock:
                sweep = time.monotonic() >= next_sweep
                with self._cv:
                    batch, cursors, seen, keys, live = self._take(sweep)
                    closing = self._closing and not self._pending
                if sweep:
                    next_sweep = time.monotonic() + AGE_SWEEP_S
                if batch or cursors or sweep or seen or keys:
                    results = self._commit_safely(batch, cursors, sweep, seen, live, keys)
                    if results.get("sweep_more"):
                        next_sweep = time.monotonic()   # the rest of the age sweep, next
                    self._committed(batch, results)
            if closing:
                return

    def _finish(self, batch, results):
        """In the event loop: publish the committed state, then notify."""
        nbytes = results.get("pub_bytes")
        if nbytes is None:   # (a failed transaction)
            nbytes = sum(len(it[3]) for it in batch if it[0] == "pub")
        self._pending_bytes -= nbytes
        # Nothing queued creates a topic or a subscription (the usual
        # commit, publishes to existing topics): no pass over the batch.
        for it in (batch if self._creating or self._subscribing else ()):
            topic = it[1] if it[0] == "pub" else it[2]
            node = self._creating.pop(topic, None)
            if node is not None:
                n = self._creating_by.get(node, 1) - 1
                if n > 0:
                    self._creating_by[node] = n
                else:
                    self._creating_by.pop(node, None)
            if it[0] == "sub":
                key = (it[1], it[2])
                n = self._subscribing.get(key, 1) - 1
                if n > 0:
                    self._subscribing[key] = n
                elif self._subscribing.pop(key, None) is not None:
                    m = self._subscribing_by.get(it[1], 1) - 1
                    if m > 0:
                        self._subscribing_by[it[1]] = m
                    else:
                        self._subscribing_by.pop(it[1], None)
        if results["error"] is None:
            creators = results["creators"]
            for topic, st in results["topics"].items():
                v = self.topics.get(topic)
                if v is None:
                    c = creators.get(topic)
                    v = self.topics[topic] = TopicView(st[1], st[0] - 1, st[2], c)
                    if c is not None:
                        self.created_by[c] = self.created_by.get(c, 0) + 1
                else:
                    v.first_seq, v.last_seq, v.bytes = st[1], st[0] - 1, st[2]
            for topic in results["aliased"]:
                v = self.topics.get(topic)
                if v is not None:
                    v.aliases += 1
            self._remember(batch, results)
            for topic in results["forgotten"]:
                self._tail.forget(topic)
                v = self.topics.pop(topic, None)
                if v is not None and v.creator is not None:
                    n = self.created_by.get(v.creator, 1) - 1
                    if n > 0:
                        self.created_by[v.creator] = n
                    else:
                        self.created_by.pop(v.creator, None)
            drops = results["drops"]
            for topic, cause in results["causes"].items():
                if topic in self.topics:
                    self.topics[topic].cause = cause
            for cause, n in drops.items():
                self.drops[cause] = self.drops.get(cause, 0) + n
            for node, topic, cursor in results["subs"]:
                if cursor is None:
                    if self.subs.pop((node, topic), None) is not None:
                        n = self.node_subs.get(node, 1) - 1
                        if n > 0:
                            self.node_subs[node] = n
                        else:
                            self.node_subs.pop(node, None)
                        self._topic_subs_add(topic, -1)
                else:
                    if (node, topic) not in self.subs:
                        self.node_subs[node] = self.node_subs.get(node, 0) + 1
                        self._topic_subs_add(topic, 1)
                    self.subs[(node, topic)] = cursor
            for key, seq in results["cursors"].items():
                if key in self.subs and self.subs[key] < seq:
                    self.subs[key] = seq
        self._on_commit(batch, results)

    def _topic_subs_add(self, topic, d):
        n = self.topic_subs.get(topic, 0) + d
        if n > 0:
            self.topic_subs[topic] = n
        else:
            self.topic_subs.pop(topic, None)
        if (n == 0 or n == d) and self.sub_topics_changed is not None:
            self.sub_topics_changed.add(topic)

    def follow_sub_topics(self):
        """From now on, note the topics whose durable subscriptions go from
        none to some or back (take_sub_topics_changed); the ones subscribed
        now count as changed."""
        self.sub_topics_changed = set(self.topic_subs)

    def take_sub_topics_changed(self):
        """The topics noted since the last call (see follow_sub_topics)."""
        changed = self.sub_topics_changed or set()
        self.sub_topics_changed = set()
        return changed

    def _remember(self, batch, results):
        """Put this commit's new messages at the tails of their topics, and
        let go of what retention deleted."""
        tail = self._tail
        for topic, rows in results["new"].items():
            tail.extend(topic, rows)
        for topic, st in results["topics"].items():
            tail.trim(topic, st[1])
