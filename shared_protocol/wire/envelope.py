"""The versioned envelope every protocol message travels in.

On the wire a message is one deterministic-CBOR array:

    [version, type, field_1, field_2, ...]

Positional fields keep messages small (no key strings on the air: compare
Zenoh's 5-byte data header). ``version`` is the envelope version (1); ``type``
is a small unsigned integer from the registry below. Each type declares its
fields with a kind and a bound, so a decoded message is already checked: a
protocol object never sees a wrong type or an over-long value.

Type numbers are allocated in blocks so that modules can register their own
messages without colliding (see TYPE_BLOCKS). A message type, once shipped,
never changes its fields; a new layout gets a new type number.
"""

from shared_protocol.wire import cbor
from shared_protocol.errors import LocalError, RemoteError, kind

try:
    from micropython import const
except ImportError:   # CPython (host and tests)
    def const(x):
        return x

VERSION = 1

# Blocks of type numbers per protocol, so each module owns its range.
TYPE_BLOCKS = {
    "core": (0, 7),         # envelope-level: error replies, pings
    "hot": (8, 15),         # what every reading costs (s_pub_a, s_ack_a, group_rs): one CBOR byte of type
    "cyclon": (16, 31),     # peer sampling (CYCLON, VICINITY)
    "dmc": (32, 47),        # replica operations and anti-entropy sync
    "session": (48, 79),    # edge session with a proxy (hello, pub, sub, ack...)
    "secure": (80, 95),     # Noise handshakes, re-keying, capabilities
    "overlay": (96, 127),   # core overlay of proxies (PolderCast, RingCast)
    "app": (128, 255),      # application and test messages
}

# Field kinds.
UINT = "uint"      # int >= 0 (bound: maximum value)
INT = "int"        # any int (bound: maximum absolute value)
BYTES = "bytes"    # bytes (bound: maximum length)
TEXT = "text"      # str (bound: maximum length in characters)
FLOAT = "float"    # float or int (bound ignored)
BOOL = "bool"
LIST = "list"      # array of anything (bound: maximum item count)
MAP = "map"        # map of anything (bound: maximum pair count)
ANY = "any"        # any CBOR value (bound ignored); check it yourself
NULLABLE = "?"     # suffix: the field may also be null, e.g. BYTES + NULLABLE

# Error codes.
_E_SHAPE = const("shape")          # not an array [version, type, ...]
_E_VERSION = const("version")      # unknown envelope version
E_TYPE = "unknown_type"    # type number not registered
E_ARITY = "arity"          # wrong number of fields
E_FIELD = "field"          # a field of the wrong kind
E_BOUND = "bound"          # a field over its bound


# Name, base, code (a line each; made on first use, see
# shared_protocol.errors.kind; this module raises them through _error, others
# name them through the module, e.g. envelope.EnvelopeError):
# - EnvelopeError: a decoded CBOR value is not a valid message.
# - RegistryError: a message type was misdeclared or a message misbuilt by
#   the caller.
KINDS = """
EnvelopeError RemoteError envelope
RegistryError LocalError registry
"""
# The kinds made so far (shared_protocol.errors.kind), under their names,
# and the module name they carry.
_MADE = {"__name__": __name__}


def _error(name):
    return _MADE.get(name) or kind(name, KINDS, _MADE)


__getattr__ = _error


# A message type is the tuple (code, name, field specs, min_fields), as
# Registry.register returns it: a tuple is 32 bytes of a board's heap where
# an object with four attributes was 48 (the 32-bit unix port), for every
# type a node registers, and the class is gone. Modules compare types by
# identity (msg.type is PUB) and read a message's name as msg.name.
#
# The field specs are one flat tuple, three items a field: (name, kind,
# bound, name, kind, bound, ...). A board loading .mpy files builds every
# literal tuple in its heap, so a tuple per field was some 87 tuples of 32
# bytes for the 33 types a node registers (docs/node.md, "Fewer tuples,
# fewer copies, room that holds").


def field_index(mtype, name):
    """The position of field ``name`` in a message type, or -1. A scan of
    the field specs (messages have at most a handful of fields): a dict, or
    a tuple of the names, per type would be one more object for every
    registered type in a board's heap (the specs themselves are constants,
    in flash when frozen)."""
    f = mtype[2]
    for i in range(0, len(f), 3):
        if f[i] == name:
            return i // 3
    return -1


