"""Invites: everything a new member needs, as bytes, as a URL, and back.

    invite = CBOR [1, topic public key, member seed, epoch,
                   epoch secret or null (read), epoch public key,
                   write capability or null, topic name]
    URL    = upsycle://join?v=1&i=<base64url of the invite, unpadded>

An invite is a bearer secret (it holds the member's key and, for readers,
the epoch secret): show its QR code only to the device that should join.
A board gets the same URL in its config at flashing time and calls
``member_from_url``.
"""
import binascii

from shared_protocol.wire import cbor
from shared_protocol.groups import errors as gerr
from shared_protocol.groups.keys import KEY_SIZE, EPOCH_MAX
from shared_protocol.groups.member import Member

try:
    from micropython import const
except ImportError:   # CPython (host and tests)
    def const(x):
        return x

_INVITE_VERSION = const(1)
URL_PREFIX = "upsycle://join?v=1&i="
# An invite is about 300 bytes; 1 KiB bounds what a QR scan can make us parse.
_INVITE_MAX = const(1024)
NAME_MAX = 64


def encode_invite(topic_public, member_seed, epoch, epoch_secret, epoch_public, capability, name):
    return cbor.encode([_INVITE_VERSION, topic_public, member_seed, epoch, epoch_secret, epoch_public,
                        capability, name])


def _b64url(data):
    s = binascii.b2a_base64(data).decode().strip()
    return s.replace("+", "-").replace("/", "_").rstrip("=")


def _unb64url(s):
    s = s.replace("-", "+").replace("_", "/")
    s += "=" * ((4 - len(s) % 4) % 4)
    try:
        # bytes, not str: the WebAssembly build's binascii is a Python module
        # that only takes bytes (board firmware takes both).
        return binascii.a2b_base64(s.encode())
    except (ValueError, TypeError):
        raise gerr.Malformed(message="invite is not base64url")


def invite_url(invite):
    return URL_PREFIX + _b64url(invite)


def decode_invite(data):
    if len(data) > _INVITE_MAX:
        raise gerr.TooLarge(message="invite over %d bytes" % _INVITE_MAX)
    v = cbor.decode(data)
    if not isinstance(v, list) or len(v) != 8 or v[0] != _INVITE_VERSION:
        raise gerr.Malformed(message="not a version-%d invite" % _INVITE_VERSION)
    _, tpub, seed, epoch, secret, epub, cap, name = v
    for k in (tpub, seed, epub):
        if not isinstance(k, (bytes, bytearray)) or len(k) != KEY_SIZE:
            raise gerr.Malformed(message="invite key of the wrong size")
    if secret is not None and (not isinstance(secret, (bytes, bytearray)) or len(secret) != KEY_SIZE):
        raise gerr.Malformed(message="invite epoch secret of the wrong size")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 <= epoch <= EPOCH_MAX:
        raise gerr.Malformed(message="invite epoch out of range")
    if cap is not None and not isinstance(cap, list):
        raise gerr.Malformed(message="invite capability malformed")
    if not isinstance(name, str) or len(name) > NAME_MAX:
        raise gerr.Malformed(message="invite name malformed")
    return v


def member_from_invite(data):
    _, tpub, seed, epoch, secret, epub, cap, name = decode_invite(data)
    return Member(tpub, seed, epoch, secret, epub, cap, name)


def member_from_url(url):
    if not url.startswith(URL_PREFIX):
        raise gerr.Malformed(message="not an upsycle invite URL (expected %s...)" % URL_PREFIX)
    if len(url) > len(URL_PREFIX) + (_INVITE_MAX * 4) // 3 + 4:
        raise gerr.TooLarge(message="invite URL too long")
    return member_from_invite(_unb64url(url[len(URL_PREFIX):]))
