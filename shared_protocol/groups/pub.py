"""Generic publications (group_pub): any body, encrypted under the epoch key
by readers or to the epoch's X25519 key by write-only members, signed by
its author. Member.seal and Member.open use it; a sensor node seals and
reads signed readings (group_rs, readings.py), so a board loads this
module only when a publication of this kind comes or goes (as compact.py
and rekey.py)."""
from shared_protocol.wire import cbor, envelope
from shared_protocol.crypto import api
from shared_protocol.crypto import errors as cerr
from shared_protocol.groups import errors as gerr
from shared_protocol.groups import wire
from shared_protocol.groups.keys import SIG_SIZE, capability_from_wire, capability_on_wire, check_write_capability
from shared_protocol.groups.member import COUNTER_MAX, SEQ_MAX, _ZERO_NONCE, Publication, _is_key
from shared_protocol.groups.readings import _read_key

_PUB_DH_LABEL = b"upsycle-pub-dh-v1"


def _pub_dh_key(shared, topic, epoch, eph, epoch_public):
    return api.hkdf(topic, shared, _PUB_DH_LABEL + epoch.to_bytes(4, "big") + eph + epoch_public, 32)


def seal(member, body, rand32, now):
    """Member.seal: the group_pub message for ``body``."""
    why = member.write_refusal(now)
    if why is not None:
        raise gerr.GroupUsageError(message=why)
    if len(body) > wire.BODY_MAX:
        raise gerr.GroupUsageError(message=__debug__ and "body of %d bytes over %d" % (len(body), wire.BODY_MAX))
    if not _is_key(rand32):
        raise gerr.GroupUsageError(message=__debug__ and "seal needs 32 random bytes")
    seq = member.seq_block(1, rand32)
    ek = member._epochs[member.epoch]
    author = member.identity.public
    sig = member.identity.sign(wire.pub_signed_bytes(member.topic, member.epoch, author, seq, body))
    inner = cbor.encode([author, seq, None if member.is_admin else capability_on_wire(member.capability), body, sig])
    if ek.readable:
        # Readers seal with the epoch key and a random 96-bit nonce; nonces
        # are not counters because many authors share the key (RFC 8439 §4:
        # a nonce must never repeat under one key).
        mode, kfield = wire.MODE_EPOCH_KEY, rand32[:wire.NONCE_SIZE]
        key, nonce = ek.sym, kfield
    else:
        # Write-only: ephemeral-static DH to the epoch public key; the key
        # is fresh per message, so the nonce can be fixed.
        mode, kfield = wire.MODE_EPOCH_PUBLIC, api.x25519_public(rand32)
        key = _pub_dh_key(api.x25519(rand32, ek.public), member.topic, member.epoch, kfield, ek.public)
        nonce = _ZERO_NONCE
    aad = wire.pub_header(member.topic, member.epoch, mode, kfield)
    sealed = api.aead_encrypt(key, nonce, inner, aad)
    member.seq_used(seq, 1)
    return envelope.REGISTRY.encode("group_pub", member.topic, member.epoch, mode, kfield, sealed)


def open_pub(member, msg, now):
    """Member.open of a group_pub (its topic already checked): a
    Publication, or a GroupError with nothing changed."""
    topic, epoch, mode, kfield, sealed = msg.values
    ek = _read_key(member, epoch)
    aad = wire.pub_header(topic, epoch, mode, kfield)
    try:
        if mode == wire.MODE_EPOCH_KEY:
            if len(kfield) != wire.NONCE_SIZE:
                raise gerr.Malformed(message=__debug__ and "nonce must be 12 bytes")
            inner = api.aead_decrypt(ek.sym, kfield, sealed, aad)
        else:
            if not _is_key(kfield):
                raise gerr.Malformed(message=__debug__ and "ephemeral key must be 32 bytes")
            key = _pub_dh_key(api.x25519(ek.dh_secret, kfield), topic, epoch, kfield, ek.public)
            inner = api.aead_decrypt(key, _ZERO_NONCE, sealed, aad)
    except (cerr.AuthenticationFailed, cerr.BadPublicKey):
        raise gerr.DecryptFailed(message=__debug__ and "publication does not authenticate under epoch %d" % epoch)
    v = cbor.decode(inner)
    if (not isinstance(v, list) or len(v) != 5 or not _is_key(v[0]) or not isinstance(v[1], int)
            or isinstance(v[1], bool) or not 0 < v[1] <= SEQ_MAX
            or not isinstance(v[3], (bytes, bytearray)) or len(v[3]) > wire.BODY_MAX or not _is_key(v[4], SIG_SIZE)):
        raise gerr.Malformed(message=__debug__ and "publication content has the wrong shape")
    author, seq, cap, body, sig = v
    if seq & COUNTER_MAX == 0:
        raise gerr.Malformed(message=__debug__ and "publication counter is 0")
    if author in member.revoked:
        raise gerr.MemberRevoked(message=__debug__ and "author was removed from the topic")
    try:
        api.ed25519_verify(author, wire.pub_signed_bytes(topic, epoch, author, seq, body), sig)
    except cerr.BadSignature:
        raise gerr.BadSignature(message=__debug__ and "author signature does not verify")
    if author != member.topic_public:
        check_write_capability(capability_from_wire(cap, topic, author), topic, member.topic_public, author, now)
    win = member.window_for(author, seq)
    if not win.is_fresh(seq):
        raise gerr.Replayed(message=__debug__ and "sequence %d of this author already seen or too old" % seq)
    # every check passed: commit
    win.accept(seq)
    member.keep_window(author, win, seq)
    return Publication(topic, epoch, author, seq, body)
