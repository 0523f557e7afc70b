"""The earlier compact reading (group_rd, described in readings.py).
Members seal signed readings (group_rs) instead, so this module is off a
node's path: Member.open loads it on the first group_rd it meets (readings
still in a proxy's history, or from a node not updated yet), and tests and
benchmarks seal the form through Member.seal_compact."""
from shared_protocol.wire import cbor, envelope
from shared_protocol.crypto import api
from shared_protocol.groups import wire
from shared_protocol.crypto import errors as cerr
from shared_protocol.groups import errors as gerr
from shared_protocol.groups.keys import KEY_SIZE, NO_EXPIRY, SIG_SIZE, capability_on_wire
from shared_protocol.groups.readings import INTRO_EVERY, _author, _commit, _is_bytes, _is_seq, _read_key, _seal_checks


def seal(member, bodies, batch, rand32, now, max_seq):
    """The group_rd message for ``bodies`` (one, or a batch); advances the
    member's sequence number by len(bodies)."""
    ek = _seal_checks(member, bodies, batch, rand32, now)
    n = len(bodies)
    seq = member.seq_block(n, rand32)   # generation and counter (member.py, COUNTER_BITS)
    if seq + n - 1 > max_seq:
        raise gerr.GroupUsageError(message=__debug__ and "sequence numbers exhausted for this member key")
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
        intro = [author, None if member.is_admin else capability_on_wire(member.capability)]
        member.intro_left = INTRO_EVERY
    inner = cbor.encode([kind, author[:wire.AREF_SIZE], seq, payload, sig, intro])
    nonce = rand32[:wire.NONCE_SIZE]   # random: many authors share the epoch key (RFC 8439 §4)
    sealed = api.aead_encrypt(ek.sym, nonce, inner, wire.rd_header(topic, member.epoch, nonce))
    member.seq_used(seq, n)
    member.intro_left -= 1
    return envelope.REGISTRY.encode("group_rd", member.epoch, nonce, sealed)


def _inner(v, max_seq):
    """Check the shape of a decoded inner array; returns it unpacked."""
    if not isinstance(v, list) or len(v) != 6:
        raise gerr.Malformed(message=__debug__ and "compact reading content has the wrong shape")
    kind, aref, seq, payload, sig, intro = v
    if kind == wire.RD_SIGNED:
        if not _is_bytes(payload) or len(payload) > wire.BODY_MAX:
            raise gerr.Malformed(message=__debug__ and "reading body malformed")
        count = 1
    elif kind == wire.RD_BATCH:
        if not isinstance(payload, list) or not 0 < len(payload) <= wire.BATCH_MAX:
            raise gerr.Malformed(message=__debug__ and "a batch holds 1..%d readings" % wire.BATCH_MAX)
        for b in payload:
            if not _is_bytes(b) or len(b) > wire.BODY_MAX:
                raise gerr.Malformed(message=__debug__ and "batch body malformed")
        count = len(payload)
    else:
        raise gerr.Malformed(message=__debug__ and "unknown reading kind")
    if not _is_bytes(aref, wire.AREF_SIZE) or not _is_seq(seq, max_seq) or seq + count - 1 > max_seq:
        raise gerr.Malformed(message=__debug__ and "author reference or sequence number malformed")
    if not _is_bytes(sig, SIG_SIZE):
        raise gerr.Malformed(message=__debug__ and "a reading message needs its 64-byte signature")
    if intro is not None:
        if not isinstance(intro, list) or len(intro) != 2 or not _is_bytes(intro[0], KEY_SIZE):
            raise gerr.Malformed(message=__debug__ and "author introduction malformed")
        if bytes(intro[0][:wire.AREF_SIZE]) != bytes(aref):
            raise gerr.Malformed(message=__debug__ and "introduction is for another author reference")
    return kind, bytes(aref), seq, payload, count, sig, intro


def open_rd(member, msg, now, max_seq, publication):
    """Open a group_rd (already decoded as an envelope); returns a
    Publication or a Batch; changes nothing unless every check passes."""
    epoch, nonce, sealed = msg.values
    ek = _read_key(member, epoch)
    topic = member.topic
    try:
        inner = api.aead_decrypt(ek.sym, nonce, sealed, wire.rd_header(topic, epoch, nonce))
    except cerr.AuthenticationFailed:
        raise gerr.DecryptFailed(message=__debug__ and "reading does not authenticate under epoch %d" % epoch)
    kind, aref, seq, payload, count, sig, intro = _inner(cbor.decode(inner), max_seq)
    author, cap, new_entry = _author(member, aref, intro, now)
    if author in member.revoked:
        raise gerr.MemberRevoked(message=__debug__ and "author was removed from the topic")
    if cap is not None and cap[3] != NO_EXPIRY and now >= cap[3]:
        raise gerr.CapabilityExpired(message=__debug__ and "write capability expired at %d (now %d)" % (cap[3], now))
    if kind == wire.RD_SIGNED:
        signed = wire.rd_signed_bytes(topic, epoch, author, seq, payload)
    else:
        signed = wire.batch_signed_bytes(topic, epoch, author, seq, count, wire.batch_chain(payload))
    try:
        api.ed25519_verify(author, signed, sig)
    except cerr.BadSignature:
        raise gerr.BadSignature(message=__debug__ and "author signature does not verify")
    win = member.window_for(author, seq)     # per (author, generation); a batch is in one generation
    for s in range(seq, seq + count):
        if not win.is_fresh(s):
            raise gerr.Replayed(message=__debug__ and "sequence %d of this author already seen or too old" % s)
    return _commit(member, author, win, seq, count, aref, new_entry, publication, topic, epoch, kind,
                   [payload] if kind == wire.RD_SIGNED else payload)
