"""Messages of the edge session between a node and its proxy (block "session").

A node (board, laptop, script) opens a session with a proxy, publishes opaque
payloads to topic ids, and subscribes to topic ids; the proxy stores what the
node's subscriptions missed and delivers it when the node comes back. The
proxy routes by topic id only: a payload is bytes it never opens (end-to-end
encryption of private groups happens in the nodes).

Identifiers (all opaque bytes to the proxy):
- node id: who the session belongs to; the proxy keys a subscriber's cursor
  by (node id, topic id), so a node resumes where it left off on any link.
- topic id: 16 bytes in practice (the first 16 bytes of SHA-256 of the topic's
  public key, once private groups land; of the topic name before that).
- message id: chosen by the publisher, unique per topic. The proxy stores a
  (topic, message id) once, so a retransmitted publish is stored and
  delivered once. Our clients use ``node id[:8] || 64-bit big-endian
  sequence`` (see ``message_id``), which also gives per-publisher order.

Sequence numbers: the proxy numbers each stored message of a topic 1, 2, 3...
A subscriber's cursor is the highest sequence it has consumed; deliveries of a
topic go out in sequence order, acknowledged cumulatively (``s_dack``).
A new subscription starts at the oldest message the proxy keeps, and
s_unsubscribe deletes the cursor: unsubscribing and subscribing again (once
s_unsubscribed came back) starts a topic over, which is how a node that
lost its replica gets the history again (ClientSession.resubscribe).

Message types, once shipped, never change (wire/envelope.py); new layouts get new
numbers from the block 48..79.
"""

from shared_protocol.wire import envelope as E

try:
    from micropython import const
except ImportError:   # CPython (host and tests)
    def const(x):
        return x

# The message types' field specs below are literals, kinds as the strings
# wire/envelope.py defines and bounds as const(): the compiler makes each
# spec one constant tuple, which a frozen image keeps in flash. Built from
# E.BYTES and plain globals, they were some 120 small tuples made at
# import: the six modules that register types took 3.7 KB more heap
# frozen (measured on the 32-bit unix port). A .mpy still loads the tuples
# into the heap, each with its own copy of a big bound (SEQ_MAX): about
# 1 KB more there than building them, which the frozen saving outweighs.

# Lengths of identifiers: 32 bytes is room for a whole public key or a hash,
# so a deployment may use either as a node or topic id.
NODE_ID_MAX = const(32)
TOPIC_ID_MAX = const(32)
MSG_ID_MAX = const(32)
# Payload limit: a delivery (topic 16 + message id 16 + sequence + envelope
# overhead, about 50 bytes) plus the payload must fit one datagram of
# framing.DATAGRAM_MAX (1200) with room for a 32-byte transport overhead of a
# future encrypted link. 1024 is a round number below that bound.
PAYLOAD_MAX = const(1024)
# Sequence numbers are SQLite INTEGERs on the proxy (signed 64-bit).
SEQ_MAX = const(0x7FFFFFFFFFFFFFFF)
# A node asks for at most this many messages in flight in each direction:
# bounds the proxy's per-session buffers (WINDOW_MAX x ~1.1 KB) whatever the
# node declares.
WINDOW_MAX = const(256)
# Keepalive bounds: 10 minutes lets a sleeping board keep its session; the
# proxy forgets a session after 3 missed keepalives.
_KEEPALIVE_MAX_MS = const(600000)
CAUSE_MAX = const(32)
DETAIL_MAX = const(200)

# Reject and error codes (the proxy's typed refusals).
R_STORAGE_FULL = "storage_full"        # the data directory is full or over quota
R_STORAGE_READONLY = "storage_readonly"  # the data directory cannot be written
R_STORAGE = "storage_error"            # any other storage failure
R_TOO_MANY_TOPICS = "too_many_topics"  # the proxy's topic limit is reached
R_NO_SESSION = "no_session"            # a message before hello
R_LIMIT = "limit"                      # a per-session limit was exceeded
R_OVERLOAD = "overload"                # too many pending writes: retry later
R_NODE_ID = "node_id_mismatch"         # the hello's node id is not the one the link's key proves
R_PLAINTEXT = "plaintext_refused"      # this proxy takes secure (Noise) links only
R_MSG_ID = "msg_id_foreign"            # the message id does not start with the publisher's node id

