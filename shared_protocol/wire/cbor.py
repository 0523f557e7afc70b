"""Deterministic CBOR (RFC 8949) for the wire format, on boards and hosts.

The encoder produces exactly what ``cbor2.dumps(value, canonical=True)``
produces, so the host may encode with cbor2 and boards with this module:

- shortest heads (RFC 8949 §4.2.1), definite lengths only;
- map keys sorted length-first: shorter encoded key first, then bytewise
  (RFC 8949 §4.2.3, the RFC 7049 §3.9 "canonical CBOR" order that cbor2 uses);
- floats in the shortest of half/single/double that holds the value exactly;
  NaN is always ``f97e00``, infinities are half precision.

The decoder is strict: it accepts exactly the encodings the encoder makes and
raises ``DecodeError`` (with a ``code``) for everything else. Nothing else
escapes it. It reads ``bytes``, ``bytearray`` or ``memoryview`` without
copying the whole buffer, and checks every declared length against the bytes
that remain before allocating anything.

Supported values: int in [-2**64, 2**64 - 1], bool, None, float, bytes
(bytearray and memoryview encode as bytes), str, list/tuple (arrays, decoded
as list), dict (maps). No tags, no undefined, no other simple values.

On boards with single-precision floats (ESP32, RP2040 builds) a double from
the wire is rounded to single on decode; that is the board's float, not a
codec choice. Whether a double is canonical is decided on its bits, so a
single-float build accepts exactly what a double-float build accepts (a
host's 23.4 is ``fb4037666666666666``: a double, as it does not fit a single
exactly). ``set_single_floats(True)`` rounds decoded doubles on a
double-float interpreter too, so that path runs in every test.
"""

import struct
import sys

from shared_protocol.errors import LocalError, RemoteError, kind

# Deepest nesting of arrays/maps accepted. Protocol messages need 4-5 levels;
# 16 leaves room for application values while keeping recursion on a board's
# C stack (a few KB) safe against hostile input.
DEPTH_MAX = 16

# Error codes (DecodeError.code).
TRUNCATED = "truncated"          # input ends inside an item
TRAILING = "trailing"            # bytes left after the top-level item
NON_CANONICAL = "non_canonical"  # a head or float longer than needed
INDEFINITE = "indefinite"        # indefinite-length item (additional info 31)
BREAK = "break"                  # stray break code 0xff
TAG = "tag"                      # any tag (major type 6): the wire format names none
SIMPLE = "simple"                # simple value other than false/true/null
RESERVED = "reserved"            # additional info 28-30
UTF8 = "utf8"                    # text string that is not valid UTF-8
DUPLICATE_KEY = "duplicate_key"  # a map key appears twice
KEY_ORDER = "key_order"          # map keys not in canonical order
UNHASHABLE_KEY = "unhashable_key"  # array or map used as a map key
TOO_LONG = "too_long"            # declared length exceeds the bytes that remain
DEPTH = "depth"                  # nesting deeper than DEPTH_MAX
TYPE = "type"                    # wrong input type (not a bytes-like object)
NOT_ARRAY = "not_array"          # Reader.array() found another item

_MICROPYTHON = sys.implementation.name == "micropython"


# Name, base, code (a line each; made on first use, see
# shared_protocol.errors.kind; this module raises them through _error, others
# name them through the module, e.g. cbor.DecodeError):
# - DecodeError: the bytes are not deterministic CBOR this codec accepts.
# - EncodeError: the value cannot be carried by the wire format.
KINDS = """
DecodeError RemoteError decode
EncodeError LocalError encode
"""
# The kinds made so far (shared_protocol.errors.kind), under their names,
# and the module name they carry.
_MADE = {"__name__": __name__}


def _error(name):
    return _MADE.get(name) or kind(name, KINDS, _MADE)


__getattr__ = _error


_INF = float("inf")
# True on a single-precision build (0.1 is then a single already); the
# decoder rounds doubles to single when set (set_single_floats).
_single = struct.unpack(">f", struct.pack(">f", 0.1))[0] == 0.1


