# The deterministic CBOR codec, on CPython and in the MicroPython VM.
# Vectors: tests/vectors/cbor_valid.json (hex <-> value) and
# tests/vectors/cbor_invalid.json (hex -> expected DecodeError code).
import struct

from rig import SINGLE_FLOAT, load_vectors, raises, unhex
from shared_protocol.wire import cbor


def untag(v):
    """Vector value notation -> Python value (JSON lacks bytes/NaN/maps with non-text keys)."""
    if isinstance(v, list):
        return [untag(x) for x in v]
    if isinstance(v, dict):
        if "bytes" in v:
            return unhex(v["bytes"])
        if "float" in v:
            return float(v["float"])
        if "map" in v:
            out = {}
            for k, x in v["map"]:
                out[untag(k)] = untag(x)
            return out
        raise ValueError("bad vector tag %r" % v)
    return v


def same(a, b):
    """Equality that tells NaN, -0.0, bool and int apart."""
    if isinstance(a, float) or isinstance(b, float):
        if not (isinstance(a, float) and isinstance(b, float)):
            return False
        if a != a:
            return b != b
        return a == b and str(a) == str(b)
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        if not isinstance(b, dict) or len(a) != len(b):
            return False
        for k in a:
            if k not in b or not same(a[k], b[k]):
                return False
        return True
    return type(a) is type(b) and a == b


def test_valid_vectors_decode_and_encode():
    vectors = load_vectors("cbor_valid.json")
    assert len(vectors) >= 70
    for vec in vectors:
        data = unhex(vec["hex"])
        expected = untag(vec["value"])
        got = cbor.decode(data)
        if SINGLE_FLOAT and isinstance(expected, float):
            # A single-float build's float parser is not exact (it reads
            # 6.103515625e-05 one unit off), so the JSON value is no
            # reference there: a half or single must round-trip, and a
            # double is held rounded (test_doubles_from_the_host_...).
            assert isinstance(got, float), vec["hex"]
            if vec["hex"][:2] != "fb":
                assert cbor.encode(got) == data, vec["hex"]
            continue
        assert same(got, expected), "decode %s gave %r, want %r" % (vec["hex"], got, expected)
        enc = cbor.encode(expected)
        assert enc == data, "encode %r gave %s, want %s" % (expected, enc.hex(), vec["hex"])


def test_invalid_vectors_raise_typed_error_with_code():
    vectors = load_vectors("cbor_invalid.json")
    assert len(vectors) >= 40
    codes = set()
    for vec in vectors:
        e = raises(cbor.DecodeError, cbor.decode, unhex(vec["hex"]))
        assert e.code == vec["code"], "%s (%s): code %s, want %s" % (vec["hex"], vec["why"], e.code, vec["code"])
        codes.add(e.code)
    # every rejection rule is covered by the table
    for code in (cbor.TRUNCATED, cbor.TRAILING, cbor.NON_CANONICAL, cbor.INDEFINITE, cbor.BREAK,
                 cbor.TAG, cbor.SIMPLE, cbor.RESERVED, cbor.UTF8, cbor.DUPLICATE_KEY,
                 cbor.KEY_ORDER, cbor.UNHASHABLE_KEY, cbor.TOO_LONG, cbor.DEPTH):
        assert code in codes, "no invalid vector for " + code


def test_decodes_bytearray_and_memoryview_slices():
    data = bytearray(b"\xff\xff" + cbor.encode({"t": b"\x01\x02", "v": [1, 2.5]}) + b"\xee")
    mv = memoryview(data)[2:-1]
    assert cbor.decode(mv) == {"t": b"\x01\x02", "v": [1, 2.5]}
    assert cbor.decode(bytearray(cbor.encode([1, "x"]))) == [1, "x"]
    assert raises(cbor.DecodeError, cbor.decode, "not bytes").code == cbor.TYPE


def test_decode_prefix_reports_length_used():
    data = cbor.encode([1, 2]) + b"\x01"
    v, n = cbor.decode_prefix(data)
    assert v == [1, 2] and n == 3


def test_map_encoding_is_order_independent():
    # MicroPython dicts are unordered: the same map built in any order encodes the same
    a = {}
    b = {}
    keys = [("k%d" % i) for i in range(40)] + [i for i in range(40)] + [b"x", -5]
    for k in keys:
        a[k] = 1
    for k in reversed(keys):
        b[k] = 1
    assert cbor.encode(a) == cbor.encode(b)
    assert cbor.decode(cbor.encode(a)) == a


