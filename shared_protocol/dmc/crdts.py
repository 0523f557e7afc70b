"""The data types a DMC holds, each op-based with a state-based join.

Operations arrive in causal order (the replica's buffer sees to it), so each
``apply`` is the op-based update of Shapiro et al., "A comprehensive study of
Convergent and Commutative Replicated Data Types" (INRIA RR-7506, 2011).
``join`` merges a whole state received as a snapshot (a replica that returns
after the others compacted their logs); it is the state-based merge of the
same paper, with the two states' version vectors as causal context, so a
snapshot and the operations that built it reach the same state.

``to_value`` is the deterministic encoding of a state: every collection is
sorted explicitly (MicroPython dicts are unordered). ``from_value`` checks a
decoded state as strictly as an incoming operation and raises SnapshotError.

Limits per object (ITEMS_MAX, LOG_MAX) bound what a local write may create;
incoming operations may exceed them up to ITEMS_HARD (concurrent writers can
each add the last allowed item), never further.
"""

from array import array

from shared_protocol.wire import cbor
from shared_protocol.dmc import ops as O
from shared_protocol.dmc.errors import SnapshotError, MALFORMED, OVERSIZE

# Keys of one map / elements of one set that a local write may create: a
# board's topic holds a handful of settings and tags, not a database.
ITEMS_MAX = 64
# What remote writes may push an object to (concurrent adds past ITEMS_MAX).
ITEMS_HARD = 2 * ITEMS_MAX
# Upper bound on a log's retention count: 512 readings of ~12 bytes each is
# about 16 KB of heap, a third of the edge stack's 48 KB budget.
LOG_MAX = 512


def _bad(msg):
    return SnapshotError(MALFORMED, msg)


def _ekey(e):
    # Set elements mix text, bytes and ints: order them by their encoding.
    return cbor.encode(e)


class LwwMap:
    """Map of last-writer-wins registers. A register is (clock, author,
    value); the larger (clock, author) wins: Lamport order, ties broken by
    author bytes, so every replica picks the same winner. Writing None keeps
    the register (it must still beat older writes) and hides the key."""

    TYPE = O.T_MAP
    __slots__ = ("regs",)

    def __init__(self):
        self.regs = {}

    def size(self):
        return len(self.regs)

    def would_grow(self, op):
        return op[6] not in self.regs

    def apply(self, op):
        key = op[6]
        cur = self.regs.get(key)
        if cur is None or (op[2], op[0]) > (cur[0], cur[1]):
            self.regs[key] = (op[2], op[0], op[7])

    def get(self, key, default=None):
        r = self.regs.get(key)
        if r is None or r[2] is None:
            return default
        return r[2]

    def items(self):
        return [(k, self.regs[k][2]) for k in sorted(self.regs) if self.regs[k][2] is not None]

    def to_value(self):
        return [[k, r[0], r[1], r[2]] for k, r in [(k, self.regs[k]) for k in sorted(self.regs)]]

    @classmethod
    def from_value(cls, v, cfg, intern, vv):
        m = cls()
        if not isinstance(v, list) or len(v) > ITEMS_HARD:
            raise _bad("map state must be a list of at most %d registers" % ITEMS_HARD)
        prev = None
        for r in v:
            if not isinstance(r, list) or len(r) != 4:
                raise _bad("map register must be [key, clock, author, value]")
            k = O.check_key(r[0], SnapshotError)
            if prev is not None and not (k > prev):
                raise _bad("map keys out of order")
            prev = k
            a = O.check_author(r[2], SnapshotError)
            if a not in vv:
                raise _bad("map register by an author missing from the version vector")
            m.regs[k] = (O.check_seq(r[1], "clock", SnapshotError), intern(a), r[3])
        return m

    def join(self, other, my_vv, other_vv):
        for k in other.regs:
            r = other.regs[k]
            cur = self.regs.get(k)
            if cur is None or (r[0], r[1]) > (cur[0], cur[1]):
                self.regs[k] = r