def set_single_floats(on):
    """Round every decoded double to single, as a single-precision board
    does by itself (tests run the board's path on double-float builds).
    Returns the previous setting."""
    global _single
    prev = _single
    _single = bool(on)
    return prev


def _to_single(x):
    try:
        return struct.unpack(">f", struct.pack(">f", x))[0]
    except OverflowError:
        # CPython refuses what rounds past single's range; MicroPython
        # gives infinity itself. (No literal for the bound: a float past
        # single's range cannot be frozen into a single-float image.)
        return _INF if x > 0 else -_INF


def _double_fits_single(b, p):
    """Whether the 8-byte double at b[p:p + 8] (big-endian) holds a value a
    single holds exactly: decided on the bits, since a single-precision
    build has already rounded the value itself. Finite, nonzero values only
    reach here; zero fits (a half, even)."""
    e = ((b[p] & 0x7F) << 4) | (b[p + 1] >> 4)   # biased 11-bit exponent
    if e == 0:
        # zero, or a double subnormal: far below single's range
        return not (b[p + 1] & 0x0F or b[p + 2] or b[p + 3] or b[p + 4] or b[p + 5] or b[p + 6] or b[p + 7])
    e -= 1023
    if e > 127 or e < -149:
        return False
    # 52 mantissa bits; a normal single keeps the top 23, a subnormal one
    # (e < -126) keeps 23 - (-126 - e) of them: the rest must be zero.
    # Byte by byte from the end: no 52-bit int (a heap object on a board).
    drop = 29 if e >= -126 else 29 + (-126 - e)
    i = p + 7
    while drop >= 8:
        if b[i]:
            return False
        i -= 1
        drop -= 8
    return b[i] & ((1 << drop) - 1) == 0


# --- IEEE 754 half precision, by hand: struct's 'e' is not on every board ---

def _half_bits(x):
    """Return the 16-bit half encoding of x if it holds x exactly, else None.

    x is a finite non-NaN float that already round-trips through single
    precision; we work on its single-precision bits (sign, 8-bit exponent,
    23-bit mantissa).
    """
    b = struct.unpack(">I", struct.pack(">f", x))[0]
    sign = (b >> 16) & 0x8000
    exp = (b >> 23) & 0xFF
    mant = b & 0x7FFFFF
    if exp == 0:
        # zero (single subnormals are far below half's range)
        return sign if mant == 0 else None
    e = exp - 127
    if e > 15:
        return None
    if e >= -14:
        # normal half: 10 mantissa bits, the low 13 must be zero
        if mant & 0x1FFF:
            return None
        return sign | ((e + 15) << 10) | (mant >> 13)
    if e < -24:
        return None
    # subnormal half: value = m * 2**-24 with m < 1024
    full = mant | 0x800000  # implicit leading one, 24 significant bits
    # value = full * 2**(e - 23); in units of 2**-24 that is full >> (-e - 1)
    shift = -e - 1
    if full & ((1 << shift) - 1):
        return None
    return sign | (full >> shift)


def _half_to_float(h):
    exp = (h >> 10) & 0x1F
    mant = h & 0x3FF
    if exp == 0:
        v = mant * 5.960464477539063e-08  # 2**-24
    elif exp == 31:
        v = _INF if mant == 0 else float("nan")
    else:
        v = (1024 + mant) * (2.0 ** (exp - 25))
    return -v if h & 0x8000 else v


# --- encoder ---

def _head(out, major, n):
    mt = major << 5
    if n < 24:
        out.append(mt | n)
    elif n < 0x100:
        out.append(mt | 24)
        out.append(n)
    elif n < 0x10000:
        out.extend(struct.pack(">BH", mt | 25, n))
    elif n < 0x100000000:
        out.extend(struct.pack(">BI", mt | 26, n))
    else:
        out.extend(struct.pack(">BQ", mt | 27, n))


# Public: append a head (major type, argument) to a bytearray, for callers
# that stream an array's items themselves.
encode_head = _head


