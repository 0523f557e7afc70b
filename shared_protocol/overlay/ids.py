"""Proxy and topic ids on the ring, and wrap-aware ring distances.

A proxy's id is the first ID_LEN bytes of SHA-256 of its static public key
(the Noise key it is pinned by), so ids are uniformly spread over the whole
ring of 2**64 positions whatever the keys look like, and nobody can place
themselves next to a chosen peer without grinding keys. (P2Pcollab's
ocaml-p2p draws ids from [0, max_int) of a 63-bit int: the top half of the
ring is never used.) A topic's id is the same hash of its name under a
domain-separation prefix, so topic ids and proxy ids never mix.

Ids compare as big-endian unsigned integers; ``pos`` gives that integer.
"""
import hashlib

from shared_protocol.errors import LocalError

try:
    from micropython import const
except ImportError:   # CPython (host and tests)
    def const(x):
        return x

# 8 bytes: 2**64 ring positions. At 10**6 proxies the chance that two share
# an id is about n**2 / 2**65 = 3e-8; a shorter id would save little on the
# wire (ids are most of a ring entry) and start colliding at 10**5.
ID_LEN = 8
RING = 1 << (8 * ID_LEN)
MASK = RING - 1
_MASK = MASK
# A static key is a Curve25519 public key (32 bytes); accept up to 64 for
# other key types.
KEY_MAX = 64
_TOPIC_NAME_MAX = const(255)

_TOPIC_DOMAIN = const(b"upsycle-overlay-topic\x00")

E_CONFIG = "overlay_config"


class IdError(LocalError):
    code = "overlay_id"


def proxy_id(static_key):
    """The ring id of the proxy with this static public key."""
    if type(static_key) is not bytes or not (0 < len(static_key) <= KEY_MAX):
        raise IdError(E_CONFIG, __debug__ and "static key must be 1..%d bytes" % KEY_MAX)
    return hashlib.sha256(static_key).digest()[:ID_LEN]


def topic_id(name):
    """The overlay id of a topic (its name or the session layer's topic bytes)."""
    if type(name) is str:
        name = name.encode()
    if type(name) is not bytes or not (0 < len(name) <= _TOPIC_NAME_MAX):
        raise IdError(E_CONFIG, __debug__ and "topic name must be 1..%d bytes" % _TOPIC_NAME_MAX)
    return hashlib.sha256(_TOPIC_DOMAIN + name).digest()[:ID_LEN]


def pos(node_id):
    """Ring position of an id (big-endian unsigned)."""
    return int.from_bytes(node_id, "big")


def cw(a, b):
    """Clockwise distance from position a to position b, wrapping at 2**64:
    the successor of the largest id is the smallest."""
    return (b - a) & _MASK


def ccw(a, b):
    """Counter-clockwise distance from a to b (b is a's predecessor side)."""
    return (a - b) & _MASK
