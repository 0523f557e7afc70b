"""Compact readings: what is the same in every publication travels once.

A ``group_pub`` carries, in every message, the author's key (32 bytes), its
write capability (rights, expiry and the admin's 64-byte signature) and the
topic id. For a sensor that publishes every minute that is most of the
message. A ``group_rd`` carries instead:

    group_rd = [1, 82, epoch, nonce, sealed]
    sealed   = ChaCha20-Poly1305(epoch key, nonce, inner,
                                 AAD = CBOR [topic, epoch, 82, nonce])
    inner    = CBOR [kind, aref, seq, body-or-bodies, signature, intro-or-null]
    intro    = [author key, [rights, expiry, admin signature] or null]

- ``aref`` is the first AREF_SIZE bytes of the author's key. A reader maps
  it to the key and capability it learnt from that author's *introduction*
  (``intro``), checked once (admin signature) and kept in the member record.
- kind RD_SIGNED: one body, ``signature`` = Ed25519 by the author over
  "upsycle-rd-v1" | CBOR [topic, epoch, author key, seq, body].
- kind RD_BATCH: 1..BATCH_MAX bodies with sequence numbers seq, seq+1, ...
  and ONE signature over "upsycle-batch-v1" | CBOR [topic, epoch, author key,
  seq, count, chain], chain = the hash chain of the bodies (wire.batch_chain).
  A battery node keeps its readings on flash until a batch is full and sends
  them in one message: the radio wakes once per batch, and a reader never
  holds an unproven reading (the readings and their signature arrive in the
  same authenticated message, or not at all).

The topic id is not on the wire (the proxy routes by the session's topic id);
it is bound by the AAD and both signatures, so a reading moved to another
topic fails. A proxy sees the epoch number, the nonce and ciphertext.

Introductions: an author puts its ``intro`` in its first compact message after
it was loaded, after each re-key, after each new link to a proxy
(``Member.reintroduce``) and in every INTRO_EVERY-th message after that, so a
reader that joins later (or whose proxy history starts later) learns every
active author within INTRO_EVERY messages of it. The admin (its key is the
topic key, in every invite) and a member itself need no introduction. A
reading whose author a reader has no introduction for is refused
(AuthorUnknown): members never accept a reading whose author they cannot
prove. Write-only members (no epoch secret) keep publishing ``group_pub``.
"""
from shared_protocol.wire import cbor, envelope
from shared_protocol.crypto import api
from shared_protocol.crypto.errors import AuthenticationFailed
from shared_protocol.crypto.errors import BadSignature as CryptoBadSignature
from shared_protocol.groups import wire
from shared_protocol.groups.errors import (AuthorClash, AuthorUnknown, BadSignature, CapabilityExpired,
                                           DecryptFailed, FutureEpoch, GroupUsageError, Malformed, MemberRevoked,
                                           NoReadCapability, Replayed, TooLarge, UnknownEpoch)
from shared_protocol.groups.keys import (KEY_SIZE, NO_EXPIRY, SIG_SIZE, capability_from_wire, capability_on_wire,
                                         check_write_capability)

# An author introduces itself again every this many compact messages: bounds
# how many messages a reader that starts mid-way (late joiner, proxy
# retention) must refuse before it can prove that author; at one reading a
# minute it costs ~100 bytes every half hour.
INTRO_EVERY = 32


class Batch:
    """The readings of one batch that passed every check (Publications, in
    sequence order)."""

    def __init__(self, publications):
        self.publications = publications


def _is_bytes(v, size=None):
    return isinstance(v, (bytes, bytearray)) and (size is None or len(v) == size)


def _is_seq(v, max_seq):
    return isinstance(v, int) and not isinstance(v, bool) and 0 < v <= max_seq


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


def _inner(v, max_seq):
    """Check the shape of a decoded inner array; returns it unpacked."""
    if not isinstance(v, list) or len(v) != 6:
        raise Malformed(message="compact reading content has the wrong shape")
    kind, aref, seq, payload, sig, intro = v
    if kind == wire.RD_SIGNED:
        if not _is_bytes(payload) or len(payload) > wire.BODY_MAX:
            raise Malformed(message="reading body malformed")
        count = 1
    elif kind == wire.RD_BATCH:
        if not isinstance(payload, list) or not 0 < len(payload) <= wire.BATCH_MAX:
            raise Malformed(message="a batch holds 1..%d readings" % wire.BATCH_MAX)
        for b in payload:
            if not _is_bytes(b) or len(b) > wire.BODY_MAX:
                raise Malformed(message="batch body malformed")
        count = len(payload)
    else:
        raise Malformed(message="unknown reading kind")
    if not _is_bytes(aref, wire.AREF_SIZE) or not _is_seq(seq, max_seq) or seq + count - 1 > max_seq:
        raise Malformed(message="author reference or sequence number malformed")
    if not _is_bytes(sig, SIG_SIZE):
        raise Malformed(message="a reading message needs its 64-byte signature")
    if intro is not None:
        if not isinstance(intro, list) or len(intro) != 2 or not _is_bytes(intro[0], KEY_SIZE):
            raise Malformed(message="author introduction malformed")
        if bytes(intro[0][:wire.AREF_SIZE]) != bytes(aref):
            raise Malformed(message="introduction is for another author reference")
    return kind, bytes(aref), seq, payload, count, sig, intro