def _encode_float(out, x):
    if x != x:
        out.extend(b"\xf9\x7e\x00")
        return
    if x == _INF:
        out.extend(b"\xf9\x7c\x00")
        return
    if x == -_INF:
        out.extend(b"\xf9\xfc\x00")
        return
    single = None
    if -3.4028234663852886e38 <= x <= 3.4028234663852886e38:
        s = struct.pack(">f", x)
        if struct.unpack(">f", s)[0] == x:
            single = s
    if single is None:
        out.append(0xFB)
        out.extend(struct.pack(">d", x))
        return
    h = _half_bits(x)
    if h is not None:
        out.append(0xF9)
        out.append(h >> 8)
        out.append(h & 0xFF)
    else:
        out.append(0xFA)
        out.extend(single)


def _encode(out, v, depth):
    # bool before int: bool is an int subclass on both interpreters
    if v is True:
        out.append(0xF5)
    elif v is False:
        out.append(0xF4)
    elif v is None:
        out.append(0xF6)
    elif isinstance(v, int):
        if v >= 0:
            if v > 0xFFFFFFFFFFFFFFFF:
                raise _error("EncodeError")("int_range", __debug__ and "integer %d does not fit 64 bits" % v)
            _head(out, 0, v)
        else:
            n = -1 - v
            if n > 0xFFFFFFFFFFFFFFFF:
                raise _error("EncodeError")("int_range", __debug__ and "integer %d does not fit 64 bits" % v)
            _head(out, 1, n)
    elif isinstance(v, float):
        _encode_float(out, v)
    elif isinstance(v, (bytes, bytearray, memoryview)):
        _head(out, 2, len(v))
        out.extend(v)
    elif isinstance(v, str):
        try:
            b = v.encode("utf-8")
        except UnicodeError:
            raise _error("EncodeError")("utf8", __debug__ and "text is not encodable as UTF-8")
        _head(out, 3, len(b))
        out.extend(b)
    elif isinstance(v, (list, tuple)):
        if depth >= DEPTH_MAX:
            raise _error("EncodeError")(DEPTH, __debug__ and "nesting deeper than %d" % DEPTH_MAX)
        _head(out, 4, len(v))
        for item in v:
            _encode(out, item, depth + 1)
    elif isinstance(v, Raw):
        out.extend(v.data)
    elif isinstance(v, Lazy):
        if depth >= DEPTH_MAX:
            raise _error("EncodeError")(DEPTH, __debug__ and "nesting deeper than %d" % DEPTH_MAX)
        _head(out, 4, v.n)
        k = 0
        for item in v.items():
            k += 1
            if k > v.n:
                break
            _encode(out, item, depth + 1)
        if k != v.n:
            raise _error("EncodeError")("lazy", __debug__ and "a lazy array of %d items gave %d" % (v.n, k))
    elif isinstance(v, dict):
        if depth >= DEPTH_MAX:
            raise _error("EncodeError")(DEPTH, __debug__ and "nesting deeper than %d" % DEPTH_MAX)
        pairs = []
        for k in v:
            kb = bytearray()
            _encode(kb, k, depth + 1)
            pairs.append((len(kb), bytes(kb), k))
        # RFC 8949 §4.2.3: length-first, then bytewise. MicroPython dicts are
        # unordered, so this sort is also what makes the output deterministic.
        pairs.sort(key=_pair_key)
        _head(out, 5, len(pairs))
        for _, kb, k in pairs:
            out.extend(kb)
            _encode(out, v[k], depth + 1)
    else:
        raise _error("EncodeError")("type", __debug__ and "cannot encode a %s" % type(v).__name__)


class Lazy:
    """An array encoded without being built: ``items()`` returns a fresh
    iterator (e.g. a generator) that makes its ``n`` items one at a time as
    they are written, each garbage once written; the value may be encoded
    more than once (a count other than ``n`` is an EncodeError). A
    board's replica file holds logs of up to 200 readings (firmware/topic.py
    LOG_KEEP); built first as a list of per-reading arrays, each save held
    some 7 KB per log at once, the largest transient of a long-running node
    (tools/bench/bench_rig.py --readings 150). Encodes exactly as the list
    of its items does."""

    def __init__(self, n, items):
        self.n = n
        self.items = items


