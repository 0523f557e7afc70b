"""Compact readings: what is the same in every publication travels once.

Members seal signed readings (group_rs, the second half of this module: no
nonce, no AEAD tag, bodies packed with the author's dictionary) and open
both forms; the earlier group_rd, described first, is sealed by
groups/compact.py, which also opens it, off the node path.

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
from shared_protocol.crypto.chacha20poly1305 import chacha20_xor
from shared_protocol.crypto import errors as cerr
from shared_protocol.groups import errors as gerr
from shared_protocol.groups import wire
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


def _author(member, aref, intro, now):
    """(author key, capability or None, new cache entry or None) for a
    reading by ``aref``; raises if the author cannot be proven."""
    topic = member.topic
    if intro is not None:
        key = bytes(intro[0])
        known = member.authors.get(aref)
        if known is not None and known[0] != key:
            raise gerr.AuthorClash(message=__debug__ and "author reference %s already names another key" % aref.hex())
        if key == member.topic_public:
            return key, None, None
        cap = capability_from_wire(intro[1], topic, key)
        if known is not None and known[2] and known[1] == cap:
            return key, cap, None            # the introduction we hold, checked: no second check
        check_write_capability(cap, topic, member.topic_public, key, now)
        if known is not None and known[2] and _later(known[1][3], cap[3]):
            return key, known[1], None       # an older capability replayed: keep the later one
        if known is None and len(member.authors) >= member.max_authors:
            raise gerr.TooLarge(message=__debug__ and "more than %d introduced authors in one topic" % member.max_authors)
        return key, cap, [key, cap, True]
    if aref == member.topic_public[:wire.AREF_SIZE]:
        return member.topic_public, None, None
    me = member.identity.public
    if aref == me[:wire.AREF_SIZE] and member.capability is not None:
        return me, member.capability, None
    known = member.authors.get(aref)
    if known is None:
        raise gerr.AuthorUnknown(message=__debug__ and "no introduction for author %s yet" % aref.hex())
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


def _read_key(member, epoch):
    """The epoch's keys for opening a reading, or the typed refusal."""
    ek = member.epoch_key(epoch) if epoch in member.epochs() else None
    if ek is None:
        if epoch > member.epoch:
            # its re-key has not reached us yet: may open later (errors.FutureEpoch)
            raise gerr.FutureEpoch(message=__debug__ and "epoch %d not held yet (current %d): its re-key has not arrived"
                                      % (epoch, member.epoch))
        raise gerr.UnknownEpoch(message=__debug__ and "epoch %d not held (current %d)" % (epoch, member.epoch))
    if not ek.readable:
        raise gerr.NoReadCapability(message=__debug__ and "write-only member: cannot open publications")
    return ek


def _commit(member, author, win, seq, count, aref, new_entry, publication, topic, epoch, kind, bodies):
    """Every check passed: advance the replay window, keep the introduction,
    hand out the readings."""
    for s in range(seq, seq + count):
        win.accept(s)
    member.keep_window(author, win, seq)
    if new_entry is not None:
        member.authors[aref] = new_entry
    if kind == wire.RD_SIGNED:
        return publication(topic, epoch, author, seq, bodies[0])
    out = []
    for i in range(count):
        out.append(publication(topic, epoch, author, seq + i, bodies[i]))
    return Batch(out)


def authors_to_record(authors):
    out = []
    for aref in sorted(authors):
        e = authors[aref]
        out.append([e[0], e[1]])
    return out