def test_encode_rejects_what_the_wire_cannot_carry():
    assert raises(cbor.EncodeError, cbor.encode, 2 ** 64).code == "int_range"
    assert raises(cbor.EncodeError, cbor.encode, -2 ** 64 - 1).code == "int_range"
    assert raises(cbor.EncodeError, cbor.encode, {1, 2}).code == "type"
    assert raises(cbor.EncodeError, cbor.encode, object()).code == "type"
    deep = 0
    for _ in range(cbor.DEPTH_MAX + 1):
        deep = [deep]
    assert raises(cbor.EncodeError, cbor.encode, deep).code == cbor.DEPTH


def test_depth_limit_is_exact():
    ok = unhex("81" * cbor.DEPTH_MAX + "00")
    v = cbor.decode(ok)
    for _ in range(cbor.DEPTH_MAX):
        v = v[0]
    assert v == 0
    assert raises(cbor.DecodeError, cbor.decode, unhex("81" * (cbor.DEPTH_MAX + 1) + "00")).code == cbor.DEPTH


def test_truncation_at_every_offset_is_a_typed_error():
    data = cbor.encode({"topic": b"\x00" * 16, "id": 123456, "ts": 1700000000000, "v": 21.5, "k": "temp",
                        "list": [1, -2, 3.25, None, True]})
    for i in range(len(data)):
        e = raises(cbor.DecodeError, cbor.decode, data[:i])
        assert e.code in (cbor.TRUNCATED, cbor.TOO_LONG), "offset %d: %s" % (i, e.code)


def test_half_precision_edges():
    # powers of two, not decimal literals: a single-float build's parser
    # does not round 6.103515625e-05 to the exact 2**-14
    for v, h in ((65504.0, "f97bff"), (2.0 ** -14, "f90400"), (2.0 ** -24, "f90001"),
                 (-2.0, "f9c000"), (0.333251953125, "f93555")):
        assert cbor.encode(v).hex() == h, v
        assert cbor.decode(unhex(h)) == v
    # 65520 rounds to infinity in half precision: must stay single
    assert cbor.encode(65520.0).hex() == "fa477ff000"
    # one bit below half's subnormal grid: single
    assert cbor.encode(2.0 ** -25).hex()[:2] == "fa"


def _single(x):
    return struct.unpack(">f", struct.pack(">f", x))[0]


# Doubles as cbor2.dumps(x, canonical=True) writes them: none fits a single.
HOST_DOUBLES = (
    ("fb4037666666666666", 23.4),
    ("fbc0091eb851eb851f", -3.14),
    ("fb3e9f614e8c708a58", 4.676e-07),
    ("fb3690000000000000", 2.0 ** -150),   # below single's subnormals: rounds to zero
    ("fb48078287f49c4a1d", None),   # 1e39: past single's range (no literal: a single build reads inf)
)
# Doubles that a single holds exactly: a double head is longer than needed.
SINGLE_AS_DOUBLE = ("fb3ff0000000000000", "fb0000000000000000", "fb8000000000000000",
                    "fb36a0000000000000", "fb47efffffe0000000", "fb4037666660000000")


def test_doubles_from_the_host_decode_rounded_to_single_on_a_single_precision_board():
    """cbor2 writes 23.4 as fb4037666666666666: a board with single floats
    takes it as its own 23.4 (rounded to single, as documented), not as a
    non-canonical encoding; a double-float build keeps the double."""
    prev = None if SINGLE_FLOAT else cbor.set_single_floats(True)
    try:
        for h, v in HOST_DOUBLES:
            want = _single(struct.unpack(">d", unhex(h[2:]))[0]) if v is not None and not SINGLE_FLOAT else None
            got = cbor.decode(unhex(h))
            assert isinstance(got, float), h
            if want is not None:
                assert got == want, (h, got, want)
        assert cbor.decode(unhex("fb4037666666666666")) == _single(23.4)
        assert cbor.decode(unhex("fb3690000000000000")) == 0.0
        assert cbor.decode(unhex("fb48078287f49c4a1d")) == float("inf")
        assert cbor.decode(unhex("fbc8078287f49c4a1d")) == float("-inf")
        # re-encoded, the board's value is its own shortest form
        assert cbor.encode(cbor.decode(unhex("fb4037666666666666"))).hex() == "fa41bb3333"
    finally:
        if prev is not None:
            cbor.set_single_floats(prev)
    if not SINGLE_FLOAT:
        for h, v in HOST_DOUBLES[:3]:
            assert cbor.decode(unhex(h)) == v


