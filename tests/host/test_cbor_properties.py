"""Our codec against cbor2's canonical mode, and a fuzz of the decoder (CPython)."""
import math
import random

import cbor2
from hypothesis import HealthCheck, given, settings, strategies as st

from shared_protocol.wire import cbor

ints = st.integers(min_value=-(2 ** 64), max_value=2 ** 64 - 1)
scalars = (
    ints
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.floats(width=32) | st.floats(width=16)
    | st.booleans() | st.none()
    | st.binary(max_size=40)
    | st.text(max_size=20)
)
keys = ints | st.text(max_size=8) | st.binary(max_size=8)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=6) | st.tuples(inner, inner)
    | st.dictionaries(keys, inner, max_size=6),
    max_leaves=24,
)


def depth(v):
    if isinstance(v, (list, tuple)):
        return 1 + max((depth(x) for x in v), default=0)
    if isinstance(v, dict):
        return 1 + max((max(depth(k), depth(x)) for k, x in v.items()), default=0)
    return 0


def same(a, b):
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values)
def test_encoding_is_byte_identical_to_cbor2_canonical(v):
    if depth(v) > cbor.DEPTH_MAX:
        return
    ours = cbor.encode(v)
    assert ours == cbor2.dumps(v, canonical=True)
    # both decoders agree on the bytes, and our decoder accepts all we make
    assert same(cbor.decode(ours), cbor2.loads(ours))


@settings(max_examples=1000, deadline=None)
@given(st.floats(allow_nan=False))
def test_floats_round_trip_exactly(x):
    assert same(cbor.decode(cbor.encode(x)), x)


def _mutations(rng, seeds):
    """Random bytes and mutated valid encodings (flip, insert, delete, splice, truncate)."""
    for _ in range(2000):
        yield bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 24)))
    for _ in range(8000):
        b = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(1, 4)):
            op = rng.randrange(5)
            if op == 0 and b:
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
            elif op == 1:
                b.insert(rng.randrange(len(b) + 1), rng.getrandbits(8))
            elif op == 2 and b:
                del b[rng.randrange(len(b))]
            elif op == 3:
                b = b[:rng.randrange(len(b) + 1)]
            else:
                other = rng.choice(seeds)
                i = rng.randrange(len(other) + 1)
                b = b + other[i:]
        yield bytes(b)


def test_fuzz_only_decode_error_escapes():
    rng = random.Random(20261120)
    seeds = [cbor2.dumps(v, canonical=True) for v in (
        {"topic": b"\x01" * 16, "id": 77, "ts": 1763600000000, "v": 21.5, "k": "temp"},
        [1, -1, 2 ** 40, -(2 ** 40), 1.1, 1.5, float("nan"), None, True, False],
        {1: [b"ab", "cd", {"x": [[], {}]}], -7: 3.4028234663852886e38, "é": "\U00010151"},
        [[[[[[[[0]]]]]]]],
    )]
    n = accepted = 0
    codes = set()
    for data in _mutations(rng, seeds):
        n += 1
        try:
            v = cbor.decode(data)
        except cbor.DecodeError as e:
            codes.add(e.code)
            continue
        accepted += 1
        # whatever we accept is canonical: it re-encodes to the same bytes
        assert cbor.encode(v) == data, data.hex()
    assert n == 10000
    assert len(codes) >= 8, codes  # the mutations reach many rejection rules
    assert 0 < accepted < n


def test_the_host_reading_of_the_single_precision_test_is_what_cbor2_writes():
    """tests/shared/test_dmc_replica.py feeds a board replica a reading as a
    host writes it: these are cbor2's bytes for that op."""
    import test_dmc_replica as shared
    author = b"\x0a" * 16
    op = [author, 1, 1, [], 5, "temp", 1763683201, 23.4]   # dmc/ops.py: append
    assert cbor2.dumps(op, canonical=True).hex() == shared.HOST_OP_23_4
    # and a double-float decoder keeps the host's value exactly
    assert cbor.decode(bytes.fromhex(shared.HOST_OP_23_4))[7] == 23.4


@given(st.floats(allow_nan=False, allow_infinity=False))
@settings(max_examples=3000, deadline=None)
def test_single_rounding_matches_ieee(x):
    """set_single_floats: a decoded double is the nearest single (what a
    single-precision board's struct gives), infinity past single's range."""
    import struct
    data = cbor2.dumps(x, canonical=True)
    prev = cbor.set_single_floats(True)
    try:
        got = cbor.decode(data)
    finally:
        cbor.set_single_floats(prev)
    try:
        want = struct.unpack(">f", struct.pack(">f", x))[0]
    except OverflowError:
        want = math.copysign(math.inf, x)
    assert got == want or (got == want == 0), (x, got, want)
