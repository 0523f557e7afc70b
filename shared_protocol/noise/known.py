"""A node the proxy has seen before says so in message 1, cheaply checked.

Message 1 of XX carries only an ephemeral key: the responder learns who the
initiator is in message 3, after it has spent two DH operations on message 2.
So a flood of message 1s from an address (a site's NAT) drains that
address's handshake budget for everyone behind it, the real nodes too. A
node that knows the proxy's static key (pinned, or remembered from a
previous link) puts a hint in message 1's payload (otherwise padding,
noise/udp.py HS1_PAD)::

    hint = key_id (8) | tag (16)
    secret = X25519(node static, proxy static)      (= X25519(proxy static, node static))
    key_id = SHA-256("upsycle-known-key" | secret)[:8]
    tag    = HMAC-SHA256(secret, "upsycle-hint" | ephemeral public key)[:16]

The proxy keeps key_id -> secret for the nodes whose handshakes completed and
checks a hint with one HMAC, no DH. The tag binds the hint to this message
1's ephemeral key, so a hint seen on the wire cannot be moved to another
handshake; a replayed message 1 gains one handshake that only the node can
finish, and the proxy takes each ephemeral key once. An observer can tell
that two handshakes come from the same node (the key id repeats), as it can
from the address; it still cannot tell which node it is.
"""
from shared_protocol.crypto import api

try:
    from micropython import const
except ImportError:   # CPython (host and tests)
    def const(x):
        return x

HINT_SIZE = 24
_ID_TAG = const(b"upsycle-known-key")
_HINT_TAG = const(b"upsycle-hint")


def shared_secret(static_private, peer_static_public):
    return api.x25519(static_private, peer_static_public)


def key_id(secret):
    return api.sha256(_ID_TAG + secret)[:8]


def tag(secret, ephemeral_public):
    return api.hmac_sha256(secret, _HINT_TAG + bytes(ephemeral_public))[:16]


def hint(secret, ephemeral_public):
    return key_id(secret) + tag(secret, ephemeral_public)


def split(payload):
    """(key id, tag) of a message 1 payload, or None if it holds no hint."""
    if len(payload) < HINT_SIZE:
        return None
    kid = bytes(payload[:8])
    if kid == bytes(8):
        return None   # padding only: a node that does not know the proxy yet
    return kid, bytes(payload[8:HINT_SIZE])
