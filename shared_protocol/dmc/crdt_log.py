"""DMC data type: TimeLog, the time-series log of readings. One module per
type, loaded on first use (crdts.new): a sensor node that only appends
readings never loads the others (their bytecode would sit in the heap)."""
import gc
import sys
from array import array

from shared_protocol.wire import cbor
from shared_protocol.dmc import ops as O
from shared_protocol.dmc import errors
from shared_protocol.dmc.crdts import _bad, LOG_MAX


# A reading's value as stored: its canonical encoding, at most an op's size
# (values come from operations; a snapshot's larger value is refused), so
# its length fits an array("H") slot.
VALUE_MAX = O.OP_MAX
# MicroPython keeps an array's or bytearray's room when a slice assignment
# shrinks it: a log grown once to its full size and emptied holds its
# readings from then on without asking the heap for a larger block. On
# CPython (hosts) memory is no concern and extend() takes no raw bytes.
_RESERVE = sys.implementation.name == "micropython"
_NO_I = array("I")
_NO_B = array("B")
_NO_H = array("H")


class TimeLog:
    """Bounded time-series log of readings (t, author, seq, value), kept in
    (t, author, seq) order, the same on every replica. Retention: at most
    ``keep`` readings, and none older than ``age`` before the newest one.
    Both cut-offs depend only on the set of readings (never on a local
    clock), and dropping is monotone, so replicas that saw the same
    readings keep the same ones whatever the order of arrival.

    Readings are stored column-wise: times and sequence numbers in 32-bit
    arrays, authors as a 1-byte index into ``who``, and each value as its
    canonical CBOR encoding, one after the other in one bytearray
    (``vals``, their lengths in ``lens``). A 200-reading log of
    temperatures holds some 20 bytes a reading on the 32-bit unix
    MicroPython with double floats (16 with a board's single floats); with
    each value a boxed float in a list it held 42 there, 8.4 KB a topic
    (docs/node.md, "A node that keeps running"). Retention cuts the
    oldest readings in place (slice assignment moves the rest down), so a
    full log's next reading allocates nothing the size of a column.
    Values are decoded when read (``entries``, ``readings``); a save
    writes their stored bytes as they are (``cbor.Raw``)."""

    TYPE = O.T_LOG
    __slots__ = ("ts", "ix", "seqs", "lens", "vals", "who", "keep", "age")

    def __init__(self, keep=200, age=0):
        self.keep = keep
        self.age = age
        self._set([])

    def _set(self, rows):
        """rows: [(t, author, seq, value encoding)] in order."""
        self.ts = array("I")
        self.ix = array("B")
        self.seqs = array("I")
        self.lens = array("H")
        self.vals = bytearray()
        self.who = []
        if _RESERVE:
            self._reserve()
        for r in rows:
            self._push(r[0], r[1], r[2], r[3])

    def _reserve(self):
        # Room for ``keep`` readings, made when the log is (at boot, or at
        # its first reading), while the heap is tidy: grown a reading at a
        # time, each column needs a larger free block every few readings,
        # and a board whose heap has filled with small kept objects has
        # none (a frozen node in 72 KB failed to grow a 1,089-byte column
        # after 62 readings per topic, tools/bench/bench_rig.py --readings
        # 150). Values get room for one float each as this build encodes
        # it (5 bytes on a single-float board, 9 on a double-float build).
        # One reading more than ``keep``: apply() inserts before it trims,
        # so a full log holds keep + 1 for a moment; with room for keep
        # only, every reading past the first ``keep`` grew each column (a
        # frozen node in 64 KB failed to grow its 576-byte values to 579
        # with 8 KB free in pieces, bench_rig.py --readings 150).
        gc.collect()   # the room goes to the lowest free blocks, below the turn's garbage
        k = self.keep + 1
        for col, w, none in ((self.ts, 4, _NO_I), (self.ix, 1, _NO_B), (self.seqs, 4, _NO_I),
                             (self.lens, 2, _NO_H)):
            col.extend(bytes(w * k))
            col[0:k] = none
        n = len(cbor.encode(0.1)) * k
        self.vals.extend(bytes(n))
        self.vals[0:n] = b""

    def set_keep(self, keep):
        """Keep at most ``keep`` readings from now on (a board's retention,
        firmware/topic.py, lower than the one a stored replica was saved
        with): the oldest past it are cut, and on MicroPython the columns
        are made anew with room for ``keep`` readings (a cut keeps a
        column's room, so the old bound's would stay held)."""
        self.keep = keep
        self._trim()
        if not _RESERVE:
            return
        ts, ix, seqs, lens, vals, who = self.ts, self.ix, self.seqs, self.lens, self.vals, self.who
        self._set(())
        o = 0
        for i in range(len(lens)):
            n = lens[i]
            self._push(ts[i], who[ix[i]], seqs[i], vals[o:o + n])
            o += n

    def _push(self, t, a, s, enc):
        self.ts.append(t)
        self.ix.append(self._aidx(a))
        self.seqs.append(s)
        self.lens.append(len(enc))
        self.vals.extend(enc)

    def _aidx(self, a):
        who = self.who
        for i in range(len(who)):
            if who[i] == a:
                return i
        who.append(a)  # at most AUTHORS_MAX: authors come from the vv
        return len(who) - 1

    def __len__(self):
        return len(self.ts)

    def size(self):
        return 0  # bounded by retention

    def would_grow(self, op):
        return False

    def _key(self, i):
        return (self.ts[i], self.who[self.ix[i]], self.seqs[i])

    def _offset(self, i):
        o = 0
        lens = self.lens
        for k in range(i):
            o += lens[k]
        return o

    def _insert(self, t, a, s, enc):
        k = (t, a, s)
        n = len(self.ts)
        if n == 0 or self._key(n - 1) < k:
            self._push(t, a, s, enc)   # the common case: the newest reading
            return
        lo = 0
        hi = n
        while lo < hi:
            mid = (lo + hi) // 2
            if self._key(mid) < k:
                lo = mid + 1
            else:
                hi = mid
        o = self._offset(lo)
        self.ts[lo:lo] = array("I", [t])
        self.ix[lo:lo] = array("B", [self._aidx(a)])
        self.seqs[lo:lo] = array("I", [s])
        self.lens[lo:lo] = array("H", [len(enc)])
        self.vals[o:o] = enc

    def _trim(self):
        n = len(self.ts)
        drop = n - self.keep
        if drop < 0:
            drop = 0
        if self.age and n:
            cutoff = self.ts[n - 1] - self.age
            while drop < n and self.ts[drop] < cutoff:
                drop += 1
        if drop:
            self.vals[0:self._offset(drop)] = b""
            self.ts[0:drop] = _NO_I
            self.ix[0:drop] = _NO_B
            self.seqs[0:drop] = _NO_I
            self.lens[0:drop] = _NO_H

    def apply(self, op):
        # at most VALUE_MAX: the whole op is at most OP_MAX (ops.decode)
        self._insert(op[6], op[0], op[1], cbor.encode(op[7]))
        self._trim()

    def _slices(self):
        """(index, its value's stored bytes) of every reading, in order."""
        o = 0
        lens = self.lens
        for i in range(len(lens)):
            n = lens[i]
            yield i, self.vals[o:o + n]
            o += n

    def entries(self):
        """[(t, author, seq, value)], in order."""
        return [(self.ts[i], self.who[self.ix[i]], self.seqs[i], cbor.decode(v)) for i, v in self._slices()]

    def readings(self):
        return [(self.ts[i], cbor.decode(v)) for i, v in self._slices()]

    def to_value(self):
        # [[t, author, seq, value], ...], each reading made as it is
        # encoded (cbor.Lazy) with its value's stored bytes: a save never
        # holds the log a second time
        return cbor.Lazy(len(self.ts), self._rows)

    def _rows(self):
        for i, v in self._slices():
            yield (self.ts[i], self.who[self.ix[i]], self.seqs[i], cbor.Raw(v))

    @classmethod
    def from_value(cls, v, cfg, intern, vv):
        if not isinstance(v, list):
            raise _bad(__debug__ and "log state must be a list of at most %d readings" % LOG_MAX)
        return cls.from_rows(v, len(v), cfg, intern, vv)

    @classmethod
    def from_rows(cls, rows, n, cfg, intern, vv):
        """The log of ``n`` decoded readings taken from ``rows`` in turn (a
        list, or a generator decoding them one at a time: dmc/snapshot.py
        restore_bytes). In dmc/log_snapshot.py with join: a board reads a
        stored log at boot and joins a LAN peer's snapshot, not every turn."""
        from shared_protocol.dmc import log_snapshot
        return log_snapshot.from_rows(cls, rows, n, cfg, intern, vv)

    def join(self, other, my_vv, other_vv):
        """The union of this log and ``other`` (a snapshot's), in place."""
        from shared_protocol.dmc import log_snapshot
        log_snapshot.join(self, other)
