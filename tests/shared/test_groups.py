# Runs on CPython and in the MicroPython VM: private groups end to end, and
# the attacks a member must reject with a typed error and no state change.
from rig import raises
from shared_protocol.wire import cbor, envelope
from shared_protocol.crypto import api
from shared_protocol.groups import wire
from shared_protocol.groups.admin import Admin
from shared_protocol.groups.errors import (BadSignature, CapabilityExpired, DecryptFailed, GroupUsageError,
                                           Malformed, MemberRevoked, NoReadCapability, NoWriteCapability,
                                           RemovedFromTopic, Replayed, StaleEpoch, TooLarge, UnknownEpoch,
                                           WrongTopic)
from shared_protocol.groups.invite import invite_url, member_from_url
from shared_protocol.groups.keys import Identity, capability_on_wire, make_capability, topic_id
from shared_protocol.rand import Rng

NOW = 1_700_000_000
_rng = Rng(2026)


def r32():
    return _rng.randbytes(32)


def _topic(name="garden"):
    admin = Admin(r32(), r32(), name=name)
    rw = member_from_url(invite_url(admin.invite(r32(), read=True, write=True)))
    ro = member_from_url(invite_url(admin.invite(r32(), read=True, write=False)))
    wo = member_from_url(invite_url(admin.invite(r32(), read=False, write=True)))
    return admin, rw, ro, wo


def _snapshot(m):
    return cbor.encode(m.to_record())


def _craft(sealer, author, seq, cap, body, sign_with=None, epoch=None, topic=None, sig_topic=None, raw_cap=False):
    """A publication sealed with ``sealer``'s epoch key, with chosen contents
    (what a malicious reader could build)."""
    topic = sealer.topic if topic is None else topic
    epoch = sealer.epoch if epoch is None else epoch
    signer = sign_with or sealer.identity
    sig = signer.sign(wire.pub_signed_bytes(sig_topic or topic, epoch, author, seq, body))
    inner = cbor.encode([author, seq, cap if raw_cap else capability_on_wire(cap), body, sig])
    nonce = r32()[:12]
    aad = wire.pub_header(topic, epoch, wire.MODE_EPOCH_KEY, nonce)
    ct = api.aead_encrypt(sealer.epoch_key(epoch).sym, nonce, inner, aad)
    return envelope.REGISTRY.encode("group_pub", topic, epoch, wire.MODE_EPOCH_KEY, nonce, ct)


def test_topic_id_is_first_16_bytes_of_sha256_of_public_key():
    admin = Admin(b"\x01" * 32, b"\x02" * 32)
    assert topic_id(admin.topic_public) == api.sha256(admin.topic_public)[:16]
    assert admin.topic == topic_id(admin.topic_public) and len(admin.topic) == 16


def test_round_trip_read_write_and_write_only():
    admin, rw, ro, wo = _topic()
    m = rw.seal(b"21.5C", r32())
    for reader in (admin, ro):
        p = reader.open(m, NOW)
        assert (p.body, p.author, p.seq) == (b"21.5C", rw.identity.public, 1)
    m2 = wo.seal(b"door open", r32())
    assert ro.open(m2, NOW).body == b"door open"
    assert ro.open(admin.seal(b"from admin", r32()), NOW).body == b"from admin"


def test_member_with_expired_capability_refuses_to_publish():
    admin = Admin(r32(), r32())
    m = member_from_url(invite_url(admin.invite(r32(), read=True, write=True, expiry=NOW + 60)))
    assert admin.open(m.seal(b"in time", r32(), NOW), NOW).body == b"in time"
    raises(GroupUsageError, m.seal, b"too late", r32(), NOW + 60)
    late = m.seal(b"clock-less board", r32())          # without now it seals...
    raises(CapabilityExpired, admin.open, late, NOW + 60)  # ...and readers refuse