# Causes of missed messages, as told to subscribers and counted in status.
MISSED_RETENTION = "retention"        # the topic's count/age/bytes limit removed them
MISSED_QUEUE = "queue_limit"          # the subscriber was too far behind

# The session's message types. Code names a type by its string
# (E.REGISTRY.encode("s_hello", ...)), so none is bound to a module name: a
# name a board never reads is one more interned string and module global
# (docs/node.md, "Less state, constants in flash").
E.REGISTRY.add((48, "s_hello", (
    "node", "bytes", NODE_ID_MAX,
    "keepalive_ms", "uint", _KEEPALIVE_MAX_MS,  # how often the node will ping
    "window", "uint", WINDOW_MAX,              # deliveries it accepts in flight
), 3))
E.REGISTRY.add((49, "s_welcome", (
    "proxy", "bytes", NODE_ID_MAX,
    "keepalive_ms", "uint", _KEEPALIVE_MAX_MS,  # the keepalive the proxy agreed to
    "window", "uint", WINDOW_MAX,              # publishes it accepts in flight
), 3))
E.REGISTRY.add((50, "s_subscribe", ("topic", "bytes", TOPIC_ID_MAX,), 1))
E.REGISTRY.add((51, "s_subscribed", (
    "topic", "bytes", TOPIC_ID_MAX,
    "cursor", "uint", SEQ_MAX,   # deliveries resume at cursor + 1
), 2))
E.REGISTRY.add((52, "s_unsubscribe", ("topic", "bytes", TOPIC_ID_MAX,), 1))
E.REGISTRY.add((53, "s_unsubscribed", ("topic", "bytes", TOPIC_ID_MAX,), 1))
E.REGISTRY.add((54, "s_publish", (
    "topic", "bytes", TOPIC_ID_MAX,
    "msg_id", "bytes", MSG_ID_MAX,
    "payload", "bytes", PAYLOAD_MAX,
), 3))
E.REGISTRY.add((55, "s_puback", ("msg_id", "bytes", MSG_ID_MAX,), 1))
E.REGISTRY.add((56, "s_reject", (
    "msg_id", "bytes", MSG_ID_MAX,
    "code", "text", CAUSE_MAX,
    "detail", "text", DETAIL_MAX,
), 3))
E.REGISTRY.add((57, "s_deliver", (
    "topic", "bytes", TOPIC_ID_MAX,
    "seq", "uint", SEQ_MAX,
    "msg_id", "bytes", MSG_ID_MAX,
    "payload", "bytes", PAYLOAD_MAX,
), 4))
E.REGISTRY.add((58, "s_dack", (
    "topic", "bytes", TOPIC_ID_MAX,
    "seq", "uint", SEQ_MAX,      # consumed everything of the topic up to seq
), 2))
E.REGISTRY.add((59, "s_missed", (
    "topic", "bytes", TOPIC_ID_MAX,
    "upto", "uint", SEQ_MAX,     # the messages up to this sequence are gone
    "count", "uint", SEQ_MAX,    # how many of them this subscriber missed
    "cause", "text", CAUSE_MAX,
), 4))
E.REGISTRY.add((60, "s_bye", ("reason", "text", CAUSE_MAX,), 1))
# Observability: a status request answered with a map of counters (the proxy
# answers only on links it trusts, by default loopback).
E.REGISTRY.add((61, "s_status_req", (), 0))
E.REGISTRY.add((62, "s_status", ("status", "map", 64,), 1))


