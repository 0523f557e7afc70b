# Runs on CPython and in the MicroPython VM: every protocol object keeps its
# timers across the wrap of a board's ms counter (time.ticks_ms() wraps at
# 2**30 on the ESP32 and RP2 ports, after ~12.4 days of uptime). Each test
# starts just before the wrap, with the board's tick arithmetic installed
# (shared_protocol/clock.py), and checks the timer fires just after it.
import sys

from rig import IS_MICROPYTHON
from shared_protocol import clock
from shared_protocol.wire import envelope as E
from shared_protocol.session import messages as W
from shared_protocol.session.client import ClientSession, DEAD_AFTER, RTO_INITIAL_MS, OPEN, IDLE
from shared_protocol.session.proxy import ProxySession

PERIOD = clock.BOARD_PERIOD
T0 = PERIOD - 100         # 100 ms before the counter wraps to 0
KEEPALIVE = 1000
NODE = b"node-0001"
# firmware/runtime.py's _ANNOUNCE_MS: a const, so not a module attribute on MicroPython.
ANNOUNCE_MS = 5000
T1 = b"\x01" * 16


def wrapped(fn):
    """Run fn with the board's wrapping tick arithmetic, then restore."""
    def run():
        old = (clock.diff, clock.add)
        clock.use(*clock.wrapping(PERIOD))
        try:
            fn()
        finally:
            clock.use(*old)
    return run


def at(d):
    """The tick d ms after T0, wrapped like the board's counter."""
    return clock.add(T0, d)


def names(msgs):
    return [E.REGISTRY.decode(m).name for m in msgs]


