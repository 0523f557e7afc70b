"""The store's transactions, run by its writer thread: a batch of
publishes, subscription changes and cursor moves in one transaction, then
retention per topic and the periodic sweeps; and the WAL checkpoints, in a
thread of their own.
"""
import logging
import os
import sqlite3
import time

from upsycle.proxy.store_open import classify

log = logging.getLogger("upsycle.proxy.store")

# Rows per transaction: a bound on the time one commit holds the writer and on
# the memory of one batch; under load a batch this size still shares one sync.
BATCH_MAX = 4096
# Nodes expired or topics forgotten per sweep: bounds one sweep's transaction.
EXPIRE_BATCH_MAX = 1000
# Work of one age sweep's transaction: a topic looked at in SQLite counts 1,
# a row deleted 1. A sweep with more to do stops after the topic that used
# this up and the writer runs the next part at once, in its own transaction
# (publishes queued meanwhile ride in it): one pass over 10^4 topics with
# 90,000 rows expired is several transactions of ~0.2-0.5 s, not one of
# seconds (tools/bench/bench_scale.py).
SWEEP_WORK_MAX = 20000

# Rows per multi-row statement. The writer thread lets go of the GIL inside
# every statement and must win it back from a busy event loop after each one
# (up to the switch interval, 0.5 ms): a commit of N one-row statements could
# wait N x 0.5 ms, which is what made commits of thousands of cursor moves
# take seconds with 1,000 sessions (tools/bench/bench_scale.py). 200 rows x 7
# values stay far under SQLite's host parameter limit (32766 since 3.32).
ROWS_PER_STATEMENT = 200
_INSERT_SQL = {}


# What count retention reads of the rows it deletes (_delete_upto), by
# origin. "+origin": the range of the primary key, never the origin index
# for the GROUP BY's order (with ANALYZE's statistics SQLite picked it and
# read every row of the topic: 15 ms for 127 rows of 10,000 against 0.08).
RETAIN_READ_SQL = ("SELECT origin, MAX(oseq), COUNT(*), SUM(length(payload)) FROM messages WHERE topic=? AND seq<=? "
                   "GROUP BY +origin")


def _insert_sql(n):
    sql = _INSERT_SQL.get(n)
    if sql is None:
        sql = _INSERT_SQL[n] = "INSERT INTO messages VALUES " + ",".join(["(?,?,?,?,?,?,?)"] * n)
    return sql


# WAL checkpoints (copying committed pages into the database file, with a
# sync of its own) run in their own thread on their own connection once the
# WAL holds CHECKPOINT_BYTES (SQLite's own threshold: 1000 pages of 4 KB),
# instead of inside whichever commit crosses that threshold: a commit then
# costs one WAL sync, and the publishes waiting on it are acknowledged
# sooner. PASSIVE checkpoints never block the writer (SQLite docs,
# "Checkpointing"). The thread looks every CHECKPOINT_S. With a quota both
# thresholds shrink to the WAL's share of it (store_open.py _set_quota).
CHECKPOINT_S = 0.5
CHECKPOINT_BYTES = 4 * 1024 * 1024
# If the WAL file still grows past this (the checkpoint thread could not
# keep up, or none runs), the writer checkpoints before its next commit:
# bounds the WAL file whatever the disk does.
WAL_BYTES_MAX = 64 * 1024 * 1024


