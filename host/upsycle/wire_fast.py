"""Host fast paths of the session wire and the stream framing (CPython only).

Every message a proxy moves costs four codec calls (decode s_publish, encode
s_puback, encode s_deliver, decode s_dack) and two frames each way. The
shared code (session/messages.py, wire/framing.py) is written for the boards: small,
allocation-aware, pure Python, one byte at a time. On the host the same
bytes come cheaper from C: cbor2 decodes, bytes concatenation with
precomputed CBOR heads encodes, and slicing splits frames.

Nothing here changes what goes on the wire. The encoders produce exactly the
bytes of session/messages.py (deterministic CBOR, RFC 8949 §4.2.1: shortest
heads); ``decode`` accepts a data-path message only if re-encoding its
values gives back the very same bytes (so it is canonical) and hands
everything else to the strict shared decoder, which answers or raises the
same typed errors as before. ``StreamDecoder`` raises the shared
``framing.FrameError`` codes and messages. tests/host/test_wire_fast.py
checks all of this against the shared code, byte for byte.
"""
import struct

import cbor2

from shared_protocol.wire import envelope as E
from shared_protocol.wire import framing
from shared_protocol.session import messages as W

_loads = cbor2.loads
_pack_h = struct.Struct(">H").pack
_pack_bh = struct.Struct(">BH").pack
_pack_bi = struct.Struct(">BI").pack
_pack_bq = struct.Struct(">BQ").pack

# Heads of byte strings by length (0..PAYLOAD_MAX): a table lookup instead of
# arithmetic per field.
_BHEAD = tuple(bytes((0x40 | n,)) if n < 24 else bytes((0x58, n)) if n < 0x100 else _pack_bh(0x59, n)
               for n in range(W.PAYLOAD_MAX + 1))
_UHEAD = tuple(bytes((n,)) for n in range(24))


def _bound_error(name, n, bound):
    return E.RegistryError(E.E_BOUND, "field %s is %d bytes, limit %d" % (name, n, bound))


def _uint(v, name):
    if type(v) is not int or v < 0 or v > W.SEQ_MAX:
        raise E.RegistryError(E.E_BOUND, "field %s must be an unsigned int up to %d" % (name, W.SEQ_MAX))
    if v < 24:
        return _UHEAD[v]
    if v < 0x100:
        return bytes((0x18, v))
    if v < 0x10000:
        return _pack_bh(0x19, v)
    if v < 0x100000000:
        return _pack_bi(0x1A, v)
    return _pack_bq(0x1B, v)


def _lengths(topic, msg_id, payload):
    """The three lengths, each checked against its limit (session/messages.py)."""
    nt, nm, np_ = len(topic), len(msg_id), len(payload)
    if nt > W.TOPIC_ID_MAX:
        raise _bound_error("topic", nt, W.TOPIC_ID_MAX)
    if nm > W.MSG_ID_MAX:
        raise _bound_error("msg_id", nm, W.MSG_ID_MAX)
    if np_ > W.PAYLOAD_MAX:
        raise _bound_error("payload", np_, W.PAYLOAD_MAX)
    return nt, nm, np_


def encode_publish(topic, msg_id, payload):
    nt, nm, np_ = _lengths(topic, msg_id, payload)
    return b"".join((b"\x85\x01\x18\x36", _BHEAD[nt], topic, _BHEAD[nm], msg_id, _BHEAD[np_], payload))


def encode_puback(msg_id):
    n = len(msg_id)
    if n > W.MSG_ID_MAX:
        raise _bound_error("msg_id", n, W.MSG_ID_MAX)
    return b"\x83\x01\x18\x37" + _BHEAD[n] + msg_id


def encode_deliver(topic, seq, msg_id, payload):
    # One per delivered message: the usual case (every field within its
    # bound, seq below 2^32) without a call; anything else as before.
    nt, nm, np_ = len(topic), len(msg_id), len(payload)
    if nt > W.TOPIC_ID_MAX or nm > W.MSG_ID_MAX or np_ > W.PAYLOAD_MAX:
        _lengths(topic, msg_id, payload)
    if type(seq) is int and 0 <= seq < 0x100000000:
        sh = _UHEAD[seq] if seq < 24 else bytes((0x18, seq)) if seq < 0x100 else \
            _pack_bh(0x19, seq) if seq < 0x10000 else _pack_bi(0x1A, seq)
    else:
        sh = _uint(seq, "seq")
    return b"".join((b"\x86\x01\x18\x39", _BHEAD[nt], topic, sh, _BHEAD[nm], msg_id, _BHEAD[np_], payload))