# -- signed readings (group_rs): no nonce, no AEAD tag on the wire -----------
#
#     group_rs = [1, 10, epoch, data]
#     data     = R | ChaCha20(epoch key, N, S | inner)     (RFC 8439 §2.4, counter 1)
#     N        = SHA-256("upsycle-rs-nonce-v1" | R)[:12]
#     R | S    = Ed25519 by the author over
#                "upsycle-rs-v1" | topic | SHA-256(CBOR [epoch, generation, inner, bodies unpacked])
#     inner    = flags | aref (4) | generation (3 with intro, else 1) | counter (1..3) | [intro] | body or batch
#     intro    = CBOR [author key, capability on the wire or null, dictionary]
#
# Why this is enough (docs/private-groups.md "Signed readings"): R is derived
# from the signed message and the author's secret (RFC 8032 §5.1.6), so it
# is a PRF of the plaintext: a synthetic IV (Rogaway and Shrimpton, "A
# Provable-Security Treatment of the Key-Wrap Problem", 2006). Different
# plaintexts get unrelated nonces, the same plaintext the same bytes, and R
# alone says nothing about the author or the body. Integrity: any change of
# R or of the ciphertext changes the recovered (S, inner), and the reader
# accepts only what verifies under the author's key; Ed25519 with S < L
# checked is strongly unforgeable (Brendel et al., "The Provable Security of
# Ed25519: Theory and Practice", IEEE S&P 2021), which with a CPA-secure
# cipher gives what the AEAD tag gave (Bellare and Namprempre, "Authenticated
# Encryption", 2000: encrypt-then-MAC with a strongly unforgeable MAC; here
# the "MAC" is the signature over everything the ciphertext decrypts to).
# The 16-byte tag authenticated the epoch-key holders only, i.e. every
# member; the signature authenticates the author.


def _stream(key, nonce, data):
    """data XOR the ChaCha20 keystream from block 1 (RFC 8439 §2.4): the
    ciphertext part of the AEAD (§2.8), without computing its tag where the
    backend lets us."""
    if api.backend_name() == "pure-python":
        return chacha20_xor(key, 1, nonce, data)
    return api.aead_encrypt(key, nonce, data)[:-api.AEAD_TAG_SIZE]


def _rs_nonce(r):
    return api.sha256(wire.RS_NONCE_LABEL + bytes(r))[:wire.NONCE_SIZE]


_REF = 0xE0    # CBOR simple value 0 (RFC 8949 §3.3: 0..19 unassigned); _REF + i names entry i


def _token_end(data, p):
    """End of the CBOR token at p: a whole byte or text string, or the head
    of any other item (its argument or float bytes included); -1 if the
    token is truncated, indefinite or reserved."""
    ib = data[p]
    ai = ib & 0x1F
    if ai < 24:
        n, q = ai, p + 1
    elif ai < 28:
        k = 1 << (ai - 24)
        q = p + 1 + k
        if q > len(data):
            return -1
        n = 0
        for i in range(p + 1, q):
            n = (n << 8) | data[i]
    else:
        return -1
    major = ib >> 5
    if major == 2 or major == 3:
        q += n
    return q if q <= len(data) else -1


# Numbers near the body's first large one (readings.pack): a DMC op's Lamport
# clock and the sequence numbers its deps name are close to its own sequence
# number (the anchor, the body's first unsigned integer of 256 or more), so
# each becomes one byte, the simple value _NEAR + (value - anchor - NEAR_LO).
_NEAR = _REF + 8        # simple values 8..19
NEAR_LO = -4
NEAR_HI = 7


def _uint_at(data, p, q):
    """The value of the unsigned integer token data[p:q] if it is in its
    shortest form (what unpack gives back), else -1."""
    ai = data[p] & 0x1F
    if ai < 24:
        return ai
    v = 0
    for i in range(p + 1, q):
        v = (v << 8) | data[i]
    if v < (24, 256, 0x10000, 0x100000000)[ai - 24]:
        return -1
    return v


def _uint_bytes(v):
    if v < 24:
        return bytes((v,))
    if v < 0x100:
        return bytes((0x18, v))
    if v < 0x10000:
        return bytes((0x19, v >> 8, v & 0xFF))
    if v < 0x100000000:
        return bytes((0x1A, v >> 24, (v >> 16) & 0xFF, (v >> 8) & 0xFF, v & 0xFF))
    out = bytearray((0x1B,))
    for i in range(7, -1, -1):
        out.append((v >> (8 * i)) & 0xFF)
    return bytes(out)


