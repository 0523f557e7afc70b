"""firmware/ble_link.py's BleRadio against a scripted `bluetooth` module
(CPython): what its irq handler keeps, which connection gets the proxy's
Noise packets and which the LAN's, and who says hello first. The radio over
the virtual medium end to end: test_vboard_ble.py, test_ble_scenario.py."""
import importlib
import sys
import types

from shared_protocol.ble.link import BleLink, FRAGMENTS_MAX

_IRQ_CENTRAL_CONNECT = 1
_IRQ_GATTS_WRITE = 3
_IRQ_SCAN_RESULT = 5


class FakeBLE:
    def __init__(self):
        self.values = {}
        self.notified = []
        self.calls = []
        self.handler = None

    def active(self, on=None):
        return True

    def config(self, *a, **kw):
        if a == ("mac",):
            return (0, b"\x02\x00\x00\x00\x00\x01")
        return None

    def gatts_register_services(self, services):
        return ((3, 6),)

    def gatts_set_buffer(self, h, n, append=False):
        self.calls.append(("set_buffer", h, n))

    def gatts_read(self, h):
        return self.values.get(h, b"")

    def gatts_notify(self, conn, h, data=None):
        self.notified.append((conn, h, bytes(data)))

    def gap_advertise(self, interval, data=None, **kw):
        self.calls.append(("advertise", interval))

    def gap_scan(self, *a):
        self.calls.append(("scan",) + a)

    def gap_connect(self, addr_type, addr, *a):
        self.calls.append(("connect", bytes(addr)))

    def gap_disconnect(self, conn):
        self.calls.append(("disconnect", conn))
        return True

    def irq(self, handler):
        self.handler = handler

    def gattc_exchange_mtu(self, conn):
        self.calls.append(("mtu", conn))


class UUID:
    def __init__(self, v):
        self.v = v

    def __eq__(self, o):
        return isinstance(o, UUID) and o.v == self.v


def _radio(monkeypatch):
    fake = FakeBLE()
    mod = types.ModuleType("bluetooth")
    mod.BLE = lambda: fake
    mod.UUID = UUID
    mod.FLAG_NOTIFY, mod.FLAG_WRITE, mod.FLAG_WRITE_NO_RESPONSE = 0x10, 0x08, 0x04
    monkeypatch.setitem(sys.modules, "bluetooth", mod)
    monkeypatch.delitem(sys.modules, "firmware.ble_link", raising=False)
    ble_link = importlib.import_module("firmware.ble_link")   # bound to this fake

    class Node:
        node_id = b"\x50" * 32
        topics = []
        logs = []

        def log(self, m):
            self.logs.append(m)

        def count_error(self):
            return True
    return ble_link, ble_link.BleRadio(Node()), fake


class Wdt:
    def feed(self):
        pass


def _write_all(radio, fake, conn, link, now):
    for f in link.fragments_to_send(FRAGMENTS_MAX, now):
        fake.values[radio.rx] = f
        fake.handler(_IRQ_GATTS_WRITE, (conn, radio.rx))


def test_irq_keeps_a_bounded_queue_and_only_rx_writes(monkeypatch):
    ble_link, radio, fake = _radio(monkeypatch)
    fake.handler(_IRQ_CENTRAL_CONNECT, (1, 0, memoryview(b"\x02\x00\x00\x00\x00\x09")))
    fake.values[radio.tx + 1] = b"\x01\x00"
    fake.handler(_IRQ_GATTS_WRITE, (1, radio.tx + 1))      # a CCCD write: not ours
    assert len(radio._events) == 1
    fake.values[radio.rx] = b"\x01\x00\x00\x00x"
    for _ in range(1000):
        fake.handler(_IRQ_GATTS_WRITE, (1, radio.rx))
    assert len(radio._events) == ble_link._EVENTS_MAX and radio.dropped == 1001 - ble_link._EVENTS_MAX
    radio.io(0, Wdt())
    assert radio._events == [] and 1 in radio.peers


