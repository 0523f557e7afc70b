"""The node's Bluetooth LE radio: the GATT service, advertising, scanning,
one message link per connection, and what travels over them.

Imported only by a node whose config says ``"transport": "ble"`` or
``"wifi+ble"`` (firmware/core.py ``Node.open_ble``). Built on MicroPython's
low-level ``bluetooth`` module, which every ESP32 and Pico W firmware has,
not on aioble: aioble is not frozen into stock firmware (it is a
micropython-lib package to install), its modules cost more heap as .mpy
than this whole layer (20.9 KB against 13.1 KB, tools/bench/bench_ble.py
--aioble), its client keeps only the latest notification and its server
drops silently when its write queue is full (docs/ble.md). Here the irq handler only
copies what arrived into a bounded list; the main loop does the rest.

Roles. Every board is a GATT peripheral (shared_protocol/ble/adv.py: TX
notified node -> peer, RX written peer -> node) and advertises while it
has a free connection. It scans now and then, and connects as central to
the upsycle boards it hears whose short id is larger than its own (so two
boards make one connection, not two). The Pi proxy is a central that
connects to boards.

On each connection a shared_protocol/ble/link.py BleLink carries whole
messages. A message is either a Noise packet of the proxy link (first byte
1..5, noise/udp.py kinds: those go to the proxy link, whose session runs
exactly as over UDP) or a LAN envelope (a CBOR array, first byte 0x80..0x9F:
lan_announce, CYCLON shuffles, sealed DMC anti-entropy; they go to a
shared_protocol/overlay/lan.py Lan of their own, whose addresses are
b"ble-<mac hex>:0").
"""
import bluetooth

from shared_protocol import clock
from shared_protocol.ble import adv as A
from shared_protocol.ble.errors import BleLocalError, BleRemoteError
from shared_protocol.ble.link import BleLink, ATT_MTU_MIN
from shared_protocol.overlay.lan import node_lan, parse_addr

from firmware import platform

try:
    from micropython import const
except ImportError:   # CPython
    def const(x):
        return x

_IRQ_CENTRAL_CONNECT = const(1)
_IRQ_CENTRAL_DISCONNECT = const(2)
_IRQ_GATTS_WRITE = const(3)
_IRQ_SCAN_RESULT = const(5)
_IRQ_SCAN_DONE = const(6)
_IRQ_PERIPHERAL_CONNECT = const(7)
_IRQ_PERIPHERAL_DISCONNECT = const(8)
_IRQ_GATTC_SERVICE_RESULT = const(9)
_IRQ_GATTC_SERVICE_DONE = const(10)
_IRQ_GATTC_CHARACTERISTIC_RESULT = const(11)
_IRQ_GATTC_CHARACTERISTIC_DONE = const(12)
_IRQ_GATTC_NOTIFY = const(18)
_IRQ_MTU_EXCHANGED = const(21)

# Connections at once: NimBLE in MicroPython's ESP32 port allows 4
# (MYNEWT_VAL_BLE_MAX_CONNECTIONS); BTstack on the Pico W is built for as
# many. Boards and the proxy share them.
_CONNS_MAX = const(4)
# Per link: 2 messages in flight and 2 queued, so a link holds at most
# ~4 x 1.3 KB each way (shared_protocol/ble/link.py MESSAGE_MAX).
_WINDOW = const(2)
_QUEUE = const(2)
# Preferred ATT MTU: 247 makes a 244-byte value that fills one LE Data
# Length Extension packet (251-byte PDU, Core 5.3 Vol 6 Part B §4.5.10).
_MTU = const(247)
# A value written to RX is kept whole: the largest fragment at ATT_MTU 517
# (the stack truncates writes to the buffer, 20 bytes by default).
_RX_BUFFER = const(514)
_ADV_INTERVAL_US = const(250000)
# Scan for 2 s every 8 s while a connection is free (the radio is shared
# with advertising and connections; scanning all the time starves them).
_SCAN_EVERY_MS = const(8000)
_SCAN_MS = const(2000)
_SCAN_INTERVAL_US = const(30000)
_SCAN_WINDOW_US = const(30000)
# Events the irq handler queues between two loop turns; data beyond this is
# dropped (the link retransmits), connection events are always kept.
_EVENTS_MAX = const(48)
# Boards remembered from scans as candidates to connect to.
_CANDIDATES_MAX = const(4)
# Fragments handed to the stack per connection and loop turn: the stack
# queues notifications in a small pool (NimBLE: gatts_notify fails with
# ENOMEM when it is empty); what it refuses, the link sends again.
_FRAGS_PER_TURN = const(12)
# Timers as in firmware/lan_link.py: a few seconds each.
_ANNOUNCE_MS = const(5000)
_SHUFFLE_MS = const(5000)
_SYNC_MS = const(3000)
# A connection that delivered no whole message for this long is dropped:
# boards announce every 5 s and the proxy answers keepalives every 10 s, so
# only a peer that connects and never writes goes quiet, and it must not
# hold one of the few connections.
_IDLE_MS = const(60000)
# Messages from the proxy queued for the proxy link between loop turns.
_PROXY_IN_MAX = const(8)
_NOISE_KIND_MAX = const(5)