def pack(body, dictionary):
    """``body`` with every CBOR string item whose encoding is a dictionary
    entry replaced by one byte, the unassigned simple value of its index
    (_REF + i), and every unsigned integer after the first one of 256 or
    more (the anchor) that lies within NEAR_LO..NEAR_HI of it by one byte
    (_NEAR + offset); ``body`` itself when it is not CBOR tokens we can
    walk, holds such simple values already, or would not get shorter.
    Deterministic: a single pass, left to right."""
    out = bytearray()
    p = 0
    n = len(body)
    anchor = -1
    while p < n:
        ib = body[p]
        if _REF <= ib < _REF + 20:
            return body            # an unassigned simple value of its own: ambiguous
        q = _token_end(body, p)
        if q < 0:
            return body
        major = ib >> 5
        if major == 2 or major == 3:
            item = body[p:q]
            for i in range(len(dictionary)):
                if dictionary[i] == item:
                    item = None
                    out.append(_REF + i)
                    break
            if item is not None:
                out += item
        elif major == 0 and ib >= 0x18:
            v = _uint_at(body, p, q)
            if anchor < 0:
                if v >= 256:
                    anchor = v
                out += body[p:q]
            elif v >= 0 and NEAR_LO <= v - anchor <= NEAR_HI:
                out.append(_NEAR + v - anchor - NEAR_LO)
            else:
                out += body[p:q]
        else:
            out += body[p:q]
        p = q
    return bytes(out) if len(out) < n else body


def unpack(packed, dictionary):
    """The body a packed reading stands for; gerr.Malformed, or gerr.AuthorUnknown for
    an index the reader holds no entry for (the author's dictionary grew and
    its introduction has not reached us)."""
    out = bytearray()
    p = 0
    n = len(packed)
    anchor = -1
    while p < n:
        ib = packed[p]
        if _REF <= ib < _REF + wire.DICT_MAX:
            i = ib - _REF
            if dictionary is None or i >= len(dictionary):
                raise gerr.AuthorUnknown(message=__debug__ and "reading refers to dictionary entry %d the reader does not hold" % i)
            out += dictionary[i]
            p += 1
        elif _NEAR <= ib < _NEAR + NEAR_HI - NEAR_LO + 1:
            if anchor < 0:
                raise gerr.Malformed(message=__debug__ and "packed reading names a number before its anchor")
            out += _uint_bytes(anchor + ib - _NEAR + NEAR_LO)
            p += 1
        else:
            q = _token_end(packed, p)
            if q < 0:
                raise gerr.Malformed(message=__debug__ and "packed reading malformed")
            if anchor < 0 and ib >> 5 == 0 and ib >= 0x18:
                v = _uint_at(packed, p, q)
                if v >= 256:
                    anchor = v
            out += packed[p:q]
            p = q
        if len(out) > wire.BODY_MAX:
            raise gerr.Malformed(message=__debug__ and "reading body over %d bytes" % wire.BODY_MAX)
    return bytes(out)


def _token_walk_ok(body):
    """Whether ``body`` walks as CBOR tokens without reference bytes, so
    unpack gives it back unchanged."""
    p = 0
    while p < len(body):
        if _REF <= body[p] < _REF + 20:
            return False
        p = _token_end(body, p)
        if p < 0:
            return False
    return True


def _check_dictionary(d):
    if not isinstance(d, list) or len(d) > wire.DICT_MAX:
        return False
    for e in d:
        if not _is_bytes(e) or not wire.DICT_ENTRY_MIN <= len(e) <= wire.DICT_ENTRY_MAX:
            return False
    return True


