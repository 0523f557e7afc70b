# Runs on CPython and in the MicroPython VM: LAN discovery, CYCLON and sealed
# anti-entropy between member nodes (shared_protocol/overlay/lan.py), in memory.
from rig import IS_MICROPYTHON
from shared_protocol.wire import envelope
from shared_protocol.dmc import Replica
from shared_protocol.groups.admin import Admin
from shared_protocol.groups.invite import member_from_invite
from shared_protocol.overlay.lan import Lan, LanTopic, parse_addr
from shared_protocol.rand import Rng

ADMIN = Admin(b"\x01" * 32, b"\x02" * 32, 0, "field")
OTHER = Admin(b"\x03" * 32, b"\x04" * 32, 0, "other")


class Net:
    """Loopback: addr b"127.0.0.1:port" -> Lan; datagrams in a FIFO."""

    def __init__(self):
        self.nodes = {}
        self.q = []
        self.sent = 0

    def add(self, port, admin, seed):
        m = member_from_invite(admin.invite(bytes([seed]) * 32, True, True))
        r = Replica(bytes([seed]) * 8)
        rng = Rng(seed)
        lan = Lan(bytes([seed]) * 16, "127.0.0.1", port, rng, lambda n: rng.randbytes(n), [LanTopic(m, r)])
        self.nodes[port] = lan
        return lan, r

    def send(self, src_port, out):
        for addr, data in out:
            self.q.append((src_port, addr, data))

    def run(self, now):
        while self.q:
            src, addr, data = self.q.pop(0)
            self.sent += 1
            host, port = parse_addr(addr)
            dst = self.nodes.get(port)
            if dst is not None:
                self.send(port, dst.receive(data, "127.0.0.1", src, now))


def test_announce_shuffle_and_sealed_sync_converge():
    net = Net()
    ports = [7001, 7002, 7003]
    reps = []
    for i, p in enumerate(ports):
        lan, r = net.add(p, ADMIN, 10 + i)
        reps.append(r)
        for k in range(3 if IS_MICROPYTHON else 6):
            r.append("temp", 1000 + k, 20 + i + k / 10)
    # Announce to the configured peers (no broadcast on loopback).
    for p in ports:
        for q in ports:
            if q != p:
                net.send(p, [(("127.0.0.1:%d" % q).encode(), net.nodes[p].announce())])
    net.run(0)
    for p in ports:
        assert len(net.nodes[p].cyclon) == 2
    now = 0
    for rnd in range(6):
        now += 1000
        for p in ports:
            net.send(p, net.nodes[p].shuffle(now))
            net.send(p, net.nodes[p].sync_round(now))
        net.run(now)
    snaps = [r.snapshot() for r in reps]
    assert snaps[0] == snaps[1] == snaps[2]
    assert len(reps[0].readings("temp")) == 3 * (3 if IS_MICROPYTHON else 6)
    for p in ports:
        assert net.nodes[p].errors["auth"] == 0 and net.nodes[p].errors["sync"] == 0


def test_outsider_and_garbage_change_nothing():
    net = Net()
    lan, r = net.add(7101, ADMIN, 21)
    r.append("temp", 1, 1.5)
    out_lan, out_r = net.add(7102, OTHER, 22)   # another group's key
    out_r.append("temp", 2, 9.5)
    # The outsider seals for its own topic: not ours, ignored.
    for addr, data in out_lan.sync_round(0) or []:
        pass
    out_lan.cyclon.heard(lan.node_id, b"127.0.0.1:7101")
    sent = out_lan.sync_round(1000)
    assert sent
    before = r.snapshot()
    for addr, data in sent:
        assert lan.receive(data, "127.0.0.1", 7102, 1000) == []
    # A forged wrapper naming our topic with the wrong key fails to open.
    from shared_protocol.overlay.lan import seal_sync
    forged = member_from_invite(OTHER.invite(b"\x09" * 32, True, True))
    forged.topic = ADMIN.topic
    msg = seal_sync(forged, sent[0][1][:40], b"\x00" * 12)
    assert lan.receive(msg, "127.0.0.1", 7102, 1000) == []
    assert lan.errors["auth"] == 1
    for g in (b"", b"\xff" * 10, envelope.REGISTRY.encode("ping", 1)):
        assert lan.receive(g, "127.0.0.1", 7102, 1000) == []
    assert lan.errors["decode"] == 3
    assert r.snapshot() == before


def test_limits_written_out_agree_with_their_modules():
    # lan.py writes cyclon's id limit and the datagram limit out as const()
    # (constant field specs, no framing.py on a board): they must agree
    from shared_protocol.overlay import cyclon, lan
    from shared_protocol.wire.framing import DATAGRAM_MAX
    assert lan.ANNOUNCE[2][:3] == ("node", envelope.BYTES, cyclon.ID_MAX)   # the flat field specs
    assert lan.SEALED_MAX == DATAGRAM_MAX + lan.TAG