def test_proxy_sees_no_plaintext_nor_author():
    admin, rw, ro, wo = _topic()
    body = b"SECRET-READING-42.0"
    for m in (rw.seal(body, r32()), wo.seal(body, r32())):
        assert body not in m and rw.identity.public not in m and wo.identity.public not in m
        msg = envelope.REGISTRY.decode(m)
        assert msg["topic"] == admin.topic and msg["epoch"] == 0


def test_write_only_member_cannot_read():
    admin, rw, ro, wo = _topic()
    before = _snapshot(wo)
    e = raises(NoReadCapability, wo.open, rw.seal(b"x", r32()), NOW)
    assert e.code == "group_no_read_capability"
    assert _snapshot(wo) == before
    raises(GroupUsageError, ro.seal, b"read-only cannot publish", r32())


def test_attacks_rejected_with_typed_error_and_no_state_change():
    admin, rw, ro, wo = _topic()
    other_admin, other_rw, _, _ = _topic("other")
    good = rw.seal(b"ok", r32())
    assert ro.open(good, NOW).seq == 1
    outsider = Identity(r32())
    expired_cap = make_capability(admin.identity, rw.identity.public, 3, NOW - 1)
    foreign_cap = make_capability(other_admin.identity, rw.identity.public, 3)
    bad = bytearray(rw.seal(b"tamper me", r32()))
    bad[-3] ^= 1
    hdr = envelope.REGISTRY.decode(rw.seal(b"aad", r32()))
    alt_nonce = bytearray(hdr["kfield"])
    alt_nonce[0] ^= 1
    wrong_mode = envelope.REGISTRY.encode("group_pub", hdr["topic"], 0, 1, r32(), hdr["sealed"])
    cases = [
        ("forged signature (author key, other signer)", BadSignature,
         _craft(ro, rw.identity.public, 50, rw.capability, b"forged", sign_with=outsider)),
        ("signature for another topic", BadSignature,
         _craft(rw, rw.identity.public, 51, rw.capability, b"moved", sig_topic=other_admin.topic)),
        ("replayed message", Replayed, good),
        ("tampered ciphertext", DecryptFailed, bytes(bad)),
        ("tampered AAD (nonce)", DecryptFailed,
         envelope.REGISTRY.encode("group_pub", hdr["topic"], 0, 0, bytes(alt_nonce), hdr["sealed"])),
        ("tampered AAD (mode)", DecryptFailed, wrong_mode),
        ("message for another topic", WrongTopic, other_rw.seal(b"elsewhere", r32())),
        ("publication without write capability", NoWriteCapability,
         _craft(ro, ro.identity.public, 1, None, b"no cap")),
        ("capability of another member", NoWriteCapability,
         _craft(ro, ro.identity.public, 1, rw.capability, b"stolen cap")),
        ("capability sent whole (five fields) instead of its wire form", NoWriteCapability,
         _craft(rw, rw.identity.public, 54, rw.capability, b"whole cap", raw_cap=True)),
        ("capability whose rights were raised on the wire", NoWriteCapability,
         _craft(ro, ro.identity.public, 2, [3] + make_capability(admin.identity, ro.identity.public, 1)[3:],
                b"raised", raw_cap=True)),
        ("capability signed by another admin", NoWriteCapability,
         _craft(rw, rw.identity.public, 52, foreign_cap, b"foreign cap")),
        ("expired write capability", CapabilityExpired,
         _craft(rw, rw.identity.public, 53, expired_cap, b"expired")),
        ("wrong epoch", UnknownEpoch,
         envelope.REGISTRY.encode("group_pub", hdr["topic"], 7, 0, hdr["kfield"], hdr["sealed"])),
        ("oversized input", TooLarge, b"\x00" * (wire.GROUP_MESSAGE_MAX + 1)),
        ("truncated message", cbor.DecodeError, good[:-5]),
        ("not a group message", Malformed, envelope.REGISTRY.encode("ping", 1)),
    ]
    for name, err, data in cases:
        before = _snapshot(ro)
        e = raises(err, ro.open, data, NOW)
        assert e.code, name
        assert _snapshot(ro) == before, "state changed: " + name
    assert len(cases) >= 12


