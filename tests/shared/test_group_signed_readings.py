# Runs on CPython and in the MicroPython VM: signed readings (group_rs,
# shared_protocol/groups/readings.py). Every shortcut of the form has its
# attack here, a typed error and no state change: no AEAD tag (the signature
# authenticates every byte), no nonce (the signature's R names it), author
# ids packed with a dictionary sent in the introduction, one signature per
# batch.
from rig import load_vectors, raises, unhex
from shared_protocol.wire import cbor, envelope
from shared_protocol.groups import readings, wire
from shared_protocol.groups.admin import Admin
from shared_protocol.groups.errors import (AuthorClash, AuthorUnknown, BadSignature, CapabilityExpired, GroupError,
                                           GroupUsageError, Malformed, MemberRevoked, NoWriteCapability, Replayed,
                                           UnknownEpoch)
from shared_protocol.groups.invite import invite_url, member_from_invite, member_from_url
from shared_protocol.groups.keys import Identity, capability_on_wire, make_capability
from shared_protocol.groups.member import Member
from shared_protocol.groups.readings import Batch
from shared_protocol.rand import Rng

NOW = 1_700_000_000
_rng = Rng(8311)
# a DMC op as a node writes it: its author id and two other authors in deps
A_ME = b"\x48" + b"\x11" * 8
A_1 = b"\x48" + b"\x22" * 8
A_2 = b"\x48" + b"\x33" * 8
OP = (b"\x88" + A_ME + b"\x19\x03\xe8\x19\x03\xe9\x84" + A_1 + b"\x19\x03\xe8" + A_2 + b"\x19\x03\xe8"
      + b"\x05dtemp\x1a\x69\x20\x95\xe0\xfb\x40\x37\x73\x33\x33\x33\x33\x33")


def r32():
    return _rng.randbytes(32)


def _topic(name="orchard"):
    admin = Admin(r32(), r32(), name=name)
    rw = member_from_url(invite_url(admin.invite(r32(), read=True, write=True)))
    ro = member_from_url(invite_url(admin.invite(r32(), read=True, write=False)))
    rw2 = member_from_url(invite_url(admin.invite(r32(), read=True, write=True)))
    return admin, rw, ro, rw2


def _snapshot(m):
    return cbor.encode(m.to_record()) + cbor.encode([m.intro_left])


def _reload(m):
    return Member.from_record(cbor.decode(cbor.encode(m.to_record())))


def _open_raw(m, data):
    """(signature, inner plaintext) of a group_rs: a member's view, for
    building attacks."""
    epoch, d = envelope.REGISTRY.decode(data).values
    plain = readings._stream(m.epoch_key(epoch).sym, readings._rs_nonce(d[:32]), d[32:])
    return bytes(d[:32]) + plain[:32], plain[32:]


def _rs(sealer, sig, inner, epoch=None):
    """A group_rs around a chosen signature and inner plaintext, encrypted
    with ``sealer``'s epoch key (what a member, who holds it, can build)."""
    epoch = sealer.epoch if epoch is None else epoch
    data = sig[:32] + readings._stream(sealer.epoch_key(epoch).sym, readings._rs_nonce(sig[:32]), sig[32:] + inner)
    return envelope.REGISTRY.encode("group_rs", epoch, data)


def _head(flags, aref, seq):
    return readings._rs_head(flags, bytes(aref), seq)


def _signed(sealer, signer, aref, seq, body, intro=None, topic=None, flags=wire.RD_SIGNED):
    """A signed reading with any signer, reference and introduction."""
    if intro is not None:
        flags |= wire.RS_INTRO
    inner = _head(flags, aref, seq) + (cbor.encode(intro) if intro is not None else b"") + body
    sig = signer.sign(wire.rs_signed_bytes(topic or sealer.topic, sealer.epoch, seq >> 24, inner, [body]))
    return _rs(sealer, sig, inner)


def _batch(sealer, signer, aref, seq, bodies, signed_bodies=None):
    """A batch whose signature covers ``signed_bodies`` (default: bodies)."""
    inner = _head(wire.RD_BATCH, aref, seq) + cbor.encode(bodies)
    signed_inner = _head(wire.RD_BATCH, aref, seq) + cbor.encode(signed_bodies or bodies)
    sig = signer.sign(wire.rs_signed_bytes(sealer.topic, sealer.epoch, seq >> 24, signed_inner, signed_bodies or bodies))
    return _rs(sealer, sig, inner)


