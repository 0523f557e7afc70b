"""What the overlay protocols share: the error family, limits every message
obeys, the Outgoing wrapper and uniform picks from the node's Rng."""
from shared_protocol.wire import envelope, framing
from shared_protocol.errors import LocalError, RemoteError
from shared_protocol.overlay import cyclon, ids, profile

# A peer address is opaque here (the transport's encoding), as in CYCLON.
ADDR_MAX = 64
AGE_MAX = 0xFFFF
# Overlay messages travel between proxies on their (Noise) stream links, one
# frame each; the largest we build stays under this (a test encodes the
# worst case of every type). Shuffles and VICINITY gossip also fit a
# datagram (framing.DATAGRAM_MAX) at their defaults.
OVERLAY_FRAME_MAX = 16384
# A profile on the wire: subscription filter then needy-topic filter.
PROFILE_MAX = 2 * profile.BITS_MAX // 8

E_ENTRY = "bad_entry"
E_SELF = "from_self"
E_UNKNOWN = "unknown_exchange"
E_WRONG_PEER = "wrong_peer"
E_PROFILE = "bad_profile"
E_NOT_MINE = "not_this_protocol"
E_NOT_SUBSCRIBED = "not_subscribed"
E_CONFIG = "config"


class OverlayError(RemoteError):
    """An overlay message from a peer was refused; the state did not change."""

    code = "overlay"


class OverlayConfigError(LocalError):
    """The caller configured or used an overlay object wrongly."""

    code = "overlay_config"


class Outgoing(cyclon.Outgoing):
    """A message to send to one peer (``peer_id``, ``addr``, ``message``),
    as CYCLON's; here ``data()`` is the frame payload (proxy links carry
    frames) and ``datagram()`` its UDP form."""

    __slots__ = ()

    def data(self):
        return envelope.REGISTRY.encode_message(self.message)

    def datagram(self):
        return framing.datagram(self.data())


def check_id(i):
    return type(i) is bytes and len(i) == ids.ID_LEN


def check_peer(i, a):
    """Raise OverlayError unless (i, a) is a valid proxy id and address."""
    if type(i) is not bytes or len(i) != ids.ID_LEN:
        raise OverlayError(E_ENTRY, __debug__ and "a proxy id is %d bytes" % ids.ID_LEN)
    if type(a) is not bytes or len(a) > ADDR_MAX:
        raise OverlayError(E_ENTRY, __debug__ and "address must be at most %d bytes" % ADDR_MAX)


def check_config_peer(i, a):
    if type(i) is not bytes or len(i) != ids.ID_LEN:
        raise OverlayConfigError(E_CONFIG, __debug__ and "a proxy id is %d bytes" % ids.ID_LEN)
    if type(a) is not bytes or len(a) > ADDR_MAX:
        raise OverlayConfigError(E_CONFIG, __debug__ and "address must be at most %d bytes" % ADDR_MAX)


def split_profile(p, bits):
    """Wire profile bytes -> (filter, needy) ints; OverlayError if misshaped."""
    n = bits // 8
    if type(p) is not bytes or len(p) != 2 * n:
        raise OverlayError(E_PROFILE, __debug__ and "a profile is %d bytes (two %d-bit filters)" % (2 * n, bits))
    return int.from_bytes(p[:n], "big"), int.from_bytes(p[n:], "big")


def join_profile(f, needy, bits):
    n = bits // 8
    return f.to_bytes(n, "big") + needy.to_bytes(n, "big")


def pick(rng, pool, k):
    """k distinct items of list ``pool`` (shuffled in place; partial Fisher-Yates)."""
    n = len(pool)
    if k > n:
        k = n
    for i in range(k):
        j = i + rng.next64() % (n - i)
        pool[i], pool[j] = pool[j], pool[i]
    return pool[:k]
