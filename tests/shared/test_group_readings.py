# Runs on CPython and in the MicroPython VM: the earlier compact readings (group_rd,
# shared_protocol/groups/readings.py). Every shortcut of the compact form (the
# author's key and capability sent once, the topic id not sent, one signature
# per batch) has its attack here: a typed error and no state change.
from rig import raises
from shared_protocol.wire import cbor, envelope
from shared_protocol.crypto import api
from shared_protocol.groups import readings, wire
from shared_protocol.groups.admin import Admin
from shared_protocol.groups.errors import (AuthorClash, AuthorUnknown, BadSignature, CapabilityExpired,
                                           DecryptFailed, GroupUsageError, Malformed, MemberRevoked,
                                           NoWriteCapability, Replayed, UnknownEpoch)
from shared_protocol.groups.invite import invite_url, member_from_url
from shared_protocol.groups.keys import Identity, capability_on_wire, make_capability
from shared_protocol.groups.member import Member
from shared_protocol.groups.readings import Batch
from shared_protocol.rand import Rng

NOW = 1_700_000_000
_rng = Rng(2611)


def r32():
    return _rng.randbytes(32)


def _topic(name="garden"):
    admin = Admin(r32(), r32(), name=name)
    rw = member_from_url(invite_url(admin.invite(r32(), read=True, write=True)))
    ro = member_from_url(invite_url(admin.invite(r32(), read=True, write=False)))
    rw2 = member_from_url(invite_url(admin.invite(r32(), read=True, write=True)))
    return admin, rw, ro, rw2


def _seal_rd(m, body, rand, now):
    """The earlier compact form (group_rd), which members still open."""
    return m.seal_compact([body], False, rand, now)


def _seal_rd_batch(m, bodies, rand, now):
    return m.seal_compact(bodies, True, rand, now)


def _snapshot(m):
    return cbor.encode(m.to_record()) + cbor.encode([m.intro_left])


def _reload(m):
    return Member.from_record(cbor.decode(cbor.encode(m.to_record())))


def _rd(sealer, inner, epoch=None, topic=None):
    """A group_rd sealed with ``sealer``'s epoch key around a chosen inner
    array (what a malicious member, who holds the epoch key, can build)."""
    epoch = sealer.epoch if epoch is None else epoch
    nonce = r32()[:wire.NONCE_SIZE]
    ct = api.aead_encrypt(sealer.epoch_key(epoch).sym, nonce, cbor.encode(inner),
                          wire.rd_header(sealer.topic if topic is None else topic, epoch, nonce))
    return envelope.REGISTRY.encode("group_rd", epoch, nonce, ct)


def _signed(sealer, signer, author, seq, body, intro=None, sig_topic=None):
    sig = signer.sign(wire.rd_signed_bytes(sig_topic or sealer.topic, sealer.epoch, author, seq, body))
    return _rd(sealer, [wire.RD_SIGNED, author[:wire.AREF_SIZE], seq, body, sig, intro])


def _batch_sig(m, author, first, bodies, signer=None):
    return (signer or m.identity).sign(wire.batch_signed_bytes(m.topic, m.epoch, author, first, len(bodies),
                                                               wire.batch_chain(bodies)))


def _inner(reader_like, data):
    """The inner array of a group_rd (a member's view, for building attacks)."""
    msg = envelope.REGISTRY.decode(data)
    epoch, nonce, sealed = msg.values
    inner = api.aead_decrypt(reader_like.epoch_key(epoch).sym, nonce, sealed,
                             wire.rd_header(reader_like.topic, epoch, nonce))
    return cbor.decode(inner)


def test_signed_reading_round_trip_and_introduction_sent_once():
    admin, rw, ro, _ = _topic()
    first = _seal_rd(rw, b"21.5C", r32(), NOW)
    second = _seal_rd(rw, b"21.6C", r32(), NOW)
    p = ro.open(first, NOW)
    assert (p.body, p.seq, p.author) == (b"21.5C", 1, rw.identity.public)
    assert ro.open(second, NOW).body == b"21.6C"
    # key (32) + capability (rights, expiry, 64-byte signature) only in the first
    assert len(first) - len(second) > 32 + 64
    assert _inner(ro, second)[5] is None and _inner(ro, first)[5][0] == rw.identity.public
    # the admin and a member itself need no introduction
    assert ro.open(_seal_rd(admin, b"from admin", r32(), NOW), NOW).body == b"from admin"
    rw.intro_left = 5
    assert rw.open(_seal_rd(rw, b"own", r32(), NOW), NOW).body == b"own"


