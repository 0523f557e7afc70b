# Runs on CPython and in the MicroPython VM: re-keys that fit the proxy
# (parts), re-keys applied in order only (a member that missed one catches
# up from the admin's kept chain), and sequence generations (a member key
# joined twice, or on two devices, never reuses a sequence number).
from rig import raises
from shared_protocol.wire import cbor, envelope
from shared_protocol.session import messages as session_wire
from shared_protocol.groups import wire
from shared_protocol.groups.admin import KEPT_REKEYS_MAX, Admin
from shared_protocol.groups.errors import (FutureEpoch, MemberRevoked, OtherRekeyPart, RekeyGap, RemovedFromTopic,
                                           Replayed, StaleEpoch, UnknownEpoch)
from shared_protocol.groups.invite import invite_url, member_from_url
from shared_protocol.groups.member import COUNTER_BITS, COUNTER_MAX, GENS_PER_AUTHOR_MAX, KEY_SIZE, Member
from shared_protocol.rand import Rng

NOW = 1_700_000_000
_rng = Rng(1313)


def r32():
    return _rng.randbytes(32)


def _snapshot(m):
    return cbor.encode(m.to_record())


def _join(url):
    """What a host's `topic join` and a board's first boot do."""
    m = member_from_url(url)
    m.new_generation(_rng.randbytes(3))
    return m


def test_rekey_part_limit_is_the_proxy_payload_limit():
    assert wire.REKEY_PART_MAX == session_wire.PAYLOAD_MAX


def test_rekey_of_a_large_topic_is_split_into_parts_that_fit_the_proxy():
    admin = Admin(r32(), r32(), name="field")
    urls = [invite_url(admin.invite(r32(), read=True, write=(i % 3 == 0))) for i in range(18)]
    members = [member_from_url(u) for u in urls[:4]]   # four of them check every part
    gone = members[0]
    parts = admin.remove(gone.identity.public, r32(), r32())
    assert len(parts) >= 3, len(parts)
    for p in parts:
        assert len(p) <= session_wire.PAYLOAD_MAX, len(p)
        msg = envelope.REGISTRY.decode(p)
        assert msg["parts"] == len(parts)
    for m in members[1:]:
        applied = 0
        for p in parts:
            before = _snapshot(m)
            try:
                ev = m.open(p, NOW)
            except (OtherRekeyPart, StaleEpoch):
                assert _snapshot(m) == before
                continue
            applied += 1
            assert ev.epoch == 1 and ev.removed == [gone.identity.public]
        assert applied == 1 and m.epoch == 1
    # the removed member learns it only once it has seen every part
    for p in parts[:-1]:
        raises(OtherRekeyPart, gone.open, p, NOW)
    raises(RemovedFromTopic, gone.open, parts[-1], NOW)
    assert gone.epoch == 0


def test_renumbered_or_resigned_parts_are_refused():
    admin = Admin(r32(), r32())
    ms = [member_from_url(invite_url(admin.invite(r32()))) for _ in range(16)]
    parts = admin.remove(ms[0].identity.public, r32(), r32())
    assert len(parts) >= 2
    msg = envelope.REGISTRY.decode(parts[1])
    moved = envelope.REGISTRY.encode("group_rekey", msg["topic"], msg["epoch"], msg["ephemeral"], 0,
                                     msg["parts"], msg["entries"], msg["sig"])
    before = _snapshot(ms[1])
    e = raises(Exception, ms[1].open, moved, NOW)
    assert e.code == "group_bad_signature"
    assert _snapshot(ms[1]) == before


def test_rekeys_apply_in_order_and_a_member_catches_up_from_the_chain():
    admin = Admin(r32(), r32(), name="g")
    a, b, c = (_join(invite_url(admin.invite(r32(), read=True, write=True))) for _ in range(3))
    rk1 = admin.remove(a.identity.public, r32(), r32())
    late_a = a.seal(b"a after removal, epoch 0", r32())
    rk2 = admin.remove(b.identity.public, r32(), r32())
    assert [e for e, _ in admin.rekeys_due(NOW, 86400)] == [1, 2]
    # c missed re-key 1 (the proxy's history lost it): re-key 2 must wait
    before = _snapshot(c)
    e = raises(RekeyGap, c.open, rk2[0], NOW)
    assert e.may_clear and _snapshot(c) == before
    new = admin.seal(b"epoch 2 reading", r32())
    e = raises(FutureEpoch, c.open, new, NOW)
    assert e.may_clear and e.code == "group_unknown_epoch"
    # the admin publishes its kept chain again, oldest first: c catches up
    for epoch, part in admin.rekeys_due(NOW, 86400):
        c.open(part, NOW)
    assert c.epoch == 2 and c.open(new, NOW).body == b"epoch 2 reading"
    # and refuses the author removed by the re-key it had missed
    raises(MemberRevoked, c.open, late_a, NOW)
    # an epoch dropped from the kept ones never clears
    e = raises(UnknownEpoch, b.open, new, NOW)
    assert not e.may_clear or b.epoch < 2


