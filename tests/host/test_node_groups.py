"""Private groups on the node (board code on CPython, as in
test_node_runtime.py): a board applies a re-key delivered by the proxy (in
parts, for a larger topic) and seals its next reading in the new epoch; it
refuses the removed member's readings; two boards flashed with one invite
(or one re-flashed) never reuse a group sequence number; a board whose write
capability expired keeps its readings and says why instead of stopping."""
from shared_protocol.wire import envelope as E
from shared_protocol.groups.admin import Admin
from shared_protocol.groups.invite import invite_url, member_from_url
from shared_protocol.groups.member import Publication

from node_rig import open_node

NOW = 1_700_000_000


def _node(tmp_path, invite, logs):
    return open_node(str(tmp_path), invite, logs)


def _published(n, now):
    n.turn(now)
    return [E.REGISTRY.decode(m).values[-1] for m in n.proxy.outgoing()
            if E.REGISTRY.decode(m).name in ("s_publish", "s_pub_a")]   # long or short form


def test_board_applies_a_rekey_in_parts_and_seals_in_the_new_epoch(tmp_path):
    admin = Admin(b"\x01" * 32, b"\x02" * 32, 0, "field")
    board_inv = invite_url(admin.invite(b"\x07" * 32, read=True, write=True))
    gone = member_from_url(invite_url(admin.invite(b"\x08" * 32, read=True, write=True)))
    for i in range(12):                    # a larger topic: the re-key comes in parts
        admin.invite(bytes([0x20 + i]) * 32)
    logs = []
    n = _node(tmp_path / "b", board_inv, logs)
    tp = n.topics[0]
    parts = admin.remove(gone.identity.public, b"\x09" * 32, b"\x0a" * 32)
    assert len(parts) >= 2
    for i, p in enumerate(parts):
        n.proxy.receive(E.REGISTRY.encode("s_deliver", tp.topic, 1 + i, b"rk%d" % i, p), 10 + i)
    n.turn(20)
    assert tp.member.epoch == 1, logs
    # the removed member's reading (sealed with the keys it kept) is refused
    before = tp.replica.snapshot()
    late = gone.seal(b"\x00" * 8, b"\x0b" * 32)
    n.proxy.receive(E.REGISTRY.encode("s_deliver", tp.topic, len(parts) + 1, b"late", late), 30)
    n.turn(31)
    assert tp.replica.snapshot() == before
    assert any("group_member_revoked" in m for m in logs), logs
    # the board's next reading is sealed in epoch 1: the admin reads it, the removed member cannot
    n.publish("field", "temp", 21.5, t=NOW)
    out = _published(n, 40)
    assert len(out) == 1
    p = admin.open(out[0], NOW)
    assert isinstance(p, Publication) and p.epoch == 1
    assert E.REGISTRY.decode(out[0]).values[0] == 1      # the epoch in the visible header
    # the epoch survives a restart (on flash)
    n2 = _node(tmp_path / "b", board_inv, [])
    assert n2.topics[0].member.epoch == 1


def test_two_boards_flashed_with_one_invite_never_reuse_a_sequence(tmp_path):
    admin = Admin(b"\x01" * 32, b"\x02" * 32, 0, "field")
    inv = invite_url(admin.invite(b"\x07" * 32, read=True, write=True))
    a = _node(tmp_path / "a", inv, [])
    b = _node(tmp_path / "b", inv, [])          # the same invite on another board (or re-flashed)
    assert a.topics[0].member.gen != b.topics[0].member.gen
    got = []
    for i, n in enumerate((a, b, a, b)):
        n.publish("field", "temp", 20.0 + i, t=NOW + i)
        for payload in _published(n, 50 + 10 * i):
            got.append(admin.open(payload, NOW))     # Replayed would raise
    assert len(got) == 4
    assert len(set(p.seq for p in got)) == 4


def test_board_with_an_expired_capability_keeps_readings_and_says_why(tmp_path):
    admin = Admin(b"\x01" * 32, b"\x02" * 32, 0, "field")
    inv = invite_url(admin.invite(b"\x07" * 32, read=True, write=True, expiry=1000))
    logs = []
    n = _node(tmp_path, inv, logs)
    n.publish("field", "temp", 19.5, t=NOW)
    assert _published(n, 10) == []          # no exception: the loop goes on
    assert _published(n, 20) == []
    assert len(n.topics[0].outbox) == 1     # kept
    said = [m for m in logs if "cannot publish" in m]
    assert len(said) == 1 and "expired" in said[0], logs
