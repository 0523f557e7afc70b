"""Group messages on the wire (envelope types 80-81, the "secure" block).

    group_pub   [1, 80, topic, epoch, mode, kfield, sealed]
    group_rekey [1, 81, topic, epoch, ephemeral, entries, admin signature]

Only the topic id, the epoch number and ciphertext are visible to a proxy.
The author, sequence number, capability and signature travel inside the
ciphertext, so a proxy does not learn who publishes or how often each member
does (see groups/__init__.py).
"""
from shared_protocol.wire import cbor
from shared_protocol.wire.envelope import BYTES, LIST, REGISTRY, UINT
from shared_protocol.groups.keys import KEY_SIZE, MAX_EPOCH, SIG_SIZE, TOPIC_ID_SIZE

# Largest application body of one publication. A reading is tens of bytes;
# 4 KiB leaves room for batches while bounding what a board must buffer.
MAX_BODY = 4096
# Body plus author, seq, capability (~130 bytes), signature, CBOR heads, tag.
MAX_SEALED = MAX_BODY + 512
# Largest group message accepted at all, checked before parsing anything.
MAX_GROUP_MESSAGE = 16384
# Members one re-key can address (one entry each). A topic of a field site
# has a handful of nodes; 64 bounds a re-key at about 8 KiB.
MAX_MEMBERS = 64
# Authors removed by one re-key.
MAX_REMOVED_PER_REKEY = 8
REKEY_ENTRY_MAX = 1 + 2 * (2 + KEY_SIZE) + 2 + MAX_REMOVED_PER_REKEY * (2 + KEY_SIZE) + 16

MODE_EPOCH_KEY = 0      # sealed with the epoch's symmetric key (readers)
MODE_EPOCH_PUBLIC = 1   # sealed to the epoch's X25519 key (write-only members)
NONCE_SIZE = 12

PUB = REGISTRY.register(80, "group_pub", (
    ("topic", BYTES, TOPIC_ID_SIZE),
    ("epoch", UINT, MAX_EPOCH),
    ("mode", UINT, 1),
    ("kfield", BYTES, KEY_SIZE),        # nonce (mode 0) or ephemeral key (mode 1)
    ("sealed", BYTES, MAX_SEALED),
))
REKEY = REGISTRY.register(81, "group_rekey", (
    ("topic", BYTES, TOPIC_ID_SIZE),
    ("epoch", UINT, MAX_EPOCH),
    ("ephemeral", BYTES, KEY_SIZE),
    ("entries", LIST, MAX_MEMBERS),
    ("sig", BYTES, SIG_SIZE),
))


def pub_header(topic, epoch, mode, kfield):
    """The AEAD associated data of a publication: its whole visible header."""
    return cbor.encode([topic, epoch, mode, kfield])


PUB_SIG_LABEL = b"upsycle-pub-v1"
REKEY_SIG_LABEL = b"upsycle-rekey-v1"


def pub_signed_bytes(topic, epoch, author, seq, body):
    # What the author signs: topic id | epoch | author | seq | body, so a
    # signed body cannot be moved to another topic, epoch or position.
    return PUB_SIG_LABEL + cbor.encode([topic, epoch, author, seq, body])


def rekey_signed_bytes(topic, epoch, ephemeral, entries):
    return REKEY_SIG_LABEL + cbor.encode([topic, epoch, ephemeral, entries])
