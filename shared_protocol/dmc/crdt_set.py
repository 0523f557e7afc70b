"""DMC data type: ORSet, the observed-remove set (tags). One module per
type, loaded on first use (crdts.new): a sensor node that only appends
readings never loads the others (their bytecode would sit in the heap)."""
from shared_protocol.dmc import ops as O
from shared_protocol.dmc import errors
from shared_protocol.dmc.crdts import _bad, _ekey, ITEMS_HARD


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
            raise _bad(__debug__ and "set state must be a list of at most %d elements" % ITEMS_HARD)
        prev = None
        for r in v:
            if not isinstance(r, list) or len(r) != 2:
                raise _bad(__debug__ and "set entry must be [element, tags]")
            e = O.check_elem(r[0], "SnapshotError")
            k = _ekey(e)
            if prev is not None and not (k > prev):
                raise _bad(__debug__ and "set elements out of order")
            prev = k
            tags = O.pairs(r[1], O.TAGS_MAX, "tags", "SnapshotError")
            if not tags:
                raise _bad(__debug__ and "a set element needs at least one tag")
            for a, q in tags:
                if q > vv.get(a, 0):
                    raise _bad(__debug__ and "set tag beyond the version vector")
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