class Message:
    """A decoded (or to-be-sent) message: its type and positional values.

    ``msg["field"]`` reads a field by name; ``msg.values`` is the list.
    Omitted optional trailing fields read as None.
    """

    __slots__ = ("type", "values")

    def __init__(self, mtype, values):
        self.type = mtype
        self.values = values

    @property
    def name(self):
        return self.type[1]

    def __getitem__(self, name):
        """The field ``name``; KeyError if the type has none."""
        i = field_index(self.type, name)
        if i < 0:
            raise KeyError(name)
        v = self.values
        return v[i] if i < len(v) else None

    def get(self, name, default=None):
        i = field_index(self.type, name)
        if i < 0 or i >= len(self.values):
            return default
        return self.values[i]

    def __repr__(self):
        return "<Message %s %r>" % (self.type[1], self.values)


def _check_field(name, kind, bound, v, strict_cls):
    if kind[-1:] == NULLABLE:
        if v is None:
            return
        kind = kind[:-1]
    if kind == UINT:
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise _error(strict_cls)(E_FIELD, __debug__ and "field %s must be an unsigned int" % name)
        if bound is not None and v > bound:
            raise _error(strict_cls)(E_BOUND, __debug__ and "field %s = %d is over its limit %d" % (name, v, bound))
    elif kind == INT:
        if not isinstance(v, int) or isinstance(v, bool):
            raise _error(strict_cls)(E_FIELD, __debug__ and "field %s must be an int" % name)
        if bound is not None and (v > bound or v < -bound):
            raise _error(strict_cls)(E_BOUND, __debug__ and "field %s is over its limit %d" % (name, bound))
    elif kind == BYTES:
        if not isinstance(v, (bytes, bytearray, memoryview)):
            raise _error(strict_cls)(E_FIELD, __debug__ and "field %s must be bytes" % name)
        if bound is not None and len(v) > bound:
            raise _error(strict_cls)(E_BOUND, __debug__ and "field %s is %d bytes, limit %d" % (name, len(v), bound))
    elif kind == TEXT:
        if not isinstance(v, str):
            raise _error(strict_cls)(E_FIELD, __debug__ and "field %s must be text" % name)
        if bound is not None and len(v) > bound:
            raise _error(strict_cls)(E_BOUND, __debug__ and "field %s is %d characters, limit %d" % (name, len(v), bound))
    elif kind == FLOAT:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise _error(strict_cls)(E_FIELD, __debug__ and "field %s must be a number" % name)
    elif kind == BOOL:
        if v is not True and v is not False:
            raise _error(strict_cls)(E_FIELD, __debug__ and "field %s must be true or false" % name)
    elif kind == LIST:
        if not isinstance(v, (list, tuple)):
            raise _error(strict_cls)(E_FIELD, __debug__ and "field %s must be an array" % name)
        if bound is not None and len(v) > bound:
            raise _error(strict_cls)(E_BOUND, __debug__ and "field %s has %d items, limit %d" % (name, len(v), bound))
    elif kind == MAP:
        if not isinstance(v, dict):
            raise _error(strict_cls)(E_FIELD, __debug__ and "field %s must be a map" % name)
        if bound is not None and len(v) > bound:
            raise _error(strict_cls)(E_BOUND, __debug__ and "field %s has %d pairs, limit %d" % (name, len(v), bound))
    elif kind != ANY:
        raise _error("RegistryError")("kind", __debug__ and "field %s has unknown kind %s" % (name, kind))