def encode_dack(topic, seq):
    nt = len(topic)
    if nt > W.TOPIC_ID_MAX:
        raise _bound_error("topic", nt, W.TOPIC_ID_MAX)
    return b"".join((b"\x84\x01\x18\x3a", _BHEAD[nt], topic, _uint(seq, "seq")))


# type code -> (name, number of fields, encoder)
_FAST = {
    54: ("s_publish", 3, encode_publish),
    55: ("s_puback", 1, encode_puback),
    57: ("s_deliver", 4, encode_deliver),
    58: ("s_dack", 2, encode_dack),
}


def _bstr(data, p, end, bound):
    """(length, start) of the canonical byte string head at p, if it fits in
    data and within bound, else None."""
    h = data[p]
    if 0x40 <= h < 0x58:
        n = h - 0x40
        p += 1
    elif h == 0x58:
        if p + 1 >= end:
            return None
        n = data[p + 1]
        if n < 24:
            return None
        p += 2
    elif h == 0x59:
        if p + 2 >= end:
            return None
        n = (data[p + 1] << 8) | data[p + 2]
        if n < 0x100:
            return None
        p += 3
    else:
        return None
    if n > bound or p + n > end:
        return None
    return n, p


def _publish(data, end):
    """The values of a canonical s_publish, or None (any other form)."""
    r = _bstr(data, 4, end, W.TOPIC_ID_MAX)
    if r is None:
        return None
    q = r[1] + r[0]
    topic = data[r[1]:q]
    if q >= end:
        return None
    r = _bstr(data, q, end, W.MSG_ID_MAX)
    if r is None:
        return None
    q = r[1] + r[0]
    msg_id = data[r[1]:q]
    if q >= end:
        return None
    r = _bstr(data, q, end, W.PAYLOAD_MAX)
    if r is None or r[1] + r[0] != end:
        return None
    return [topic, msg_id, data[r[1]:]]


# publish_fields takes topics and message ids of up to this many bytes (a
# one-byte CBOR head: every node's, 16 and 16 bytes); longer ones take the
# general path.
_SHORT_TOPIC = min(23, W.TOPIC_ID_MAX)
_SHORT_MSG_ID = min(23, W.MSG_ID_MAX)


def _id_payload(data, q, end):
    """Where a message id (short byte string at q) ends and the payload
    after it (shortest-form byte string running to end) starts: (r, p), or
    None if either is not so (the caller then takes the general decoder)."""
    nm = data[q] - 0x40
    if nm < 0 or nm > _SHORT_MSG_ID:
        return None
    r = q + 1 + nm
    if r >= end:
        return None
    h = data[r]
    if 0x40 <= h < 0x58:
        p = r + 1
        n = h - 0x40
    elif h == 0x58 and r + 1 < end:
        p = r + 2
        n = data[r + 1]
        if n < 24:
            return None
    elif h == 0x59 and r + 2 < end:
        p = r + 3
        n = (data[r + 1] << 8) | data[r + 2]
        if n < 0x100 or n > W.PAYLOAD_MAX:
            return None
    else:
        return None
    if p + n != end:
        return None
    return r, p


def publish_fields(data):
    """(topic, msg_id, payload) of a canonical s_publish whose topic and
    message id are under 24 bytes, in one call without the general decoder
    (a proxy takes one per message); None for anything else, which then
    goes through decode as before. ``data`` must be bytes."""
    end = len(data)
    if end < 8 or data[0] != 0x85 or data[3] != 0x36 or data[1] != 1 or data[2] != 0x18:
        return None
    nt = data[4] - 0x40
    if nt < 0 or nt > _SHORT_TOPIC:
        return None
    q = 5 + nt
    if q >= end:
        return None
    rp = _id_payload(data, q, end)
    if rp is None:
        return None
    r, p = rp
    return data[5:q], data[q + 1:r], data[p:]


