"""A DMC replica: one per subscribed topic on every member.

Writes are accepted offline; operations from others are applied in causal
order (an operation waits in a bounded buffer until everything it depends on
is applied; duplicates are ignored), so every replica that has applied the
same operations holds the same state (Shapiro et al. 2011, §2.4: op-based
CRDTs converge under causal delivery) and encodes it to the same bytes.

State kept:
- ``vv``: version vector, author -> highest sequence number applied; it is
  also the compact summary sync exchanges (a replica's applied set is always
  "every op of author a up to vv[a]", by causal delivery).
- ``objects``: (data type, name) -> the CRDT object (see crdts.py).
- ``tail``: the applied operations not yet compacted, as their wire bytes
  only (author and seq are read back from the bytes), in the order applied
  (a causal order), so sync can send a peer exactly the
  operations it lacks. ``snap_vv`` says what was compacted away: the tail
  holds, per author, exactly the ops in (snap_vv[a], vv[a]].
- ``pending``: early operations, at most ``pending_max`` (PENDING_MAX).

Compaction drops tail operations that every known member has seen (or that
the caller says are stable, e.g. acknowledged by the topic's proxy): they
live on folded into ``objects``. A peer that still lacks a compacted op is
sent the whole state as a snapshot instead, which it joins with its own.
"""

from shared_protocol.wire import cbor
from shared_protocol.dmc import ops as O
from shared_protocol.dmc import crdts
from shared_protocol.dmc import errors
from shared_protocol.dmc.errors import (
    MALFORMED, OVERSIZE, GAP, DEP_BEYOND, BUFFER_FULL, AUTHORS_FULL, OBJECTS_FULL, ITEMS_FULL)

# Early operations held until their dependencies arrive. A sync datagram
# carries up to ~35 small operations, so one reordered datagram fits; past
# this the op is refused (typed error) and the next sync round resends it.
PENDING_MAX = 64
# Uncompacted operations kept to serve peers. Past this the oldest are
# compacted even if not known stable (a member away for long then gets a
# snapshot), so a member that never returns cannot grow our heap.
TAIL_MAX = 256
# A host (a proxy on a Pi) may keep a longer tail so members returning after
# long absences still get operations rather than a snapshot.
TAIL_CEILING = 8192
# Named objects (maps, counters, sets, logs) in one topic.
OBJECTS_MAX = 16
# Largest encoded snapshot (state) accepted from a peer or the flash: a
# 512-reading log plus a few maps and sets; 32 chunks of sync.CHUNK.
SNAPSHOT_MAX = 32768
# Members whose version vectors we remember for compaction.
PEERS_MAX = O.AUTHORS_MAX

# receive() results.
DUPLICATE = 0
APPLIED = 1
BUFFERED = 2


def _vv_value(vv):
    out = []
    for a in sorted(vv):
        out.append(a)
        out.append(vv[a])
    return out


def _vv_from(flat, err):
    prs = O.pairs(flat, O.AUTHORS_MAX, "vv", err)
    vv = {}
    prev = None
    for a, s in prs:
        if prev is not None and not (a > prev):
            raise getattr(errors, err)(MALFORMED, __debug__ and "version vector authors out of order")
        prev = a
        vv[a] = s
    return vv