def test_canonical_doubles_are_decided_on_the_bits_alike_on_every_build():
    for single in (False, True):
        prev = cbor.set_single_floats(single)
        try:
            for h in SINGLE_AS_DOUBLE:
                e = raises(cbor.DecodeError, cbor.decode, unhex(h))
                assert e.code == cbor.NON_CANONICAL, h
            for h, _ in HOST_DOUBLES:
                cbor.decode(unhex(h))   # accepted
            for h in ("fb7ff0000000000000", "fbfff0000000000000", "fb7ff8000000000000"):
                assert raises(cbor.DecodeError, cbor.decode, unhex(h)).code == cbor.NON_CANONICAL
        finally:
            cbor.set_single_floats(prev)


def test_a_lazy_array_encodes_exactly_as_the_list_of_its_items():
    rows = [(1700000000 + i, b"\x01\x02\x03\x04", i + 1, 21.5 + i) for i in range(30)]
    made = []

    def items(n):
        for i in range(n):
            made.append(i)
            yield rows[i]
    value = [1, {"log": cbor.Lazy(len(rows), lambda: items(len(rows)))}, cbor.Lazy(0, lambda: items(0))]
    assert cbor.encode(value) == cbor.encode([1, {"log": rows}, []])
    assert made == list(range(30))   # each item made once, in order, as it is written
    assert cbor.encode(value) == cbor.encode([1, {"log": rows}, []])   # and again
    # an iterator that gives more or fewer items than it says is refused
    for n, have in ((3, 2), (2, 3)):
        e = raises(cbor.EncodeError, cbor.encode, cbor.Lazy(n, lambda: items(have)))
        assert e.code == "lazy"
    assert cbor.decode(cbor.encode(value))[1]["log"][29] == [1700000029, b"\x01\x02\x03\x04", 30, 50.5]
    # its items count against the nesting limit like a list's
    def deep(levels):
        v = cbor.Lazy(1, lambda: iter([[0]]))
        for _ in range(levels):
            v = [v]
        return v
    cbor.encode(deep(cbor.DEPTH_MAX - 2))
    assert raises(cbor.EncodeError, cbor.encode, deep(cbor.DEPTH_MAX - 1)).code == cbor.DEPTH


def test_a_reader_takes_items_one_at_a_time_with_decodes_checks():
    value = [1, b"ab", [[1.5, "x"], [2, None]], {"k": [3]}]
    rd = cbor.Reader(cbor.encode(value))
    assert rd.array(0) == 4
    assert rd.item(1) == 1 and rd.item(1) == b"ab"
    assert rd.array(1) == 2
    assert rd.item(2) == [1.5, "x"] and rd.item(2) == [2, None]
    assert rd.item(1) == {"k": [3]}
    rd.end()
    assert raises(cbor.DecodeError, cbor.Reader(cbor.encode([1, 2])).end).code == cbor.TRAILING
    assert raises(cbor.DecodeError, cbor.Reader(cbor.encode({"a": 1})).array, 0).code == cbor.NOT_ARRAY
    assert raises(cbor.DecodeError, cbor.Reader(unhex("83")).array, 0).code == cbor.TOO_LONG
    assert raises(cbor.DecodeError, cbor.Reader(unhex("8201")).array, cbor.DEPTH_MAX).code == cbor.DEPTH
    rd = cbor.Reader(unhex("8201fb3ff8000000000000"))   # a non-canonical float inside
    assert rd.array(0) == 2 and rd.item(1) == 1
    assert raises(cbor.DecodeError, rd.item, 1).code == cbor.NON_CANONICAL
    rd = cbor.Reader(unhex("8101"))
    assert rd.array(0) == 1 and rd.item(1) == 1
    assert raises(cbor.DecodeError, rd.item, 1).code == cbor.TRUNCATED
