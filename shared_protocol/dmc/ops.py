"""Operations of a Distributed Mutable Container (DREAM D1.2 §3: a DMC is a
replicated container that accepts writes offline and merges without conflict).

An operation is one deterministic-CBOR array, the same bytes live (as a
pub/sub payload) and in anti-entropy sync:

    [author, seq, clock, deps, kind, name, arg...]

- ``author``: opaque bytes, 1..AUTHOR_MAX (an Ed25519 public key, or a 16-byte
  hash of one). Never interpreted here.
- ``seq``: the author's sequence number, 1, 2, 3... without gaps. An
  operation implicitly depends on its author's previous one (seq - 1).
- ``clock``: a Lamport clock (Lamport 1978, §2): larger than every clock the
  author had seen, so "later" in last-writer-wins respects causality.
- ``deps``: flat list ``[author_1, seq_1, author_2, seq_2, ...]``: "applied
  only after every operation of author_i up to seq_i". Only the entries that
  grew since the author's previous operation are listed (the rest follow from
  the implicit seq - 1 dependency), so a typical operation carries 0 or 1.
- ``kind`` and ``args``: see KINDS below; ``name`` picks the object (a map,
  counter, set or log) within the container. Objects are keyed by (data type,
  name), so two members creating "temp" as different types never clash.

Inside a replica an operation is a tuple
``(author, seq, clock, deps, kind, name, a, b)`` with deps as a list of
(author, seq) tuples and ``b`` None for kinds with one argument.
"""

from shared_protocol.wire import cbor
from shared_protocol.dmc import errors
from shared_protocol.dmc.errors import MALFORMED, OVERSIZE, UNKNOWN_TYPE

try:
    from micropython import const
except ImportError:   # CPython (host and tests)
    def const(x):
        return x

# Longest author id: an Ed25519 public key is 32 bytes (RFC 8032 §5.1.5).
_AUTHOR_MAX = const(32)
# Sequence numbers and clocks stay below 2**30 so they remain small ints on a
# 32-bit board (MicroPython small ints are 31-bit; docs/micropython.md); at one
# write a second that is 34 years.
SEQ_MAX = (1 << 30) - 1
CLOCK_MAX = (1 << 30) - 1
# Authors whose entries one replica tracks (version vector, counter shares).
# 32 x (32-byte id + seq) is about 1.2 KB of summary: two datagrams at worst.
AUTHORS_MAX = 32
# Dependencies listed in one operation: at most one per other author.
DEPS_MAX = AUTHORS_MAX
# One operation must fit one datagram with room for a sync message header
# (framing.DATAGRAM_MAX = 1200): values larger than this are not sensor data.
OP_MAX = 1024
# Object names, map keys and set elements (text or bytes) are short labels.
NAME_MAX = 32
KEY_MAX = 64
# Observed tags one set operation may list (add-wins OR-set; Shapiro et al.,
# "A comprehensive study of CRDTs", 2011, §3.3.5): one per concurrent adder.
TAGS_MAX = 16
# Timestamps of readings: unsigned seconds (or any unit the topic agrees on)
# that fit 32 bits, so 2106 is the limit for Unix seconds.
TIME_MAX = 0xFFFFFFFF
# Counter increments per operation: keeps per-author totals well inside
# 64-bit CBOR integers even after 2**30 operations.
_DELTA_MAX = const(1 << 30)
# Integer set elements: whatever CBOR carries in 64 bits.
_INT_ELEM_MAX = const((1 << 63) - 1)

# Data types (the first item of an object's key).
T_MAP = const(1)      # map of last-writer-wins registers
T_COUNTER = const(2)  # PN counter
T_SET = const(3)      # add-wins observed-remove set
T_LOG = const(4)      # bounded time-series log

# Operation kinds -> (data type, number of args).
K_PUT = const(1)      # map: key (text), value (any CBOR; None deletes)
K_ADD = const(2)      # counter: delta (int, may be negative)
K_INSERT = const(3)   # set: element, observed tags (flat [author, seq, ...])
K_REMOVE = const(4)   # set: element, observed tags
K_APPEND = const(5)   # log: time, value

# indexed by kind (0 is none): constant tuples, which a frozen image keeps
# in flash, where dicts were made in the heap at import
KINDS = (
    None,
    (T_MAP, 2),        # K_PUT
    (T_COUNTER, 1),    # K_ADD
    (T_SET, 2),        # K_INSERT
    (T_SET, 2),        # K_REMOVE
    (T_LOG, 2),        # K_APPEND
)

TYPE_NAMES = (None, "map", "counter", "set", "log")   # indexed by T_*


def is_int(v):
    # bool is an int subclass on both interpreters
    return isinstance(v, int) and not isinstance(v, bool)


def check_author(a, err="OpError"):
    if not isinstance(a, bytes) or not (0 < len(a) <= _AUTHOR_MAX):
        raise getattr(errors, err)(MALFORMED, __debug__ and "author id must be 1..%d bytes" % _AUTHOR_MAX)
    return a


def check_seq(s, what="seq", err="OpError"):
    if not is_int(s) or s < 1 or s > SEQ_MAX:
        raise getattr(errors, err)(MALFORMED, __debug__ and "%s must be an int in 1..%d" % (what, SEQ_MAX))
    return s


def check_name(n, err="OpError"):
    if not isinstance(n, str) or not (0 < len(n) <= NAME_MAX):
        raise getattr(errors, err)(MALFORMED, __debug__ and "object name must be text of 1..%d characters" % NAME_MAX)
    return n