def _rejects(reader, cases):
    for name, err, data in cases:
        before = _snapshot(reader)
        e = raises(err, reader.open, data, NOW)
        assert e.code, name
        assert _snapshot(reader) == before, "state changed: " + name


def test_round_trip_introduction_once_and_deterministic_bytes():
    admin, rw, ro, _ = _topic()
    saved = _reload(rw)
    first = rw.seal_reading(b"21.5C", r32(), NOW)
    second = rw.seal_reading(b"21.6C", r32(), NOW)
    assert envelope.REGISTRY.decode(first).name == "group_rs"
    p = ro.open(first, NOW)
    assert (p.body, p.seq, p.author) == (b"21.5C", 1, rw.identity.public)
    assert ro.open(second, NOW).body == b"21.6C"
    # key (32) + capability (rights, expiry, 64-byte signature) only in the first
    assert len(first) - len(second) > 32 + 64
    # no randomness in the bytes: the same state seals the same message
    assert saved.seal_reading(b"21.5C", r32(), NOW) == first
    # a signed reading: epoch, R, S, head and body; nothing else
    assert len(second) == 6 + 64 + wire.RS_HEAD_MIN + len(b"21.6C")
    # the admin needs no capability, but its generation comes with its
    # introduction: a reading without one is refused until it arrives
    admin.intro_left = 5
    bare = admin.seal_reading(b"from admin", r32(), NOW)
    _rejects(ro, [("admin's generation never introduced", AuthorUnknown, bare)])
    admin.intro_left = 0
    assert ro.open(admin.seal_reading(b"intro", r32(), NOW), NOW).body == b"intro"
    assert ro.open(bare, NOW).body == b"from admin"
    # a member opens its own readings without its introduction
    rw.intro_left = 5
    assert rw.open(rw.seal_reading(b"own", r32(), NOW), NOW).body == b"own"


def test_generation_travels_with_the_introduction_only():
    _, rw, ro, _ = _topic()
    rw.new_generation(b"\x0a\x0b\x0c")
    first = rw.seal_reading(b"1", r32(), NOW)
    second = rw.seal_reading(b"2", r32(), NOW)
    # the introduction carries the 3-byte generation; the next reading its low byte
    _, inner1 = _open_raw(rw, first)
    _, inner2 = _open_raw(rw, second)
    assert inner1[0] & wire.RS_INTRO and inner1[5:8] == b"\x0a\x0b\x0c"
    assert not inner2[0] & wire.RS_INTRO and inner2[5] == 0x0c and len(inner2) == wire.RS_HEAD_MIN + 1
    # a reader that missed the introduction cannot name the generation: refused
    _rejects(ro, [("no introduction of the generation", AuthorUnknown, second)])
    gen = 0x0a0b0c << 24
    assert ro.open(first, NOW).seq == gen + 1 and ro.open(second, NOW).seq == gen + 2
    ref = rw.identity.public[:4]
    # a forged head naming another counter under the generation held: the
    # author did not sign that sequence number
    _rejects(ro, [("counter changed under the generation held", BadSignature,
                   _rs(rw, _open_raw(rw, second)[0], _head(wire.RD_SIGNED, ref, gen + 9) + b"2"))])
    # the author starts a new generation: its next message introduces it
    rw.new_generation(b"\x01\x02\x03")
    new_first = rw.seal_reading(b"3", r32(), NOW)
    new_second = rw.seal_reading(b"4", r32(), NOW)
    _, inner3 = _open_raw(rw, new_first)
    assert inner3[0] & wire.RS_INTRO and inner3[5:8] == b"\x01\x02\x03"
    _rejects(ro, [("reading of a generation whose introduction was missed", AuthorUnknown, new_second)])
    assert ro.open(new_first, NOW).seq == (0x010203 << 24) + 1
    assert ro.open(new_second, NOW).seq == (0x010203 << 24) + 2
    # both generations stay known (two devices joined with one key): the
    # old one's readings still open, each under its own sequence numbers
    old = _signed(rw, rw.identity, ref, gen + 3, b"old device")
    assert ro.open(old, NOW).seq == gen + 3
    # a new generation with the low byte of one held, its introduction
    # missed: the reader takes the held one, which the author did not sign
    rw.new_generation(b"\x09\x09\x0c")
    twin_first = rw.seal_reading(b"5", r32(), NOW)
    twin_second = rw.seal_reading(b"6", r32(), NOW)
    twin_third = rw.seal_reading(b"7", r32(), NOW)
    twin_fourth = rw.seal_reading(b"8", r32(), NOW)
    _rejects(ro, [("same low byte, counter seen in the held generation", Replayed, twin_second),
                  ("same low byte, introduction missed", BadSignature, twin_fourth)])
    assert ro.open(twin_first, NOW).seq == (0x09090c << 24) + 1
    assert ro.open(twin_third, NOW).seq == (0x09090c << 24) + 3
    # the generations a reader learnt survive a restart
    again = _reload(ro)
    assert again.gens == ro.gens
    assert again.open(twin_fourth, NOW).seq == (0x09090c << 24) + 4
    assert again.open(rw.seal_reading(b"9", r32(), NOW), NOW).seq == (0x09090c << 24) + 5


