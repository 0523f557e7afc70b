"""The host's group codec (what `upsycle sub`, `pub` and the bridge open
messages with) against what an attacker on the topic, a careless operator
or a crash can do: floods of messages that claim a future epoch, forged and
replayed re-keys, parts out of order, a crash between a re-key releasing a
held message and the app taking it, a capability that expires mid-run. Each
case: a typed outcome, bounded state, nothing accepted is lost."""
import os

from shared_protocol.wire import envelope
from shared_protocol.groups import wire
from shared_protocol.groups.admin import Admin
from shared_protocol.groups.invite import invite_url, member_from_url
from shared_protocol.groups.member import EpochChanged

from upsycle.group_codec import HELD_MAX, REKEY_RESEND_MIN_S, REKEY_RESEND_S, GroupCodec, Held, Rejected
from upsycle.topic_store import TopicStore

NOW = 1_700_000_000


class Clock:
    def __init__(self, t=NOW):
        self.t = t

    def __call__(self):
        return self.t


def _setup(tmp_path, members=1, expiry=0):
    """An admin (in its own store) and ``members`` read+write members, each
    with a codec over its own store."""
    admin = Admin(os.urandom(32), os.urandom(32), name="g")
    admin.new_generation(os.urandom(3))
    clock = Clock()
    codecs = []
    for i in range(members):
        m = member_from_url(invite_url(admin.invite(os.urandom(32), read=True, write=True, expiry=expiry)))
        m.new_generation(os.urandom(3))
        st = TopicStore(str(tmp_path / ("m%d" % i)))
        st.save(m)
        codecs.append(GroupCodec(st, clock=clock))
    ast = TopicStore(str(tmp_path / "admin"))
    ast.save(admin)
    return GroupCodec(ast, clock=clock), codecs, clock


def _future_junk(topic, epoch, i):
    return envelope.REGISTRY.encode("group_pub", topic, epoch, 0, os.urandom(12), os.urandom(40 + i % 50))


def test_a_flood_claiming_a_future_epoch_stays_bounded_and_real_messages_still_open(tmp_path):
    ac, (mc,), clock = _setup(tmp_path)
    tid = list(ac._members)[0]
    admin = ac.member(tid)
    # a removal the member has not heard of yet, and a real message of the new epoch
    extra = member_from_url(invite_url(admin.invite(os.urandom(32))))
    parts = admin.remove(extra.identity.public, os.urandom(32), os.urandom(32))
    real = admin.seal(b"real epoch-1 reading", os.urandom(32), NOW)
    ac.store.save(admin)
    assert isinstance(mc.decode(tid, real), Held)
    # anyone who can publish to the topic id sends junk that claims epoch 1
    outcomes = [mc.decode(tid, _future_junk(tid, 1, i)) for i in range(HELD_MAX + 40)]
    assert sum(isinstance(o, Held) for o in outcomes) == HELD_MAX - 1
    assert all(isinstance(o, Rejected) for o in outcomes[HELD_MAX - 1:])
    assert len(mc.member(tid).held) == HELD_MAX
    # the re-key arrives: the real message opens, the junk is dropped, the store empties as the app takes it
    ev = mc.decode(tid, parts[0])
    assert isinstance(ev, EpochChanged)
    assert [b for _, b in ev.released] == [b"real epoch-1 reading"]
    assert len(mc.member(tid).held) == 1
    for hid, _ in ev.released:
        mc.taken(tid, hid)
    assert mc.member(tid).held == []


