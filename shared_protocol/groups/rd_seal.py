"""Sealing the earlier compact reading (group_rd, readings.py): members open
it (readings.open_rd) but seal signed readings (group_rs) instead, so this
is not on a node's path; tests and the benchmark use it through
Member.seal_compact."""
from shared_protocol.wire import cbor, envelope
from shared_protocol.crypto import api
from shared_protocol.groups import wire
from shared_protocol.groups.errors import GroupUsageError
from shared_protocol.groups.keys import KEY_SIZE, capability_on_wire
from shared_protocol.groups.readings import INTRO_EVERY, _is_bytes


def seal(member, bodies, batch, rand32, now, max_seq):
    """The group_rd message for ``bodies`` (one, or a batch); advances the
    member's sequence number by len(bodies)."""
    if not member.can_write:
        raise GroupUsageError(message="this member holds no write capability")
    ek = member.epoch_key()
    if not ek.readable:
        raise GroupUsageError(message="compact readings need the epoch secret; write-only members use seal()")
    cap = member.capability
    if now is not None and cap is not None and cap[3] and now >= cap[3]:
        raise GroupUsageError(message="write capability expired; ask the admin for a new invite")
    n = len(bodies)
    if n < 1 or n > (wire.BATCH_MAX if batch else 1):
        raise GroupUsageError(message="a reading message holds 1..%d bodies" % (wire.BATCH_MAX if batch else 1))
    for b in bodies:
        if len(b) > wire.BODY_MAX:
            raise GroupUsageError(message="body of %d bytes over %d" % (len(b), wire.BODY_MAX))
    if not _is_bytes(rand32, KEY_SIZE):
        raise GroupUsageError(message="seal needs 32 random bytes")
    seq = member.seq_block(n, rand32)   # generation and counter (member.py, COUNTER_BITS)
    if seq + n - 1 > max_seq:
        raise GroupUsageError(message="sequence numbers exhausted for this member key")
    author = member.identity.public
    topic = member.topic
    if batch:
        kind, payload = wire.RD_BATCH, list(bodies)
        sig = member.identity.sign(wire.batch_signed_bytes(topic, member.epoch, author, seq, n,
                                                           wire.batch_chain(bodies)))
    else:
        kind, payload = wire.RD_SIGNED, bodies[0]
        sig = member.identity.sign(wire.rd_signed_bytes(topic, member.epoch, author, seq, payload))
    intro = None
    if member.intro_left <= 0:
        intro = [author, None if member.is_admin else capability_on_wire(cap)]
        member.intro_left = INTRO_EVERY
    inner = cbor.encode([kind, author[:wire.AREF_SIZE], seq, payload, sig, intro])
    nonce = rand32[:wire.NONCE_SIZE]   # random: many authors share the epoch key (RFC 8439 §4)
    sealed = api.aead_encrypt(ek.sym, nonce, inner, wire.rd_header(topic, member.epoch, nonce))
    member.seq_used(seq, n)
    member.intro_left -= 1
    return envelope.REGISTRY.encode("group_rd", member.epoch, nonce, sealed)