def test_introduction_again_every_n_messages_new_link_and_new_epoch():
    admin, rw, ro, rw2 = _topic()
    intros = []
    for i in range(readings.INTRO_EVERY + 2):
        intros.append(_inner(ro, _seal_rd(rw, b"r", r32(), NOW))[5] is not None)
    assert intros[0] and intros[readings.INTRO_EVERY] and sum(intros) == 2
    rw.reintroduce()                                   # a new link to a proxy
    assert _inner(ro, _seal_rd(rw, b"r", r32(), NOW))[5] is not None
    _seal_rd(rw, b"r", r32(), NOW)
    rekey, = admin.remove(rw2.identity.public, r32(), r32())
    rw.open(rekey, NOW)
    assert _inner(rw, _seal_rd(rw, b"r", r32(), NOW))[5] is not None


def test_proxy_sees_neither_topic_id_author_nor_body():
    admin, rw, _, _ = _topic()
    body = b"soil moisture 31% at bed 4"
    for m in (_seal_rd(rw, body, r32(), NOW), _seal_rd(rw, body, r32(), NOW),
              _seal_rd_batch(rw, [body, body], r32(), NOW)):
        for secret in (body, rw.identity.public, rw.identity.public[:wire.AREF_SIZE], rw.capability[4],
                       rw.topic):
            assert bytes(secret) not in m
        assert envelope.REGISTRY.decode(m).name == "group_rd"


def test_batch_round_trip_one_signature_for_many_readings():
    _, rw, ro, _ = _topic()
    bodies = [b"r%d" % i for i in range(wire.BATCH_MAX)]
    data = _seal_rd_batch(rw, bodies, r32(), NOW)
    ev = ro.open(data, NOW)
    assert isinstance(ev, Batch)
    assert [(p.seq, p.body) for p in ev.publications] == [(i + 1, bodies[i]) for i in range(wire.BATCH_MAX)]
    assert rw.next_seq == wire.BATCH_MAX + 1
    one = _seal_rd(rw, b"after", r32(), NOW)
    assert ro.open(one, NOW).seq == wire.BATCH_MAX + 1
    raises(GroupUsageError, _seal_rd_batch, rw, [b"x"] * (wire.BATCH_MAX + 1), r32(), NOW)
    raises(GroupUsageError, _seal_rd_batch, rw, [], r32(), NOW)


def _rejects(reader, cases):
    for name, err, data in cases:
        before = _snapshot(reader)
        e = raises(err, reader.open, data, NOW)
        assert e.code, name
        assert _snapshot(reader) == before, "state changed: " + name


