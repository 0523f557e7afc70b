"""URPS: a uniform node sampler in front of CYCLON's input (Anceaume,
Busnel, Sericola, "Uniform Node Sampling Service Robust against Collusions
of Malicious Nodes", DSN 2013), the knowledge-free strategy.

Every id that arrives (each entry of a CYCLON shuffle) is counted in a
count-min sketch. The sampler keeps a *sample memory* Gamma of at most ``c``
ids. An id already in Gamma stays (Gamma never shrinks); a new id is
admitted, in place of a random member, with probability
a_j = min_{i in Gamma} f(i) / f(j), the sketch's estimates: an id seen as
often as the rarest member always gets in, an id that floods the stream 100
times as often gets in once per 100 arrivals. Ids that are in Gamma are the
ones passed on to CYCLON, so a few peers pushing their own ids cannot fill
CYCLON's view. The output (``sample``) is a uniform draw from Gamma.

The sketch hashes with a salted 2-universal family ((a x + b) mod p mod w)
drawn from the node's Rng: an adversary who does not know the salt cannot
choose ids that collide with its victims'. Integer arithmetic only.

Deviation for speed: the estimates of Gamma's members are cached and
refreshed when a member arrives again or enters Gamma, so min f(i) is one
``min`` over a list instead of depth x |Gamma| sketch lookups per arrival.
A cached estimate can only lag behind (estimates only grow), so a_j is at
most slightly smaller than the paper's: a flooder is admitted a little
less, never more.
"""
from array import array

from shared_protocol.errors import LocalError

try:
    from micropython import const
except ImportError:   # CPython (host and tests)
    def const(x):
        return x

# Sample memory: the paper's experiments use c in the tens; 50 is what the
# acceptance test uses, enough to feed a CYCLON view of 20 with choice left.
DEFAULT_MEMORY = 50
_MEMORY_MAX = const(256)
# Sketch: width w and depth d give estimates within e*n/w of the truth with
# probability 1 - e^-d. The width must approach the number of distinct ids
# in the stream, or honest ids that share cells with flooders look frequent
# too: with 1,000 ids, 10 of them sending 20% of the stream and a memory of
# 50, their share of the output is 7.8x their fair share at w = 64, 3.2x at
# 256 and 0.95-1.22x at 1024 (4 seeds). 1024 x 4 32-bit counters are 16 KB:
# a proxy's budget, not a board's (boards run CYCLON without URPS).
_DEFAULT_WIDTH = const(1024)
_DEFAULT_DEPTH = const(4)
_WIDTH_MAX = const(4096)
DEPTH_MAX = 8
# Counters halve when one reaches this, so they stay small ints on a 32-bit
# board (31-bit small ints) and old history fades (the paper's streams are
# unbounded; a proxy runs for months).
_COUNT_MAX = const(1 << 24)
_P = const((1 << 61) - 1)      # Mersenne prime for the hash family

E_CONFIG = "urps_config"


class UrpsConfigError(LocalError):
    code = "urps_config"


class Sketch:
    """Count-min sketch over byte-string ids."""

    def __init__(self, rng, width=_DEFAULT_WIDTH, depth=_DEFAULT_DEPTH):
        if not (1 <= width <= _WIDTH_MAX) or not (1 <= depth <= DEPTH_MAX):
            raise UrpsConfigError(E_CONFIG, __debug__ and "sketch must be 1..%d wide and 1..%d deep" % (_WIDTH_MAX, DEPTH_MAX))
        self.width = width
        self.depth = depth
        self._ab = [(1 + rng.next64() % (_P - 1), rng.next64() % _P) for _ in range(depth)]
        # 32-bit counters (_COUNT_MAX keeps them far below 2**32).
        self._rows = [array("I", [0] * width) for _ in range(depth)]

    def _cells(self, node_id):
        x = int.from_bytes(node_id[:8], "big")
        w = self.width
        return [((a * x + b) % _P) % w for a, b in self._ab]

    def add(self, node_id):
        """Count one arrival; returns the new estimate."""
        est = -1
        halve = False
        x = int.from_bytes(node_id[:8], "big")
        w = self.width
        for row, (a, b) in zip(self._rows, self._ab):
            c = ((a * x + b) % _P) % w
            v = row[c] + 1
            row[c] = v
            if est < 0 or v < est:
                est = v
            if v >= _COUNT_MAX:
                halve = True
        if halve:
            for row in self._rows:
                for i in range(len(row)):
                    row[i] >>= 1
        return est

    def estimate(self, node_id):
        rows = self._rows
        cells = self._cells(node_id)
        est = -1
        for r in range(self.depth):
            v = rows[r][cells[r]]
            if est < 0 or v < est:
                est = v
        return est


class Sampler:
    """The URPS sample memory Gamma and its sketch."""

    def __init__(self, rng, memory=DEFAULT_MEMORY, width=_DEFAULT_WIDTH, depth=_DEFAULT_DEPTH):
        if not (1 <= memory <= _MEMORY_MAX):
            raise UrpsConfigError(E_CONFIG, __debug__ and "sample memory must be 1..%d" % _MEMORY_MAX)
        self.rng = rng
        self.memory = memory
        self.sketch = Sketch(rng, width, depth)
        self._ids = []      # Gamma, slot order (deterministic on both interpreters)
        self._est = []      # cached estimates of Gamma's members

    def __len__(self):
        return len(self._ids)

    def __contains__(self, node_id):
        return node_id in self._ids

    @property
    def ids(self):
        """Gamma's members. Read only."""
        return self._ids

    def feed(self, node_id):
        """One id from the input stream. Returns True if it is in Gamma
        afterwards (the caller passes it on), False if it was not admitted."""
        est = self.sketch.add(node_id)
        ids = self._ids
        if node_id in ids:
            # Already sampled: it stays, and Gamma keeps its size (ocaml-urps
            # drops a member here and re-adds the id, so Gamma shrinks).
            self._est[ids.index(node_id)] = est
            return True
        if len(ids) < self.memory:
            ids.append(node_id)
            self._est.append(est)
            return True
        # Admit with probability min_i f(i) / f(j): compare 32-bit draws.
        low = min(self._est)
        if low < est and (self.rng.next64() & 0xFFFFFFFF) * est >= low << 32:
            return False
        k = self.rng.next64() % len(ids)
        ids[k] = node_id
        self._est[k] = est
        return True

    def sample(self):
        """A uniform draw from Gamma (None while it is empty)."""
        if not self._ids:
            return None
        return self._ids[self.rng.next64() % len(self._ids)]