class Raw:
    """One item already encoded: ``data`` is its canonical encoding (made
    by this encoder), written as it is. A board's log keeps its readings'
    values encoded (dmc/crdt_log.py); a save copies them out unchanged."""

    def __init__(self, data):
        self.data = data


def _pair_key(p):
    return (p[0], p[1])


def encode(value):
    """Encode value as deterministic CBOR; raise EncodeError if it cannot."""
    out = bytearray()
    _encode(out, value, 0)
    return bytes(out)


def encode_into(out, value):
    """Append the encoding of value to the bytearray out (no extra copy)."""
    _encode(out, value, 0)


# --- decoder ---

def _check_utf8(mv, start, end):
    """Strict UTF-8 check (RFC 3629): MicroPython's decode accepts overlong
    forms, surrogates and code points past U+10FFFF, so boards check by hand.
    """
    i = start
    while i < end:
        c = mv[i]
        if c < 0x80:
            i += 1
            continue
        if 0xC2 <= c <= 0xDF:
            n, lo, hi = 1, 0x80, 0xBF
        elif c == 0xE0:
            n, lo, hi = 2, 0xA0, 0xBF
        elif 0xE1 <= c <= 0xEC or c == 0xEE or c == 0xEF:
            n, lo, hi = 2, 0x80, 0xBF
        elif c == 0xED:
            n, lo, hi = 2, 0x80, 0x9F  # no surrogates
        elif c == 0xF0:
            n, lo, hi = 3, 0x90, 0xBF
        elif 0xF1 <= c <= 0xF3:
            n, lo, hi = 3, 0x80, 0xBF
        elif c == 0xF4:
            n, lo, hi = 3, 0x80, 0x8F  # nothing past U+10FFFF
        else:
            return False
        if i + n >= end:
            return False
        c1 = mv[i + 1]
        if c1 < lo or c1 > hi:
            return False
        for j in range(i + 2, i + n + 1):
            if mv[j] & 0xC0 != 0x80:
                return False
        i += n + 1
    return True