def test_signed_reading_attacks():
    admin, rw, ro, rw2 = _topic()
    other_admin, other_rw, _, _ = _topic("other")
    good = _seal_rd(rw, b"ok", r32(), NOW)
    assert ro.open(good, NOW).seq == 1            # ro now knows rw
    rw_pub, rw2_pub = rw.identity.public, rw2.identity.public
    outsider = Identity(r32())
    bad = bytearray(_seal_rd(rw, b"tamper me", r32(), NOW))
    bad[-3] ^= 1
    hdr = envelope.REGISTRY.decode(_seal_rd(rw, b"aad", r32(), NOW))
    alt_nonce = bytearray(hdr["nonce"])
    alt_nonce[0] ^= 1
    expired_cap = make_capability(admin.identity, rw2_pub, 3, NOW - 1)
    foreign_cap = make_capability(other_admin.identity, rw2_pub, 3)
    cases = [
        ("forged signature (known author, other signer)", BadSignature,
         _signed(ro, outsider, rw_pub, 50, b"forged")),
        ("signature made for another topic", BadSignature,
         _signed(rw, rw.identity, rw_pub, 51, b"moved", sig_topic=other_admin.topic)),
        ("replayed reading", Replayed, good),
        ("tampered ciphertext", DecryptFailed, bytes(bad)),
        ("tampered nonce (AAD)", DecryptFailed,
         envelope.REGISTRY.encode("group_rd", hdr["epoch"], bytes(alt_nonce), hdr["sealed"])),
        ("reading of another topic (topic id not on the wire, bound by the AAD)", DecryptFailed,
         _rd(rw, _inner(rw, _seal_rd(rw, b"x", r32(), NOW)), topic=other_admin.topic)),
        ("wrong epoch", UnknownEpoch, envelope.REGISTRY.encode("group_rd", 7, hdr["nonce"], hdr["sealed"])),
        ("author never introduced (no key, no capability)", AuthorUnknown,
         _signed(rw2, rw2.identity, rw2_pub, 1, b"who am I")),
        ("introduction without a capability", NoWriteCapability,
         _signed(rw2, rw2.identity, rw2_pub, 1, b"x", intro=[rw2_pub, None])),
        ("introduction with another member's capability", NoWriteCapability,
         _signed(rw2, rw2.identity, rw2_pub, 1, b"x", intro=[rw2_pub, capability_on_wire(rw.capability)])),
        ("introduction with a capability from another admin", NoWriteCapability,
         _signed(rw2, rw2.identity, rw2_pub, 1, b"x", intro=[rw2_pub, capability_on_wire(foreign_cap)])),
        ("introduction with an expired capability", CapabilityExpired,
         _signed(rw2, rw2.identity, rw2_pub, 1, b"x", intro=[rw2_pub, capability_on_wire(expired_cap)])),
        ("introduction whose key is not the reference's", Malformed,
         _rd(rw2, [0, rw_pub[:4], 1, b"x", rw2.identity.sign(b"x"), [rw2_pub, capability_on_wire(rw2.capability)]])),
        ("outsider introducing itself with a stolen capability", NoWriteCapability,
         _signed(rw2, outsider, outsider.public, 1, b"x",
                 intro=[outsider.public, capability_on_wire(rw2.capability)])),
        ("reading without a signature", Malformed, _rd(rw, [0, rw_pub[:4], 60, b"x", None, None])),
        ("unknown reading kind", Malformed, _rd(rw, [9, rw_pub[:4], 61, b"x", bytes(64), None])),
    ]
    _rejects(ro, cases)


def test_author_reference_clash_keeps_the_first_key():
    admin, rw, ro, _ = _topic()
    ro.open(_seal_rd(rw, b"first", r32(), NOW), NOW)
    # another admin-approved key whose reference is rw's (as a clash would be)
    twin = Identity(r32())
    ref = rw.identity.public[:wire.AREF_SIZE]
    cap = make_capability(admin.identity, twin.public, 3)
    sig = twin.sign(wire.rd_signed_bytes(ro.topic, ro.epoch, twin.public, 1, b"twin"))
    data = _rd(rw, [0, ref, 1, b"twin", sig, [ref + twin.public[wire.AREF_SIZE:], capability_on_wire(cap)]])
    _rejects(ro, [("a second key under a taken reference", AuthorClash, data)])
    assert ro.authors[ref][0] == rw.identity.public


def test_removed_member_refused_even_when_introduced():
    admin, rw, ro, rw2 = _topic()
    ro.open(_seal_rd(rw2, b"before", r32(), NOW), NOW)     # ro knows rw2
    ro.open(admin.remove(rw2.identity.public, r32(), r32())[0], NOW)
    late = _seal_rd(rw2, b"I am still here", r32(), NOW)   # old epoch, cached author
    _rejects(ro, [("removed author, cached introduction", MemberRevoked, late)])


def test_cached_author_swapped_or_missing_in_the_record():
    admin, rw, ro, rw2 = _topic()
    ro.open(_seal_rd(rw, b"one", r32(), NOW), NOW)
    ro.open(_seal_rd(rw2, b"one", r32(), NOW), NOW)
    nxt = _seal_rd(rw, b"two", r32(), NOW)          # no introduction: relies on the cache
    assert _inner(ro, nxt)[5] is None
    rec = ro.to_record()
    ref = rw.identity.public[:wire.AREF_SIZE]
    # 1. capability swapped on flash (rw2's capability under rw's key)
    swapped_cap = cbor.decode(cbor.encode(rec))
    for row in swapped_cap["authors"]:
        if row[0] == rw.identity.public:
            row[1] = rw2.capability
    m = Member.from_record(swapped_cap)
    _rejects(m, [("cached capability swapped", NoWriteCapability, nxt)])
    # 2. key swapped on flash (rw2's key in rw's entry): rw's reference is gone
    swapped_key = cbor.decode(cbor.encode(rec))
    for row in swapped_key["authors"]:
        if row[0] == rw.identity.public:
            row[0] = rw2.identity.public
    m = Member.from_record(swapped_key)
    assert ref not in m.authors
    _rejects(m, [("cached key swapped", AuthorUnknown, nxt)])
    # 3. cache missing (a record written before compact readings)
    missing = cbor.decode(cbor.encode(rec))
    del missing["authors"]
    m = Member.from_record(missing)
    _rejects(m, [("cached author missing", AuthorUnknown, nxt)])
    # the author's next introduction (new link) fills the cache again
    rw.reintroduce()
    assert m.open(_seal_rd(rw, b"three", r32(), NOW), NOW).body == b"three"
    # 4. an intact record: the cache is checked once on first use, then trusted
    m = Member.from_record(cbor.decode(cbor.encode(rec)))
    assert m.open(nxt, NOW).body == b"two"
    assert m.authors[ref][2] is True


