"""Identities, topic ids, epoch keys and write capabilities.

- A *member key* is an Ed25519 key pair. It signs the member's publications,
  and its X25519 form (RFC 7748 §4.1 birational map, the same conversion
  libsodium offers) receives re-keys. One key rather than a separate X25519
  key: an invite, a capability and a removal all name a member by a single
  32-byte key, and nothing has to bind a second key to the first. One
  scalar for signing and DH is the construction libsodium supports; here
  every DH output goes through HKDF with a label of its own, and signing
  nonces come from the other half of the seed's hash, so neither use can
  produce a value the other accepts.
- A *topic* is its admin's Ed25519 key pair. Topic id = SHA-256(public)[:16]:
  128 bits make an accidental collision need ~2^64 topics and a deliberate
  one (a second topic with a chosen id) ~2^128 work, while keeping every
  stored and forwarded message 16 bytes shorter than a full key. Proxies see
  only the id; the public key travels in invites, so a proxy cannot check or
  forge admin signatures.
- An *epoch* is a 32-byte secret shared by readers; from it HKDF derives the
  symmetric key of the epoch and an X25519 key pair whose public half is
  given to write-only members, who can then encrypt to the topic but never
  decrypt (see groups/__init__.py for the whole construction).
"""
from shared_protocol.wire import cbor
from shared_protocol.crypto import api
from shared_protocol.crypto import errors as cerr
from shared_protocol.groups import errors as gerr

try:
    from micropython import const
except ImportError:   # CPython (host and tests)
    def const(x):
        return x

TOPIC_ID_SIZE = 16
KEY_SIZE = 32
SIG_SIZE = 64
_EPOCH_SECRET_SIZE = const(32)
# Epoch numbers are 32-bit: one re-key per removal never gets near it.
EPOCH_MAX = 0xFFFFFFFF
# Capability expiry: seconds since the Unix epoch, 0 = never expires.
NO_EXPIRY = 0
_EXPIRY_MAX = const(0xFFFFFFFFFF)
RIGHT_READ = 1
RIGHT_WRITE = 2

# Domain separation labels: a signature or key made for one purpose is never
# valid for another.
_CAP_LABEL = const(b"upsycle-cap-v1")
_EPOCH_SYM_LABEL = const(b"upsycle-epoch-sym-v1")
_EPOCH_DH_LABEL = const(b"upsycle-epoch-dh-v1")


def topic_id(topic_public):
    return api.sha256(topic_public)[:TOPIC_ID_SIZE]


class Identity:
    """An Ed25519 key pair; the seed never leaves the node's config."""

    def __init__(self, seed):
        if not isinstance(seed, (bytes, bytearray)) or len(seed) != KEY_SIZE:
            raise gerr.Malformed(message=__debug__ and "identity seed must be 32 bytes")
        self.seed = bytes(seed)
        self.public = api.ed25519_public(self.seed)
        self._x_secret = None

    def sign(self, msg):
        return api.ed25519_sign(self.seed, msg, self.public)

    @property
    def x25519_secret(self):
        if self._x_secret is None:
            self._x_secret = api.ed25519_seed_to_x25519(self.seed)
        return self._x_secret


class EpochKey:
    """Keys of one epoch. ``secret`` is None for a write-only member."""

    def __init__(self, topic, epoch, secret=None, public=None):
        self.epoch = epoch
        self.secret = secret
        self.sym = None
        self.dh_secret = None
        if secret is not None:
            info = epoch.to_bytes(4, "big")
            self.sym = api.hkdf(topic, secret, _EPOCH_SYM_LABEL + info, 32)
            self.dh_secret = api.hkdf(topic, secret, _EPOCH_DH_LABEL + info, 32)
            derived = api.x25519_public(self.dh_secret)
            if public is not None and not api.constant_time_eq(public, derived):
                raise gerr.Malformed(message=__debug__ and "epoch public key does not match its secret")
            public = derived
        if public is None or len(public) != KEY_SIZE:
            raise gerr.Malformed(message=__debug__ and "epoch needs a secret or a 32-byte public key")
        self.public = public

    @property
    def readable(self):
        return self.secret is not None


def _cap_signed_bytes(topic, member, rights, expiry):
    return _CAP_LABEL + cbor.encode([topic, member, rights, expiry])


def make_capability(topic_identity, member_public, rights, expiry=NO_EXPIRY):
    """[topic id, member key, rights, expiry, admin signature] (a CBOR array)."""
    topic = topic_id(topic_identity.public)
    sig = topic_identity.sign(_cap_signed_bytes(topic, member_public, rights, expiry))
    return [topic, member_public, rights, expiry, sig]


def capability_on_wire(cap):
    """What a publication carries of a capability: [rights, expiry, admin
    signature]. The topic id and the member key are already in the
    publication (its header and its author), so the receiver puts them back
    (``capability_from_wire``) before checking the admin's signature over
    all five; sending them again cost 51 bytes per publication."""
    if cap is None:
        return None
    return [cap[2], cap[3], cap[4]]


def capability_from_wire(w, topic, author):
    """The full capability a publication by ``author`` on ``topic`` claims;
    None stays None (no capability) and any other shape is refused."""
    if w is None:
        return None
    if not isinstance(w, list) or len(w) != 3:
        raise gerr.NoWriteCapability(message=__debug__ and "capability in a publication must be [rights, expiry, signature]")
    return [topic, author, w[0], w[1], w[2]]


def check_write_capability(cap, topic, topic_public, author, now):
    """Raise unless cap lets ``author`` write to the topic at time ``now``."""
    if cap is None:
        raise gerr.NoWriteCapability(message=__debug__ and "publication carries no write capability")
    if (not isinstance(cap, list) or len(cap) != 5 or cap[0] != topic or cap[1] != author
            or not isinstance(cap[2], int) or not isinstance(cap[3], int)
            or not isinstance(cap[4], (bytes, bytearray)) or len(cap[4]) != SIG_SIZE):
        raise gerr.NoWriteCapability(message=__debug__ and "capability is for another topic or member, or malformed")
    if not cap[2] & RIGHT_WRITE:
        raise gerr.NoWriteCapability(message=__debug__ and "capability does not grant write")
    try:
        api.ed25519_verify(topic_public, _cap_signed_bytes(cap[0], cap[1], cap[2], cap[3]), cap[4])
    except cerr.BadSignature:
        raise gerr.NoWriteCapability(message=__debug__ and "capability is not signed by the topic admin")
    if cap[3] != NO_EXPIRY and now >= cap[3]:
        raise gerr.CapabilityExpired(message=__debug__ and "write capability expired at %d (now %d)" % (cap[3], now))