class Transactions:
    """The writer side of Store (mixed into it; runs in its thread)."""

    def _wal_defaults(self):
        """The checkpoint thresholds without a quota (see _set_quota)."""
        self.ckpt_bytes = CHECKPOINT_BYTES
        self.wal_cap = WAL_BYTES_MAX

    def _wal_size(self):
        try:
            return os.path.getsize(self.path + "-wal")
        except OSError:
            return 0   # no WAL file (yet)

    def _checkpoint(self, conn):
        """A checkpoint on conn: PASSIVE (it never waits for the writer),
        unless a quota is set and the pages it moves into the database
        could put database + WAL + SHM over it: then TRUNCATE, which also
        cuts the WAL file to nothing (it waits for the writer and readers,
        as _keep_quota's does). Returns (busy, frames in the WAL, frames
        checkpointed)."""
        mode = "PASSIVE"
        if self.max_db_bytes and self.on_disk() + self._wal_size() > self.max_db_bytes:
            mode = "TRUNCATE"
        return conn.execute("PRAGMA wal_checkpoint(%s)" % mode).fetchone()

    def _checkpoints(self):
        """The checkpoint thread: a checkpoint whenever the WAL holds
        ckpt_bytes, on its own connection."""
        failed = False
        while not self._closing:
            time.sleep(CHECKPOINT_S)
            if self._wal_size() < self.ckpt_bytes:
                continue
            try:
                self._checkpoint(self._ckpt)
                failed = False
            except sqlite3.Error as e:
                if not failed:   # once per run of failures, not every CHECKPOINT_S
                    log.warning("event=checkpoint_failed error=%r", str(e))
                failed = True

    def _batch_len(self):
        """How many pending items the next transaction takes: BATCH_MAX, and
        with a quota at most a quarter of the WAL's share in payload bytes
        (one transaction cannot be checkpointed before it commits)."""
        p = self._pending
        n = min(len(p), BATCH_MAX)
        if not self.wal_budget:
            return n
        cap = self.wal_budget // 4
        total = 0
        for i in range(n):
            it = p[i]
            if it[0] == "pub":
                total += len(it[3])
                if total > cap and i > 0:
                    return i
        return n

    def _keep_quota(self):
        """After a commit: if the files on disk exceed the quota, checkpoint
        the WAL and truncate it (readers may hold it; then next time)."""
        size = self.on_disk()
        if self.max_db_bytes and size > self.max_db_bytes:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except sqlite3.Error:
                pass
            size = self.on_disk()
        self.disk_bytes = size

    def _new_topic(self, wt, topic, creator):
        """Writer state of a topic, created (from the sequence floor) if new."""
        st = wt.get(topic)
        if st is None:
            st = self._w_topics.get(topic)
            if st is None:
                # Numbers continue above every forgotten topic's: a node that
                # still counts a forgotten topic's sequence never takes a new
                # message for one it already had.
                st = [self._seq_floor, self._seq_floor, 0]
                self._new_creators[topic] = creator
            else:
                st = list(st)
            wt[topic] = st
        return st

    def _commit(self, batch, cursors, sweep, seen=None, live=(), keys=None):
        """One transaction for the whole batch. Returns the results."""
        db = self._db
        now = self.clock()
        self._new_creators = {}
        self._oseq = {}  # topic -> next origin sequence of our own publishes, this transaction
        self._origins = {}  # batch index -> (origin, origin sequence) of each message stored
        self._aliased = set()  # topics given an origin_alias row
        self._new_rows = {}    # topic -> [(seq, msg_id, payload)] stored by this transaction, in order
        self._pub_bytes = 0    # payload bytes of the batch's publishes (what the event loop had queued)
        forgotten = []
        wt = {}          # writer topic states changed in this transaction
        out = []         # per batch item: (status, value)
        subs = []        # (node, topic, cursor or None)
        drops = {}
        self._causes = {}
        if self._wal_size() > self.wal_cap:
            try:
                self._checkpoint(db)
            except sqlite3.Error:
                pass   # a real storage problem shows in the commit below
        try:
            db.execute("BEGIN IMMEDIATE")
            # Cursors first, so a re-subscribe in this batch reads the newest.
            items = list(cursors.items())
            for c in range(0, len(items), ROWS_PER_STATEMENT):
                chunk = items[c:c + ROWS_PER_STATEMENT]
                db.execute("UPDATE subs SET cursor = v.column3 FROM (VALUES %s) AS v WHERE subs.node = v.column1 "
                           "AND subs.topic = v.column2 AND subs.cursor < v.column3" % ",".join(["(?,?,?)"] * len(chunk)),
                           [x for (node, topic), seq in chunk for x in (node, topic, seq)])
            # Nodes seen and hint keys, in multi-row statements as well (a
            # thousand sessions opening at once would be a thousand of each).
            rows = sorted((seen or {}).items())
            for c in range(0, len(rows), ROWS_PER_STATEMENT):
                chunk = rows[c:c + ROWS_PER_STATEMENT]
                db.execute("INSERT INTO nodes VALUES %s ON CONFLICT(node) DO UPDATE SET last_seen=excluded.last_seen"
                           % ",".join(["(?,?)"] * len(chunk)), [x for node, t in chunk for x in (node, t)])
            rows = sorted((keys or {}).items())
            for c in range(0, len(rows), ROWS_PER_STATEMENT):
                chunk = rows[c:c + ROWS_PER_STATEMENT]
                db.execute("INSERT OR REPLACE INTO known_keys VALUES %s" % ",".join(["(?,?,?,?)"] * len(chunk)),
                           [x for kid, (node, secret, t) in chunk for x in (kid, node, secret, t)])
            i, n = 0, len(batch)
            while i < n:
                kind, a, b = batch[i][:3]
                if kind == "pub" or kind == "sub":
                    j = i + 1
                    while j < n and j - i < ROWS_PER_STATEMENT and batch[j][0] == kind:
                        j += 1
                    if kind == "sub":
                        self._subscribe_rows(db, batch, i, j, wt, out, subs)
                    elif not self._insert_rows(db, batch, i, j, wt, now, out):
                        for k in range(i, j):
                            self._insert_one(db, k, batch[k], wt, now, out)
                    i = j
                    continue
                i += 1   # unsub
                db.execute("DELETE FROM subs WHERE node=? AND topic=?", (a, b))
                subs.append((a, b, None))
                out.append(("ok", None))
            self._floors = {}
            for topic, st in list(wt.items()):
                self._retain(db, topic, st, drops)
            self._sweep_more = False
            self._oldest_seen = {}
            if sweep and self.retention.max_age_s:
                self._sweep_age(db, now, wt, drops)
            self._write_floors(db)
            if sweep and self.sub_expiry_s:
                self._expire_nodes(db, now, live, subs)
            # Every topic this transaction changed, with its counters (first
            # stored sequence, payload bytes) as inserts and retention left
            # them: start-up reads them instead of scanning every message.
            self._write_topics(db, wt)
            if sweep:
                self._forget_empty(db, wt, forgotten)
                if self.max_known_keys:
                    db.execute("DELETE FROM known_keys WHERE kid NOT IN (SELECT kid FROM known_keys ORDER BY "
                               "last_seen DESC LIMIT ?)", (self.max_known_keys,))
            for cause, n in drops.items():
                db.execute("INSERT INTO drops VALUES(?,?) ON CONFLICT(cause) DO UPDATE SET count=count+?",
                           (cause, n, n))
            # One statement per ROWS_PER_STATEMENT topics, not one per topic:
            # each statement is a GIL hand-over a busy event loop makes the
            # writer wait for (10 topics made 10 of a commit's 16 statements).
            oq = sorted(self._oseq.items())
            for c in range(0, len(oq), ROWS_PER_STATEMENT):
                chunk = oq[c:c + ROWS_PER_STATEMENT]
                db.execute("INSERT INTO origin_seq VALUES %s ON CONFLICT(topic) DO UPDATE SET next=excluded.next"
                           % ",".join(["(?,?)"] * len(chunk)), [x for kv in chunk for x in kv])
            db.execute("COMMIT")
        except sqlite3.Error as e:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            code = classify(e)
            if self.max_db_bytes:
                self._keep_quota()   # a full quota: the WAL the failed transaction grew goes back
            return {"error": (code, str(e)), "items": None}
        self.commits += 1
        self._w_oseq.update(self._oseq)
        oldest = self._w_oldest
        for topic, st in wt.items():
            was = self._w_topics.get(topic)
            if st[1] >= st[0]:
                oldest.pop(topic, None)            # empty
            elif was is None or was[1] >= was[0]:
                oldest[topic] = now                # its first rows are this transaction's
            elif was[1] != st[1]:
                oldest.pop(topic, None)            # retention moved its start: not known
            self._w_topics[topic] = st
        oldest.update(self._oldest_seen)           # what the sweep read (after retention)
        for topic in forgotten:
            self._w_topics.pop(topic, None)
            oldest.pop(topic, None)
            wt.pop(topic, None)
        if self.max_db_bytes:
            self._keep_quota()
        return {"error": None, "items": out, "topics": dict((t, tuple(s)) for t, s in wt.items()),
                "subs": subs, "drops": drops, "causes": self._causes, "cursors": cursors,
                "creators": self._new_creators, "forgotten": forgotten, "origins": self._origins,
                "aliased": self._aliased, "new": self._new_rows, "pub_bytes": self._pub_bytes,
                "sweep_more": self._sweep_more}

    def _write_topics(self, db, wt):
        tl = list(wt.items())
        for c in range(0, len(tl), ROWS_PER_STATEMENT):
            chunk = tl[c:c + ROWS_PER_STATEMENT]
            db.execute("INSERT INTO topics(topic, next_seq, creator, lo, nbytes) VALUES %s ON CONFLICT(topic) "
                       "DO UPDATE SET next_seq=excluded.next_seq, lo=excluded.lo, nbytes=excluded.nbytes"
                       % ",".join(["(?,?,?,?,?)"] * len(chunk)),
                       [x for topic, st in chunk for x in (topic, st[0], self._new_creators.get(topic), st[1], st[2])])

    def _subscribe_rows(self, db, batch, i, j, wt, out, subs):
        """Subscribes batch[i:j]: their cursors read in one statement, the
        new ones inserted in one (as one by one: a key twice in the run
        gets the cursor its first subscribe made)."""
        keys = list(dict.fromkeys((batch[k][1], batch[k][2]) for k in range(i, j)))
        known = dict(((bytes(node), bytes(topic)), cursor) for node, topic, cursor in db.execute(
            "SELECT v.column1, v.column2, subs.cursor FROM (VALUES %s) AS v JOIN subs ON subs.node = v.column1 "
            "AND subs.topic = v.column2" % ",".join(["(?,?)"] * len(keys)), [x for key in keys for x in key]))
        new = []
        for k in range(i, j):
            key = (batch[k][1], batch[k][2])
            cursor = known.get(key)
            if cursor is None:
                # A new subscriber starts at the oldest message kept:
                # retention decides how much history a node gets. An
                # unknown topic is created, so its first number is fixed
                # now (the floor may rise before it is used).
                st = self._new_topic(wt, key[1], key[0])
                cursor = known[key] = st[1] - 1
                new.append((key[0], key[1], cursor))
            subs.append((key[0], key[1], cursor))
            out.append(("ok", cursor))
        if new:
            db.execute("INSERT INTO subs VALUES %s" % ",".join(["(?,?,?)"] * len(new)), [x for r in new for x in r])

    def _insert_rows(self, db, batch, i, j, wt, now, out):
        """Publishes batch[i:j] in one statement, assuming none is a
        retransmission. A duplicate fails the statement whole (SQLite's
        statement-level ABORT) and leaves rows and topic states as they
        were: returns False, and the caller takes them one by one."""
        # Runs once per stored message with the GIL held (which the event
        # loop needs too): _new_topic and _origin_of inline for the usual
        # item, a topic already in this transaction and our own publish.
        saved = {}
        params = []
        rows = []
        own = self.origin_id
        oseq_now = self._oseq
        nbytes = 0
        for k in range(i, j):
            it = batch[k]
            topic, mid, payload = it[1], it[2], it[3]
            st = wt.get(topic)
            if st is None:
                st = self._new_topic(wt, topic, it[5])
            if topic not in saved:
                saved[topic] = (st[0], st[2], oseq_now.get(topic))
            if len(it) > 6 and it[6] is not None:
                origin, oseq = it[6], it[7]
            elif own is None:
                origin = oseq = None
            else:
                oseq = oseq_now.get(topic)
                if oseq is None:
                    oseq = self._w_oseq.get(topic, 1)
                oseq_now[topic] = oseq + 1
                origin = own
            seq = st[0]
            n = len(payload)
            params += (topic, seq, mid, payload, now, origin, oseq)
            rows.append((topic, seq, mid, payload, origin, oseq, k))
            st[0] = seq + 1
            st[2] += n
            nbytes += n
        try:
            db.execute(_insert_sql(j - i), params)
        except sqlite3.IntegrityError:
            for topic, (nxt, nb, onext) in saved.items():
                wt[topic][0] = nxt
                wt[topic][2] = nb
                if onext is None:
                    oseq_now.pop(topic, None)
                else:
                    oseq_now[topic] = onext
            return False
        self._pub_bytes += nbytes
        new = self._new_rows
        origins = self._origins
        for topic, seq, mid, payload, origin, oseq, k in rows:
            out.append(("ok", seq))
            origins[k] = (origin, oseq)
            run = new.get(topic)
            if run is None:
                run = new[topic] = []
            run.append((seq, mid, payload))
        return True

    def _origin_of(self, item):
        """(origin, origin sequence) of a publish: as it came from another
        proxy, or ours, numbered per topic 1, 2, 3... without gaps (other
        proxies' summaries of what they hold are runs of these numbers)."""
        if len(item) > 6 and item[6] is not None:
            return item[6], item[7]
        if self.origin_id is None:
            return None, None
        topic = item[1]
        n = self._oseq.get(topic)
        if n is None:
            n = self._w_oseq.get(topic, 1)
        self._oseq[topic] = n + 1
        return self.origin_id, n

    def _insert_one(self, db, k, item, wt, now, out):
        topic, mid, payload, node = item[1], item[2], item[3], item[5]
        st = self._new_topic(wt, topic, node)
        seq = st[0]
        self._pub_bytes += len(payload)
        row = db.execute("SELECT seq, origin, oseq FROM messages WHERE topic=? AND msg_id=?", (topic, mid)).fetchone()
        if row is not None:
            out.append(("dup", None))   # (before numbering: a duplicate takes no origin number)
            if len(item) > 6 and item[6] is not None and (row[1] != item[6] or row[2] != item[7]):
                # The same message first accepted at two proxies (a node that
                # published it through both): we hold it under the other
                # origin's number too, or summaries would ask for it for ever.
                db.execute("INSERT OR IGNORE INTO origin_alias VALUES(?,?,?,?)", (topic, item[6], item[7], row[0]))
                self._aliased.add(topic)
                self._w_alias_topics.add(topic)   # (kept if this rolls back: a superset is safe)
            return
        origin, oseq = self._origin_of(item)
        db.execute("INSERT INTO messages VALUES(?,?,?,?,?,?,?)", (topic, seq, mid, payload, now, origin, oseq))
        st[0] = seq + 1
        st[2] += len(payload)
        out.append(("ok", seq))
        self._origins[k] = (origin, oseq)
        self._new_rows.setdefault(topic, []).append((seq, mid, payload))

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
        # topic, never a scan of the whole table (a Pi's SD card is slow). A
        # topic whose oldest row is known to be young (_w_oldest, kept by
        # _commit) costs no query at all. At most SWEEP_WORK_MAX per
        # transaction; _sweep_more asks the writer for the rest at once.
        cutoff = now - self.retention.max_age_s
        oldest = self._w_oldest
        work = 0
        for topic in list(self._w_topics):
            st = wt.get(topic) or self._w_topics[topic]
            if st[1] >= st[0]:
                continue   # empty
            o = oldest.get(topic)
            if o is not None and o >= cutoff:
                continue
            if work >= SWEEP_WORK_MAX:
                self._sweep_more = True
                return
            upto = None
            n = 0
            first = None
            for seq, ts in db.execute("SELECT seq, ts FROM messages WHERE topic=? ORDER BY seq", (topic,)):
                if ts >= cutoff:
                    first = ts
                    break
                upto = seq
                n += 1
            work += 1 + n
            if first is not None:
                self._oldest_seen[topic] = first
            if upto is not None:
                if topic not in wt:
                    st = wt[topic] = list(st)
                self._delete_upto(db, topic, st, upto, "retention_age", drops)

    def _delete_upto(self, db, topic, st, upto, cause, drops):
        """Delete the rows of topic up to seq upto. Per origin, the highest
        number deleted goes to origin_floor (with the transaction's others,
        _write_floors): other proxies offer nothing at or below it again
        (federation.md, catch-up), so a message retention removed is never
        stored and delivered twice."""
        if upto < st[1]:
            return
        if topic in self._w_alias_topics:
            row = self._delete_aliased(db, topic, upto)
        else:
            # Two statements, one pass over the range to read it: its count,
            # bytes and highest origin numbers in one row per origin
            # (usually one), then the delete. (It was four: a count, a floor
            # query, the aliases' delete and this one; every statement is a
            # GIL hand-over the writer waits for while the event loop is
            # busy.) Not DELETE ... RETURNING: each row it returns is a
            # step, and a hand-over, of its own.
            n = nbytes = 0
            floors = self._floors
            for origin, oseq, count, size in db.execute(RETAIN_READ_SQL, (topic, upto)).fetchall():
                n += count
                nbytes += size
                if origin is not None and oseq is not None:
                    key = (topic, bytes(origin))
                    if oseq > floors.get(key, -1):
                        floors[key] = oseq
            db.execute("DELETE FROM messages WHERE topic=? AND seq<=?", (topic, upto))
            row = (n, nbytes)
        st[1] = upto + 1
        st[2] -= row[1]
        if row[0]:
            drops[cause] = drops.get(cause, 0) + row[0]
            self._causes[topic] = cause

    def _delete_aliased(self, db, topic, upto):
        """_delete_upto for a topic that has (or had) origin_alias rows:
        those numbers count for the floor too and go with the rows."""
        row = db.execute("SELECT COUNT(*), COALESCE(SUM(length(payload)),0) FROM messages WHERE topic=? AND "
                         "seq<=?", (topic, upto)).fetchone()
        db.execute("INSERT INTO origin_floor SELECT ?, origin, MAX(oseq) FROM (SELECT origin, oseq FROM messages "
                   "WHERE topic=? AND seq<=? AND origin IS NOT NULL UNION ALL SELECT origin, oseq FROM origin_alias "
                   "WHERE topic=? AND seq<=?) WHERE 1 GROUP BY origin ON CONFLICT(topic, origin) DO UPDATE SET "
                   "floor=MAX(floor, excluded.floor)", (topic, topic, upto, topic, upto))
        db.execute("DELETE FROM origin_alias WHERE topic=? AND seq<=?", (topic, upto))
        db.execute("DELETE FROM messages WHERE topic=? AND seq<=?", (topic, upto))
        return row

    def _write_floors(self, db):
        """The transaction's retention floors, ROWS_PER_STATEMENT a statement."""
        fl = sorted(self._floors.items())
        for c in range(0, len(fl), ROWS_PER_STATEMENT):
            chunk = fl[c:c + ROWS_PER_STATEMENT]
            db.execute("INSERT INTO origin_floor VALUES %s ON CONFLICT(topic, origin) DO UPDATE SET "
                       "floor=MAX(floor, excluded.floor)" % ",".join(["(?,?,?)"] * len(chunk)),
                       [x for (topic, origin), floor in chunk for x in (topic, origin, floor)])

    def _expire_nodes(self, db, now, live, subs):
        """Forget the subscriptions (and hint key) of nodes not seen for
        sub_expiry_s and without a session now: what a node abandoned must
        not hold the proxy's subscription limit for ever."""
        cutoff = now - self.sub_expiry_s
        rows = db.execute("SELECT node FROM nodes WHERE last_seen<? LIMIT ?", (cutoff, EXPIRE_BATCH_MAX)).fetchall()
        for (node,) in rows:
            node = bytes(node)
            if node in live:
                continue
            for (topic,) in db.execute("SELECT topic FROM subs WHERE node=?", (node,)).fetchall():
                subs.append((node, bytes(topic), None))
            db.execute("DELETE FROM subs WHERE node=?", (node,))
            db.execute("DELETE FROM nodes WHERE node=?", (node,))
            db.execute("DELETE FROM known_keys WHERE node=?", (node,))

    def _forget_empty(self, db, wt, forgotten):
        """Forget topics that hold no message and have no subscriber: a topic
        costs a row and a slot of max_topics until then. The sequence floor
        keeps numbers from ever going back (see _new_topic)."""
        floor = self._seq_floor
        for topic in sorted(self._w_topics):
            st = wt.get(topic) or self._w_topics[topic]
            if st[1] < st[0]:
                continue   # holds messages
            if db.execute("SELECT 1 FROM subs WHERE topic=? LIMIT 1", (topic,)).fetchone():
                continue
            db.execute("DELETE FROM topics WHERE topic=?", (topic,))
            if st[0] > floor:
                floor = st[0]
            forgotten.append(topic)
            if len(forgotten) >= EXPIRE_BATCH_MAX:
                break
        if floor != self._seq_floor:
            db.execute("INSERT OR REPLACE INTO meta VALUES('seq_floor', ?)", (floor,))
            self._seq_floor = floor
