"""DMC data type: TimeLog, the time-series log of readings. One module per
type, loaded on first use (crdts.new): a sensor node that only appends
readings never loads the others (their bytecode would sit in the heap)."""
from array import array

from shared_protocol.dmc import ops as O
from shared_protocol.dmc import errors
from shared_protocol.dmc.crdts import _bad, LOG_MAX


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
            k = (O.check_time(r[0], "SnapshotError"), O.check_author(r[1], "SnapshotError"),
                 O.check_seq(r[2], "seq", "SnapshotError"))
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
