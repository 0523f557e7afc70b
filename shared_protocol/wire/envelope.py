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
from shared_protocol.errors import LocalError, RemoteError

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
E_SHAPE = "shape"          # not an array [version, type, ...]
E_VERSION = "version"      # unknown envelope version
E_TYPE = "unknown_type"    # type number not registered
E_ARITY = "arity"          # wrong number of fields
E_FIELD = "field"          # a field of the wrong kind
E_BOUND = "bound"          # a field over its bound


class EnvelopeError(RemoteError):
    """A decoded CBOR value is not a valid message."""

    code = "envelope"


class RegistryError(LocalError):
    """A message type was misdeclared or a message misbuilt by the caller."""

    code = "registry"


class MessageType:
    __slots__ = ("code", "name", "fields", "min_fields")

    def __init__(self, code, name, fields, min_fields=None):
        self.code = code
        self.name = name
        self.fields = tuple(fields)
        self.min_fields = len(self.fields) if min_fields is None else min_fields

    def find(self, name):
        """The position of field ``name``, or -1. A scan of the field specs
        (messages have at most a handful of fields): a dict, or a tuple of
        the names, per type would be one more object for every registered
        type in a board's heap (the specs themselves are constants, in flash
        when frozen)."""
        i = 0
        for f in self.fields:
            if f[0] == name:
                return i
            i += 1
        return -1

    def index(self, name):
        """The position of field ``name``; KeyError if the type has none."""
        i = self.find(name)
        if i < 0:
            raise KeyError(name)
        return i

    def __repr__(self):
        return "<MessageType %d %s>" % (self.code, self.name)


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
        return self.type.name

    def __getitem__(self, name):
        i = self.type.index(name)
        v = self.values
        return v[i] if i < len(v) else None

    def get(self, name, default=None):
        i = self.type.find(name)
        if i < 0 or i >= len(self.values):
            return default
        return self.values[i]

    def __repr__(self):
        return "<Message %s %r>" % (self.type.name, self.values)


def _check_field(spec, v, strict_cls):
    name, kind, bound = spec
    if kind[-1:] == NULLABLE:
        if v is None:
            return
        kind = kind[:-1]
    if kind == UINT:
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise strict_cls(E_FIELD, "field %s must be an unsigned int" % name)
        if bound is not None and v > bound:
            raise strict_cls(E_BOUND, "field %s = %d is over its limit %d" % (name, v, bound))
    elif kind == INT:
        if not isinstance(v, int) or isinstance(v, bool):
            raise strict_cls(E_FIELD, "field %s must be an int" % name)
        if bound is not None and (v > bound or v < -bound):
            raise strict_cls(E_BOUND, "field %s is over its limit %d" % (name, bound))
    elif kind == BYTES:
        if not isinstance(v, (bytes, bytearray, memoryview)):
            raise strict_cls(E_FIELD, "field %s must be bytes" % name)
        if bound is not None and len(v) > bound:
            raise strict_cls(E_BOUND, "field %s is %d bytes, limit %d" % (name, len(v), bound))
    elif kind == TEXT:
        if not isinstance(v, str):
            raise strict_cls(E_FIELD, "field %s must be text" % name)
        if bound is not None and len(v) > bound:
            raise strict_cls(E_BOUND, "field %s is %d characters, limit %d" % (name, len(v), bound))
    elif kind == FLOAT:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise strict_cls(E_FIELD, "field %s must be a number" % name)
    elif kind == BOOL:
        if v is not True and v is not False:
            raise strict_cls(E_FIELD, "field %s must be true or false" % name)
    elif kind == LIST:
        if not isinstance(v, (list, tuple)):
            raise strict_cls(E_FIELD, "field %s must be an array" % name)
        if bound is not None and len(v) > bound:
            raise strict_cls(E_BOUND, "field %s has %d items, limit %d" % (name, len(v), bound))
    elif kind == MAP:
        if not isinstance(v, dict):
            raise strict_cls(E_FIELD, "field %s must be a map" % name)
        if bound is not None and len(v) > bound:
            raise strict_cls(E_BOUND, "field %s has %d pairs, limit %d" % (name, len(v), bound))
    elif kind != ANY:
        raise RegistryError("kind", "field %s has unknown kind %s" % (name, kind))