def test_rekey_outbox_marks_published_and_resends_the_chain():
    admin = Admin(r32(), r32())
    ms = [admin.invite(r32()) for _ in range(KEPT_REKEYS_MAX + 3)]
    keys = sorted(admin.members)
    for k in keys[:KEPT_REKEYS_MAX + 2]:
        admin.remove(k, r32(), r32())
    assert len(admin.rekeys) == KEPT_REKEYS_MAX
    due = admin.rekeys_due(NOW, 100)
    epochs = [e for e, _ in due]
    assert epochs == sorted(epochs) and sorted(set(epochs)) == list(range(3, KEPT_REKEYS_MAX + 3))
    admin.rekeys_published(set(e for e, _ in due), NOW)
    assert admin.rekeys_due(NOW + 99, 100) == []
    assert admin.rekeys_due(NOW + 100, 100) == due   # the chain again
    admin.resend_rekeys()
    assert admin.rekeys_due(NOW, 100) == due
    # the outbox survives a save
    a2 = Admin.from_record(cbor.decode(cbor.encode(admin.to_record())))
    d1, d2 = a2.rekeys_due(NOW, 100), admin.rekeys_due(NOW, 100)
    assert [(e, bytes(p)) for e, p in d1] == [(e, bytes(p)) for e, p in d2], (d1[:1], d2[:1])
    assert len(ms) == KEPT_REKEYS_MAX + 3


def test_a_member_key_joined_twice_or_on_two_devices_never_reuses_a_sequence():
    admin = Admin(r32(), r32())
    url = invite_url(admin.invite(r32(), read=True, write=True))
    first = _join(url)
    m1 = first.seal(b"first join 1", r32())
    m2 = first.seal(b"first join 2", r32())
    second = _join(url)          # the same invite again: same key, a new generation
    device2 = _join(url)         # and on another device
    assert len(set([first.gen, second.gen, device2.gen])) == 3
    out = [admin.open(m, NOW).body for m in (m1, second.seal(b"rejoined 1", r32()), m2,
                                             device2.seal(b"device 2", r32()), first.seal(b"first 3", r32()))]
    assert out == [b"first join 1", b"rejoined 1", b"first join 2", b"device 2", b"first 3"]
    raises(Replayed, admin.open, m2, NOW)    # replays are still refused per generation


def test_generation_rolls_over_when_its_counter_is_used_up():
    admin = Admin(r32(), r32())
    m = _join(invite_url(admin.invite(r32(), read=True, write=True)))
    m.next_seq = COUNTER_MAX
    last = admin.open(m.seal(b"last of gen", r32()), NOW)
    g = m.gen
    nxt = admin.open(m.seal(b"first of next gen", r32()), NOW)
    assert last.seq >> COUNTER_BITS == g and nxt.seq >> COUNTER_BITS == m.gen != g
    assert nxt.seq & COUNTER_MAX == 1


def test_an_author_keeps_a_bounded_number_of_generation_windows():
    admin = Admin(r32(), r32())
    url = invite_url(admin.invite(r32(), read=True, write=True))
    devices = [_join(url) for _ in range(GENS_PER_AUTHOR_MAX + 2)]
    for d in devices:
        assert admin.open(d.seal(b"x", r32()), NOW).body == b"x"
    author = devices[0].identity.public
    assert len([k for k in admin._windows if k[:KEY_SIZE] == author]) == GENS_PER_AUTHOR_MAX
    # the most recent generations keep their replay protection
    again = devices[-1].seal(b"y", r32())
    admin.open(again, NOW)
    raises(Replayed, admin.open, again, NOW)


def test_records_keep_generation_and_legacy_records_load():
    admin = Admin(r32(), r32())
    m = _join(invite_url(admin.invite(r32(), read=True, write=True)))
    m.seal(b"x", r32())
    m2 = Member.from_record(cbor.decode(cbor.encode(m.to_record())))
    assert (m2.gen, m2.next_seq) == (m.gen, m.next_seq)
    rec = m.to_record()
    del rec["gen"]
    del rec["wclock"]
    rec["windows"] = [[b"\x01" * 32, 3, 1]]
    old = Member.from_record(rec)
    assert old.gen == 0 and old.next_seq == m.next_seq