def _author(member, aref, intro, now):
    """(author key, capability or None, new cache entry or None) for a
    reading by ``aref``; raises if the author cannot be proven."""
    topic = member.topic
    if intro is not None:
        key = bytes(intro[0])
        known = member.authors.get(aref)
        if known is not None and known[0] != key:
            raise AuthorClash(message="author reference %s already names another key" % aref.hex())
        if key == member.topic_public:
            return key, None, None
        cap = capability_from_wire(intro[1], topic, key)
        if known is not None and known[2] and known[1] == cap:
            return key, cap, None            # the introduction we hold, checked: no second check
        check_write_capability(cap, topic, member.topic_public, key, now)
        if known is not None and known[2] and _later(known[1][3], cap[3]):
            return key, known[1], None       # an older capability replayed: keep the later one
        if known is None and len(member.authors) >= member.max_authors:
            raise TooLarge(message="more than %d introduced authors in one topic" % member.max_authors)
        return key, cap, [key, cap, True]
    if aref == member.topic_public[:wire.AREF_SIZE]:
        return member.topic_public, None, None
    me = member.identity.public
    if aref == me[:wire.AREF_SIZE] and member.capability is not None:
        return me, member.capability, None
    known = member.authors.get(aref)
    if known is None:
        raise AuthorUnknown(message="no introduction for author %s yet" % aref.hex())
    if not known[2]:
        # loaded from the record: checked once on first use (a swapped key or
        # capability on flash fails here and is never trusted)
        check_write_capability(known[1], topic, member.topic_public, known[0], now)
        return known[0], known[1], [known[0], known[1], True]
    return known[0], known[1], None


def _later(held, offered):
    """Whether the expiry we hold is later than the one offered (0 = never)."""
    if held == NO_EXPIRY:
        return offered != NO_EXPIRY
    return offered != NO_EXPIRY and offered < held


def open_rd(member, msg, now, max_seq, publication):
    """Open a group_rd (already decoded as an envelope); returns a
    Publication or a Batch; changes nothing unless every check passes."""
    epoch, nonce, sealed = msg.values
    ek = member.epoch_key(epoch) if epoch in member.epochs() else None
    if ek is None:
        if epoch > member.epoch:
            # its re-key has not reached us yet: may open later (errors.FutureEpoch)
            raise FutureEpoch(message="epoch %d not held yet (current %d): its re-key has not arrived"
                                      % (epoch, member.epoch))
        raise UnknownEpoch(message="epoch %d not held (current %d)" % (epoch, member.epoch))
    if not ek.readable:
        raise NoReadCapability(message="write-only member: cannot open publications")
    topic = member.topic
    try:
        inner = api.aead_decrypt(ek.sym, nonce, sealed, wire.rd_header(topic, epoch, nonce))
    except AuthenticationFailed:
        raise DecryptFailed(message="reading does not authenticate under epoch %d" % epoch)
    kind, aref, seq, payload, count, sig, intro = _inner(cbor.decode(inner), max_seq)
    author, cap, new_entry = _author(member, aref, intro, now)
    if author in member.revoked:
        raise MemberRevoked(message="author was removed from the topic")
    if cap is not None and cap[3] != NO_EXPIRY and now >= cap[3]:
        raise CapabilityExpired(message="write capability expired at %d (now %d)" % (cap[3], now))
    if kind == wire.RD_SIGNED:
        signed = wire.rd_signed_bytes(topic, epoch, author, seq, payload)
    else:
        signed = wire.batch_signed_bytes(topic, epoch, author, seq, count, wire.batch_chain(payload))
    try:
        api.ed25519_verify(author, signed, sig)
    except CryptoBadSignature:
        raise BadSignature(message="author signature does not verify")
    win = member.window_for(author, seq)     # per (author, generation); a batch is in one generation
    for s in range(seq, seq + count):
        if not win.is_fresh(s):
            raise Replayed(message="sequence %d of this author already seen or too old" % s)
    # every check passed: commit
    for s in range(seq, seq + count):
        win.accept(s)
    member.keep_window(author, win, seq)
    if new_entry is not None:
        member.authors[aref] = new_entry
    if kind == wire.RD_SIGNED:
        return publication(topic, epoch, author, seq, payload)
    out = []
    for i in range(count):
        out.append(publication(topic, epoch, author, seq + i, payload[i]))
    return Batch(out)


def authors_to_record(authors):
    out = []
    for aref in sorted(authors):
        e = authors[aref]
        out.append([e[0], e[1]])
    return out


def authors_from_record(rows):
    """Introduced authors of a record, filed under their key's reference and
    marked unchecked: each capability is checked again on first use."""
    out = {}
    for row in rows:
        if isinstance(row, list) and len(row) == 2 and _is_bytes(row[0], KEY_SIZE) and isinstance(row[1], list):
            key = bytes(row[0])
            out[key[:wire.AREF_SIZE]] = [key, row[1], False]
    return out