def test_older_capability_replayed_does_not_replace_a_later_one():
    admin, rw, ro, _ = _topic()
    ro.open(_seal_rd(rw, b"one", r32(), NOW), NOW)          # never-expiring capability
    old = make_capability(admin.identity, rw.identity.public, 3, NOW + 10)
    sig = rw.identity.sign(wire.rd_signed_bytes(ro.topic, ro.epoch, rw.identity.public, 7, b"x"))
    ro.open(_rd(rw, [0, rw.identity.public[:4], 7, b"x", sig, [rw.identity.public, capability_on_wire(old)]]), NOW)
    assert ro.authors[rw.identity.public[:4]][1][3] == 0
    # the member's later readings still open after the old capability's expiry
    assert ro.open(_seal_rd(rw, b"later", r32(), NOW + 20), NOW + 20).body == b"later"


def test_batch_attacks():
    admin, rw, ro, rw2 = _topic()
    bodies = [b"t=%d" % i for i in range(4)]
    batch1 = _seal_rd_batch(rw, bodies, r32(), NOW)                  # seqs 1..4
    assert len(ro.open(batch1, NOW).publications) == 4
    pub = rw.identity.public
    ref = pub[:wire.AREF_SIZE]
    nxt = [b"t=%d" % i for i in range(4, 8)]
    sig2 = _batch_sig(rw, pub, 5, nxt)                          # rw's genuine signature, seqs 5..8
    cases = [
        ("replayed batch", Replayed, batch1),
        # a member re-seals rw's next batch with one of batch 1's readings in it
        ("reading replayed into another batch", BadSignature,
         _rd(rw2, [1, ref, 5, [bodies[1]] + nxt[1:], sig2, None])),
        ("batch signature over readings the reader never saw (one left out)", BadSignature,
         _rd(rw2, [1, ref, 5, nxt[:3], sig2, None])),
        ("batch signature over readings the reader never saw (one added)", BadSignature,
         _rd(rw2, [1, ref, 5, nxt + [b"extra"], sig2, None])),
        ("batch readings reordered", BadSignature, _rd(rw2, [1, ref, 5, [nxt[1], nxt[0]] + nxt[2:], sig2, None])),
        ("batch moved to other sequence numbers", BadSignature, _rd(rw2, [1, ref, 9, nxt, sig2, None])),
        ("batch signature of another author", BadSignature,
         _rd(rw2, [1, ref, 5, nxt, _batch_sig(rw2, pub, 5, nxt, rw2.identity), None])),
        ("missing batch signature", Malformed, _rd(rw2, [1, ref, 5, nxt, None, None])),
        ("batch over BATCH_MAX readings", Malformed,
         _rd(rw2, [1, ref, 5, [b"x"] * (wire.BATCH_MAX + 1), sig2, None])),
        ("empty batch", Malformed, _rd(rw2, [1, ref, 5, [], sig2, None])),
        ("batch overlapping accepted readings (nothing of it is taken)", Replayed,
         _rd(rw2, [1, ref, 3, bodies[2:] + nxt[:2], _batch_sig(rw, pub, 3, bodies[2:] + nxt[:2]), None])),
    ]
    _rejects(ro, cases)
    # the genuine batch still opens after all that
    ev = ro.open(_rd(rw, [1, ref, 5, nxt, sig2, None]), NOW)
    assert [p.seq for p in ev.publications] == [5, 6, 7, 8]


def test_write_only_member_cannot_use_compact_readings():
    admin = Admin(r32(), r32(), name="w")
    wo = member_from_url(invite_url(admin.invite(r32(), read=False, write=True)))
    raises(GroupUsageError, _seal_rd, wo, b"x", r32(), NOW)
    assert admin.open(wo.seal(b"x", r32(), NOW), NOW).body == b"x"   # group_pub still works
