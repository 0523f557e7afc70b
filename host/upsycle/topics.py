"""Topic names and topic ids on the host.

The proxy routes by topic id: 16 opaque bytes. Once private groups land, a
topic's id is the first 16 bytes of SHA-256 of the topic's public key. Until
then (and for public test topics) the id is derived from the name:

    topic_id(name) = SHA-256(UTF-8 name)[:16]

A TOPIC argument on the command line is taken as an id when it is exactly 32
hex digits (``id:`` in front forces that reading, ``name:`` forces a name).
"""
import hashlib

from upsycle.errors import TOPIC, HostError

TOPIC_ID_LEN = 16


class TopicError(HostError, ValueError):
    code = TOPIC


def topic_id(name):
    if not name:
        raise TopicError("a topic name cannot be empty")
    return hashlib.sha256(name.encode("utf-8")).digest()[:TOPIC_ID_LEN]


def resolve(arg):
    """A topic name or id (str), or an id (bytes) -> topic id bytes."""
    if isinstance(arg, (bytes, bytearray)):
        if not (0 < len(arg) <= 32):
            raise TopicError("a topic id is 1..32 bytes")
        return bytes(arg)
    if arg.startswith("name:"):
        return topic_id(arg[5:])
    if arg.startswith("id:"):
        try:
            b = bytes.fromhex(arg[3:])
        except ValueError:
            raise TopicError("topic id %r is not hex" % arg[3:])
        return resolve(b)
    if len(arg) == 2 * TOPIC_ID_LEN:
        try:
            return bytes.fromhex(arg)
        except ValueError:
            pass
    return topic_id(arg)