class Registry:
    """Message types by number and by name, with encode and decode."""

    def __init__(self):
        self._by_code = {}
        self._by_name = {}

    def register(self, code, name, fields, min_fields=None):
        """Declare a message type. fields: sequence of (name, kind, bound)."""
        if not (0 <= code <= 255):
            raise RegistryError("code", "type number %d outside 0..255" % code)
        old = self._by_code.get(code)
        if old is not None:
            if old.name == name and old.fields == tuple(fields):
                return old  # the same declaration imported twice
            raise RegistryError("code", "type %d already used by %s" % (code, old.name))
        if name in self._by_name:
            raise RegistryError("name", "message name %s already registered" % name)
        for f in fields:
            if len(f) != 3:
                raise RegistryError("field", "field spec %r must be (name, kind, bound)" % (f,))
        t = MessageType(code, name, fields, min_fields)
        self._by_code[code] = t
        self._by_name[name] = t
        return t

    def type(self, name_or_code):
        t = self._by_name.get(name_or_code) if isinstance(name_or_code, str) else self._by_code.get(name_or_code)
        if t is None:
            raise RegistryError(E_TYPE, "no message type %r" % (name_or_code,))
        return t

    def message(self, name_or_code, *values):
        """Build and check a Message to send."""
        t = self.type(name_or_code)
        self._check(t, values, RegistryError)
        return Message(t, list(values))

    def encode(self, name_or_code, *values):
        """Encode a message straight to bytes: encode("hello", node_id, 1)."""
        t = self.type(name_or_code)
        self._check(t, values, RegistryError)
        out = bytearray()
        cbor.encode_head(out, 4, 2 + len(values))
        out.append(VERSION)
        cbor.encode_into(out, t.code)
        for v in values:
            try:
                cbor.encode_into(out, v)
            except cbor.EncodeError as e:
                raise RegistryError(e.code, "%s: %s" % (t.name, e.message))
        return bytes(out)

    def encode_message(self, msg):
        return self.encode(msg.type.code, *msg.values)

    def decode(self, data):
        """Bytes -> Message. Raises cbor.DecodeError or EnvelopeError."""
        return self.from_value(cbor.decode(data))

    def from_value(self, v):
        """A decoded CBOR value -> Message (for envelopes nested in others)."""
        if not isinstance(v, list) or len(v) < 2:
            raise EnvelopeError(E_SHAPE, "a message is an array [version, type, fields...]")
        ver = v[0]
        if ver != VERSION or isinstance(ver, bool):
            raise EnvelopeError(E_VERSION, "envelope version %r is not supported (this node speaks %d)" % (ver, VERSION))
        code = v[1]
        if not isinstance(code, int) or isinstance(code, bool):
            raise EnvelopeError(E_TYPE, "message type must be an int")
        t = self._by_code.get(code)
        if t is None:
            raise EnvelopeError(E_TYPE, "unknown message type %r" % (code,))
        values = v[2:]
        self._check(t, values, EnvelopeError)
        return Message(t, values)

    def _check(self, t, values, err):
        n = len(values)
        if n < t.min_fields or n > len(t.fields):
            raise err(E_ARITY, "%s takes %d..%d fields, got %d" % (t.name, t.min_fields, len(t.fields), n))
        fields = t.fields
        for i in range(n):
            _check_field(fields[i], values[i], err)


# The registry shared by every protocol module of a node. Modules register
# their types at import time, within their block of TYPE_BLOCKS.
REGISTRY = Registry()

# Core messages (block "core").
ERROR = REGISTRY.register(0, "error", (
    ("code", "text", 32),        # machine-readable error code
    ("detail", "text", 200),     # human-readable detail
    ("ref", "any", None),        # what it refers to (message id, type...), or null
), min_fields=2)
PING = REGISTRY.register(1, "ping", (("nonce", "uint", 0xFFFFFFFF),))
PONG = REGISTRY.register(2, "pong", (("nonce", "uint", 0xFFFFFFFF),))