class _Decoder:
    def __init__(self, data):
        if isinstance(data, memoryview):
            self.mv = data
        elif isinstance(data, (bytes, bytearray)):
            self.mv = memoryview(data)
        else:
            raise _error("DecodeError")(TYPE, __debug__ and "expected bytes, bytearray or memoryview, got %s" % type(data).__name__)
        self.pos = 0
        self.end = len(self.mv)

    def _need(self, n):
        if self.end - self.pos < n:
            raise _error("DecodeError")(TRUNCATED, __debug__ and "input ends %d bytes short at offset %d" % (n - (self.end - self.pos), self.pos))

    def _arg(self, ib, ai):
        """Read the argument of a head whose additional info is ai."""
        mv = self.mv
        p = self.pos
        if ai < 24:
            return ai
        if ai == 24:
            self._need(1)
            n = mv[p]
            self.pos = p + 1
            if n < 24:
                raise _error("DecodeError")(NON_CANONICAL, __debug__ and "1-byte argument %d fits in the head (offset %d)" % (n, p - 1))
            return n
        if ai == 25:
            self._need(2)
            n = (mv[p] << 8) | mv[p + 1]
            self.pos = p + 2
            if n < 0x100:
                raise _error("DecodeError")(NON_CANONICAL, __debug__ and "2-byte argument %d fits in 1 byte (offset %d)" % (n, p - 1))
            return n
        if ai == 26:
            self._need(4)
            n = struct.unpack(">I", mv[p:p + 4])[0]
            self.pos = p + 4
            if n < 0x10000:
                raise _error("DecodeError")(NON_CANONICAL, __debug__ and "4-byte argument %d fits in 2 bytes (offset %d)" % (n, p - 1))
            return n
        if ai == 27:
            self._need(8)
            n = struct.unpack(">Q", mv[p:p + 8])[0]
            self.pos = p + 8
            if n < 0x100000000:
                raise _error("DecodeError")(NON_CANONICAL, __debug__ and "8-byte argument fits in 4 bytes (offset %d)" % (p - 1))
            return n
        if ai == 31:
            if ib == 0xFF:
                raise _error("DecodeError")(BREAK, __debug__ and "stray break code at offset %d" % (p - 1))
            raise _error("DecodeError")(INDEFINITE, __debug__ and "indefinite-length item at offset %d" % (p - 1))
        raise _error("DecodeError")(RESERVED, __debug__ and "reserved additional info %d at offset %d" % (ai, p - 1))

    def item(self, depth):
        self._need(1)
        p = self.pos
        ib = self.mv[p]
        self.pos = p + 1
        major = ib >> 5
        ai = ib & 0x1F
        if major == 7:
            return self._simple_or_float(ib, ai)
        if major == 6:
            raise _error("DecodeError")(TAG, __debug__ and "tag at offset %d: the wire format uses no tags" % p)
        n = self._arg(ib, ai)
        if major == 0:
            return n
        if major == 1:
            return -1 - n
        if major == 2 or major == 3:
            if n > self.end - self.pos:
                raise _error("DecodeError")(TOO_LONG, __debug__ and "string of %d bytes declared with %d left (offset %d)" % (n, self.end - self.pos, p))
            s = self.pos
            self.pos = s + n
            if major == 2:
                return bytes(self.mv[s:s + n])
            if _MICROPYTHON and not _check_utf8(self.mv, s, s + n):
                raise _error("DecodeError")(UTF8, __debug__ and "text at offset %d is not valid UTF-8" % p)
            try:
                return str(self.mv[s:s + n], "utf-8")
            except UnicodeError:
                raise _error("DecodeError")(UTF8, __debug__ and "text at offset %d is not valid UTF-8" % p)
        if depth >= DEPTH_MAX:
            raise _error("DecodeError")(DEPTH, __debug__ and "nesting deeper than %d at offset %d" % (DEPTH_MAX, p))
        if major == 4:
            # every item takes at least one byte: check before allocating
            if n > self.end - self.pos:
                raise _error("DecodeError")(TOO_LONG, __debug__ and "array of %d items declared with %d bytes left (offset %d)" % (n, self.end - self.pos, p))
            out = []
            for _ in range(n):
                out.append(self.item(depth + 1))
            return out
        # major == 5: map
        if 2 * n > self.end - self.pos:
            raise _error("DecodeError")(TOO_LONG, __debug__ and "map of %d pairs declared with %d bytes left (offset %d)" % (n, self.end - self.pos, p))
        out = {}
        prev = None
        for _ in range(n):
            ks = self.pos
            k = self.item(depth + 1)
            kb = self.mv[ks:self.pos]
            if isinstance(k, (list, dict)):
                raise _error("DecodeError")(UNHASHABLE_KEY, __debug__ and "array or map used as a map key at offset %d" % ks)
            if prev is not None:
                lp = len(prev)
                lk = len(kb)
                if lk < lp or (lk == lp and bytes(kb) <= prev):
                    if lk == lp and bytes(kb) == prev:
                        raise _error("DecodeError")(DUPLICATE_KEY, __debug__ and "duplicate map key at offset %d" % ks)
                    raise _error("DecodeError")(KEY_ORDER, __debug__ and "map key at offset %d is out of canonical order" % ks)
            prev = bytes(kb)
            if k in out:
                # distinct encodings, equal keys: 1 and 1.0 in CPython
                raise _error("DecodeError")(DUPLICATE_KEY, __debug__ and "duplicate map key at offset %d" % ks)
            out[k] = self.item(depth + 1)
        return out

    def _simple_or_float(self, ib, ai):
        p = self.pos - 1
        mv = self.mv
        if ai == 20:
            return False
        if ai == 21:
            return True
        if ai == 22:
            return None
        if ai == 25:
            self._need(2)
            h = (mv[p + 1] << 8) | mv[p + 2]
            self.pos = p + 3
            if (h & 0x7C00) == 0x7C00 and (h & 0x3FF) and h != 0x7E00:
                raise _error("DecodeError")(NON_CANONICAL, __debug__ and "NaN must be encoded as f97e00 (offset %d)" % p)
            return _half_to_float(h)
        if ai == 26:
            self._need(4)
            x = struct.unpack(">f", mv[p + 1:p + 5])[0]
            self.pos = p + 5
            if x != x or x == _INF or x == -_INF or _half_bits(x) is not None:
                raise _error("DecodeError")(NON_CANONICAL, __debug__ and "single-precision float that fits in half precision (offset %d)" % p)
            return x
        if ai == 27:
            self._need(8)
            if (mv[p + 1] & 0x7F) == 0x7F and (mv[p + 2] & 0xF0) == 0xF0:
                raise _error("DecodeError")(NON_CANONICAL, __debug__ and "NaN/infinity must be half precision (offset %d)" % p)
            if _double_fits_single(mv, p + 1):
                raise _error("DecodeError")(NON_CANONICAL, __debug__ and "double-precision float that fits in single precision (offset %d)" % p)
            x = struct.unpack(">d", mv[p + 1:p + 9])[0]
            self.pos = p + 9
            return _to_single(x) if _single else x
        if ai == 31:
            raise _error("DecodeError")(BREAK, __debug__ and "stray break code at offset %d" % p)
        if 28 <= ai <= 30:
            raise _error("DecodeError")(RESERVED, __debug__ and "reserved additional info %d at offset %d" % (ai, p))
        raise _error("DecodeError")(SIMPLE, __debug__ and "simple value %d at offset %d is not allowed" % (ai if ai < 24 else -1, p))