def test_wrapping_arithmetic_matches_the_board():
    diff, add = clock.wrapping(PERIOD)
    assert add(PERIOD - 1, 1) == 0
    assert diff(0, PERIOD - 1) == 1 and diff(PERIOD - 1, 0) == -1
    assert diff(add(T0, 5000), T0) == 5000
    if IS_MICROPYTHON:
        # The platform's own functions are the default on a board.
        import time
        assert clock.diff is time.ticks_diff and clock.add is time.ticks_add
        for a, b in ((0, PERIOD - 1), (5, PERIOD - 7), (PERIOD // 2 - 1, 0)):
            assert time.ticks_diff(a, b) == diff(a, b), (a, b)
        for t, d in ((PERIOD - 1, 1), (T0, 5000), (5, -7)):
            assert time.ticks_add(t, d) == add(t, d), (t, d)


def _opened():
    c = ClientSession(NODE, window=4, keepalive_ms=KEEPALIVE)
    p = ProxySession(b"proxy-01", False, T0)
    c.start(T0, False)
    for m in c.data_to_send():
        p.receive(m, T0)
    p.events()
    p.accept()
    for m in p.data_to_send():
        c.receive(m, T0)
    assert c.state == OPEN
    return c, p


@wrapped
def test_client_session_keeps_its_timers_across_the_wrap():
    c, p = _opened()
    c.publish(T1, W.message_id(NODE, 1), b"x", T0)
    c.data_to_send()                                  # lost on the air
    assert clock.diff(c.next_deadline(), T0) == RTO_INITIAL_MS
    c.poll(at(RTO_INITIAL_MS - 1))
    assert list(c.data_to_send()) == []
    c.poll(at(RTO_INITIAL_MS))                       # after the wrap
    assert names(c.data_to_send()) == ["s_publish"]  # resent
    c.poll(at(KEEPALIVE))
    assert "ping" in names(c.data_to_send())         # keepalive
    c.poll(at(DEAD_AFTER * KEEPALIVE - 1))
    assert c.state == OPEN
    c.poll(at(DEAD_AFTER * KEEPALIVE))               # never answered: lost
    assert c.state == IDLE and ("lost", "timeout") in c.events()


@wrapped
def test_proxy_session_resends_and_expires_across_the_wrap():
    c, p = _opened()
    c.subscribe(T1, T0)
    for m in c.data_to_send():
        p.receive(m, T0)
    p.events()
    p.subscribed(T1, 0)
    p.deliver(T1, 1, b"m" * 16, b"payload", T0)
    p.data_to_send()                                  # lost on the air
    p.poll(at(RTO_INITIAL_MS - 1))
    assert list(p.data_to_send()) == []
    p.poll(at(RTO_INITIAL_MS))
    assert names(p.data_to_send()) == ["s_deliver"]
    assert clock.diff(p.next_deadline(), T0) == 2 * RTO_INITIAL_MS + RTO_INITIAL_MS
    p.poll(at(DEAD_AFTER * KEEPALIVE))
    assert ("expired",) in p.events()


def _secure_pair():
    from shared_protocol.crypto import api
    from shared_protocol.rand import Rng
    from shared_protocol.session.secure_client import SecureLink, node_id_for
    r = Rng(3)
    node_key = r.randbytes(32)
    sess = ClientSession(node_id_for(api.x25519_public(node_key)), window=4, keepalive_ms=KEEPALIVE)
    link = SecureLink(sess, node_key, datagram=True)
    link.start(T0, r.randbytes(32))
    return link


@wrapped
def test_secure_link_resends_its_handshake_across_the_wrap():
    from shared_protocol.noise.udp import RETRY_MS, TRIES_MAX
    link = _secure_pair()
    first = link.data_to_send()
    assert clock.diff(link.next_deadline(), T0) == RETRY_MS
    link.poll(at(RETRY_MS - 1))
    assert list(link.data_to_send()) == []
    link.poll(at(RETRY_MS))
    assert list(link.data_to_send()) == first         # message 1 repeated
    t = RETRY_MS
    for _ in range(TRIES_MAX):
        t += RETRY_MS
        link.poll(at(t))
    assert [e[0] for e in link.events()] == ["link_failed"]


def _cyclon(seed, timeout=500):
    from shared_protocol.overlay import cyclon
    from shared_protocol.rand import Rng
    return cyclon.Cyclon(bytes([seed]) * 16, b"127.0.0.1:%d" % (7000 + seed), Rng(seed),
                         cyclon.BOARD_VIEW, cyclon.BOARD_SHUFFLE, timeout)


@wrapped
def test_cyclon_drops_a_silent_peer_across_the_wrap():
    a = _cyclon(1)
    a.heard(b"\x02" * 16, b"127.0.0.1:7002")
    assert a.tick(T0) is not None                      # request to the only peer, unanswered
    a.expire(at(a.reply_timeout - 1))
    assert len(a) == 1
    a.expire(at(a.reply_timeout))
    assert len(a) == 0                                 # presumed dead


@wrapped
def test_dmc_sync_asks_again_across_the_wrap():
    from shared_protocol.dmc import Replica, Sync
    from shared_protocol.dmc import sync as S
    s = Sync(Replica(b"alice-sensor-001"), b"bob-gateway-0002", 7)
    assert s.start(T0)
    assert s.poll(at(S.RETRY_MS - 1)) == []
    assert s.poll(at(S.RETRY_MS))                      # no answer yet: ask again
    assert s.retries == 1


@wrapped
def test_lan_expires_a_silent_neighbour_across_the_wrap():
    from shared_protocol.dmc import Replica
    from shared_protocol.groups.admin import Admin
    from shared_protocol.groups.invite import member_from_invite
    from shared_protocol.overlay.lan import Lan, LanTopic
    from shared_protocol.rand import Rng
    admin = Admin(b"\x01" * 32, b"\x02" * 32, 0, "field")
    m = member_from_invite(admin.invite(b"\x09" * 32, True, True))
    rng = Rng(9)
    lan = Lan(b"\x09" * 16, "127.0.0.1", 7009, rng, rng.randbytes, [LanTopic(m, Replica(b"\x09" * 8))])
    other = Lan(b"\x0a" * 16, "127.0.0.1", 7010, Rng(10), Rng(11).randbytes, [])
    lan.receive(other.announce(), "127.0.0.1", 7010, T0)
    assert len(lan.cyclon) == 1
    assert lan.shuffle(T0)                             # the neighbour never answers
    assert lan.sync_round(T0)
    timeout = lan.cyclon.reply_timeout
    lan.shuffle(at(timeout - 1))
    assert len(lan.cyclon) == 1
    lan.shuffle(at(timeout))
    assert len(lan.cyclon) == 0


class _UnusedSocket:
    def setblocking(self, flag):
        pass

    def bind(self, addr):
        pass

    def close(self):
        pass


class _NoSockets:
    """The VM has no socket module; the node's links import it for the
    sockets this test never reads or writes (it carries the datagrams)."""
    AF_INET = 2
    SOCK_DGRAM = 2

    @staticmethod
    def getaddrinfo(host, port):
        return [(2, 2, 0, "", (host, port))]

    @staticmethod
    def socket(family, kind):
        return _UnusedSocket()


@wrapped
def test_node_runtime_keeps_its_link_and_lan_timers_across_the_wrap():
    if IS_MICROPYTHON and "socket" not in sys.modules:
        try:
            import socket  # noqa: F401
        except ImportError:
            sys.modules["socket"] = _NoSockets
    import os
    from firmware import platform, runtime
    from shared_protocol.groups.admin import Admin
    if not hasattr(os, "urandom"):   # the VM's os lacks it (boards have it)
        from shared_protocol.rand import Rng
        platform.random_bytes = Rng(5).randbytes
    from shared_protocol.groups.invite import invite_url
    admin = Admin(b"\x01" * 32, b"\x02" * 32, 0, "field")
    inv = invite_url(admin.invite(b"\x07" * 32, read=True, write=True))
    cfg = {"node_id": "ab" * 32, "node_key": "cd" * 32, "topics": [inv],
           "proxies": ["127.0.0.1:9"], "publish_interval_s": 1, "link": "plaintext"}
    d = "/tmp/upsycle-clock-test-%d" % clock.add(0, id(cfg) & 0xFFFFFF)
    try:
        logs = []
        _node_across_the_wrap(runtime.Node(cfg, data_dir=d, log=logs.append), logs)
    finally:
        _remove_tree(d)


def _remove_tree(path):
    import os
    for name in os.listdir(path):
        os.remove(path + "/" + name)
    os.rmdir(path)


def _node_across_the_wrap(n, logs):
    px = n.proxy                                       # the node's proxy link (firmware/proxy_link.py)
    px.session.start(T0, False)
    px.sock = object()                                 # "open": the test carries the datagrams
    px.outgoing()
    px.receive(E.REGISTRY.encode("s_welcome", b"proxy", 10000, 8), T0)
    n.turn(T0)
    px.outgoing()
    ka = px.session.keepalive_ms
    n.turn(at(ka - 1))
    assert "ping" not in names(px.outgoing())
    n.turn(at(ka))                                     # after the wrap
    assert "ping" in names(px.outgoing())
    assert px.online
    n.turn(at(DEAD_AFTER * ka))                        # the proxy never answered
    assert not px.online and "upsycle: proxy link lost (timeout): retrying" in logs, logs
    # LAN timers (firmware/lan_link.py): all due on the first turn, then again one period later.
    from firmware.lan_link import LanLink
    lan = LanLink(n, "127.0.0.1", 0, ["127.0.0.1:7012"])   # port 0: any free one
    try:
        first = lan.timers(T0)
        assert len(first) == 1                         # the announce to the one peer
        assert lan.timers(at(ANNOUNCE_MS - 1)) == []
        assert len(lan.timers(at(ANNOUNCE_MS))) == 1
    finally:
        lan.sock.close()
