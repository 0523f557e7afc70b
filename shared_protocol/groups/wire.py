"""Group messages on the wire (envelope types 80-81, the "secure" block).

    group_pub   [1, 80, topic, epoch, mode, kfield, sealed]
    group_rekey [1, 81, topic, epoch, ephemeral, part, parts, entries, admin signature]
    group_rd    [1, 82, epoch, nonce, sealed]       (compact readings: readings.py)
    group_rs    [1, 10, epoch, data]                (signed readings: readings.py)

Only the topic id, the epoch number and ciphertext are visible to a proxy.
The author, sequence number, capability and signature travel inside the
ciphertext, so a proxy does not learn who publishes or how often each member
does (see groups/__init__.py).
"""
from shared_protocol.crypto import api
from shared_protocol.wire import cbor
from shared_protocol.wire.envelope import REGISTRY
from shared_protocol.groups.keys import KEY_SIZE, EPOCH_MAX, SIG_SIZE, TOPIC_ID_SIZE

try:
    from micropython import const
except ImportError:   # CPython (host and tests)
    def const(x):
        return x

# The message types' field specs are literals (kinds as wire/envelope.py's
# strings, bounds as const()), so each is one constant tuple: in flash when
# frozen, no bytecode to build it in a .mpy (session/messages.py). keys.py's
# sizes, written out for that (tests/shared/test_groups.py checks them):
_TOPIC_ID = const(16)     # TOPIC_ID_SIZE
_KEY = const(32)          # KEY_SIZE
_SIG = const(64)          # SIG_SIZE
_EPOCH = const(0xFFFFFFFF)  # EPOCH_MAX

# Largest application body of one publication. A reading is tens of bytes;
# 4 KiB leaves room for batches while bounding what a board must buffer.
BODY_MAX = const(4096)
# Body plus author, seq, capability (~130 bytes), signature, CBOR heads, tag.
SEALED_MAX = const(BODY_MAX + 512)
# Largest group message accepted at all, checked before parsing anything.
GROUP_MESSAGE_MAX = 16384
# Members one re-key can address (one entry each). A topic of a field site
# has a handful of nodes; 64 bounds a re-key at about 8 KiB.
MEMBERS_MAX = const(64)
# Authors removed by one re-key.
REMOVED_PER_REKEY_MAX = 8
# Largest part of a re-key: the proxy's payload limit (session.messages.PAYLOAD_MAX,
# which keeps a delivery inside one UDP datagram a board can receive). One
# entry is ~120 bytes, so a part holds ~7 entries and a re-key of a larger
# topic is split into parts, each signed on its own (tests/shared/test_groups.py
# checks that the two limits agree).
REKEY_PART_MAX = 1024
# Parts of one re-key: MEMBERS_MAX entries at the smallest entry size fit.
REKEY_PARTS_MAX = const(16)
REKEY_ENTRY_MAX = 1 + 2 * (2 + KEY_SIZE) + 2 + REMOVED_PER_REKEY_MAX * (2 + KEY_SIZE) + 16

MODE_EPOCH_KEY = 0      # sealed with the epoch's symmetric key (readers)
MODE_EPOCH_PUBLIC = 1   # sealed to the epoch's X25519 key (write-only members)
NONCE_SIZE = const(12)

PUB = REGISTRY.add((80, "group_pub", (
    "topic", "bytes", _TOPIC_ID,
    "epoch", "uint", _EPOCH,
    "mode", "uint", 1,
    "kfield", "bytes", _KEY,        # nonce (mode 0) or ephemeral key (mode 1)
    "sealed", "bytes", SEALED_MAX,
), 5))
REKEY = REGISTRY.add((81, "group_rekey", (
    "topic", "bytes", _TOPIC_ID,
    "epoch", "uint", _EPOCH,
    "ephemeral", "bytes", _KEY,
    "part", "uint", REKEY_PARTS_MAX - 1,    # 0-based index of this part
    "parts", "uint", REKEY_PARTS_MAX,       # how many parts the re-key has
    "entries", "list", MEMBERS_MAX,
    "sig", "bytes", _SIG,
), 7))


# Compact readings (groups/readings.py). The topic id is not on the wire: the
# proxy routes by the session's topic id and the reader knows its topic, so
# it is bound through the AEAD's associated data and the signatures instead.
RD = REGISTRY.add((82, "group_rd", (
    "epoch", "uint", _EPOCH,
    "nonce", "bytes", NONCE_SIZE,
    "sealed", "bytes", SEALED_MAX,
), 3))
# Readings one batch signature covers. 8 keeps a batch of sensor readings
# (~55 bytes each) in one datagram with its signature, and bounds what a
# reader checks per signature.
BATCH_MAX = 8
# Bytes of the author reference a compact reading carries: the first bytes of
# the author's key. Two members of one topic clash with probability 2**-32
# per pair; a clash is refused when the second author introduces itself.
AREF_SIZE = 4
RD_SIGNED = 0     # one reading, its own signature
RD_BATCH = 1      # up to BATCH_MAX readings, one signature over their hash chain