def test_batch_round_trip_one_signature():
    _, rw, ro, _ = _topic()
    bodies = [OP[:-1] + bytes((i,)) for i in range(wire.BATCH_MAX)]
    rw.set_dictionary([A_ME, A_1, A_2])
    data = rw.seal_batch(bodies, r32(), NOW)
    ev = ro.open(data, NOW)
    assert isinstance(ev, Batch)
    assert [(p.seq, p.body) for p in ev.publications] == [(i + 1, bodies[i]) for i in range(wire.BATCH_MAX)]
    one = rw.seal_reading(OP, r32(), NOW)
    assert ro.open(one, NOW).seq == wire.BATCH_MAX + 1
    # 8 packed readings under one signature: less than half of 8 signed ones
    batch2 = rw.seal_batch(bodies, r32(), NOW)
    assert len(ro.open(batch2, NOW).publications) == wire.BATCH_MAX
    assert 2 * len(batch2) < wire.BATCH_MAX * len(one)
    raises(GroupUsageError, rw.seal_batch, [b"x"] * (wire.BATCH_MAX + 1), r32(), NOW)
    raises(GroupUsageError, rw.seal_batch, [], r32(), NOW)


def test_proxy_sees_neither_topic_id_author_nor_body():
    admin, rw, _, _ = _topic()
    rw.set_dictionary([A_ME, A_1, A_2])
    for m in (rw.seal_reading(OP, r32(), NOW), rw.seal_reading(OP, r32(), NOW),
              rw.seal_batch([OP, OP], r32(), NOW)):
        for secret in (OP[-9:], A_ME, A_1, rw.identity.public, rw.identity.public[:wire.AREF_SIZE],
                       rw.capability[4], rw.topic, b"temp"):
            assert bytes(secret) not in m
        assert envelope.REGISTRY.decode(m).name == "group_rs"


def test_dictionary_packs_author_ids_and_travels_in_the_introduction():
    _, rw, ro, _ = _topic()
    plain = rw.seal_reading(OP, r32(), NOW)            # introduced, no dictionary
    ro.open(plain, NOW)
    unpacked = rw.seal_reading(OP, r32(), NOW)
    rw.set_dictionary([A_ME, A_1, A_2, b"ab"])          # too short an entry: dropped
    assert rw.dictionary == [A_ME, A_1, A_2] and rw.intro_left == 0
    with_intro = rw.seal_reading(OP, r32(), NOW)
    packed = rw.seal_reading(OP, r32(), NOW)
    assert len(packed) <= len(unpacked) - 18          # three 9-byte ids become 1-byte indexes
    assert ro.open(with_intro, NOW).body == OP
    assert ro.open(packed, NOW).body == OP
    # the dictionary survives the reader's record
    again = rw.seal_reading(OP, r32(), NOW)
    assert _reload(ro).open(again, NOW).body == OP
    # the same dictionary again: no new introduction
    rw.set_dictionary([A_ME, A_1, A_2])
    assert rw.intro_left > 0
    # a body the dictionary does not shorten, or that is not CBOR, goes as it is
    assert readings.pack(b"plain text", [A_ME]) == b"plain text"
    assert readings.pack(b"\xe0" + A_ME, [A_ME]) == b"\xe0" + A_ME     # holds a reference byte itself
    d = [A_ME, A_1, A_2, b"\x64temp"]
    p = readings.pack(OP, d)
    # the ids and the name one byte each; clock and dep sequence numbers near the op's own too
    assert len(p) == len(OP) - 3 * 8 - 4 - 3 * 2 and readings.unpack(p, d) == OP
    # an entry is replaced only as a whole string item, never inside another
    inside = b"\x4a\x00" + A_ME
    assert readings.pack(inside, [A_ME]) == inside
    # a batch mixing a packable op and a body that is not CBOR goes unpacked
    rw.set_dictionary([A_ME, A_1, A_2])
    mixed = rw.seal_batch([OP, b"\xff not cbor"], r32(), NOW)
    assert [x.body for x in ro.open(mixed, NOW).publications] == [OP, b"\xff not cbor"]
    both = rw.seal_batch([OP, b"\x43abc"], r32(), NOW)
    assert len(both) < len(mixed) - 20
    assert [x.body for x in ro.open(both, NOW).publications] == [OP, b"\x43abc"]