def check_key(k, err="OpError"):
    if not isinstance(k, str) or len(k) > KEY_MAX:
        raise getattr(errors, err)(MALFORMED, __debug__ and "map key must be text of at most %d characters" % KEY_MAX)
    return k


def check_elem(e, err="OpError"):
    if isinstance(e, (str, bytes)):
        if len(e) > KEY_MAX:
            raise getattr(errors, err)(OVERSIZE, __debug__ and "set element longer than %d" % KEY_MAX)
        return e
    if is_int(e) and -_INT_ELEM_MAX <= e <= _INT_ELEM_MAX:
        return e
    raise getattr(errors, err)(MALFORMED, __debug__ and "set element must be text, bytes or a 63-bit int")


def check_time(t, err="OpError"):
    if not is_int(t) or t < 0 or t > TIME_MAX:
        raise getattr(errors, err)(MALFORMED, __debug__ and "reading time must be an int in 0..%d" % TIME_MAX)
    return t


def pairs(flat, limit, what, err="OpError"):
    """Flat [author, seq, ...] -> list of (author, seq); distinct authors."""
    if not isinstance(flat, list) or len(flat) % 2 or len(flat) > 2 * limit:
        raise getattr(errors, err)(MALFORMED, __debug__ and "%s must be a flat list of at most %d (author, seq) pairs" % (what, limit))
    out = []
    seen = {}
    for i in range(0, len(flat), 2):
        a = check_author(flat[i], err)
        s = check_seq(flat[i + 1], what, err)
        out.append((a, s))
        if what == "deps":
            if a in seen:
                raise getattr(errors, err)(MALFORMED, __debug__ and "deps name author %s twice" % a.hex())
            seen[a] = 1
    return out


def flat(pairs_list):
    out = []
    for a, s in pairs_list:
        out.append(a)
        out.append(s)
    return out


def from_value(v, size):
    """A decoded CBOR value -> op tuple, checked. size: encoded length."""
    if size > OP_MAX:
        raise errors.OpError(OVERSIZE, __debug__ and "operation of %d bytes exceeds %d" % (size, OP_MAX))
    if not isinstance(v, list) or len(v) < 7:
        raise errors.OpError(MALFORMED, __debug__ and "an operation is [author, seq, clock, deps, kind, name, args...]")
    author = check_author(v[0])
    seq = check_seq(v[1])
    clock = check_seq(v[2], "clock")
    deps = pairs(v[3], DEPS_MAX, "deps")
    for a, _ in deps:
        if a == author:
            raise errors.OpError(MALFORMED, __debug__ and "an operation may not list its own author in deps")
    kind = v[4]
    spec = KINDS[kind] if is_int(kind) and 0 < kind < len(KINDS) else None
    if spec is None:
        raise errors.OpError(UNKNOWN_TYPE, __debug__ and "unknown operation kind %r (this node knows 1..%d)" % (kind, len(KINDS) - 1))
    if len(v) != 6 + spec[1]:
        raise errors.OpError(MALFORMED, __debug__ and "operation kind %d takes %d args, got %d" % (kind, spec[1], len(v) - 6))
    name = check_name(v[5])
    a = v[6]
    b = None
    if kind == K_PUT:
        check_key(a)
        b = v[7]
    elif kind == K_ADD:
        if not is_int(a) or a == 0 or a > _DELTA_MAX or a < -_DELTA_MAX:
            raise errors.OpError(MALFORMED, __debug__ and "counter delta must be a non-zero int within +-%d" % _DELTA_MAX)
    elif kind == K_INSERT or kind == K_REMOVE:
        check_elem(a)
        b = pairs(v[7], TAGS_MAX, "tags")
    else:  # K_APPEND
        check_time(a)
        b = v[7]
    return (author, seq, clock, deps, kind, name, a, b)


def decode(data):
    """Operation bytes -> op tuple; OpError (state untouched) if bad."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise errors.OpError(MALFORMED, __debug__ and "operation must be bytes")
    if len(data) > OP_MAX:
        raise errors.OpError(OVERSIZE, __debug__ and "operation of %d bytes exceeds %d" % (len(data), OP_MAX))
    try:
        v = cbor.decode(data)
    except cbor.DecodeError as e:
        raise errors.OpError(MALFORMED, __debug__ and "operation is not deterministic CBOR (%s)" % e.code)
    return from_value(v, len(data))


def to_value(op):
    author, seq, clock, deps, kind, name, a, b = op
    v = [author, seq, clock, flat(deps), kind, name, a]
    if kind == K_INSERT or kind == K_REMOVE:
        v.append(flat(b))
    elif kind != K_ADD:
        v.append(b)
    return v


def encode(op):
    return cbor.encode(to_value(op))


def _uint_at(data, i):
    """Read a canonical CBOR unsigned int head at i -> (value, next index)."""
    ib = data[i]
    ai = ib & 0x1F
    if ai < 24:
        return ai, i + 1
    n = 1 << (ai - 24)  # 24 -> 1 byte, 25 -> 2, 26 -> 4, 27 -> 8
    v = 0
    for j in range(i + 1, i + 1 + n):
        v = (v << 8) | data[j]
    return v, i + 1 + n


def author_seq(data):
    """(author, seq) of an operation's bytes already checked by decode():
    read from the head of the array, so stored operations need no tuple."""
    n, i = _uint_at(data, 1)  # data[0] is the array head (7 or 8 items)
    author = bytes(data[i:i + n])
    seq, _ = _uint_at(data, i + n)
    return author, seq