def test_rekey_removes_member_and_others_switch():
    admin, rw, ro, wo = _topic()
    old = rw.seal(b"before", r32())
    rekey, = admin.remove(ro.identity.public, r32(), r32())
    assert ro.identity.public not in rekey
    for m in (rw, wo):
        ev = m.open(rekey, NOW)
        assert ev.epoch == 1 and m.epoch == 1 and ev.removed == [ro.identity.public]
    assert rw.can_read and not wo.can_read
    # the removed member gets no entry, and cannot read the new epoch
    before = _snapshot(ro)
    raises(RemovedFromTopic, ro.open, rekey, NOW)
    assert _snapshot(ro) == before
    new = rw.seal(b"after removal", r32())
    raises(UnknownEpoch, ro.open, new, NOW)
    assert admin.open(new, NOW).body == b"after removal"
    assert admin.open(wo.seal(b"wo after", r32()), NOW).body == b"wo after"
    # late messages of the old epoch still open for members
    p = admin.open(old, NOW)
    assert (p.epoch, p.body) == (0, b"before")


def test_removed_writer_is_refused_in_every_epoch():
    admin, rw, ro, wo = _topic()
    rekey, = admin.remove(wo.identity.public, r32(), r32())
    ro.open(rekey, NOW)
    # the removed write-only member still knows epoch 0's public key
    late = wo.seal(b"I am still here", r32())
    before = _snapshot(ro)
    raises(MemberRevoked, ro.open, late, NOW)
    assert _snapshot(ro) == before


def test_rekey_attacks():
    admin, rw, ro, wo = _topic()
    rekey, = admin.remove(ro.identity.public, r32(), r32())
    msg = envelope.REGISTRY.decode(rekey)
    forged = envelope.REGISTRY.encode("group_rekey", msg["topic"], msg["epoch"], msg["ephemeral"], msg["part"],
                                      msg["parts"], msg["entries"], rw.identity.sign(b"not the admin"))
    before = _snapshot(rw)
    raises(BadSignature, rw.open, forged, NOW)
    assert _snapshot(rw) == before
    rw.open(rekey, NOW)
    before = _snapshot(rw)
    raises(StaleEpoch, rw.open, rekey, NOW)     # replayed re-key
    assert _snapshot(rw) == before


def test_record_round_trip_keeps_replay_state():
    admin, rw, ro, wo = _topic()
    m = rw.seal(b"one", r32())
    ro.open(m, NOW)
    ro2 = type(ro).from_record(cbor.decode(cbor.encode(ro.to_record())))
    raises(Replayed, ro2.open, m, NOW)
    a2 = Admin.from_record(cbor.decode(cbor.encode(admin.to_record())))
    assert a2.topic == admin.topic and sorted(a2.members) == sorted(admin.members)
    rk, = a2.remove(rw.identity.public, r32(), r32())
    assert ro.open(rk, NOW).epoch == 1


def test_wire_field_bounds_are_the_key_sizes():
    # groups/wire.py writes keys.py's sizes out as const() so its field
    # specs are constant tuples (in flash when frozen): they must agree
    from shared_protocol.groups import keys
    def specs(t):   # the flat (name, kind, bound, ...) specs by name
        f = t[2]
        return dict((f[i], tuple(f[i:i + 3])) for i in range(0, len(f), 3))
    pub, rekey = specs(wire.PUB), specs(wire.REKEY)
    assert pub["topic"][2] == rekey["topic"][2] == keys.TOPIC_ID_SIZE
    assert pub["kfield"][2] == rekey["ephemeral"][2] == keys.KEY_SIZE
    assert rekey["sig"][2] == keys.SIG_SIZE
    for t in (wire.PUB, wire.REKEY, wire.RD, wire.RS):
        assert specs(t)["epoch"] == ("epoch", envelope.UINT, keys.EPOCH_MAX)
        assert envelope.field_index(t, "epoch") == (0 if t in (wire.RD, wire.RS) else 1)