class PNCounter:
    """PN counter: per author, the sum of its increments and of its
    decrements. Each author's sums only grow with its sequence number, so
    the state-based join is a per-author maximum."""

    TYPE = O.T_COUNTER
    __slots__ = ("pn",)

    def __init__(self):
        self.pn = {}

    def size(self):
        return len(self.pn)

    def would_grow(self, op):
        return False  # bounded by AUTHORS_MAX through the version vector

    def apply(self, op):
        a = op[0]
        cur = self.pn.get(a)
        if cur is None:
            cur = self.pn[a] = [0, 0]
        d = op[6]
        if d > 0:
            cur[0] += d
        else:
            cur[1] -= d

    def value(self):
        v = 0
        for a in self.pn:
            v += self.pn[a][0] - self.pn[a][1]
        return v

    def to_value(self):
        return [[a, self.pn[a][0], self.pn[a][1]] for a in sorted(self.pn)]

    @classmethod
    def from_value(cls, v, cfg, intern, vv):
        c = cls()
        if not isinstance(v, list) or len(v) > O.AUTHORS_MAX:
            raise _bad("counter state must be a list of at most %d authors" % O.AUTHORS_MAX)
        prev = None
        for r in v:
            if not isinstance(r, list) or len(r) != 3:
                raise _bad("counter entry must be [author, increments, decrements]")
            a = intern(O.check_author(r[0], SnapshotError))
            if prev is not None and not (a > prev):
                raise _bad("counter authors out of order")
            prev = a
            if a not in vv:
                raise _bad("counter share of an author missing from the version vector")
            if not (O.is_int(r[1]) and O.is_int(r[2]) and r[1] >= 0 and r[2] >= 0
                    and r[1] <= 0xFFFFFFFFFFFFFFFF and r[2] <= 0xFFFFFFFFFFFFFFFF):
                raise _bad("counter sums must be ints in 0..2**64-1")
            c.pn[a] = [r[1], r[2]]
        return c

    def join(self, other, my_vv, other_vv):
        for a in other.pn:
            o = other.pn[a]
            cur = self.pn.get(a)
            if cur is None:
                self.pn[a] = [o[0], o[1]]
            else:
                if o[0] > cur[0]:
                    cur[0] = o[0]
                if o[1] > cur[1]:
                    cur[1] = o[1]


class ORSet:
    """Add-wins observed-remove set without tombstones (the "optimized
    OR-set" of Bieniusa et al., 2012): each element keeps the tags (author,
    seq) of the inserts that made it present. Insert and remove both clear
    the tags their author had observed; a concurrent insert's tag was not
    observed, so it survives and the insert wins."""

    TYPE = O.T_SET
    __slots__ = ("items",)

    def __init__(self):
        self.items = {}

    def size(self):
        return len(self.items)

    def would_grow(self, op):
        return op[4] == O.K_INSERT and op[6] not in self.items

    def apply(self, op):
        e = op[6]
        tags = self.items.get(e)
        if tags is not None:
            for t in op[7]:
                if t in tags:
                    tags.remove(t)
        if op[4] == O.K_INSERT:
            if tags is None:
                tags = self.items[e] = []
            tags.append((op[0], op[1]))
        if tags is not None and not tags:
            del self.items[e]

    def observed(self, e):
        return list(self.items.get(e, ()))

    def __contains__(self, e):
        return e in self.items

    def members(self):
        return sorted(self.items, key=_ekey)

    def to_value(self):
        out = []
        for e in self.members():
            out.append([e, O.flat(sorted(self.items[e]))])
        return out

    @classmethod
    def from_value(cls, v, cfg, intern, vv):
        s = cls()
        if not isinstance(v, list) or len(v) > ITEMS_HARD:
            raise _bad("set state must be a list of at most %d elements" % ITEMS_HARD)
        prev = None
        for r in v:
            if not isinstance(r, list) or len(r) != 2:
                raise _bad("set entry must be [element, tags]")
            e = O.check_elem(r[0], SnapshotError)
            k = _ekey(e)
            if prev is not None and not (k > prev):
                raise _bad("set elements out of order")
            prev = k
            tags = O.pairs(r[1], O.TAGS_MAX, "tags", SnapshotError)
            if not tags:
                raise _bad("a set element needs at least one tag")
            for a, q in tags:
                if q > vv.get(a, 0):
                    raise _bad("set tag beyond the version vector")
            s.items[e] = [(intern(a), q) for a, q in tags]
        return s

    def join(self, other, my_vv, other_vv):
        # Keep a tag both sides hold, or one side holds and the other has not
        # seen yet (its absence there is ignorance, not a removal).
        keys = list(self.items)
        for e in other.items:
            if e not in self.items:
                keys.append(e)
        for e in keys:
            mine = self.items.get(e, ())
            theirs = other.items.get(e, ())
            out = []
            for t in mine:
                if t in theirs or t[1] > other_vv.get(t[0], 0):
                    out.append(t)
            for t in theirs:
                if t not in mine and t[1] > my_vv.get(t[0], 0):
                    out.append(t)
            if out:
                self.items[e] = out
            elif e in self.items:
                del self.items[e]