def test_numbers_near_the_first_large_one_pack_to_one_byte():
    _, rw, ro, _ = _topic()
    # seq 1000, clock 1001, deps at 1000: one byte each after the anchor
    p = readings.pack(OP, [])
    assert len(p) == len(OP) - 3 * 2 and readings.unpack(p, []) == OP
    assert p.count(bytes((readings._NEAR - readings.NEAR_LO,))) == 2 and b"\x19\x03\xe8" in p
    # every offset in range and none outside; small numbers before the anchor stay
    for d in range(readings.NEAR_LO - 2, readings.NEAR_HI + 3):
        body = cbor.encode([5, 70000, 70000 + d, "x"])
        q = readings.pack(body, [])
        assert readings.unpack(q, []) == body
        assert (len(q) < len(body)) == (readings.NEAR_LO <= d <= readings.NEAR_HI), d
    # a number before any anchor, or a number not in its shortest form, goes as it is
    assert readings.pack(cbor.encode([300, 20]), []) == cbor.encode([300, 20])
    long_form = b"\x83\x19\x03\xe8\x1a\x00\x00\x03\xe9\x19\x03\xe9"
    q = readings.pack(long_form, [])
    assert readings.unpack(q, []) == long_form and q[4:9] == b"\x1a\x00\x00\x03\xe9"
    # a body holding such a byte itself is not packed
    own = b"\x82\x19\x03\xe8" + bytes((readings._NEAR,))
    assert readings.pack(own, []) == own
    # sealed and opened; the reader gets exactly the op the author signed
    ro.open(rw.seal_reading(b"\x01", r32(), NOW), NOW)      # introduced
    sealed = rw.seal_reading(OP, r32(), NOW)
    # attacks: a number reference before any anchor is malformed; a
    # reference changed to another offset, or an anchor changed, fails the
    # author's signature; nothing changes either way
    sig, inner = _open_raw(rw, sealed)
    near = inner.index(bytes((readings._NEAR - readings.NEAR_LO + 1,)))    # the clock, anchor + 1
    anchor = inner.index(b"\x19\x03\xe8")
    seq = rw.gen << 24 | 99
    first_ref = _head(wire.RD_SIGNED | wire.RS_PACKED, rw.identity.public[:4], seq) + b"\x82" + bytes((readings._NEAR,)) \
        + b"\x19\x03\xe8"
    _rejects(ro, [
        ("number reference before the anchor", Malformed, _rs(rw, sig, first_ref)),
        ("reference to another offset", BadSignature, _rs(rw, sig, inner[:near] + bytes((inner[near] + 1,))
                                                          + inner[near + 1:])),
        ("anchor changed", BadSignature, _rs(rw, sig, inner[:anchor] + b"\x19\x03\xe9" + inner[anchor + 3:])),
    ])
    assert ro.open(sealed, NOW).body == OP
    _rejects(ro, [("replayed", Replayed, sealed)])


def test_reader_that_missed_a_changed_dictionary_refuses_until_the_next_introduction():
    _, rw, ro, _ = _topic()
    rw.set_dictionary([A_ME, A_1])
    ro.open(rw.seal_reading(OP, r32(), NOW), NOW)
    late = _reload(ro)                                  # a reader that will miss the next introduction
    rw.set_dictionary([A_1, A_ME])                      # same size, other order
    ro.open(rw.seal_reading(OP, r32(), NOW), NOW)
    nxt = rw.seal_reading(OP, r32(), NOW)
    assert ro.open(nxt, NOW).body == OP
    rw.set_dictionary([A_1, A_ME, A_2])                 # a new author: one more entry
    ro.open(rw.seal_reading(OP, r32(), NOW), NOW)
    nxt2 = rw.seal_reading(OP, r32(), NOW)
    assert ro.open(nxt2, NOW).body == OP
    _rejects(late, [
        # unpacked with the old dictionary: another body than the one signed
        ("reading packed with a reordered dictionary the reader does not hold", BadSignature, nxt),
        ("reading packed with an entry the reader does not hold", AuthorUnknown, nxt2),
    ])
    rw.reintroduce()
    assert late.open(rw.seal_reading(OP, r32(), NOW), NOW).body == OP