def test_held_message_survives_a_crash_between_release_and_take(tmp_path):
    ac, (mc,), clock = _setup(tmp_path)
    tid = list(ac._members)[0]
    admin = ac.member(tid)
    extra = member_from_url(invite_url(admin.invite(os.urandom(32))))
    parts = admin.remove(extra.identity.public, os.urandom(32), os.urandom(32))
    msg = admin.seal(b"kept across a crash", os.urandom(32), NOW)
    assert isinstance(mc.decode(tid, msg), Held)
    ev = mc.decode(tid, parts[0])
    assert [b for _, b in ev.released] == [b"kept across a crash"]
    # crash: the app never took it. A new process hands it out again.
    again = GroupCodec(mc.store, clock=clock)
    ready = again.ready(tid)
    assert [b for _, b in ready] == [b"kept across a crash"]
    # the same message delivered again by the proxy is a replay, not a second copy
    assert isinstance(again.decode(tid, msg), Rejected)
    again.taken(tid, ready[0][0])
    assert GroupCodec(mc.store, clock=clock).ready(tid) == []


def test_forged_and_replayed_rekeys_change_nothing_and_are_not_held(tmp_path):
    ac, (mc,), clock = _setup(tmp_path)
    tid = list(ac._members)[0]
    admin = ac.member(tid)
    extra = member_from_url(invite_url(admin.invite(os.urandom(32))))
    parts = admin.remove(extra.identity.public, os.urandom(32), os.urandom(32))
    msg = envelope.REGISTRY.decode(parts[0])
    before = open(mc.store._path(mc.member(tid)), "rb").read()
    # a re-key to a far epoch signed by someone else: refused before the gap check, not held
    forged = envelope.REGISTRY.encode("group_rekey", tid, 7, msg["ephemeral"], 0, 1, msg["entries"],
                                      os.urandom(64))
    r = mc.decode(tid, forged)
    assert isinstance(r, Rejected) and r.code == "group_bad_signature"
    # renumbered part, zero parts, part beyond the count
    for part, count in ((0, 2), (1, 1), (0, 0)):
        bad = envelope.REGISTRY.encode("group_rekey", tid, 1, msg["ephemeral"], part, count, msg["entries"],
                                       msg["sig"])
        r = mc.decode(tid, bad)
        assert isinstance(r, Rejected) and not isinstance(r, Held), r
    assert open(mc.store._path(mc.member(tid)), "rb").read() == before
    assert isinstance(mc.decode(tid, parts[0]), EpochChanged)
    r = mc.decode(tid, parts[0])            # the admin's re-send, or a replay
    assert isinstance(r, Rejected) and r.quiet and r.code == "group_stale_epoch"


def test_rekey_chain_out_of_order_with_parts_and_publications_interleaved(tmp_path):
    ac, codecs, clock = _setup(tmp_path, members=10)
    tid = list(ac._members)[0]
    admin = ac.member(tid)
    keys = sorted(admin.members)
    mine = [c.member(tid).identity.public for c in codecs]
    gone = [k for k in keys if k != mine[0]][:2]
    rk1 = admin.remove(gone[0], os.urandom(32), os.urandom(32))
    p1 = admin.seal(b"in epoch 1", os.urandom(32), NOW)
    rk2 = admin.remove(gone[1], os.urandom(32), os.urandom(32))
    p2 = admin.seal(b"in epoch 2", os.urandom(32), NOW)
    assert len(rk1) >= 2 and len(rk2) >= 2
    mc = codecs[0]
    # arrival order: epoch-2 traffic first, then the re-keys backwards, parts reversed
    order = [p2] + list(reversed(rk2)) + [p1] + list(reversed(rk1))
    out = [mc.decode(tid, x) for x in order]
    released = [b for o in out if isinstance(o, EpochChanged) for _, b in o.released]
    assert mc.member(tid).epoch == 2
    assert released == [b"in epoch 1", b"in epoch 2"], released
    assert not any(isinstance(o, Rejected) and not o.quiet for o in out), out
    assert all(h[2] is not None for h in mc.member(tid).held)


