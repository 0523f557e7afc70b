# Runs on CPython and in the MicroPython VM: a board keeps a reading that
# reached it before its author's introduction (a writer publishing through
# two proxies: one copy by the mirror, one by federation) and applies it
# once the introduction comes, instead of refusing it for good and leaving
# a gap its replica would wait on (firmware/core.py INTRO_WAIT_MAX).
from shared_protocol.wire import envelope as E
from shared_protocol.dmc.replica import Replica
from shared_protocol.groups.admin import Admin
from shared_protocol.groups.invite import invite_url, member_from_url
from node_rig import no_sockets, open_node

NOW = 1_700_000_000


def _remove_tree(path):
    import os
    try:
        names = os.listdir(path)
    except OSError:
        return
    for name in names:
        os.remove(path + "/" + name)
    os.rmdir(path)


def _writer(admin):
    w = member_from_url(invite_url(admin.invite(b"\x11" * 32, read=True, write=True)))
    rep = Replica(b"writer01", 200)
    sealed = []
    for i in range(4):
        op = rep.append("temp", NOW + i, i)
        sealed.append(w.seal_reading(op, bytes([0x30 + i]) * 32, NOW))
    return sealed


def _run(name, order, expect_held, expect_rejected):
    admin = Admin(b"\x01" * 32, b"\x02" * 32, 0, "field")
    board_inv = invite_url(admin.invite(b"\x07" * 32, read=True, write=False))
    sealed = _writer(admin)
    d = "/tmp/upsycle-intro-wait-%s-%d" % (name, id(sealed) & 0xFFFFFF)
    logs = []
    try:
        n = open_node(d, board_inv, logs)
        tp = n.topics[0]
        for k, i in enumerate(order):
            n.proxy.receive(E.REGISTRY.encode("s_deliver", tp.topic, 1 + k, b"m%d" % i, sealed[i]), 10 + k)
        n.turn(30)
        lg = tp.replica.obj(4, "temp")
        got = len(lg) if lg is not None else 0
        assert got == expect_held, (name, got, logs)
        assert n.counts["rejected"] == expect_rejected, (name, n.counts, logs)
        assert n.counts["delivered"] == expect_held, (name, n.counts)
        assert tp.intro_wait is None, (name, tp.intro_wait)   # nothing left waiting
    finally:
        _remove_tree(d)


def test_readings_that_overtook_their_introduction_are_applied_once_it_comes():
    # 2nd, 3rd and 4th before the 1st, which carries the introduction
    _run("overtaken", (1, 2, 3, 0), 4, 0)


def test_readings_waiting_for_an_introduction_are_bounded():
    # one more than fits waits: the oldest waiting is dropped (counted), the
    # rest open, and the replica holds the first; the others wait in it for
    # the one that was dropped
    no_sockets()
    from firmware import core
    admin = Admin(b"\x01" * 32, b"\x02" * 32, 0, "field")
    board_inv = invite_url(admin.invite(b"\x07" * 32, read=True, write=False))
    w = member_from_url(invite_url(admin.invite(b"\x11" * 32, read=True, write=True)))
    rep = Replica(b"writer01", 200)
    sealed = []
    for i in range(core.INTRO_WAIT_MAX + 2):
        sealed.append(w.seal_reading(rep.append("temp", NOW + i, i), bytes([0x30 + i]) * 32, NOW))
    d = "/tmp/upsycle-intro-bound-%d" % (id(sealed) & 0xFFFFFF)
    logs = []
    try:
        n = open_node(d, board_inv, logs)
        tp = n.topics[0]
        order = list(range(1, core.INTRO_WAIT_MAX + 2)) + [0]
        for k, i in enumerate(order):
            n.proxy.receive(E.REGISTRY.encode("s_deliver", tp.topic, 1 + k, b"m%d" % i, sealed[i]), 10 + k)
        n.turn(30)
        assert n.counts["rejected"] == 1, (n.counts, logs)       # reading 1 had to go
        assert tp.intro_wait is None
        lg = tp.replica.obj(4, "temp")
        assert len(lg) == 1, len(lg)     # reading 0; 2.. wait in the replica for the lost 1
    finally:
        _remove_tree(d)