# Signed readings (group_rs, readings.py): the signature's R travels in clear
# and names the stream nonce; S and the rest are ChaCha20 ciphertext, with no
# AEAD tag (the signature authenticates every byte). Sent for every reading:
# its type is in the "hot" block (one CBOR byte).
RS = REGISTRY.add((10, "group_rs", (
    "epoch", "uint", _EPOCH,
    "data", "bytes", SEALED_MAX,        # R (32) | ChaCha20(S | inner)
), 2))
# inner = flags (1) | aref (AREF_SIZE) | generation (3 with RS_INTRO, else its
#         low byte) | counter (1..3, big-endian, shortest) | [intro, CBOR] |
#         body (packed or not) / batch (CBOR array)
# The whole sequence generation travels only with the introduction: a
# reading without one names it by its low byte, among the generations its
# author introduced (two devices joined with one key stay apart).
RS_GEN_BYTES = 3
RS_HEAD_MIN = 1 + AREF_SIZE + 1 + 1
RS_KIND = 0x0F        # the low bits of flags: RD_SIGNED or RD_BATCH
RS_CLEN = 0x30        # bytes of the counter, minus one (0..2)
RS_INTRO = 0x80       # an introduction follows the head
RS_PACKED = 0x40      # the bodies are packed with the author's dictionary (readings.pack)
# The author's dictionary (readings.py, pack): CBOR strings its readings
# repeat (a board's DMC author ids, its own and the ones its causal deps
# name; the names it writes), sent in its introduction; a packed reading
# carries one byte, a CBOR simple value, in place of such a string.
# 8 entries of up to 33 bytes keep an introduction under 400 bytes.
DICT_MAX = 8
DICT_ENTRY_MAX = 33
DICT_ENTRY_MIN = 3    # shorter ones save nothing (an index costs 1, a literal head 1)
_RS_SIG_LABEL = const(b"upsycle-rs-v1")
RS_NONCE_LABEL = b"upsycle-rs-nonce-v1"


def rs_signed_bytes(topic, epoch, gen, inner, bodies):
    """What a signed reading's author signs: the topic (not sent), and the
    SHA-256 of the epoch, the sequence generation (sent only with the
    introduction: a reader that takes another generation fails the
    signature), the whole inner plaintext as sent (so R, hence the
    nonce, differs whenever any plaintext byte does) and the bodies as they
    are unpacked (so a reader that unpacks with another dictionary fails the
    signature). The digest keeps what Ed25519 hashes with the boards'
    pure-Python SHA-512 at two blocks, whatever the batch (SHA-256 is native)."""
    return _RS_SIG_LABEL + topic + api.sha256(cbor.encode([epoch, gen, inner, bodies]))


def rd_header(topic, epoch, nonce):
    """The AEAD associated data of a compact reading: the topic (not sent),
    the epoch, the message type (so it never equals a group_pub header) and
    the nonce."""
    return cbor.encode([topic, epoch, 82, nonce])


_RD_SIG_LABEL = const(b"upsycle-rd-v1")
_BATCH_SIG_LABEL = const(b"upsycle-batch-v1")
_CHAIN_LABEL = const(b"upsycle-chain-v1")


def rd_signed_bytes(topic, epoch, author, seq, body):
    return _RD_SIG_LABEL + cbor.encode([topic, epoch, author, seq, body])


def batch_chain(bodies):
    """c_0 = SHA-256(label), c_i = SHA-256(c_(i-1) | CBOR(body_i)): binds every
    reading of a batch, in order, into 32 bytes (an author can extend it one
    reading at a time)."""
    c = api.sha256(_CHAIN_LABEL)
    for b in bodies:
        c = api.sha256(c + cbor.encode(b))
    return c


def batch_signed_bytes(topic, epoch, author, first_seq, count, chain):
    # first seq and count fix each reading's sequence number: a reading moved
    # to another batch or position changes the chain or the numbers.
    return _BATCH_SIG_LABEL + cbor.encode([topic, epoch, author, first_seq, count, chain])


def pub_header(topic, epoch, mode, kfield):
    """The AEAD associated data of a publication: its whole visible header."""
    return cbor.encode([topic, epoch, mode, kfield])


_PUB_SIG_LABEL = const(b"upsycle-pub-v1")
_REKEY_SIG_LABEL = const(b"upsycle-rekey-v1")


def pub_signed_bytes(topic, epoch, author, seq, body):
    # What the author signs: topic id | epoch | author | seq | body, so a
    # signed body cannot be moved to another topic, epoch or position.
    return _PUB_SIG_LABEL + cbor.encode([topic, epoch, author, seq, body])


def rekey_signed_bytes(topic, epoch, ephemeral, part, parts, entries):
    # Each part is signed on its own (a member needs only the part holding
    # its entry); part and parts are covered, so parts cannot be renumbered.
    return _REKEY_SIG_LABEL + cbor.encode([topic, epoch, ephemeral, part, parts, entries])