def _rs_head(flags, aref, seq):
    """flags (with the counter's length) | aref | generation (3 with an
    introduction, else its low byte) | counter in its shortest big-endian
    form (1..3 bytes)."""
    c = seq & 0xFFFFFF
    k = 1 if c < 0x100 else (2 if c < 0x10000 else 3)
    g = seq >> 24
    out = bytearray((flags | (k - 1) << 4,))
    out += aref[:wire.AREF_SIZE]
    if flags & wire.RS_INTRO:
        out += bytes(((g >> 16) & 0xFF, (g >> 8) & 0xFF))
    out.append(g & 0xFF)
    for i in range(k - 1, -1, -1):
        out.append((c >> (8 * i)) & 0xFF)
    return bytes(out)


def _seal_checks(member, bodies, batch, rand32, now):
    """What both compact forms refuse before sealing (usage errors: the
    member's state is unchanged); the epoch key to seal under."""
    if not member.can_write:
        raise gerr.GroupUsageError(message=__debug__ and "this member holds no write capability")
    ek = member.epoch_key()
    if not ek.readable:
        raise gerr.GroupUsageError(message=__debug__ and "compact readings need the epoch secret; write-only members use seal()")
    cap = member.capability
    if now is not None and cap is not None and cap[3] and now >= cap[3]:
        raise gerr.GroupUsageError(message=__debug__ and "write capability expired; ask the admin for a new invite")
    n = len(bodies)
    if n < 1 or n > (wire.BATCH_MAX if batch else 1):
        raise gerr.GroupUsageError(message=__debug__ and "a reading message holds 1..%d bodies" % (wire.BATCH_MAX if batch else 1))
    for b in bodies:
        if len(b) > wire.BODY_MAX:
            raise gerr.GroupUsageError(message=__debug__ and "body of %d bytes over %d" % (len(b), wire.BODY_MAX))
    if not _is_bytes(rand32, KEY_SIZE):
        raise gerr.GroupUsageError(message=__debug__ and "seal needs 32 random bytes")
    return ek


def seal_rs(member, bodies, batch, rand32, now, max_seq):
    """The group_rs message for ``bodies`` (one, or a batch); advances the
    member's sequence number by len(bodies). Deterministic: the same
    readings under the same state give the same bytes (``rand32`` is used
    only when a new sequence generation must be drawn)."""
    ek = _seal_checks(member, bodies, batch, rand32, now)
    n = len(bodies)
    seq = member.seq_block(n, rand32)
    if seq + n - 1 > max_seq:
        raise gerr.GroupUsageError(message=__debug__ and "sequence numbers exhausted for this member key")
    author = member.identity.public
    d = member.dictionary
    flags = wire.RD_BATCH if batch else wire.RD_SIGNED
    intro = b""
    if member.intro_left <= 0:
        intro = cbor.encode([author, None if member.is_admin else capability_on_wire(member.capability), d])
        flags |= wire.RS_INTRO
    plain = []
    packed = []
    for b in bodies:
        plain.append(bytes(b))
        packed.append(pack(plain[-1], d))
    if packed != plain:
        # packed applies to every body of the message: one that did not
        # shrink goes as it is, which unpacks to itself only if it walks as
        # CBOR tokens without reference bytes; if one does not, none is packed
        flags |= wire.RS_PACKED
        for i in range(n):
            if packed[i] == plain[i] and not _token_walk_ok(plain[i]):
                flags &= ~wire.RS_PACKED
                packed = plain
                break
    rest = cbor.encode(packed) if batch else packed[0]
    inner = _rs_head(flags, author, seq) + intro + rest
    sig = member.identity.sign(wire.rs_signed_bytes(member.topic, member.epoch, seq >> 24, inner, plain))
    data = sig[:32] + _stream(ek.sym, _rs_nonce(sig[:32]), sig[32:] + inner)
    member.seq_used(seq, n)
    member.intro_left = INTRO_EVERY - 1 if intro else member.intro_left - 1
    return envelope.REGISTRY.encode("group_rs", member.epoch, data)


