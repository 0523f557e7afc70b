"""Errors of private groups. Every rejection of a publication, re-key or
invite is one of these (or a cbor/envelope decode error for bytes that are
not even a message), and a rejected input never changes a member's state."""
from shared_protocol.errors import LocalError, RemoteError


class GroupError(RemoteError):
    code = "group"
    # True when the same message may open later, once this member has
    # applied a re-key it has not received yet: a receiver keeps such a
    # message instead of dropping it (host: upsycle.group_codec, "held").
    may_clear = False


class WrongTopic(GroupError):
    code = "group_wrong_topic"


class UnknownEpoch(GroupError):
    """Encrypted under an epoch this member does not hold (too new, too old,
    or a re-key that excluded us)."""
    code = "group_unknown_epoch"


class FutureEpoch(UnknownEpoch):
    """Encrypted under an epoch newer than ours: its re-key has not reached
    us yet (or excluded us). Same code as UnknownEpoch; may clear."""
    may_clear = True


class RekeyGap(GroupError):
    """A re-key that skips an epoch: the earlier re-key must be applied first
    (it names members removed then, whom we must refuse in that epoch). May
    clear once the earlier one arrives (the admin re-sends them in order)."""
    code = "group_rekey_gap"
    may_clear = True


class OtherRekeyPart(GroupError):
    """A part of a re-key that holds no entry for us; another part may (a
    re-key of a large topic is split to fit the proxy's payload limit)."""
    code = "group_rekey_other_part"


class StaleEpoch(GroupError):
    """A re-key for an epoch we already have or passed: a replay."""
    code = "group_stale_epoch"


class DecryptFailed(GroupError):
    """The AEAD tag does not verify: tampered ciphertext or header."""
    code = "group_decrypt_failed"


class BadSignature(GroupError):
    code = "group_bad_signature"


class NoWriteCapability(GroupError):
    """The author holds no admin-signed write capability for this topic."""
    code = "group_no_write_capability"


class CapabilityExpired(GroupError):
    code = "group_capability_expired"


class MemberRevoked(GroupError):
    """The author was removed from the topic by a re-key."""
    code = "group_member_revoked"


class Replayed(GroupError):
    """(author, seq) already accepted or older than the replay window."""
    code = "group_replay"


class Malformed(GroupError):
    """Well-formed CBOR, but not the structure or sizes a group message has."""
    code = "group_malformed"


class TooLarge(GroupError):
    """Input over a named limit (checked before any parsing or crypto)."""
    code = "group_too_large"


class RemovedFromTopic(GroupError):
    """A valid re-key carries no entry for us: we were removed."""
    code = "group_removed"


class NoReadCapability(GroupError):
    """A write-only member cannot open publications (it holds no epoch secret)."""
    code = "group_no_read_capability"


class GroupUsageError(LocalError):
    """The caller asked for something its role does not allow (e.g. a
    read-only member publishing, a non-admin issuing invites)."""
    code = "group_usage"


class AuthorUnknown(GroupError):
    """A compact reading names an author this member has no introduction
    for (key and capability): it cannot prove who wrote it, so it is not
    accepted. Authors introduce themselves again on every new link, every
    epoch and every INTRO_EVERY messages (groups/readings.py)."""
    code = "group_author_unknown"


class AuthorClash(GroupError):
    """An introduction whose short author reference is already taken by
    another key: refused, the first introduction stays."""
    code = "group_author_clash"