# Short ids, carried once per link (docs/node.md "Bytes on air"): a node
# names the topics it publishes to in its hello (s_hello_t), each with a base
# message sequence; a publish then carries the topic's index in that table
# and its sequence above the base (s_pub_a), and the proxy acknowledges the
# pair (s_ack_a). The proxy turns them back into the topic id and the message
# id node id[:8] | base + n, so what it stores and delivers is unchanged.
# Both are sent for every reading: their types are in the "hot" block
# (8..15, one CBOR byte instead of two).
# Topics one hello can name: a board follows a handful.
ALIASES_MAX = const(16)
# n above the base: 32 bits (a board's base is its replica generation << 32).
_ALIAS_N_MAX = const(0xFFFFFFFF)
E.REGISTRY.add((77, "s_hello_t", (
    "node", "bytes", NODE_ID_MAX,
    "keepalive_ms", "uint", _KEEPALIVE_MAX_MS,
    "window", "uint", WINDOW_MAX,
    "aliases", "list", ALIASES_MAX,            # [[topic id, base], ...]; index = alias
), 4))
E.REGISTRY.add((8, "s_pub_a", (
    "alias", "uint", ALIASES_MAX - 1,
    "n", "uint", _ALIAS_N_MAX,
    "payload", "bytes", PAYLOAD_MAX,
), 3))
E.REGISTRY.add((9, "s_ack_a", (
    "alias", "uint", ALIASES_MAX - 1,
    "n", "uint", _ALIAS_N_MAX,
), 2))


def alias_for(aliases, topic, msg_id, node_id):
    """(alias, n) for a publish of ``msg_id`` on ``topic`` if it can go short
    (the topic is in the table and the id is node id[:8] | base + n), else None."""
    for i in range(len(aliases)):
        t, base = aliases[i]
        if t == topic:
            if len(msg_id) != MSG_ID_SIZE or not message_id_is_from(msg_id, node_id):
                return None
            n = message_seq(msg_id) - base
            return (i, n) if 0 <= n <= _ALIAS_N_MAX else None
    return None


def check_aliases(v):
    """The alias table of an s_hello_t as [(topic, base), ...]; raises
    EnvelopeError on a malformed entry."""
    out = []
    for a in v:
        if (not isinstance(a, list) or len(a) != 2 or not isinstance(a[0], (bytes, bytearray))
                or not 0 < len(a[0]) <= TOPIC_ID_MAX or not isinstance(a[1], int) or isinstance(a[1], bool)
                or not 0 <= a[1] <= 0xFFFFFFFFFFFFFFFF - _ALIAS_N_MAX):
            raise E.EnvelopeError(E.E_FIELD, __debug__ and "alias entries are [topic id, base sequence]")
        out.append((bytes(a[0]), a[1]))
    return out


# Bytes of the node id kept in a message id. The id only has to be unique
# per topic among the publishers one proxy serves (it keys the proxy's
# idempotent store), and a publisher's own sequence number makes it unique
# for that publisher: 8 bytes of node id make an accidental clash between
# two nodes a 2**-64 event per pair. Every publish and every ack carries it,
# so the 16 bytes saved twice per reading count on a board's radio.
MSG_ID_NODE_BYTES = 8
MSG_ID_SIZE = MSG_ID_NODE_BYTES + 8


def message_id(node_id, seq):
    """The message id our clients use: node id[:8] || seq (8 bytes, big-endian).

    Unique per publisher as long as seq never repeats; the host client starts
    seq at the wall clock in microseconds so restarts do not reuse ids.
    """
    out = bytearray(node_id[:MSG_ID_NODE_BYTES])
    for i in range(7, -1, -1):
        out.append((seq >> (8 * i)) & 0xFF)
    return bytes(out)


def message_id_is_from(msg_id, node_id):
    """Whether ``msg_id`` starts as ``message_id(node_id, ...)`` would: the
    proxy takes a publish only under its publisher's ids (R_MSG_ID)."""
    prefix = node_id[:MSG_ID_NODE_BYTES]
    return bytes(msg_id[:len(prefix)]) == prefix


def message_seq(msg_id):
    """The sequence part (last 8 bytes) of a message id made by ``message_id``."""
    v = 0
    for b in msg_id[-8:]:
        v = (v << 8) | b
    return v


# -- Fast paths for the four messages of the data path ----------------------
#
# s_publish, s_deliver, s_puback and s_dack carry every message, so they are
# encoded and decoded here without the generic registry walk. The bytes are
# exactly what E.REGISTRY.encode makes (deterministic CBOR, RFC 8949 §4.2.1:
# shortest heads); the decoder takes only that exact form and hands anything
# else to the strict generic decoder, which reports the error. Bounds are the
# same as the registered field specs.

