"""Errors of private groups. Every rejection of a publication, re-key or
invite is one of these (or a cbor/envelope decode error for bytes that are
not even a message), and a rejected input never changes a member's state.

Every kind, the two family bases included, is made on first use
(shared_protocol.errors.kind): ``errors.Replayed`` is a class like any
other, but a board holds it only once it has raised or caught one.
"""
from shared_protocol.errors import LocalError, RemoteError, kind


# Name, base, code, "clear" when it may clear (a line each; see kind()):
# - GroupError: the family of refusals. ``may_clear`` is True when the same
#   message may open later, once this member has applied a re-key it has
#   not received yet: a receiver keeps such a message instead of dropping it
#   (host: upsycle.group_codec, "held"); "final" here, so False for every
#   kind that does not say "clear".
# - GroupUsageError: the caller asked for something its role does not
#   allow (e.g. a read-only member publishing, a non-admin issuing invites).
# - UnknownEpoch: encrypted under an epoch this member does not hold (too
#   new, too old, or a re-key that excluded us).
# - FutureEpoch: under an epoch newer than ours: its re-key has not reached
#   us yet (or excluded us). Same code as UnknownEpoch; may clear.
# - RekeyGap: a re-key that skips an epoch: the earlier re-key must be
#   applied first (it names members removed then, whom we must refuse in
#   that epoch). May clear once the earlier one arrives (the admin re-sends
#   them in order).
# - OtherRekeyPart: a part of a re-key that holds no entry for us; another
#   part may (a re-key of a large topic is split to fit the proxy's payload
#   limit).
# - StaleEpoch: a re-key for an epoch we already have or passed: a replay.
# - DecryptFailed: the AEAD tag does not verify: tampered ciphertext or header.
# - NoWriteCapability: the author holds no admin-signed write capability.
# - MemberRevoked: the author was removed from the topic by a re-key.
# - Replayed: (author, seq) already accepted or older than the replay window.
# - Malformed: well-formed CBOR, but not the structure or sizes a group
#   message has.
# - TooLarge: input over a named limit (checked before any parsing or crypto).
# - RemovedFromTopic: a valid re-key carries no entry for us: we were removed.
# - NoReadCapability: a write-only member cannot open publications (it
#   holds no epoch secret).
# - AuthorUnknown: a compact reading names an author this member has no
#   introduction for (key and capability): it cannot prove who wrote it, so
#   it is not accepted. Authors introduce themselves again on every new
#   link, every epoch and every INTRO_EVERY messages (groups/readings.py).
# - AuthorClash: an introduction whose short author reference is already
#   taken by another key: refused, the first introduction stays.
KINDS = """
GroupError RemoteError group final
GroupUsageError LocalError group_usage
WrongTopic GroupError group_wrong_topic
UnknownEpoch GroupError group_unknown_epoch
FutureEpoch UnknownEpoch group_unknown_epoch clear
RekeyGap GroupError group_rekey_gap clear
OtherRekeyPart GroupError group_rekey_other_part
StaleEpoch GroupError group_stale_epoch
DecryptFailed GroupError group_decrypt_failed
BadSignature GroupError group_bad_signature
NoWriteCapability GroupError group_no_write_capability
CapabilityExpired GroupError group_capability_expired
MemberRevoked GroupError group_member_revoked
Replayed GroupError group_replay
Malformed GroupError group_malformed
TooLarge GroupError group_too_large
RemovedFromTopic GroupError group_removed
NoReadCapability GroupError group_no_read_capability
AuthorUnknown GroupError group_author_unknown
AuthorClash GroupError group_author_clash
"""
# The kinds made so far (shared_protocol.errors.kind), under their names,
# and the module name they carry.
_MADE = {"__name__": __name__}


def __getattr__(name):
    return _MADE.get(name) or kind(name, KINDS, _MADE)