def deliver_fields(data):
    """(topic, seq, msg_id, payload) of a canonical s_deliver whose topic and
    message id are under 24 bytes, in one call (a node takes one per
    message); None for anything else (then decode). ``data``: bytes."""
    end = len(data)
    if end < 9 or data[0] != 0x86 or data[3] != 0x39 or data[1] != 1 or data[2] != 0x18:
        return None
    nt = data[4] - 0x40
    if nt < 0 or nt > _SHORT_TOPIC:
        return None
    q = 5 + nt
    if q >= end:
        return None
    h = data[q]
    if h < 24:
        seq = h
        q += 1
    elif h == 0x18:
        if q + 1 >= end or data[q + 1] < 24:
            return None
        seq = data[q + 1]
        q += 2
    elif 0x19 <= h <= 0x1B:
        k = 1 << (h - 0x18)   # 2, 4 or 8 bytes
        if q + 1 + k >= end:
            return None
        seq = int.from_bytes(data[q + 1:q + 1 + k], "big")
        if seq < (1 << (4 * k)) or seq > W.SEQ_MAX:   # shortest form only; within SEQ_MAX
            return None
        q += 1 + k
    else:
        return None
    if q >= end:
        return None
    rp = _id_payload(data, q, end)
    if rp is None:
        return None
    r, p = rp
    return data[5:5 + nt], seq, data[q + 1:r], data[p:]


def puback_id(data):
    """The message id of a canonical s_puback of an id under 24 bytes, or
    None (then decode). ``data``: bytes."""
    n = len(data) - 5
    if 0 <= n <= _SHORT_MSG_ID and data[4] == 0x40 + n and data[:4] == b"\x83\x01\x18\x37":
        return data[5:]
    return None


def deliver_run(topic, rows):
    """encode_deliver of each (seq, msg_id, payload) of rows, all of one
    topic: the topic's part of the message made once (a proxy sends a run
    of one topic to each subscriber per commit)."""
    nt = len(topic)
    if nt > W.TOPIC_ID_MAX:
        raise _bound_error("topic", nt, W.TOPIC_ID_MAX)
    head = b"\x86\x01\x18\x39" + _BHEAD[nt] + topic
    out = []
    for seq, msg_id, payload in rows:
        nm, np_ = len(msg_id), len(payload)
        if nm > W.MSG_ID_MAX or np_ > W.PAYLOAD_MAX:
            _lengths(topic, msg_id, payload)
        if type(seq) is int and 0 <= seq < 0x100000000:
            sh = _UHEAD[seq] if seq < 24 else bytes((0x18, seq)) if seq < 0x100 else \
                _pack_bh(0x19, seq) if seq < 0x10000 else _pack_bi(0x1A, seq)
        else:
            sh = _uint(seq, "seq")
        out.append(b"".join((head, sh, _BHEAD[nm], msg_id, _BHEAD[np_], payload)))
    return out


def _dack(data, end):
    """The values of a canonical s_dack, or None."""
    r = _bstr(data, 4, end, W.TOPIC_ID_MAX)
    if r is None:
        return None
    q = r[1] + r[0]
    if q >= end:
        return None
    h = data[q]
    if h < 24:
        if q + 1 != end:
            return None
        seq = h
    elif h == 0x18 and q + 2 == end and data[q + 1] >= 24:
        seq = data[q + 1]
    elif 0x19 <= h <= 0x1B:
        k = 1 << (h - 0x18)   # 2, 4 or 8 bytes
        if q + 1 + k != end:
            return None
        seq = int.from_bytes(data[q + 1:end], "big")
        if seq < (1 << (4 * k)) or seq > W.SEQ_MAX:   # shortest form only; within SEQ_MAX
            return None
    else:
        return None
    return [data[r[1]:q], seq]


def _uint_at(data, q, end):
    """(value, next position) of the canonical uint head at q (at most
    SEQ_MAX), or None."""
    h = data[q]
    if h < 24:
        return h, q + 1
    if h == 0x18:
        if q + 1 >= end or data[q + 1] < 24:
            return None
        return data[q + 1], q + 2
    if 0x19 <= h <= 0x1B:
        k = 1 << (h - 0x18)   # 2, 4 or 8 bytes
        if q + 1 + k > end:
            return None
        v = int.from_bytes(data[q + 1:q + 1 + k], "big")
        if v < (1 << (4 * k)) or v > W.SEQ_MAX:   # shortest form only; within SEQ_MAX
            return None
        return v, q + 1 + k
    return None


def _puback(data, end):
    """The values of a canonical s_puback, or None."""
    r = _bstr(data, 4, end, W.MSG_ID_MAX)
    if r is None or r[1] + r[0] != end:
        return None
    return [data[r[1]:]]


def _deliver(data, end):
    """The values of a canonical s_deliver, or None."""
    r = _bstr(data, 4, end, W.TOPIC_ID_MAX)
    if r is None:
        return None
    q = r[1] + r[0]
    if q >= end:
        return None
    topic = data[r[1]:q]
    u = _uint_at(data, q, end)
    if u is None or u[1] >= end:
        return None
    r = _bstr(data, u[1], end, W.MSG_ID_MAX)
    if r is None:
        return None
    q = r[1] + r[0]
    if q >= end:
        return None
    msg_id = data[r[1]:q]
    r = _bstr(data, q, end, W.PAYLOAD_MAX)
    if r is None or r[1] + r[0] != end:
        return None
    return [topic, u[0], msg_id, data[r[1]:]]


