"""Subscription profiles: Bloom filters of topic ids, optionally randomised
with BLIP (Alaggan, Gambs, Kermarrec, "BLIP: Non-interactive
Differentially-Private Similarity Computation on Bloom filters", SSS 2012).

A proxy never sends its topic list to the overlay. VICINITY ranks peers on
the filters alone: the number of set bits two filters share grows with the
number of topics the proxies share (each shared topic sets the same
``hashes`` bits in both). Exact topics are only ever named to a peer in a
Rings exchange, and only topics the peer's filter says it has.

BLIP flips each bit of the filter independently with probability
p = 1 / (1 + e^(epsilon / k)) (k = ``hashes``), which makes the filter
epsilon-differentially private with respect to adding or removing one topic.
The flips are drawn once per *version* of the subscription set and the
flipped filter is what every later message carries: resending fresh flips of
the same set would let a peer average them away.

Filters are Python ints (bit i = position i): AND and popcount are single C
operations on CPython and MicroPython (whose ints are arbitrary-precision),
and an int is immutable, so a profile handed out can never change under its
holder's feet (ocaml-p2p shares one mutable Bloom filter between profiles).
"""
import math

from shared_protocol.errors import LocalError

try:
    from micropython import const
except ImportError:   # CPython (host and tests)
    def const(x):
        return x

# Filter size in bits: a power of two so a hash chunk maps uniformly. 256
# bits (32 bytes) keep a VICINITY entry (id, address, age, filter, needy
# filter) near 90 bytes, so a gossip of 8 entries fits one datagram; with 2
# hashes a proxy of 10 topics sets ~20 bits and two unrelated proxies share
# ~1.5 bits by chance, below one shared topic (2 bits). A proxy serving many
# topics (the session layer allows 64 per client) saturates 256 bits: such
# networks configure 1024.
DEFAULT_BITS = 256
_MIN_BITS = const(64)
BITS_MAX = 1024
DEFAULT_HASHES = 4
# Hash positions come from 16-bit chunks of the 8-byte topic id.
_HASHES_MAX = const(4)
# Topics in one proxy's subscription set (the session layer bounds a client
# to 64 topics; a proxy serves many clients).
TOPICS_MAX = 1024
# BLIP's epsilon in 1/1000 units, so configuration stays an int: 0 = off.
_EPSILON_MILLI_MAX = const(1000000)

E_CONFIG = "profile_config"


class ProfileConfigError(LocalError):
    code = "profile_config"


def check_config(bits, hashes):
    if bits < _MIN_BITS or bits > BITS_MAX or bits & (bits - 1):
        raise ProfileConfigError(E_CONFIG, __debug__ and "filter bits must be a power of two in %d..%d" % (_MIN_BITS, BITS_MAX))
    if not (1 <= hashes <= _HASHES_MAX):
        raise ProfileConfigError(E_CONFIG, __debug__ and "hashes must be 1..%d" % _HASHES_MAX)


def topic_mask(topic, bits, hashes):
    """The filter bits of one topic id (an int with ``hashes`` bits or fewer)."""
    x = int.from_bytes(topic, "big")
    m = 0
    for _ in range(hashes):
        m |= 1 << ((x & 0xFFFF) & (bits - 1))
        x >>= 16
    return m


def make_filter(topics, bits, hashes):
    f = 0
    for t in topics:
        f |= topic_mask(t, bits, hashes)
    return f


def _popcount_bin(x):
    return bin(x).count("1")


# int.bit_count (CPython 3.10+) is one C call; MicroPython has no such
# method and counts the characters of bin(x) (also C, a string in between).
try:
    popcount = int.bit_count
except AttributeError:
    popcount = _popcount_bin


def flip_probability(epsilon_milli, hashes):
    """BLIP's p = 1 / (1 + e^(epsilon/k)) as a 32-bit threshold (flip when
    a 32-bit draw is below it)."""
    p = 1.0 / (1.0 + math.exp(epsilon_milli / 1000.0 / hashes))
    return int(p * 4294967296.0)


def blip(f, bits, threshold, rng):
    """A copy of filter f with each bit flipped when a draw < threshold."""
    mask = 0
    r = 0
    n = 0
    for i in range(bits):
        if n == 0:
            r = rng.next64()
            n = 2
        if (r & 0xFFFFFFFF) < threshold:
            mask |= 1 << i
        r >>= 32
        n -= 1
    return f ^ mask


def to_bytes(f, bits):
    return f.to_bytes(bits // 8, "big")


def from_bytes(b):
    return int.from_bytes(b, "big")


class Subscriptions:
    """A proxy's own subscription set and the profile it publishes.

    ``version`` grows on every change; ``wire`` is the filter as sent (the
    exact filter, or its one BLIP draw for this version).
    """

    def __init__(self, rng, bits=DEFAULT_BITS, hashes=DEFAULT_HASHES, epsilon_milli=0):
        check_config(bits, hashes)
        if not (0 <= epsilon_milli <= _EPSILON_MILLI_MAX):
            raise ProfileConfigError(E_CONFIG, __debug__ and "BLIP epsilon must be 0 (off) .. %d milli" % _EPSILON_MILLI_MAX)
        self.rng = rng
        self.bits = bits
        self.hashes = hashes
        self.epsilon_milli = epsilon_milli
        self._threshold = flip_probability(epsilon_milli, hashes) if epsilon_milli else 0
        self.topics = []        # sorted topic ids
        self.version = 0
        self.exact = 0
        self.wire = 0

    def __contains__(self, topic):
        return topic in self.topics

    def set(self, topics):
        """Replace the subscription set (a new version). Returns True if it changed."""
        ts = sorted(set(topics))
        if len(ts) > TOPICS_MAX:
            raise ProfileConfigError(E_CONFIG, __debug__ and "%d topics, limit %d" % (len(ts), TOPICS_MAX))
        if ts == self.topics and self.version:
            return False
        self.topics = ts
        self.version += 1
        self.exact = make_filter(ts, self.bits, self.hashes)
        # One BLIP draw per version: resends of this version carry it unchanged.
        self.wire = blip(self.exact, self.bits, self._threshold, self.rng) if self._threshold else self.exact
        return True

    def add(self, topic):
        if topic in self.topics:
            return False
        if not self.version:
            return self.set([topic])
        if len(self.topics) >= TOPICS_MAX:
            raise ProfileConfigError(E_CONFIG, __debug__ and "%d topics, limit %d" % (len(self.topics) + 1, TOPICS_MAX))
        # One topic more: its bits join the filter (set() rebuilds it from
        # every topic, which made a proxy's n joins cost n^2).
        ts = self.topics + [topic]
        ts.sort()
        self.topics = ts
        self.version += 1
        self.exact |= topic_mask(topic, self.bits, self.hashes)
        self.wire = blip(self.exact, self.bits, self._threshold, self.rng) if self._threshold else self.exact
        return True

    def remove(self, topic):
        if topic not in self.topics:
            return False
        return self.set([t for t in self.topics if t != topic])