def _rs_inner(member, inner, max_seq):
    """Parse the plaintext of a group_rs: (kind, aref, seq, intro or None,
    packed bodies list, count). A reading without an introduction is of
    the generation its author last introduced (``_gen_of``)."""
    if len(inner) < wire.RS_HEAD_MIN:
        raise gerr.Malformed(message=__debug__ and "signed reading shorter than its head")
    flags = inner[0]
    kind = flags & wire.RS_KIND
    k = ((flags & wire.RS_CLEN) >> 4) + 1
    g = wire.RS_GEN_BYTES if flags & wire.RS_INTRO else 1
    p = 1 + wire.AREF_SIZE + g + k
    if flags & ~(wire.RS_KIND | wire.RS_CLEN | wire.RS_INTRO | wire.RS_PACKED) \
            or kind not in (wire.RD_SIGNED, wire.RD_BATCH) or k > 3 or len(inner) < p:
        raise gerr.Malformed(message=__debug__ and "unknown reading kind or flags")
    aref = bytes(inner[1:1 + wire.AREF_SIZE])
    seq = 0
    for b in inner[1 + wire.AREF_SIZE:p - k]:
        seq = (seq << 8) | b
    if g == 1:
        seq = _gen_of(member, aref, seq)
    c = 0
    for b in inner[p - k:p]:
        c = (c << 8) | b
    seq = (seq << 24) | c
    if k > 1 and inner[p - k] == 0:
        raise gerr.Malformed(message=__debug__ and "sequence counter not in its shortest form")
    intro = None
    try:
        if flags & wire.RS_INTRO:
            intro, used = cbor.decode_prefix(inner[p:])
            p += used
            if (not isinstance(intro, list) or len(intro) != 3 or not _is_bytes(intro[0], KEY_SIZE)
                    or not _check_dictionary(intro[2])):
                raise gerr.Malformed(message=__debug__ and "author introduction malformed")
            if bytes(intro[0][:wire.AREF_SIZE]) != aref:
                raise gerr.Malformed(message=__debug__ and "introduction is for another author reference")
        rest = inner[p:]
        if kind == wire.RD_BATCH:
            items = cbor.decode(rest)
            if not isinstance(items, list) or not 0 < len(items) <= wire.BATCH_MAX:
                raise gerr.Malformed(message=__debug__ and "a batch holds 1..%d readings" % wire.BATCH_MAX)
            for it in items:
                if not _is_bytes(it) or len(it) > wire.BODY_MAX:
                    raise gerr.Malformed(message=__debug__ and "batch body malformed")
        else:
            items = [bytes(rest)]
    except cbor.DecodeError:
        raise gerr.Malformed(message=__debug__ and "signed reading content is not deterministic CBOR")
    count = len(items)
    if not _is_seq(seq, max_seq) or seq + count - 1 > max_seq:
        raise gerr.Malformed(message=__debug__ and "sequence number malformed")
    return flags, kind, aref, seq, intro, items, count


def _gen_of(member, aref, low):
    """The sequence generation of a reading by ``aref`` that carries no
    introduction, named by its low byte: the one its author last introduced
    to us with that low byte (our own for our own readings); refused when
    no introduction of it reached us."""
    g = member.gens.get(aref + bytes((low,)))
    if g is not None:
        return g
    if aref == member.identity.public[:wire.AREF_SIZE] and low == member.gen & 0xFF:
        return member.gen
    raise gerr.AuthorUnknown(message=__debug__ and "no introduction of author %s's sequence generation yet" % aref.hex())


