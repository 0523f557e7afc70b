"""The store's transactions, run by its writer thread: a batch of
publishes, subscription changes and cursor moves in one transaction, then
retention per topic and the periodic sweeps.
"""
import sqlite3

from upsycle.proxy.store_open import classify

# Rows per transaction: a bound on the time one commit holds the writer and on
# the memory of one batch; under load a batch this size still shares one sync.
BATCH_MAX = 4096
# Nodes expired or topics forgotten per sweep: bounds one sweep's transaction.
EXPIRE_BATCH_MAX = 1000


class Transactions:
    """The writer side of Store (mixed into it; runs in its thread)."""

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
        forgotten = []
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
            for node, t in sorted((seen or {}).items()):
                db.execute("INSERT INTO nodes VALUES(?,?) ON CONFLICT(node) DO UPDATE SET last_seen=excluded.last_seen",
                           (node, t))
            for kid, (node, secret, t) in sorted((keys or {}).items()):
                db.execute("INSERT OR REPLACE INTO known_keys VALUES(?,?,?,?)", (kid, node, secret, t))
            for kind, a, b, payload, _tok, node in batch:
                if kind == "pub":
                    st = self._new_topic(wt, a, node)
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
                        # retention decides how much history a node gets. An
                        # unknown topic is created, so its first number is
                        # fixed now (the floor may rise before it is used).
                        st = self._new_topic(wt, b, a)
                        cursor = st[1] - 1
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
                db.execute("INSERT INTO topics(topic, next_seq, creator) VALUES(?,?,?) ON CONFLICT(topic) "
                           "DO UPDATE SET next_seq=excluded.next_seq", (topic, st[0], self._new_creators.get(topic)))
                self._retain(db, topic, st, drops)
            if sweep and self.retention.max_age_s:
                self._sweep_age(db, now, wt, drops)
            if sweep and self.sub_expiry_s:
                self._expire_nodes(db, now, live, subs)
            if sweep:
                self._forget_empty(db, wt, forgotten)
                if self.max_known_keys:
                    db.execute("DELETE FROM known_keys WHERE kid NOT IN (SELECT kid FROM known_keys ORDER BY "
                               "last_seen DESC LIMIT ?)", (self.max_known_keys,))
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
        for topic in forgotten:
            self._w_topics.pop(topic, None)
            wt.pop(topic, None)
        if self.max_db_bytes:
            self._keep_quota()
        return {"error": None, "items": out, "topics": dict((t, tuple(s)) for t, s in wt.items()),
                "subs": subs, "drops": drops, "causes": self._causes, "stored": stored, "cursors": cursors,
                "creators": self._new_creators, "forgotten": forgotten}

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