def test_admin_resends_the_chain_when_a_member_publishes_in_an_old_epoch_but_not_at_its_rate(tmp_path):
    ac, (mc, lag), clock = _setup(tmp_path, members=2)
    tid = list(ac._members)[0]
    admin = ac.member(tid)
    gone = [k for k in admin.members if k not in (mc.member(tid).identity.public, lag.member(tid).identity.public)]
    extra = member_from_url(invite_url(admin.invite(os.urandom(32))))
    admin.remove(extra.identity.public, os.urandom(32), os.urandom(32))
    ac.store.save(admin)
    due = ac.outgoing()
    ac.published(tid, [e for e, _ in due[0][1]])
    assert ac.outgoing() == [] and gone == []
    # `lag` missed the re-key and publishes in epoch 0: the admin reads it and sends the chain again
    assert ac.decode(tid, lag.encode(tid, b"still in epoch 0")) == b"still in epoch 0"
    again = ac.outgoing()
    assert again and again[0][1] == due[0][1]
    ac.published(tid, [1])
    for i in range(20):     # a member that cannot catch up does not make the admin flood the topic
        ac.decode(tid, lag.encode(tid, b"again %d" % i))
    assert ac.outgoing() == []
    clock.t += REKEY_RESEND_MIN_S
    ac.decode(tid, lag.encode(tid, b"a minute later"))
    assert ac.outgoing()
    ac.published(tid, [1])
    clock.t += REKEY_RESEND_S           # and once a day anyway
    assert ac.outgoing()


def test_capability_expiring_mid_run_is_a_typed_refusal(tmp_path):
    ac, (mc,), clock = _setup(tmp_path, expiry=NOW + 10)
    tid = list(ac._members)[0]
    assert ac.decode(tid, mc.encode(tid, b"in time")) == b"in time"
    clock.t = NOW + 10
    try:
        mc.encode(tid, b"too late")
    except Exception as e:
        assert e.code == "group_usage" and "expired" in e.message
    else:
        raise AssertionError("sealed with an expired capability")


def test_removed_member_stops_holding_and_refuses_to_seal(tmp_path):
    ac, (mc, gone), clock = _setup(tmp_path, members=2)
    tid = list(ac._members)[0]
    admin = ac.member(tid)
    parts = admin.remove(gone.member(tid).identity.public, os.urandom(32), os.urandom(32))
    r = gone.decode(tid, parts[0])
    assert isinstance(r, Rejected) and r.code == "group_removed"
    after = admin.seal(b"after removal", os.urandom(32), NOW)
    r = gone.decode(tid, after)
    assert isinstance(r, Rejected) and r.code == "group_unknown_epoch"     # not held: it will never open
    assert gone.member(tid).held == []
    try:
        gone.encode(tid, b"posting anyway")
    except Exception as e:
        assert e.code == "group_usage" and "removed" in e.message
    else:
        raise AssertionError("a removed member sealed")
    assert wire.REKEY_PART_MAX >= len(parts[0])


def test_a_caller_that_consumes_later_keeps_a_released_message_until_it_takes_it(tmp_path):
    """A bridge reads with consume=False and acknowledges only after its
    broker did: a kept message released by a re-key must stay in the codec's
    store until the bridge says it has it (Client.taken), so a crash in
    between hands it out again."""
    import asyncio
    from upsycle.client import Client, Delivery
    ac, (mc,), clock = _setup(tmp_path)
    tid = list(ac._members)[0]
    admin = ac.member(tid)
    extra = member_from_url(invite_url(admin.invite(os.urandom(32))))
    parts = admin.remove(extra.identity.public, os.urandom(32), os.urandom(32))
    assert isinstance(mc.decode(tid, admin.seal(b"published after PUBACK", os.urandom(32), NOW)), Held)
    (hid, body), = mc.decode(tid, parts[0]).released

    async def main():
        c = Client(secure=False, codec=mc)
        c._inbox.put_nowait(Delivery(tid, 0, b"", body, held=hid))
        d = await c.next_delivery(consume=False)
        assert d.payload == b"published after PUBACK"
        # not yet taken: a new process (after a crash) would get it again
        assert [b for _, b in GroupCodec(mc.store, clock=clock).ready(tid)] == [b"published after PUBACK"]
        c.taken(d)
        assert GroupCodec(mc.store, clock=clock).ready(tid) == []
    asyncio.run(main())