class Replica:
    def __init__(self, author, log_keep=200, log_age=0, tail_max=TAIL_MAX):
        O.check_author(author, "ReplicaLimitError")
        if not (O.is_int(log_keep) and 0 < log_keep <= crdts.LOG_MAX):
            raise errors.ReplicaLimitError(OVERSIZE, __debug__ and "log_keep must be 1..%d" % crdts.LOG_MAX)
        if not (O.is_int(log_age) and 0 <= log_age <= O.TIME_MAX):
            raise errors.ReplicaLimitError(OVERSIZE, __debug__ and "log_age must be 0 (no limit)..%d" % O.TIME_MAX)
        if not (O.is_int(tail_max) and 0 < tail_max <= TAIL_CEILING):
            raise errors.ReplicaLimitError(OVERSIZE, __debug__ and "tail_max must be 1..%d" % TAIL_CEILING)
        self.tail_max = tail_max
        # Early operations held at most (a board holds fewer: each is some
        # 300 bytes decoded, firmware/topic.py BOARD_PENDING); not stored.
        self.pending_max = PENDING_MAX
        self.author = author
        # Retention: logs keep at most log_keep readings, none older than
        # log_age before their newest. Replicas with the same (keep, age)
        # that saw the same readings keep the same ones; a board keeps fewer
        # than a host (firmware/topic.py LOG_KEEP): its logs are the newest
        # part of a host's, and sync (version vectors) does not depend on it.
        self.cfg = (log_keep, log_age)
        self.vv = {}
        self.clock = 0
        self.objects = {}
        self.snap_vv = {}
        self.tail = []
        self.pending = []
        self.peers = {}
        self._ids = {author: author}
        self._ctx = {}
        self.applied = 0
        self.dropped = 0  # buffered ops that failed a limit when they came due

    def __getattr__(self, name):
        # The API for apps and hosts (get, items, put, add, ...) is in
        # replica_api.py, loaded on first use: a sensor node only appends
        # readings, and a board keeps every method a class defines in its
        # heap. Called only for a name the replica does not have.
        from shared_protocol.dmc import replica_api
        f = replica_api.METHODS.get(name)
        if f is None:
            raise AttributeError(name)

        def method(*args, **kw):
            return f(self, *args, **kw)
        return method

    # --- local writes: each returns the operation's bytes to publish ---

    def append(self, name, t, value):
        """Log a reading taken at time t (caller's clock, e.g. Unix seconds)."""
        return self._local(O.K_APPEND, name, t, value)

    def _local(self, kind, name, a, b):
        me = self.author
        if me not in self.vv and len(self.vv) >= O.AUTHORS_MAX:
            raise errors.ReplicaLimitError(AUTHORS_FULL, __debug__ and "topic already has %d authors" % O.AUTHORS_MAX)
        deps = []
        for x in sorted(self.vv):
            if x != me and self.vv[x] > self._ctx.get(x, 0):
                deps.append((x, self.vv[x]))
        op = (me, self.vv.get(me, 0) + 1, self.clock + 1, deps, kind, name, a, b)
        try:
            data = O.encode(op)
            op = O.decode(data)  # the same checks and value forms remote replicas see
        except cbor.EncodeError as e:
            raise errors.ReplicaLimitError(e.code, __debug__ and "value cannot be encoded: %s" % e.message)
        except errors.OpError as e:
            raise errors.ReplicaLimitError(e.code, e.message)
        key = (O.KINDS[kind][0], name)
        o = self.objects.get(key)
        if o is not None and o.would_grow(op) and o.size() >= crdts.ITEMS_MAX:
            raise errors.ReplicaLimitError(ITEMS_FULL, __debug__ and "%s %r already holds %d items" % (
                O.TYPE_NAMES[key[0]], name, crdts.ITEMS_MAX))
        self._check_capacity(op, "ReplicaLimitError")
        self._apply(op, data)
        for x, s in deps:
            self._ctx[x] = s
        return data

    # --- remote operations ---

    def receive(self, data):
        """Apply (or buffer) one operation's bytes from a peer.

        Returns APPLIED, BUFFERED or DUPLICATE; raises OpError and changes
        nothing if the operation is malformed or over a limit.
        """
        op = O.decode(data)
        return self.receive_op(op, bytes(data))

    def receive_op(self, op, data):
        a = op[0]
        s = op[1]
        have = self.vv.get(a, 0)
        if s <= have:
            return DUPLICATE
        for p in self.pending:
            if p[0][1] == s and p[0][0] == a:
                return DUPLICATE
        if s > have + PENDING_MAX:
            raise errors.OpError(GAP, __debug__ and "author %s jumps from seq %d to %d, past the %d-op buffer: sync first" % (
                a.hex(), have, s, PENDING_MAX))
        new = 0 if a in self.vv else 1
        for b, q in op[3]:
            if q > self.vv.get(b, 0) + PENDING_MAX:
                raise errors.OpError(DEP_BEYOND, __debug__ and "depends on seq %d of %s, %d past what this replica holds" % (
                    q, b.hex(), q - self.vv.get(b, 0)))
            if b not in self.vv:
                new += 1
        if len(self.vv) + new > O.AUTHORS_MAX:
            raise errors.OpError(AUTHORS_FULL, __debug__ and "operation brings the topic past %d authors" % O.AUTHORS_MAX)
        if self._ready(op):
            self._check_capacity(op, "OpError")
            self._apply(op, data)
            self._drain()
            return APPLIED
        if len(self.pending) >= self.pending_max:
            raise errors.OpError(BUFFER_FULL, __debug__ and "%d early operations already wait for their dependencies" % self.pending_max)
        self.pending.append((op, data))
        return BUFFERED

    def _ready(self, op):
        if self.vv.get(op[0], 0) != op[1] - 1:
            return False
        for b, q in op[3]:
            if self.vv.get(b, 0) < q:
                return False
        return True

    def _drain(self):
        progress = True
        while progress and self.pending:
            progress = False
            keep = []
            for p in self.pending:
                op = p[0]
                if op[1] <= self.vv.get(op[0], 0):
                    progress = True
                elif self._ready(op):
                    try:
                        self._check_capacity(op, "OpError")
                        self._apply(op, p[1])
                    except errors.OpError:
                        self.dropped += 1
                    progress = True
                else:
                    keep.append(p)
            self.pending = keep

    def _check_capacity(self, op, err):
        key = (O.KINDS[op[4]][0], op[5])
        o = self.objects.get(key)
        if o is None:
            if len(self.objects) >= OBJECTS_MAX:
                raise getattr(errors, err)(OBJECTS_FULL, __debug__ and "topic already holds %d objects" % OBJECTS_MAX)
        elif o.would_grow(op) and o.size() >= crdts.ITEMS_HARD:
            raise getattr(errors, err)(ITEMS_FULL, __debug__ and "%s %r holds %d items" % (O.TYPE_NAMES[key[0]], op[5], crdts.ITEMS_HARD))

    def _apply(self, op, data):
        a = self._ids.get(op[0])
        if a is None:
            a = self._ids[op[0]] = op[0]
        key = (O.KINDS[op[4]][0], op[5])
        o = self.objects.get(key)
        if o is None:
            o = self.objects[key] = crdts.new(key[0], self.cfg)
        o.apply(op)
        self.vv[a] = op[1]
        if op[2] > self.clock:
            self.clock = op[2]
        self.tail.append(data)
        self._cut_tail()
        self.applied += 1

    def _cut_tail(self):
        # the oldest ops past tail_max fold into the snapshot (snap_vv)
        while len(self.tail) > self.tail_max:
            x, s = O.author_seq(self.tail.pop(0))
            self.snap_vv[self._ids.get(x, x)] = s

    def set_log_keep(self, log_keep):
        """Keep at most log_keep readings per log from now on (a board whose
        retention differs from the one a stored replica was saved with);
        True if the replica changed."""
        if not (O.is_int(log_keep) and 0 < log_keep <= crdts.LOG_MAX):
            raise errors.ReplicaLimitError(OVERSIZE, __debug__ and "log_keep must be 1..%d" % crdts.LOG_MAX)
        if log_keep == self.cfg[0]:
            return False
        self.cfg = (log_keep, self.cfg[1])
        for k in self.objects:
            if k[0] == O.T_LOG:
                self.objects[k].set_keep(log_keep)
        return True

    def limit_tail(self, tail_max):
        """Keep at most tail_max ops from now on (a board lowering the bound
        a stored replica was saved with); True if the replica changed."""
        if not (O.is_int(tail_max) and 0 < tail_max <= TAIL_CEILING):
            raise errors.ReplicaLimitError(OVERSIZE, __debug__ and "tail_max must be 1..%d" % TAIL_CEILING)
        changed = tail_max != self.tail_max
        self.tail_max = tail_max
        n = len(self.tail)
        self._cut_tail()
        return changed or len(self.tail) != n

    # --- what sync needs ---

    def lacks(self, other_vv):
        """True if other_vv holds operations this replica has not applied."""
        for a in other_vv:
            if other_vv[a] > self.vv.get(a, 0):
                return True
        return False

    def needs_snapshot(self, peer_vv):
        """True if the peer lacks operations we have compacted away."""
        for a in self.snap_vv:
            if peer_vv.get(a, 0) < self.snap_vv[a]:
                return True
        return False

    def ops_since(self, peer_vv):
        """Wire bytes of the tail operations the peer lacks, in causal order."""
        out = []
        for data in self.tail:
            a, s = O.author_seq(data)
            if s > peer_vv.get(a, 0):
                out.append(data)
        return out

    def note_peer(self, peer, vv):
        """Remember what a member has applied (from its sync summary)."""
        if peer == self.author:
            return
        if peer not in self.peers and len(self.peers) >= PEERS_MAX:
            del self.peers[min(self.peers)]
        self.peers[peer] = vv

    # --- compaction ---

    def stable_vv(self):
        """What every known member (us and the peers noted) has applied."""
        st = dict(self.vv)
        for p in self.peers:
            pv = self.peers[p]
            for a in st:
                q = pv.get(a, 0)
                if q < st[a]:
                    st[a] = q
        return st

    def compact(self, stable=None):
        """Fold stable operations into the snapshot: drop them from the tail.

        stable: version vector known seen by all (e.g. a proxy's
        acknowledgement); default: stable_vv(). Returns ops dropped.
        """
        if stable is None:
            stable = self.stable_vv()
        for a in self.vv:
            s = stable.get(a, 0)
            if s > self.vv[a]:
                s = self.vv[a]
            if s > self.snap_vv.get(a, 0):
                self.snap_vv[a] = s
        n = len(self.tail)
        keep = []
        for data in self.tail:
            a, s = O.author_seq(data)
            if s > self.snap_vv.get(a, 0):
                keep.append(data)
        self.tail = keep
        return n - len(keep)

    # --- state encoding and snapshots ---

    def snapshot_value(self):
        objs = []
        for key in sorted(self.objects):
            objs.append([key[0], key[1], self.objects[key].to_value()])
        return [_vv_value(self.vv), self.clock, objs]

    def snapshot(self):
        """The replica's state as deterministic bytes: equal states, equal
        bytes, on every interpreter. Also what sync sends a peer that lacks
        compacted operations."""
        return cbor.encode(self.snapshot_value())

    state_bytes = snapshot

    def merge_snapshot(self, data):
        """Join a peer's snapshot bytes into this replica (SnapshotError and
        no change if they are bad)."""
        if len(data) > SNAPSHOT_MAX:
            raise errors.SnapshotError(OVERSIZE, __debug__ and "snapshot of %d bytes exceeds %d" % (len(data), SNAPSHOT_MAX))
        try:
            v = cbor.decode(data)
        except cbor.DecodeError as e:
            raise errors.SnapshotError(MALFORMED, __debug__ and "snapshot is not deterministic CBOR (%s)" % e.code)
        self.merge_snapshot_value(v)

    def merge_snapshot_value(self, v):
        # A peer's snapshot (sync) or the stored one (boot): rare, so the
        # code is in dmc/snapshot.py, imported when needed and dropped
        # after boot (firmware/runtime.py, BOOT_ONLY).
        from shared_protocol.dmc import snapshot
        snapshot.merge(self, v)

    # --- persistence form (see store.py) ---

    def dump_value(self):
        # the tail itself, not a copy: the value is encoded at once
        return [1, self.author, [self.cfg[0], self.cfg[1], self.tail_max], self.snapshot_value(),
                _vv_value(self.snap_vv), self.tail]

    @classmethod
    def restore_bytes(cls, data):
        """Rebuild a replica from the encoding of dump_value(), an item at a
        time; DecodeError or SnapshotError if bad."""
        from shared_protocol.dmc import snapshot
        return snapshot.restore_bytes(cls, data)