def test_own_readings_come_back_after_a_dictionary_change():
    # a node opens its own readings when the proxy delivers them, in order,
    # while its dictionary may have moved on (a new author in the topic)
    _, rw, _, _ = _topic()
    rw.set_dictionary([A_ME, A_1])
    sent = [rw.seal_reading(OP, r32(), NOW), rw.seal_reading(OP, r32(), NOW)]
    rw.set_dictionary([A_2, A_ME, A_1])
    sent += [rw.seal_reading(OP, r32(), NOW), rw.seal_reading(OP, r32(), NOW)]
    assert [rw.open(m, NOW).body for m in sent] == [OP] * 4


def test_older_introduction_does_not_replace_a_later_dictionary():
    _, rw, ro, _ = _topic()
    rw.set_dictionary([A_ME])
    old = rw.seal_reading(OP, r32(), NOW)               # seq 1, dictionary [A_ME]
    rw.set_dictionary([A_1, A_ME])
    new = rw.seal_reading(OP, r32(), NOW)               # seq 2, dictionary [A_1, A_ME]
    ro.open(new, NOW)
    ro.open(old, NOW)                                   # late, but inside the replay window
    assert ro.open(rw.seal_reading(OP, r32(), NOW), NOW).body == OP


def test_signed_reading_attacks():
    admin, rw, ro, rw2 = _topic()
    other_admin, other_rw, _, _ = _topic("other")
    good = rw.seal_reading(b"ok", r32(), NOW)
    assert ro.open(good, NOW).seq == 1            # ro now knows rw
    rw_pub, rw2_pub = rw.identity.public, rw2.identity.public
    outsider = Identity(r32())
    body_flip = bytearray(rw.seal_reading(b"tamper me", r32(), NOW))
    body_flip[-1] ^= 1
    s_flip = bytearray(rw.seal_reading(b"tamper S", r32(), NOW))
    s_flip[7 + 40] ^= 1
    r_flip = bytearray(rw.seal_reading(b"tamper R", r32(), NOW))
    r_flip[10] ^= 1
    epoch, data = envelope.REGISTRY.decode(rw.seal_reading(b"epoch", r32(), NOW)).values
    expired_cap = make_capability(admin.identity, rw2_pub, 3, NOW - 1)
    foreign_cap = make_capability(other_admin.identity, rw2_pub, 3)
    cap2 = capability_on_wire(rw2.capability)
    cases = [
        ("forged signature (known author, other signer)", BadSignature, _signed(ro, outsider, rw_pub, 50, b"forged")),
        ("signature made for another topic", BadSignature,
         _signed(rw, rw.identity, rw_pub, 51, b"moved", topic=other_admin.topic)),
        ("replayed reading", Replayed, good),
        ("tampered body (no AEAD tag: the signature catches it)", BadSignature, bytes(body_flip)),
        ("tampered signature half S (encrypted)", BadSignature, bytes(s_flip)),
        # R names the nonce: another R decrypts to noise, refused one way or another
        ("tampered signature half R (clear)", GroupError, bytes(r_flip)),
        ("wrong epoch number", UnknownEpoch, envelope.REGISTRY.encode("group_rs", 7, data)),
        ("author never introduced (no key, no capability)", AuthorUnknown,
         _signed(rw2, rw2.identity, rw2_pub, 1, b"who am I")),
        ("introduction without a capability", NoWriteCapability,
         _signed(rw2, rw2.identity, rw2_pub, 1, b"x", intro=[rw2_pub, None, []])),
        ("introduction with another member's capability", NoWriteCapability,
         _signed(rw2, rw2.identity, rw2_pub, 1, b"x", intro=[rw2_pub, capability_on_wire(rw.capability), []])),
        ("introduction with a capability from another admin", NoWriteCapability,
         _signed(rw2, rw2.identity, rw2_pub, 1, b"x", intro=[rw2_pub, capability_on_wire(foreign_cap), []])),
        ("introduction with an expired capability", CapabilityExpired,
         _signed(rw2, rw2.identity, rw2_pub, 1, b"x", intro=[rw2_pub, capability_on_wire(expired_cap), []])),
        ("introduction whose key is not the reference's", Malformed,
         _signed(rw2, rw2.identity, rw_pub, 1, b"x", intro=[rw2_pub, cap2, []])),
        ("introduction with a malformed dictionary", Malformed,
         _signed(rw2, rw2.identity, rw2_pub, 1, b"x", intro=[rw2_pub, cap2, [b"x"]])),
        ("introduction signed by someone else", BadSignature,
         _signed(rw2, outsider, rw2_pub, 1, b"x", intro=[rw2_pub, cap2, []])),
        ("outsider introducing itself with a stolen capability", NoWriteCapability,
         _signed(rw2, outsider, outsider.public, 1, b"x", intro=[outsider.public, cap2, []])),
        ("reading without a signature (too short)", Malformed,
         envelope.REGISTRY.encode("group_rs", epoch, bytes(data[:32 + 16]))),
        ("unknown reading kind", Malformed, _signed(rw, rw.identity, rw_pub, 61, b"x", flags=9)),
        ("packed body refers to an entry of no dictionary", AuthorUnknown,
         _signed(rw, rw.identity, rw_pub, 63, b"\x82\xe0\x01", flags=wire.RS_PACKED)),
        ("packed body malformed (truncated string)", Malformed,
         _signed(rw, rw.identity, rw_pub, 64, b"\x82\x45ab", flags=wire.RS_PACKED)),
        ("packed body malformed (indefinite length)", Malformed,
         _signed(rw, rw.identity, rw_pub, 65, b"\x5f", flags=wire.RS_PACKED)),
        ("sequence number 0", Malformed, _signed(rw, rw.identity, rw_pub, 0, b"x")),
        ("counter longer than its shortest form", Malformed,
         _rs(rw, bytes(64), bytes((0x10,)) + rw_pub[:4] + b"\x00\x00\x00\x00\x05" + b"x")),
        ("counter length 4", Malformed, _rs(rw, bytes(64), bytes((0x30,)) + rw_pub[:4] + bytes(7) + b"x")),
    ]
    _rejects(ro, cases)
    # the reader's state is intact: rw's next reading opens
    assert ro.open(rw.seal_reading(b"still fine", r32(), NOW), NOW).body == b"still fine"