def test_scan_keeps_only_upsycle_boards_with_a_larger_id(monkeypatch):
    from shared_protocol.ble import adv
    ble_link, radio, fake = _radio(monkeypatch)
    mac = memoryview(b"\x02\x00\x00\x00\x00\x07")
    fake.handler(_IRQ_SCAN_RESULT, (0, mac, 0, -50, memoryview(adv.advert(b"\x60" * 32))))
    fake.handler(_IRQ_SCAN_RESULT, (0, mac, 0, -50, memoryview(adv.advert(b"\x60" * 32))))   # again
    fake.handler(_IRQ_SCAN_RESULT, (0, memoryview(b"\x02" * 6), 0, -50, memoryview(adv.advert(b"\x40" * 32))))
    fake.handler(_IRQ_SCAN_RESULT, (0, memoryview(b"\x03" * 6), 0, -50, memoryview(b"\x02\x01\x06")))
    fake.handler(_IRQ_SCAN_RESULT, (0, memoryview(b"\x04" * 6), 0, -50, memoryview(b"\x09\xff")))  # malformed
    assert radio._candidates == [bytes(mac)]
    radio.io(0, Wdt())
    assert ("connect", bytes(mac)) in fake.calls


def test_noise_goes_to_the_proxy_and_lan_to_boards(monkeypatch):
    ble_link, radio, fake = _radio(monkeypatch)
    fake.handler(_IRQ_CENTRAL_CONNECT, (1, 0, memoryview(b"\x0a" * 6)))   # the proxy
    fake.handler(_IRQ_CENTRAL_CONNECT, (2, 0, memoryview(b"\x0b" * 6)))   # a board
    radio.io(0, Wdt())
    assert fake.notified == []       # no hello to a central that may be the proxy
    proxy, board = BleLink(4, 23), BleLink(2, 23)
    board.send(radio.lan.announce(), 0)      # a board announces itself ...
    _write_all(radio, fake, 2, board, 0)
    radio.io(1, Wdt())
    assert radio.peers[2].lan and not radio.peers[1].lan
    answered = [n for n in fake.notified if n[0] == 2]
    assert answered, "the board's announcement gets ours"
    # ... so the node's first Noise packet goes to the other central,
    radio.send_proxy(b"\x01" + b"h" * 40, 2)
    radio.io(2, Wdt())
    assert [n for n in fake.notified if n[0] == 1]
    # and a Noise packet from the board is not the proxy's.
    board.send(b"\x04" + b"n" * 30, 3)
    _write_all(radio, fake, 2, board, 3)
    radio.io(3, Wdt())
    assert radio.take_proxy() == [] and radio.proxy_conn is None
    proxy.send(b"\x02" + b"p" * 30, 4)
    _write_all(radio, fake, 1, proxy, 4)
    radio.io(4, Wdt())
    assert radio.take_proxy() == [b"\x02" + b"p" * 30] and radio.proxy_conn == 1


def test_a_peer_that_connects_and_never_writes_is_dropped(monkeypatch):
    ble_link, radio, fake = _radio(monkeypatch)
    fake.handler(_IRQ_CENTRAL_CONNECT, (1, 0, memoryview(b"\x0a" * 6)))
    fake.handler(_IRQ_CENTRAL_CONNECT, (2, 0, memoryview(b"\x0b" * 6)))
    radio.io(0, Wdt())
    talker = BleLink(2, 23)
    for t in range(0, ble_link._IDLE_MS + 2000, 1000):
        talker.send(radio.lan.announce(), t)
        _write_all(radio, fake, 2, talker, t)
        for f in [n[2] for n in fake.notified if n[0] == 2]:
            talker.receive(f, t)
        fake.notified.clear()
        radio.io(t, Wdt())
    assert ("disconnect", 1) in fake.calls and ("disconnect", 2) not in fake.calls
    assert 1 not in radio.peers and 2 in radio.peers


def test_a_connection_gone_before_its_setup_does_not_stop_the_node(monkeypatch):
    """A connect event handled after the stack dropped the connection: the
    stack refuses calls on the handle (OSError), the radio forgets it."""
    ble_link, radio, fake = _radio(monkeypatch)

    def refused(conn):
        raise OSError(107)   # ENOTCONN
    fake.gattc_exchange_mtu = refused
    fake.handler(7, (5, 0, memoryview(b"\x0c" * 6)))   # _IRQ_PERIPHERAL_CONNECT: we are central
    radio.io(0, Wdt())
    assert 5 not in radio.peers and ("disconnect", 5) in fake.calls
    fake.handler(8, (5, 0, memoryview(b"\x0c" * 6)))   # its disconnect, queued behind
    radio.io(1, Wdt())
    assert radio.peers == {}