def _addr(mac):
    return "ble-" + mac.hex()


class _Peer:
    __slots__ = ("conn", "mac", "central", "link", "rx", "tx", "svc", "ready", "lan", "last")

    def __init__(self, conn, mac, central, now):
        self.conn = conn
        self.mac = mac
        self.central = central    # True: we are the central (we write, it notifies)
        self.link = BleLink(_WINDOW, ATT_MTU_MIN, _QUEUE)
        self.rx = None            # central: the peer's RX value handle (we write it)
        self.tx = None            # central: the peer's TX value handle (it notifies)
        self.svc = None
        self.ready = not central  # a peripheral may notify at once
        # True once LAN traffic is due on this connection: we are its
        # central (boards only connect to boards), or it sent us a LAN
        # message. The proxy's central never does, and gets none.
        self.lan = central
        self.last = now           # ticks of the last whole message (or the connection)


class BleRadio:
    def __init__(self, node):
        self.node = node
        self.log = node.log
        ble = bluetooth.BLE()
        ble.active(True)
        ble.config(mtu=_MTU)
        self.ble = ble
        svc = bluetooth.UUID(A.SERVICE_UUID)
        self._tx_uuid = bluetooth.UUID(A.TX_UUID)
        self._rx_uuid = bluetooth.UUID(A.RX_UUID)
        self._svc_uuid = svc
        ((self.tx, self.rx),) = ble.gatts_register_services((
            (svc, ((self._tx_uuid, bluetooth.FLAG_NOTIFY),
                   (self._rx_uuid, bluetooth.FLAG_WRITE | bluetooth.FLAG_WRITE_NO_RESPONSE))),))
        ble.gatts_set_buffer(self.rx, _RX_BUFFER)
        self.mac = bytes(ble.config("mac")[1])
        self.short_id = node.node_id[:A.SHORT_ID]
        self._adv = A.advert(node.node_id)
        self.peers = {}           # conn handle -> _Peer
        self._events = []
        self._candidates = []     # macs heard advertising, to connect to
        self._connecting = False
        self._scanning = False
        self._advertising = False
        self._due = None
        self.proxy_conn = None
        self.proxy_in = []
        self.errors = 0
        self.dropped = 0
        self.lan = node_lan(node.node_id, _addr(self.mac), 0, platform.random_bytes, node.topics)
        ble.irq(self._irq)
        self._advertise()

    # -- the irq handler: copy and queue, nothing else ---------------------

    def _irq(self, event, data):
        ev = self._events
        if event == _IRQ_GATTS_WRITE:
            if data[1] != self.rx:
                return   # only RX carries fragments
            if len(ev) < _EVENTS_MAX:
                ev.append((event, data[0], self.ble.gatts_read(data[1])))
            else:
                self.dropped += 1
        elif event == _IRQ_GATTC_NOTIFY:
            if len(ev) < _EVENTS_MAX:
                ev.append((event, data[0], bytes(data[2])))
            else:
                self.dropped += 1
        elif event == _IRQ_SCAN_RESULT:
            try:
                sid = A.short_id(data[4])
            except BleRemoteError:
                return
            if sid is not None and sid > self.short_id and len(self._candidates) < _CANDIDATES_MAX:
                mac = bytes(data[1])
                if mac not in self._candidates:
                    self._candidates.append(mac)
        elif event == _IRQ_GATTC_SERVICE_RESULT:
            ev.append((event, data[0], data[1], data[2], data[3]))          # conn, start, end, uuid
        elif event == _IRQ_GATTC_CHARACTERISTIC_RESULT:
            ev.append((event, data[0], data[1], data[2], data[4]))          # conn, end, value, uuid
        elif event == _IRQ_SCAN_DONE:
            ev.append((event, None, None))
        elif event == _IRQ_MTU_EXCHANGED:
            ev.append((event, data[0], data[1]))
        elif event in (_IRQ_CENTRAL_CONNECT, _IRQ_PERIPHERAL_CONNECT, _IRQ_CENTRAL_DISCONNECT,
                       _IRQ_PERIPHERAL_DISCONNECT):
            ev.append((event, data[0], bytes(data[2])))   # conn, peer address (copied)
        elif event == _IRQ_GATTC_SERVICE_DONE or event == _IRQ_GATTC_CHARACTERISTIC_DONE:
            ev.append((event, data[0], data[1]))          # conn, status

    # -- the loop turn ------------------------------------------------------

    def status(self):
        return " ble peers %d links %d synced %d" % (len(self.lan.cyclon), len(self.peers), self.lan.synced_ops)

    def take_proxy(self):
        """Messages from the proxy for the proxy link (Noise packets)."""
        m = self.proxy_in
        if m:
            self.proxy_in = []
        return m

    def proxy_pipe(self):
        return BleProxyPipe(self)

    def send_proxy(self, data, now):
        """A Noise packet to the proxy; dropped while no proxy is
        connected or its link is full (the session retransmits)."""
        p = self.peers.get(self.proxy_conn)
        if p is None:
            # Not heard from the proxy yet (we start the handshake): a
            # central connected to us that is no board (boards announce
            # themselves at once). The pinned key or the handshake decides
            # whether it is our proxy.
            for q in self.peers.values():
                if not q.central and not q.lan:
                    p = q
        if p is None or not p.link.can_send():
            return
        try:
            p.link.send(data, now)
        except BleLocalError:
            pass

    def io(self, now, wdt):
        ev = self._events
        self._events = []
        for e in ev:
            self._event(e, now)
        wdt.feed()
        out = []
        for p in list(self.peers.values()):
            msgs = p.link.messages()
            if msgs:
                p.last = now
            elif clock.diff(now, p.last) > _IDLE_MS:
                self._drop(p, "idle")
                continue
            for m in msgs:
                if 1 <= m[0] <= _NOISE_KIND_MAX:
                    # Only a central that is no board speaks Noise to us:
                    # a board we connected to, or one that announced
                    # itself, may have taken us for its proxy before our
                    # announcement reached it; its packet is dropped.
                    if not p.central and not p.lan:
                        self.proxy_conn = p.conn
                        if len(self.proxy_in) < _PROXY_IN_MAX:
                            self.proxy_in.append(m)
                else:
                    if not p.lan:
                        p.lan = True
                        self._hello(p, now)   # answer a board's announcement with ours
                    out += self.lan.receive(m, _addr(p.mac), 0, now)
        out += self._timers(now)
        self._route(out, now)
        for p in list(self.peers.values()):
            self._pump(p, now)
        self._radio(now)

    def _timers(self, now):
        due = self._due
        if due is None:
            due = self._due = [now, now, now, now]
        out = []
        if clock.due(now, due[0]):
            due[0] = clock.add(now, _ANNOUNCE_MS)
            a = self.lan.announce()
            for p in self.peers.values():
                if p.ready and p.lan:
                    out.append(((_addr(p.mac) + ":0").encode(), a))
        if clock.due(now, due[1]):
            due[1] = clock.add(now, _SHUFFLE_MS)
            out += self.lan.shuffle(now)
        if clock.due(now, due[2]):
            due[2] = clock.add(now, _SYNC_MS)
            out += self.lan.sync_round(now)
        return out

    def _route(self, out, now):
        for addr, data in out:
            host = parse_addr(addr)[0]
            for p in self.peers.values():
                if p.ready and p.lan and _addr(p.mac) == host:
                    if p.link.can_send():
                        try:
                            p.link.send(data, now)
                        except BleLocalError:
                            pass
                    break
            # a peer not connected now: CYCLON and anti-entropy take the loss

    def _pump(self, p, now):
        link = p.link
        link.poll(now)
        if link.failed is not None:
            self._drop(p, link.failed)
            return
        if not p.ready:
            return
        ble = self.ble
        for f in link.fragments_to_send(_FRAGS_PER_TURN, now):
            try:
                if p.central:
                    ble.gattc_write(p.conn, p.rx, f, 0)
                else:
                    ble.gatts_notify(p.conn, self.tx, f)
            except OSError:
                break   # the stack's buffers are full: the link sends it again

    def _drop(self, p, why):
        self.peers.pop(p.conn, None)
        if p.conn == self.proxy_conn:
            self.proxy_conn = None
        self.errors += 1
        self.log("upsycle: BLE link to %s failed (%s): disconnecting" % (p.mac.hex(), why))
        try:
            self.ble.gap_disconnect(p.conn)
        except OSError:
            pass

    def _radio(self, now):
        """Advertise while a connection is free; scan now and then; connect
        to one candidate at a time."""
        free = len(self.peers) < _CONNS_MAX
        if free and not self._advertising:
            self._advertise()
        if not free or self._connecting:
            return
        if self._candidates and not self._scanning:
            mac = self._candidates.pop(0)
            for p in self.peers.values():
                if p.mac == mac:
                    return
            self._connecting = True
            try:
                self.ble.gap_connect(0, mac)
            except OSError:
                self._connecting = False
            return
        if not self._scanning and clock.due(now, self._due[3]):
            self._due[3] = clock.add(now, _SCAN_EVERY_MS)
            try:
                self.ble.gap_scan(_SCAN_MS, _SCAN_INTERVAL_US, _SCAN_WINDOW_US)
                self._scanning = True
            except OSError:
                pass

    def _advertise(self):
        try:
            self.ble.gap_advertise(_ADV_INTERVAL_US, self._adv)
            self._advertising = True
        except OSError:
            self._advertising = False

    def _event(self, e, now):
        kind = e[0]
        if kind == _IRQ_GATTS_WRITE or kind == _IRQ_GATTC_NOTIFY:
            p = self.peers.get(e[1])
            if p is None:
                return
            try:
                p.link.receive(e[2], now)
            except BleRemoteError as err:
                if self.node.count_error():
                    self.log("upsycle: bad BLE fragment from %s dropped (%s)" % (p.mac.hex(), err.code))
            return
        try:
            self._gatt_event(kind, e, now)
        except OSError as err:
            # The connection went while its events waited for this turn
            # (a disconnect queued behind them): the stack refuses calls on
            # its handle. Its disconnect event follows; drop it now.
            p = self.peers.pop(e[1], None)
            if p is not None:
                self.log("upsycle: BLE connection to %s gone during set-up (%s)" % (p.mac.hex(), err))
                if p.conn == self.proxy_conn:
                    self.proxy_conn = None
                try:
                    self.ble.gap_disconnect(p.conn)
                except OSError:
                    pass

    def _gatt_event(self, kind, e, now):
        ble = self.ble
        conn = e[1]
        if kind == _IRQ_CENTRAL_CONNECT or kind == _IRQ_PERIPHERAL_CONNECT:
            central = kind == _IRQ_PERIPHERAL_CONNECT
            if central:
                self._connecting = False
            else:
                self._advertising = False   # the stack stops advertising on a connection
            p = self.peers[conn] = _Peer(conn, e[2], central, now)
            if central:
                ble.gattc_exchange_mtu(conn)
        elif kind == _IRQ_CENTRAL_DISCONNECT or kind == _IRQ_PERIPHERAL_DISCONNECT:
            if kind == _IRQ_PERIPHERAL_DISCONNECT:
                self._connecting = False
            p = self.peers.pop(conn, None)
            if conn == self.proxy_conn:
                self.proxy_conn = None
        elif kind == _IRQ_MTU_EXCHANGED:
            p = self.peers.get(conn)
            if p is not None:
                try:
                    p.link.set_mtu(e[2])
                except BleLocalError:
                    pass
                if p.central and p.svc is None:
                    ble.gattc_discover_services(conn)
        elif kind == _IRQ_GATTC_SERVICE_RESULT:
            p = self.peers.get(conn)
            if p is not None and e[4] == self._svc_uuid:
                p.svc = (e[2], e[3])
        elif kind == _IRQ_GATTC_SERVICE_DONE:
            p = self.peers.get(conn)
            if p is not None:
                if p.svc is None:
                    self._drop(p, "no upsycle service")
                else:
                    ble.gattc_discover_characteristics(conn, p.svc[0], p.svc[1])
        elif kind == _IRQ_GATTC_CHARACTERISTIC_RESULT:
            p = self.peers.get(conn)
            if p is not None:
                if e[4] == self._rx_uuid:
                    p.rx = e[3]
                elif e[4] == self._tx_uuid:
                    p.tx = e[3]
        elif kind == _IRQ_GATTC_CHARACTERISTIC_DONE:
            p = self.peers.get(conn)
            if p is not None:
                if p.rx is None or p.tx is None:
                    self._drop(p, "no TX/RX characteristic")
                    return
                # Subscribe: the CCCD follows the TX value (Core 5.3 Vol 3
                # Part G §3.3.3.3); MicroPython notifies regardless, other
                # stacks do not.
                ble.gattc_write(conn, p.tx + 1, b"\x01\x00", 1)
                p.ready = True
                self._hello(p, now)
        elif kind == _IRQ_SCAN_DONE:
            self._scanning = False

    def _hello(self, p, now):
        try:
            p.link.send(self.lan.announce(), now)
        except BleLocalError:
            pass


class BleProxyPipe:
    """What the proxy link sends through instead of a UDP socket."""

    def __init__(self, radio):
        self.radio = radio

    def send(self, data):
        self.radio.send_proxy(data, platform.ticks_ms())

    def close(self):
        pass