def test_author_reference_clash_keeps_the_first_key():
    admin, rw, ro, _ = _topic()
    ro.open(rw.seal_reading(b"first", r32(), NOW), NOW)
    twin = Identity(r32())
    ref = rw.identity.public[:wire.AREF_SIZE]
    twin_key = ref + twin.public[wire.AREF_SIZE:]       # as a clash would be (it cannot sign: refused first)
    cap = make_capability(admin.identity, twin_key, 3)
    data = _signed(rw, twin, ref, 1, b"twin", intro=[twin_key, capability_on_wire(cap), []])
    _rejects(ro, [("a second key under a taken reference", BadSignature, data)])
    assert ro.authors[ref][0] == rw.identity.public
    # a real second key under the reference, signing with its own key, is refused by the cache
    ro.authors[twin.public[:wire.AREF_SIZE]] = [b"\x01" * 32, None, True]
    cap = make_capability(admin.identity, twin.public, 3)
    data = _signed(rw, twin, twin.public, 1, b"twin", intro=[twin.public, capability_on_wire(cap), []])
    _rejects(ro, [("a key whose reference names another key", AuthorClash, data)])


def test_removed_member_refused_even_when_introduced():
    admin, rw, ro, rw2 = _topic()
    ro.open(rw2.seal_reading(b"before", r32(), NOW), NOW)
    ro.open(admin.remove(rw2.identity.public, r32(), r32())[0], NOW)
    late = rw2.seal_reading(b"I am still here", r32(), NOW)   # old epoch, cached author
    rw2.reintroduce()
    late_intro = rw2.seal_reading(b"and here", r32(), NOW)
    _rejects(ro, [("removed author, cached introduction", MemberRevoked, late),
                  ("removed author introducing itself again", MemberRevoked, late_intro)])