def decode(data):
    """Decode exactly one CBOR item filling all of data; raise DecodeError."""
    d = _Decoder(data)
    v = d.item(0)
    if d.pos != d.end:
        raise _error("DecodeError")(TRAILING, __debug__ and "%d bytes after the item (offset %d)" % (d.end - d.pos, d.pos))
    return v


def decode_prefix(data):
    """Decode one item at the start of data; return (value, bytes used)."""
    d = _Decoder(data)
    v = d.item(0)
    return v, d.pos


class Reader:
    """One buffer's items read in turn, where the whole decoded tree would
    not fit a board's heap: ``array(depth)`` reads an array's head and
    returns its length, ``item(depth)`` decodes the next whole item,
    ``end()`` checks nothing is left. The caller says how deep each item
    sits (DEPTH_MAX counts as in decode()), and gets the same checks and
    DecodeErrors decode() gives. A replica file with a 200-reading log is
    decoded a reading at a time (dmc/snapshot.py ``restore_bytes``): as one
    tree it took some 22 KB per log on the 32-bit unix MicroPython, which a
    frozen node in 80 KB did not have at boot (tools/bench/bench_rig.py
    --reboot)."""

    def __init__(self, data):
        self.d = _Decoder(data)

    def array(self, depth):
        d = self.d
        d._need(1)
        p = d.pos
        ib = d.mv[p]
        if ib >> 5 != 4:
            raise _error("DecodeError")(NOT_ARRAY, __debug__ and "expected an array at offset %d" % p)
        if depth >= DEPTH_MAX:
            raise _error("DecodeError")(DEPTH, __debug__ and "nesting deeper than %d at offset %d" % (DEPTH_MAX, p))
        d.pos = p + 1
        n = d._arg(ib, ib & 0x1F)
        if n > d.end - d.pos:
            raise _error("DecodeError")(TOO_LONG, __debug__ and "array of %d items declared with %d bytes left (offset %d)" % (n, d.end - d.pos, p))
        return n

    def item(self, depth):
        return self.d.item(depth)

    def end(self):
        d = self.d
        if d.pos != d.end:
            raise _error("DecodeError")(TRAILING, __debug__ and "%d bytes after the item (offset %d)" % (d.end - d.pos, d.pos))