_SLICED = {
    (0x85, 0x36): ("s_publish", _publish),
    (0x84, 0x3A): ("s_dack", _dack),
    (0x83, 0x37): ("s_puback", _puback),
    (0x86, 0x39): ("s_deliver", _deliver),
}


def decode(data):
    """Bytes -> (message name, field values), as session/messages.py decode.

    The data-path messages (s_publish and s_dack, which a proxy receives per
    message; s_puback and s_deliver, which a node or a load generator does)
    are taken apart by slicing, in their canonical form only; any other
    input goes to cbor2, accepted only when its canonical re-encoding is the
    input itself, and failing that to the strict shared decoder (same
    results, same typed errors)."""
    if type(data) is not bytes:
        data = bytes(data)
    end = len(data)
    if end > 5 and data[2] == 0x18 and data[1] == 1:
        f = _SLICED.get((data[0], data[3]))
        if f is not None:
            v = f[1](data, end)
            if v is not None:
                return f[0], v
            return W.decode(data)
    try:
        v = _loads(data)
    except Exception:
        return W.decode(data)
    if type(v) is list and len(v) > 2 and type(v[0]) is int and v[0] == 1 and type(v[1]) is int:
        t = _FAST.get(v[1])
        if t is not None and len(v) == t[1] + 2:
            values = v[2:]
            try:
                same = t[2](*values) == data
            except Exception:
                same = False
            if same:
                return t[0], values
    return W.decode(data)


# framing's stream names live in wire/stream.py, which framing hands out
# through a module __getattr__ (an import and a lookup per access): taken
# once here, not per frame.
_CEILING = framing.STREAM_FRAME_CEILING


def frame(payload, limit=framing.STREAM_FRAME_DEFAULT):
    """framing.frame: a 2-byte big-endian length, then the message."""
    n = len(payload)
    if n == 0 or n > limit or n > _CEILING:
        return framing.frame(payload, limit)   # raises the typed FrameLimitError
    return _pack_h(n) + payload


# Frame heads (2-byte big-endian lengths) of every length up to the default
# frame limit, made once: one lookup per frame instead of a pack call.
_FHEAD = tuple(_pack_h(n) for n in range(framing.STREAM_FRAME_DEFAULT + 1))


def frames(payloads, limit=framing.STREAM_FRAME_DEFAULT):
    """Several messages framed into one buffer for one write."""
    parts = []
    append = parts.append
    heads = _FHEAD
    top = len(heads)
    for p in payloads:
        n = len(p)
        if n == 0 or n > limit or n > _CEILING:
            framing.frame(p, limit)
        append(heads[n] if n < top else _pack_h(n))
        append(p)
    return b"".join(parts)


class StreamDecoder:
    """framing.StreamDecoder's ``feed`` for hosts: the same frames, the same
    FrameError codes and messages (sticky), the same bound (at most one
    partial frame of up to ``limit`` bytes is kept between calls), by
    slicing instead of copying byte ranges through a fixed buffer."""

    __slots__ = ("limit", "_buf", "_error")

    def __init__(self, limit=framing.STREAM_FRAME_DEFAULT):
        if not (0 < limit <= framing.STREAM_FRAME_CEILING):
            raise framing.FrameLimitError(framing.OVERSIZE, "frame limit must be 1..%d" % framing.STREAM_FRAME_CEILING)
        self.limit = limit
        self._buf = b""
        self._error = None

    def buffered(self):
        return len(self._buf)

    def _fail(self, code, msg):
        self._error = framing.FrameError(code, msg)
        self._buf = b""
        raise self._error

    def feed(self, data):
        if self._error is not None:
            raise self._error
        buf = self._buf + data if self._buf else bytes(data)
        out = []
        p = 0
        end = len(buf)
        lim = self.limit
        while end - p >= 2:
            n = (buf[p] << 8) | buf[p + 1]
            if n == 0:
                self._fail(framing.EMPTY, "empty frame")
            if n > lim:
                self._fail(framing.OVERSIZE, "frame declares %d bytes, limit %d" % (n, lim))
            q = p + 2 + n
            if q > end:
                break
            out.append(buf[p + 2:q])
            p = q
        self._buf = buf[p:] if p < end else b""
        return out