def test_capability_abuse_through_the_record():
    admin, rw, ro, rw2 = _topic()
    ro.open(rw.seal_reading(b"one", r32(), NOW), NOW)
    ro.open(rw2.seal_reading(b"one", r32(), NOW), NOW)
    nxt = rw.seal_reading(b"two", r32(), NOW)
    rec = cbor.decode(cbor.encode(ro.to_record()))
    for row in rec["authors"]:
        if row[0] == rw.identity.public:
            row[1] = rw2.capability
    _rejects(Member.from_record(rec), [("cached capability swapped", NoWriteCapability, nxt)])
    assert _reload(ro).open(nxt, NOW).body == b"two"


def test_batch_attacks():
    admin, rw, ro, rw2 = _topic()
    bodies = [b"t=%d" % i for i in range(4)]
    batch1 = rw.seal_batch(bodies, r32(), NOW)                  # seqs 1..4
    assert len(ro.open(batch1, NOW).publications) == 4
    pub = rw.identity.public
    nxt = [b"t=%d" % i for i in range(4, 8)]
    genuine = rw.seal_batch(nxt, r32(), NOW)                    # seqs 5..8, not yet delivered
    sig, inner = _open_raw(rw2, genuine)
    head = inner[:wire.RS_HEAD_MIN]

    def resealed(new_bodies, new_head=head, new_sig=sig):
        # a member re-seals rw's genuine signature around other readings
        return _rs(rw2, new_sig, new_head + cbor.encode(new_bodies))

    cases = [
        ("replayed batch", Replayed, batch1),
        ("reading replayed into another batch", BadSignature, resealed([bodies[1]] + nxt[1:])),
        ("batch signature over readings the reader never saw (one left out)", BadSignature, resealed(nxt[:3])),
        ("batch signature over readings the reader never saw (one added)", BadSignature, resealed(nxt + [b"extra"])),
        ("batch readings reordered", BadSignature, resealed([nxt[1], nxt[0]] + nxt[2:])),
        ("batch moved to other sequence numbers", BadSignature, resealed(nxt, _head(wire.RD_BATCH, pub, 9))),
        ("batch signed by another member", BadSignature, _batch(rw2, rw2.identity, pub, 5, nxt)),
        ("missing batch signature (zeros)", BadSignature, resealed(nxt, new_sig=bytes(64))),
        ("missing batch signature (none at all)", Malformed,
         envelope.REGISTRY.encode("group_rs", rw.epoch, bytes(head))),
        ("batch over BATCH_MAX readings", Malformed, _batch(rw2, rw.identity, pub, 5, [b"x"] * (wire.BATCH_MAX + 1))),
        ("empty batch", Malformed, _batch(rw2, rw.identity, pub, 5, [])),
        ("batch overlapping accepted readings (nothing of it is taken)", Replayed,
         _batch(rw2, rw.identity, pub, 3, bodies[2:] + nxt[:2])),
    ]
    _rejects(ro, cases)
    ev = ro.open(genuine, NOW)
    assert [p.seq for p in ev.publications] == [5, 6, 7, 8]


def test_write_only_member_cannot_use_signed_readings():
    admin = Admin(r32(), r32(), name="w")
    wo = member_from_url(invite_url(admin.invite(r32(), read=False, write=True)))
    raises(GroupUsageError, wo.seal_reading, b"x", r32(), NOW)
    assert admin.open(wo.seal(b"x", r32(), NOW), NOW).body == b"x"


def test_vectors_seal_exactly_and_open():
    v = load_vectors("group_rs.json")
    admin = Admin(unhex(v["topic_seed"]), unhex(v["epoch_secret"]), 0, "vec")
    w = member_from_invite(admin.invite(unhex(v["member_seed"]), True, True))
    w.new_generation(unhex(v["generation"]))
    w.set_dictionary([unhex(x) for x in v["dictionary"]])
    reader = member_from_invite(admin.invite(bytes(32), True, False))
    gen = w.gen << 24
    seq = 1
    for m in v["messages"]:
        bodies = [unhex(x) for x in m["bodies"]]
        data = w.seal_batch(bodies, bytes(32), 1) if m["batch"] else w.seal_reading(bodies[0], bytes(32), 1)
        assert data == unhex(m["hex"]), m["what"]
        ev = reader.open(unhex(m["hex"]), 1)
        got = [(p.seq, p.body) for p in ev.publications] if m["batch"] else [(ev.seq, ev.body)]
        assert got == [(gen + seq + i, bodies[i]) for i in range(len(bodies))], m["what"]
        seq += len(bodies)