class TimeLog:
    """Bounded time-series log of readings (t, author, seq, value), kept in
    (t, author, seq) order, the same on every replica. Retention: at most
    ``keep`` readings, and none older than ``age`` before the newest one.
    Both cut-offs depend only on the set of readings (never on a local
    clock), and dropping is monotone, so replicas that saw the same
    readings keep the same ones whatever the order of arrival.

    Readings are stored column-wise (times and sequence numbers in 32-bit
    arrays, authors as a 1-byte index into ``who``): about 10 bytes plus
    the value per reading instead of a ~100-byte tuple with boxed ints, which
    is what lets a 200-reading log fit a board's heap budget."""

    TYPE = O.T_LOG
    __slots__ = ("ts", "ix", "seqs", "vals", "who", "keep", "age")

    def __init__(self, keep=200, age=0):
        self.keep = keep
        self.age = age
        self._set([])

    def _set(self, entries):
        self.ts = array("I")
        self.ix = array("B")
        self.seqs = array("I")
        self.vals = []
        self.who = []
        for e in entries:
            self.ts.append(e[0])
            self.ix.append(self._aidx(e[1]))
            self.seqs.append(e[2])
            self.vals.append(e[3])

    def _aidx(self, a):
        who = self.who
        for i in range(len(who)):
            if who[i] == a:
                return i
        who.append(a)  # at most AUTHORS_MAX: authors come from the vv
        return len(who) - 1

    def __len__(self):
        return len(self.vals)

    def size(self):
        return 0  # bounded by retention

    def would_grow(self, op):
        return False

    def _key(self, i):
        return (self.ts[i], self.who[self.ix[i]], self.seqs[i])

    def _insert(self, t, a, s, v):
        k = (t, a, s)
        lo = 0
        hi = len(self.vals)
        while lo < hi:
            mid = (lo + hi) // 2
            if self._key(mid) < k:
                lo = mid + 1
            else:
                hi = mid
        ai = self._aidx(a)
        if lo == len(self.vals):
            self.ts.append(t)
            self.ix.append(ai)
            self.seqs.append(s)
            self.vals.append(v)
        else:
            self.ts = self.ts[:lo] + array("I", [t]) + self.ts[lo:]
            self.ix = self.ix[:lo] + array("B", [ai]) + self.ix[lo:]
            self.seqs = self.seqs[:lo] + array("I", [s]) + self.seqs[lo:]
            self.vals.insert(lo, v)

    def _trim(self):
        n = len(self.vals)
        drop = n - self.keep
        if drop < 0:
            drop = 0
        if self.age and n:
            cutoff = self.ts[n - 1] - self.age
            while drop < n and self.ts[drop] < cutoff:
                drop += 1
        if drop:
            self.ts = self.ts[drop:]
            self.ix = self.ix[drop:]
            self.seqs = self.seqs[drop:]
            del self.vals[:drop]

    def apply(self, op):
        self._insert(op[6], op[0], op[1], op[7])
        self._trim()

    def entries(self):
        return [(self.ts[i], self.who[self.ix[i]], self.seqs[i], self.vals[i]) for i in range(len(self.vals))]

    def readings(self):
        return [(self.ts[i], self.vals[i]) for i in range(len(self.vals))]

    def to_value(self):
        return [[e[0], e[1], e[2], e[3]] for e in self.entries()]

    @classmethod
    def from_value(cls, v, cfg, intern, vv):
        lg = cls(cfg[0], cfg[1])
        if not isinstance(v, list) or len(v) > LOG_MAX:
            raise _bad("log state must be a list of at most %d readings" % LOG_MAX)
        prev = None
        entries = []
        for r in v:
            if not isinstance(r, list) or len(r) != 4:
                raise _bad("log reading must be [time, author, seq, value]")
            k = (O.check_time(r[0], SnapshotError), O.check_author(r[1], SnapshotError),
                 O.check_seq(r[2], "seq", SnapshotError))
            if prev is not None and not (k > prev):
                raise _bad("log readings out of order")
            prev = k
            if r[2] > vv.get(r[1], 0):
                raise _bad("log reading beyond the version vector")
            entries.append((r[0], intern(r[1]), r[2], r[3]))
        lg._set(entries)
        lg._trim()
        return lg

    def join(self, other, my_vv, other_vv):
        mine = self.entries()
        have = {}
        for e in mine:
            have[(e[1], e[2])] = 1
        added = False
        for e in other.entries():
            if (e[1], e[2]) not in have:
                mine.append(e)
                added = True
        if added:
            mine.sort(key=_lkey)
            self._set(mine)
            self._trim()


def _lkey(e):
    return (e[0], e[1], e[2])


CLASSES = {
    O.T_MAP: LwwMap,
    O.T_COUNTER: PNCounter,
    O.T_SET: ORSet,
    O.T_LOG: TimeLog,
}


def new(tcode, cfg):
    if tcode == O.T_LOG:
        return TimeLog(cfg[0], cfg[1])
    return CLASSES[tcode]()

