"""One topic's ring as one proxy knows it (for rings.py): the topic's
known subscribers sorted by ring position, the nearest of them on each side
(the ring neighbours), and the entries nearest to any other position
(T-Man's answer to a peer). Positions are big-endian ids (ids.pos); the
ring wraps.
"""
from shared_protocol.overlay import common, ids

SIDE = 2                 # successors and predecessors used per topic (paper)
# Known subscribers sent per side in exchanges, nearest to the receiver:
# the receiver's 2 ring neighbours plus 2 spares on each side, so a dead
# neighbour has a replacement at hand and an exchange teaches the ring up
# to 4 places away.
KEEP = 4
# Confirmed subscribers remembered per topic, anywhere on its ring: the
# pool an exchange draws the entries nearest to the *peer* from (T-Man).
# Among 48 spread over a ring of 1,000 the nearest to any position is about
# 10 places away, two exchanges from the truth; without them a newcomer
# walked the ring KEEP places per exchange and a 1,000-proxy ring took
# over 10 periods to hear of it (1% churn per round then lost 2-3% of
# deliveries).
KNOWN_MAX = 48


def _bisect(a, x):
    """Index of the first item of sorted list a that is >= x."""
    lo = 0
    hi = len(a)
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


# MicroPython has no bisect module; CPython's is one C call (the simulator
# bisects a ring for every entry of every Rings exchange).
try:
    from bisect import bisect_left as bisect
except ImportError:
    bisect = _bisect


class RingView:
    """One topic's ring as this proxy knows it. ``kpos``: positions of the
    known subscribers, sorted; ``ke``: their entries [id, addr, stamp, pos,
    direct] in the same order (direct: the peer itself exchanged with us,
    not only named by a third); ``kd``: id -> entry; ``at``: index in kpos
    where this proxy's own position would go; ``succ``/``pred``: the SIDE
    nearest ids on each side, nearest first; ``ver``: grows whenever the
    set of known subscribers changes (a cache of something derived from it
    checks it)."""

    __slots__ = ("kpos", "ke", "kd", "at", "succ", "pred", "ver")

    def __init__(self):
        self.kpos = []
        self.ke = []
        self.kd = {}
        self.at = 0
        self.succ = []
        self.pred = []
        self.ver = 0

    def select(self, me):
        kpos = self.kpos
        ke = self.ke
        n = len(kpos)
        k = self.at = bisect(kpos, me)
        m = SIDE if n > SIDE else n
        self.succ = [ke[(k + d) % n][0] for d in range(m)]
        self.pred = [ke[(k - 1 - d) % n][0] for d in range(m)]

    def near(self, depth):
        """Entries of the ``depth`` nearest on each side (no repeats)."""
        ke = self.ke
        n = len(ke)
        if n <= 2 * depth:
            return list(ke)
        k = self.at
        return [ke[(k + d) % n] for d in range(depth)] + [ke[(k - 1 - d) % n] for d in range(depth)]

    def far(self, depth, floor):
        """Ids of the known subscribers beyond the ``depth`` nearest on each
        side, heard of at ``floor`` or later: confirmed subscribers spread
        over the ring, the random targets of dissemination."""
        ke = self.ke
        n = len(ke)
        if n <= 2 * depth:
            return []
        k = self.at
        out = []
        for d in range(depth, n - depth):
            e = ke[(k + d) % n]
            if e[2] >= floor:
                out.append(e[0])
        return out

    def drop(self, x):
        e = self.ke.pop(x)
        self.kpos.pop(x)
        del self.kd[e[0]]
        self.ver += 1

    def nearest_to(self, q_id, clock, floor):
        """The KEEP known subscribers nearest to q on each side of it, as
        wire entries [id, addr, age]: T-Man's rule, so a proxy far from q
        on the ring still hands it entries next to it. Entries heard of
        before ``floor`` are left out."""
        kpos = self.kpos
        n = len(kpos)
        out = []
        if not n:
            return out
        ke = self.ke
        k = bisect(kpos, int.from_bytes(q_id, "big"))
        age_max = common.AGE_MAX
        got = 0
        x = 0
        j = k
        while got < KEEP and x < n:
            if j >= n:
                j -= n
            e = ke[j]
            j += 1
            x += 1
            g = e[2]
            if g >= floor and e[0] != q_id:
                g = clock - g
                out.append([e[0], e[1], g if g < age_max else age_max])
                got += 1
        got = 0
        j = k - 1
        last = k - 1 - (n - x)
        while got < KEEP and j > last:
            e = ke[j]   # j < 0 reads from the end: the ring wraps
            j -= 1
            g = e[2]
            if g >= floor and e[0] != q_id:
                g = clock - g
                out.append([e[0], e[1], g if g < age_max else age_max])
                got += 1
        return out

    def know(self, i, a, stamp, direct, me, rng):
        """Remember a confirmed subscriber (me: this proxy's position; rng
        for eviction). True if it is new."""
        kd = self.kd
        e = kd.get(i)
        if e is not None:
            if stamp > e[2]:
                e[1] = a
                e[2] = stamp
            if direct:
                e[4] = True
            return False
        kpos = self.kpos
        ke = self.ke
        p = int.from_bytes(i, "big")
        k = bisect(kpos, p)
        e = [i, a, stamp, p, direct]
        kpos.insert(k, p)
        ke.insert(k, e)
        kd[i] = e
        self.ver += 1
        at = self.at
        if p < me:
            at += 1
        n = len(kpos)
        if n > KNOWN_MAX:
            # Forget the older of two random entries, never one of the KEEP
            # nearest on a side (the ring neighbours and their spares): a
            # random sample of the ring that leans to the recently heard,
            # at the cost of two draws instead of a scan.
            span = n - 2 * KEEP
            rnd = rng.next64()
            x = (at + KEEP + (rnd & 0xFFFFFFFF) % span) % n
            y = (at + KEEP + (rnd >> 32) % span) % n
            if ke[y][2] < ke[x][2]:
                x = y
            kpos.pop(x)
            del kd[ke.pop(x)[0]]
            if x < at:
                at -= 1
        self.at = at
        return True