def open_rs(member, msg, now, max_seq, publication):
    """Open a group_rs (already decoded as an envelope); returns a
    Publication or a Batch; changes nothing unless every check passes."""
    epoch, data = msg.values
    ek = _read_key(member, epoch)
    if len(data) < SIG_SIZE + wire.RS_HEAD_MIN:
        raise gerr.Malformed(message=__debug__ and "signed reading of %d bytes is too short" % len(data))
    r = bytes(data[:32])
    plain = _stream(ek.sym, _rs_nonce(r), data[32:])
    sig = r + plain[:32]
    inner = plain[32:]
    # the signature check below is the tightest moment of a board's heap:
    # the whole plaintext is not kept through it, only its two parts
    plain = r = None
    flags, kind, aref, seq, intro, items, count = _rs_inner(member, inner, max_seq)
    topic = member.topic
    me = member.identity.public
    # The author's key and dictionary. Nothing here is trusted until the
    # signature verifies: a changed byte anywhere fails it.
    if intro is not None:
        author = bytes(intro[0])
        d = intro[2]
    else:
        author, cap, new_entry = _author(member, aref, None, now)
        held = member.dicts.get(_dict_key(aref, seq))
        if held is not None:
            d = held[1]
        elif author == me and seq >> 24 == member.gen:
            d = member.dictionary     # our own, before our introduction came back
        else:
            d = None
    bodies = []
    for it in items:
        bodies.append(unpack(it, d) if flags & wire.RS_PACKED else bytes(it))
    if author in member.revoked:
        raise gerr.MemberRevoked(message=__debug__ and "author was removed from the topic")
    win = member.window_for(author, seq)
    for s in range(seq, seq + count):
        if not win.is_fresh(s):
            raise gerr.Replayed(message=__debug__ and "sequence %d of this author already seen or too old" % s)
    try:
        api.ed25519_verify(author, wire.rs_signed_bytes(topic, epoch, seq >> 24, inner, bodies), sig)
    except cerr.BadSignature:
        raise gerr.BadSignature(message=__debug__ and "author signature does not verify")
    if intro is not None:
        # the introduction is the author's own (it signed it): now check what
        # the admin signed (the capability), once per capability
        author, cap, new_entry = _author(member, aref, intro, now)
        dict_new = None
        held = member.dicts.get(_dict_key(aref, seq))
        if intro[2] or held is not None:
            if held is None and len(member.dicts) >= 2 * member.max_authors:
                raise gerr.TooLarge(message=__debug__ and "more than %d author dictionaries in one topic" % (2 * member.max_authors))
            if held is None or held[0] < seq:     # an older introduction never replaces a later one
                dict_new = [seq, intro[2]]
    else:
        dict_new = None
    if cap is not None and cap[3] != NO_EXPIRY and now >= cap[3]:
        raise gerr.CapabilityExpired(message=__debug__ and "write capability expired at %d (now %d)" % (cap[3], now))
    gkey = aref + bytes(((seq >> 24) & 0xFF,))
    if intro is not None and gkey not in member.gens and len(member.gens) >= 2 * member.max_authors:
        raise gerr.TooLarge(message=__debug__ and "more than %d author generations in one topic" % (2 * member.max_authors))
    if dict_new is not None:
        if dict_new[1]:
            member.dicts[_dict_key(aref, seq)] = [dict_new[0], [bytes(e) for e in dict_new[1]]]
        else:
            member.dicts.pop(_dict_key(aref, seq), None)
    if intro is not None:
        member.gens[gkey] = seq >> 24    # its later readings carry only the low byte
    return _commit(member, author, win, seq, count, aref, new_entry, publication, topic, epoch, kind, bodies)


def _dict_key(aref, seq):
    """Dictionaries are kept per author reference and sequence generation:
    two devices joined with one member key each have their own."""
    g = seq >> 24
    return aref + bytes(((g >> 16) & 0xFF, (g >> 8) & 0xFF, g & 0xFF))


def dicts_to_record(dicts):
    out = []
    for aref in sorted(dicts):
        e = dicts[aref]
        out.append([aref, e[0], e[1]])
    return out


def gens_to_record(gens):
    out = []
    for aref in sorted(gens):
        out.append([aref, gens[aref]])
    return out