class Registry:
    """Message types by number and by name, with encode and decode."""

    def __init__(self):
        self._by_code = {}
        # By name too on a host (its proxy encodes by name at every
        # message); a board finds a name among its few dozen types by a
        # scan, which costs it no second table (some 320 bytes of heap).
        self._by_name = None if cbor._MICROPYTHON else {}

    def add(self, t):
        """Declare a message type t = (code, name, fields, min_fields):
        fields a flat tuple (name, kind, bound, name, kind, bound, ...),
        min_fields the number of fields a message must carry. Returns t.
        Board code declares its types this way, as literal tuples: a frozen
        image keeps them in flash, where a tuple made at import would take
        heap."""
        code, name, fields, min_fields = t
        if not (0 <= code <= 255):
            raise _error("RegistryError")("code", __debug__ and "type number %d outside 0..255" % code)
        old = self._by_code.get(code)
        if old is not None:
            if old[1] == name and old[2] == fields:
                return old  # the same declaration imported twice
            raise _error("RegistryError")("code", __debug__ and "type %d already used by %s" % (code, old[1]))
        if self._find(name) is not None:
            raise _error("RegistryError")("name", __debug__ and "message name %s already registered" % name)
        if not isinstance(fields, tuple) or len(fields) % 3:
            raise _error("RegistryError")("field", __debug__ and "%s: field specs must be a flat tuple (name, kind, bound, ...)" % name)
        for i in range(0, len(fields), 3):
            if not isinstance(fields[i], str) or not isinstance(fields[i + 1], str):
                raise _error("RegistryError")("field", __debug__ and "%s: field %r has no (name, kind, bound)" % (name, fields[i:i + 3]))
        if not 0 <= min_fields <= len(fields) // 3:
            raise _error("RegistryError")("field", __debug__ and "%s: min_fields %d outside 0..%d" % (name, min_fields, len(fields) // 3))
        self._by_code[code] = t
        if self._by_name is not None:
            self._by_name[name] = t
        return t

    def register(self, code, name, fields, min_fields=None):
        """add() for types made at run time (host code): fields any
        sequence of (name, kind, bound), min_fields all of them unless
        given."""
        flat = []
        for f in fields:
            if len(f) != 3:
                raise _error("RegistryError")("field", __debug__ and "field spec %r must be (name, kind, bound)" % (f,))
            flat.extend(f)
        return self.add((code, name, tuple(flat), len(flat) // 3 if min_fields is None else min_fields))

    def _find(self, name):
        if self._by_name is not None:
            return self._by_name.get(name)
        for t in self._by_code.values():
            if t[1] == name:
                return t
        return None

    def type(self, name_or_code):
        t = self._find(name_or_code) if isinstance(name_or_code, str) else self._by_code.get(name_or_code)
        if t is None:
            raise _error("RegistryError")(E_TYPE, __debug__ and "no message type %r" % (name_or_code,))
        return t

    def message(self, name_or_code, *values):
        """Build and check a Message to send."""
        t = self.type(name_or_code)
        self._check(t, values, "RegistryError")
        return Message(t, list(values))

    def encode(self, name_or_code, *values):
        """Encode a message straight to bytes: encode("hello", node_id, 1)."""
        t = self.type(name_or_code)
        self._check(t, values, "RegistryError")
        out = bytearray()
        cbor.encode_head(out, 4, 2 + len(values))
        out.append(VERSION)
        cbor.encode_into(out, t[0])
        for v in values:
            try:
                cbor.encode_into(out, v)
            except cbor.EncodeError as e:
                raise _error("RegistryError")(e.code, __debug__ and "%s: %s" % (t[1], e.message))
        return bytes(out)

    def encode_message(self, msg):
        return self.encode(msg.type[0], *msg.values)

    def decode(self, data):
        """Bytes -> Message. Raises cbor.DecodeError or EnvelopeError."""
        return self.from_value(cbor.decode(data))

    def from_value(self, v):
        """A decoded CBOR value -> Message (for envelopes nested in others)."""
        if not isinstance(v, list) or len(v) < 2:
            raise _error("EnvelopeError")(_E_SHAPE, __debug__ and "a message is an array [version, type, fields...]")
        ver = v[0]
        if ver != VERSION or isinstance(ver, bool):
            raise _error("EnvelopeError")(_E_VERSION, __debug__ and "envelope version %r is not supported (this node speaks %d)" % (ver, VERSION))
        code = v[1]
        if not isinstance(code, int) or isinstance(code, bool):
            raise _error("EnvelopeError")(E_TYPE, __debug__ and "message type must be an int")
        t = self._by_code.get(code)
        if t is None:
            raise _error("EnvelopeError")(E_TYPE, __debug__ and "unknown message type %r" % (code,))
        values = v[2:]
        self._check(t, values, "EnvelopeError")
        return Message(t, values)

    def _check(self, t, values, err):
        n = len(values)
        fields = t[2]
        if n < t[3] or 3 * n > len(fields):
            raise _error(err)(E_ARITY, __debug__ and "%s takes %d..%d fields, got %d" % (t[1], t[3], len(fields) // 3, n))
        for i in range(n):
            j = 3 * i
            _check_field(fields[j], fields[j + 1], fields[j + 2], values[i], err)


# The registry shared by every protocol module of a node. Modules register
# their types at import time, within their block of TYPE_BLOCKS.
REGISTRY = Registry()

# Core messages (block "core"), named by their strings (session/messages.py).
REGISTRY.add((0, "error", (
    "code", "text", 32,        # machine-readable error code
    "detail", "text", 200,     # human-readable detail
    "ref", "any", None,        # what it refers to (message id, type...), or null
), 2))
REGISTRY.add((1, "ping", ("nonce", "uint", 0xFFFFFFFF,), 1))
REGISTRY.add((2, "pong", ("nonce", "uint", 0xFFFFFFFF,), 1))