_FAST_TYPES = {
    54: ("s_publish", "bbp"),
    55: ("s_puback", "b"),
    57: ("s_deliver", "bsbp"),
    58: ("s_dack", "bs"),
}
_FAST_BOUNDS = {"b": MSG_ID_MAX, "p": PAYLOAD_MAX, "s": SEQ_MAX}


def _head(major, n):
    mt = major << 5
    if n < 24:
        return bytes((mt | n,))
    if n < 0x100:
        return bytes((mt | 24, n))
    if n < 0x10000:
        return bytes((mt | 25, n >> 8, n & 0xFF))
    if n < 0x100000000:
        return bytes((mt | 26, n >> 24, (n >> 16) & 0xFF, (n >> 8) & 0xFF, n & 0xFF))
    out = bytearray((mt | 27,))
    for i in range(7, -1, -1):
        out.append((n >> (8 * i)) & 0xFF)
    return bytes(out)


def _b(v, bound, name):
    n = len(v)
    if n > bound:
        raise E.RegistryError(E.E_BOUND, __debug__ and "field %s is %d bytes, limit %d" % (name, n, bound))
    return _head(2, n) + bytes(v)


def _u(v, name):
    if not isinstance(v, int) or v < 0 or v > SEQ_MAX:
        raise E.RegistryError(E.E_BOUND, __debug__ and "field %s must be an unsigned int up to %d" % (name, SEQ_MAX))
    return _head(0, v)


def encode_publish(topic, msg_id, payload):
    return (b"\x85\x01\x18\x36" + _b(topic, TOPIC_ID_MAX, "topic") + _b(msg_id, MSG_ID_MAX, "msg_id")
            + _b(payload, PAYLOAD_MAX, "payload"))


def encode_puback(msg_id):
    return b"\x83\x01\x18\x37" + _b(msg_id, MSG_ID_MAX, "msg_id")


def encode_deliver(topic, seq, msg_id, payload):
    return (b"\x86\x01\x18\x39" + _b(topic, TOPIC_ID_MAX, "topic") + _u(seq, "seq")
            + _b(msg_id, MSG_ID_MAX, "msg_id") + _b(payload, PAYLOAD_MAX, "payload"))


def encode_dack(topic, seq):
    return b"\x84\x01\x18\x3a" + _b(topic, TOPIC_ID_MAX, "topic") + _u(seq, "seq")


def _arg(data, p, end):
    """(argument, next position) of the canonical head at p, or None."""
    ai = data[p] & 0x1F
    if ai < 24:
        return ai, p + 1
    if ai == 24:
        if p + 2 > end or data[p + 1] < 24:
            return None
        return data[p + 1], p + 2
    if ai == 25:
        if p + 3 > end:
            return None
        n = (data[p + 1] << 8) | data[p + 2]
        return (n, p + 3) if n >= 0x100 else None
    if ai == 26 or ai == 27:
        k = 4 if ai == 26 else 8
        if p + 1 + k > end:
            return None
        n = 0
        for i in range(p + 1, p + 1 + k):
            n = (n << 8) | data[i]
        low = 0x10000 if k == 4 else 0x100000000
        return (n, p + 1 + k) if n >= low else None
    return None


def _fast(data):
    end = len(data)
    if end < 4 or data[1] != 1 or data[2] != 0x18:
        return None
    t = _FAST_TYPES.get(data[3])
    if t is None:
        return None
    name, kinds = t
    if data[0] != 0x82 + len(kinds):
        return None
    p = 4
    values = []
    for k in kinds:
        if p >= end:
            return None
        major = data[p] >> 5
        r = _arg(data, p, end)
        if r is None:
            return None
        n, p = r
        if k == "s":
            if major != 0 or n > SEQ_MAX:
                return None
            values.append(n)
        else:
            if major != 2 or n > _FAST_BOUNDS[k] or p + n > end:
                return None
            values.append(bytes(data[p:p + n]))
            p += n
    if p != end:
        return None
    return name, values


def decode(data):
    """Bytes -> (message name, field values). Raises what E.REGISTRY.decode raises."""
    r = _fast(data)
    if r is not None:
        return r
    m = E.REGISTRY.decode(data)
    return m.name, m.values
