"""DMC data type: PNCounter, the PN-counter. One module per
type, loaded on first use (crdts.new): a sensor node that only appends
readings never loads the others (their bytecode would sit in the heap)."""
from shared_protocol.dmc import ops as O
from shared_protocol.dmc import errors
from shared_protocol.dmc.crdts import _bad


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
            raise _bad(__debug__ and "counter state must be a list of at most %d authors" % O.AUTHORS_MAX)
        prev = None
        for r in v:
            if not isinstance(r, list) or len(r) != 3:
                raise _bad(__debug__ and "counter entry must be [author, increments, decrements]")
            a = intern(O.check_author(r[0], "SnapshotError"))
            if prev is not None and not (a > prev):
                raise _bad(__debug__ and "counter authors out of order")
            prev = a
            if a not in vv:
                raise _bad(__debug__ and "counter share of an author missing from the version vector")
            if not (O.is_int(r[1]) and O.is_int(r[2]) and r[1] >= 0 and r[2] >= 0
                    and r[1] <= 0xFFFFFFFFFFFFFFFF and r[2] <= 0xFFFFFFFFFFFFFFFF):
                raise _bad(__debug__ and "counter sums must be ints in 0..2**64-1")
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
