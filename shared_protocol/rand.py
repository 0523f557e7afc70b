"""Deterministic pseudo-random numbers for protocol decisions.

Sans-I/O objects never touch a global random source: they receive an ``Rng``.
The simulator seeds one per node so runs repeat exactly; a board seeds its own
from ``os.urandom`` at boot. This is *not* for keys or nonces: cryptographic
randomness comes through the crypto platform hook.

xorshift64* (Vigna, "An experimental exploration of Marsaglia's xorshift
generators", 2016): tiny state, good enough statistics for peer selection,
identical sequence on MicroPython and CPython because every step is masked to
64 bits.
"""

try:
    from micropython import const
except ImportError:   # CPython (host and tests)
    def const(x):
        return x

_MASK64 = const(0xFFFFFFFFFFFFFFFF)
_MULT = const(0x2545F4914F6CDD1D)


class Rng:
    def __init__(self, seed):
        if isinstance(seed, (bytes, bytearray)):
            s = 0
            for b in seed[:8]:
                s = (s << 8) | b
            seed = s
        # A zero state would stay zero forever; mix the seed once.
        self._s = ((seed & _MASK64) ^ 0x9E3779B97F4A7C15) or 1

    def next64(self):
        x = self._s
        x ^= x >> 12
        x ^= (x << 25) & _MASK64
        x ^= x >> 27
        self._s = x
        return (x * _MULT) & _MASK64

    def randbelow(self, n):
        """Uniform integer in [0, n) without modulo bias."""
        if n <= 0:
            raise ValueError("randbelow needs n > 0")
        # rejection sampling on the top bits
        limit = _MASK64 - (_MASK64 + 1) % n
        while True:
            r = self.next64()
            if r <= limit:
                return r % n

    def random(self):
        """Float in [0, 1) with 53 random bits."""
        return (self.next64() >> 11) / 9007199254740992.0

    def shuffle(self, items):
        """Fisher-Yates in place."""
        i = len(items) - 1
        while i > 0:
            j = self.randbelow(i + 1)
            items[i], items[j] = items[j], items[i]
            i -= 1

    def sample(self, items, k):
        """k distinct elements of the sequence ``items`` (k <= len(items))."""
        pool = list(items)
        n = len(pool)
        if k > n:
            k = n
        for i in range(k):
            j = i + self.randbelow(n - i)
            pool[i], pool[j] = pool[j], pool[i]
        return pool[:k]

    def randbytes(self, n):
        out = bytearray(n)
        for i in range(n):
            if i % 8 == 0:
                r = self.next64()
            out[i] = r & 0xFF
            r >>= 8
        return bytes(out)
