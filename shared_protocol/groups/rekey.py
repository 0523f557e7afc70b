"""Applying a re-key to a member (docs/private-groups.md, "Capabilities, invites, removal"): a
message of the topic admin that moves the topic to the next epoch, with an
entry for each remaining member and the keys removed. Its own module, as a
node applies one only when a member is removed: ``Member.open`` imports it
when a re-key arrives, and a board that never sees one never holds this
code. ``rekey_entry_key`` is shared with the admin (groups/admin.py), who
seals the entries.

Checks everything before changing anything, as ``Member.open`` does.
"""
from shared_protocol.wire import cbor
from shared_protocol.crypto import api
from shared_protocol.crypto import errors as cerr
from shared_protocol.groups import errors as gerr
from shared_protocol.groups import wire
from shared_protocol.groups.keys import SIG_SIZE, EpochKey
from shared_protocol.groups.member import KEPT_EPOCHS_MAX, REVOKED_MAX, _ZERO_NONCE, EpochChanged, _is_key

_REKEY_LABEL = b"upsycle-rekey-entry-v1"


def rekey_entry_key(shared, topic, epoch, eph, member_x25519_public):
    # Each entry key is unique to (ephemeral, member), so entries use the
    # all-zero nonce safely: a key is never used twice.
    return api.hkdf(topic, shared, _REKEY_LABEL + epoch.to_bytes(4, "big") + eph + member_x25519_public, 32)


def apply(member, msg):
    """EpochChanged once ``msg`` (an admin's re-key, decoded) is applied;
    raises a GroupError and changes nothing otherwise."""
    topic, epoch, eph, part, parts, entries, sig = msg.values
    if epoch <= member.epoch:
        raise gerr.StaleEpoch(message=__debug__ and "re-key to epoch %d, already at %d" % (epoch, member.epoch))
    if not _is_key(eph) or len(sig) != SIG_SIZE or not 0 <= part < parts:
        raise gerr.Malformed(message=__debug__ and "re-key fields have wrong sizes")
    for e in entries:
        if not isinstance(e, (bytes, bytearray)) or len(e) > wire.REKEY_ENTRY_MAX:
            raise gerr.Malformed(message=__debug__ and "re-key entry malformed")
    try:
        api.ed25519_verify(member.topic_public, wire.rekey_signed_bytes(topic, epoch, eph, part, parts, entries), sig)
    except cerr.BadSignature:
        raise gerr.BadSignature(message=__debug__ and "re-key not signed by the topic admin")
    if epoch > member.epoch + 1:
        # Only after the signature: an unsigned message must not make a
        # receiver keep it for later. Applying it would skip the removals
        # of the epochs in between (their authors stay trusted there).
        raise gerr.RekeyGap(message=__debug__ and "re-key to epoch %d, but this member is at %d: the re-key to %d comes first"
                               % (epoch, member.epoch, member.epoch + 1))
    me = member.identity
    try:
        my_x = api.x25519_public(me.x25519_secret)
        key = rekey_entry_key(api.x25519(me.x25519_secret, eph), topic, epoch, eph, my_x)
    except cerr.BadPublicKey:
        raise gerr.Malformed(message=__debug__ and "re-key ephemeral key has small order")
    aad = cbor.encode([topic, epoch, eph])
    content = None
    for e in entries:
        try:
            content = api.aead_decrypt(key, _ZERO_NONCE, e, aad)
            break
        except cerr.AuthenticationFailed:
            continue
    if content is None:
        if parts > 1:
            if member._rk_epoch != epoch:
                member._rk_epoch, member._rk_mask = epoch, 0
            member._rk_mask |= 1 << part
            if member._rk_mask != (1 << parts) - 1:
                raise gerr.OtherRekeyPart(message=__debug__ and "part %d of %d of the re-key to epoch %d holds no entry for us"
                                             % (part + 1, parts, epoch))
        raise gerr.RemovedFromTopic(message=__debug__ and "re-key to epoch %d has no entry for this member" % epoch)
    v = cbor.decode(content)
    if (not isinstance(v, list) or len(v) != 3 or not (v[0] is None or _is_key(v[0])) or not _is_key(v[1])
            or not isinstance(v[2], list) or len(v[2]) > wire.REMOVED_PER_REKEY_MAX
            or not all(_is_key(k) for k in v[2])):
        raise gerr.Malformed(message=__debug__ and "re-key entry content has the wrong shape")
    new = EpochKey(topic, epoch, v[0], v[1])
    if len(member.revoked) + len(v[2]) > REVOKED_MAX:
        raise gerr.TooLarge(message=__debug__ and "revocation list full")
    # commit
    member._epochs[epoch] = new
    member.epoch = epoch
    for old in sorted(member._epochs)[:-KEPT_EPOCHS_MAX]:
        del member._epochs[old]
    for k in v[2]:
        member.revoked.add(bytes(k))
    member.intro_left = 0   # introduce ourselves in the new epoch
    return EpochChanged(epoch, list(v[2]))
