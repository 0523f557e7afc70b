"""DMC data type: LwwMap, the last-writer-wins map (settings). One module per
type, loaded on first use (crdts.new): a sensor node that only appends
readings never loads the others (their bytecode would sit in the heap)."""
from shared_protocol.dmc import ops as O
from shared_protocol.dmc import errors
from shared_protocol.dmc.crdts import _bad, ITEMS_HARD


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
            raise _bad(__debug__ and "map state must be a list of at most %d registers" % ITEMS_HARD)
        prev = None
        for r in v:
            if not isinstance(r, list) or len(r) != 4:
                raise _bad(__debug__ and "map register must be [key, clock, author, value]")
            k = O.check_key(r[0], "SnapshotError")
            if prev is not None and not (k > prev):
                raise _bad(__debug__ and "map keys out of order")
            prev = k
            a = O.check_author(r[2], "SnapshotError")
            if a not in vv:
                raise _bad(__debug__ and "map register by an author missing from the version vector")
            m.regs[k] = (O.check_seq(r[1], "clock", "SnapshotError"), intern(a), r[3])
        return m

    def join(self, other, my_vv, other_vv):
        for k in other.regs:
            r = other.regs[k]
            cur = self.regs.get(k)
            if cur is None or (r[0], r[1]) > (cur[0], cur[1]):
                self.regs[k] = r
