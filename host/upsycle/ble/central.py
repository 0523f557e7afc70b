"""The proxy's Bluetooth LE side: bleak as central towards upsycle boards.

``upsycle proxy --ble`` scans for boards advertising the upsycle service
(shared_protocol/ble/adv.py), connects to at most ``max_ble_links`` of
them, and runs on each connection a shared_protocol/ble/link.py BleLink:
the board notifies TX, we write RX without response. Every whole message
is a Noise packet of noise/udp.py and goes to the proxy exactly as a UDP
datagram would (``Proxy.on_datagram``) from the address
``("ble:<board address>", 0)``: the same admission, rate limits, Noise
responder, sessions, store and limits as UDP. What the proxy sends to that
address comes back here (``DatagramRouter``) and leaves as fragments.

Only bleak's public API is used (``BleakScanner``, ``BleakClient``,
``start_notify``, ``write_gatt_char``), with ``backend=`` None on a Pi
(BlueZ) or the virtual radio's classes in tests (backend.py): this is the
code that runs against BlueZ.

Bounded: at most ``max_ble_links`` connections (BLE controllers hold a few:
the Pi's CYW43455 is specified for 7 or so), CANDIDATES_MAX boards
remembered from scans, a BleLink's window and queue per connection, and a
connection that carries nothing for ``ble_idle_s`` (a board pings its
proxy every 10 s) is dropped, so a peer that connects and never writes frees its
slot. A lost connection is retried with a backoff per board.
"""
import asyncio
import logging
import time

from shared_protocol.ble import adv as A
from shared_protocol.ble.errors import BleLocalError, BleRemoteError
from shared_protocol.ble.link import ATT_HEADER, ATT_MTU_MAX, WINDOW_MAX, BleLink

log = logging.getLogger("upsycle.proxy")

# Boards heard in scans and not connected, remembered to connect to.
CANDIDATES_MAX = 64
# How often the scanner's candidates are looked at for new connections.
CONNECT_EVERY_S = 0.5
# Backoff between connection attempts to one board: fast at first (a board
# that just walked back into range), at most every 30 s.
RETRY_MIN_S = 0.5
RETRY_MAX_S = 30.0
# Fragments written per pump turn before yielding to the event loop.
FRAGS_PER_TURN = 32
# Longest a pump sleeps when nothing is due.
PUMP_IDLE_S = 0.5
# BLE datagram addresses: ("ble:" + the board's address, 0).
ADDR_PREFIX = "ble:"


def now_ms():
    return int(time.monotonic() * 1000)


def is_ble_addr(addr):
    return isinstance(addr[0], str) and addr[0].startswith(ADDR_PREFIX)


class DatagramRouter:
    """Stands for the proxy's UDP transport: a datagram to a BLE address
    goes to its BLE link, any other to the UDP socket (None: no UDP)."""

    def __init__(self, udp, central):
        self.udp = udp
        self.central = central

    def sendto(self, data, addr):
        if is_ble_addr(addr):
            self.central.sendto(data, addr)
        elif self.udp is not None:
            self.udp.sendto(data, addr)

    def get_extra_info(self, name, default=None):
        return self.udp.get_extra_info(name, default) if self.udp is not None else default

    def close(self):
        if self.udp is not None:
            self.udp.close()


class _Conn:
    def __init__(self, device, client, link):
        self.device = device
        self.client = client
        self.link = link
        self.addr = (ADDR_PREFIX + device.address, 0)
        self.rx = None
        self.wake = asyncio.Event()
        self.last = time.monotonic()
        self.task = None
        self.closed = False


class BleCentral:
    def __init__(self, proxy, links_max, idle_s, scanner_backend=None, client_backend=None, radio=None):
        self.proxy = proxy
        self.links_max = links_max
        self.idle_s = idle_s
        self.scanner_backend = scanner_backend
        self.client_backend = client_backend
        self.radio = radio            # the virtual medium's connection, if any
        self.conns = {}               # board address -> _Conn (connected or connecting)
        self.by_addr = {}             # datagram address -> _Conn
        self.candidates = {}          # board address -> BLEDevice, oldest first
        self.retry = {}               # board address -> [next attempt (monotonic), backoff s]
        self.counts = {"connects": 0, "disconnects": 0, "connect_failures": 0}
        self._task = None
        self._scanner = None

    async def start(self):
        from bleak import BleakScanner
        if self.radio is not None:
            await self.radio.open()
        self._scanner = BleakScanner(self._seen, [A.SERVICE_UUID], backend=self.scanner_backend)
        await self._scanner.start()
        self._task = asyncio.ensure_future(self._run())
        log.info("event=ble_started links_max=%d backend=%s", self.links_max,
                 "bluez" if self.client_backend is None else self.client_backend.__name__)

    async def stop(self):
        if self._task is not None:
            self._task.cancel()
        if self._scanner is not None:
            try:
                await self._scanner.stop()
            except Exception:   # the adapter may be gone already
                pass
        for c in list(self.conns.values()):
            await self._close(c, "shutdown")
        if self.radio is not None:
            await self.radio.close()

    def status(self):
        return dict(self.counts, links=len(self.by_addr), candidates=len(self.candidates))

    # -- scanning and connecting ---------------------------------------------

    def _seen(self, device, adv):
        sid = adv.manufacturer_data.get(A.COMPANY_TEST)
        if sid is None or len(sid) != A.SHORT_ID or device.address in self.conns:
            return
        self.candidates.pop(device.address, None)
        self.candidates[device.address] = device
        while len(self.candidates) > CANDIDATES_MAX:
            self.candidates.pop(next(iter(self.candidates)))

    async def _run(self):
        while True:
            await asyncio.sleep(CONNECT_EVERY_S)
            t = time.monotonic()
            for c in list(self.by_addr.values()):
                if t - c.last > self.idle_s:
                    self.proxy.faults.note("ble_link_idle", peer=c.addr[0])
                    await self._close(c, "idle")
            for address in list(self.candidates):
                if len(self.conns) >= self.links_max:
                    break
                r = self.retry.get(address)
                if address in self.conns or (r is not None and t < r[0]):
                    continue
                device = self.candidates.pop(address)
                self.conns[address] = None   # connecting: holds its slot
                asyncio.ensure_future(self._connect(device))

    async def _connect(self, device):
        from bleak import BleakClient
        from bleak.exc import BleakError
        address = device.address
        client = BleakClient(device, self._lost_cb(address), backend=self.client_backend)
        try:
            await client.connect()
            tx = client.services.get_characteristic(A.TX_UUID)
            rx = client.services.get_characteristic(A.RX_UUID)
            if tx is None or rx is None:
                raise BleakError("no upsycle TX/RX characteristic")
            c = _Conn(device, client, BleLink(WINDOW_MAX, max(23, client.mtu_size)))
            c.rx = rx
            self.conns[address] = c
            self.by_addr[c.addr] = c
            await client.start_notify(tx, lambda _ch, data: self._notified(c, data))
        except (BleakError, asyncio.TimeoutError, OSError) as e:
            self.counts["connect_failures"] += 1
            self._backoff(address)
            self.conns.pop(address, None)
            old = self.by_addr.get((ADDR_PREFIX + address, 0))
            if old is not None and old.client is client:
                del self.by_addr[old.addr]
            log.info("event=ble_connect_failed peer=%s error=%r", address, str(e))
            try:
                await client.disconnect()
            except Exception:
                pass
            return
        self.retry.pop(address, None)
        self.counts["connects"] += 1
        log.info("event=ble_connected peer=%s mtu=%d", address, client.mtu_size)
        c.task = asyncio.ensure_future(self._pump(c))

    def _backoff(self, address):
        r = self.retry.get(address)
        delay = RETRY_MIN_S if r is None else min(RETRY_MAX_S, r[1] * 2)
        self.retry[address] = [time.monotonic() + delay, delay]

    def _lost_cb(self, address):
        def lost(_client):
            c = self.conns.get(address)
            if c is not None:
                asyncio.ensure_future(self._close(c, "disconnected"))
        return lost

    async def _close(self, c, reason):
        if c is None or c.closed:
            return
        c.closed = True
        self.counts["disconnects"] += 1
        address = c.device.address
        if self.conns.get(address) is c:
            del self.conns[address]
        if self.by_addr.get(c.addr) is c:
            del self.by_addr[c.addr]
        self._backoff(address)
        if c.task is not None and c.task is not asyncio.current_task():
            c.task.cancel()
        # The session over this connection ends with it (a UDP session would
        # time out; here we know at once). The board reconnects with a new
        # handshake.
        p = self.proxy
        for table in (p.udp_links, p.udp_hs):
            link = table.get(c.addr)
            if link is not None:
                p.close_link(link, "ble_" + reason)
        log.info("event=ble_disconnected peer=%s reason=%s", address, reason)
        try:
            await c.client.disconnect()
        except Exception:
            pass

    # -- one connection ---------------------------------------------------------

    def _notified(self, c, data):
        if c.closed:
            return
        link = c.link
        # BlueZ reports an MTU of 23 until the exchange it made is acquired;
        # a notification longer than that proves a larger MTU.
        n = len(data) + ATT_HEADER
        if link.mtu < n <= ATT_MTU_MAX:
            link.set_mtu(n)
        try:
            link.receive(bytes(data), now_ms())
        except BleRemoteError as e:
            self.proxy.faults.note(e.code, peer=c.addr[0])
        msgs = link.messages()
        if msgs:
            c.last = time.monotonic()
        for m in msgs:
            self.proxy.on_datagram(m, c.addr)
        c.wake.set()

    def sendto(self, data, addr):
        c = self.by_addr.get(addr)
        if c is None or c.closed:
            return   # the board is gone: its session retransmits or ends
        try:
            c.link.send(data, now_ms())
        except BleLocalError as e:
            self.proxy.faults.note(e.code, peer=addr[0])
        c.wake.set()

    async def _pump(self, c):
        link = c.link
        try:
            while not c.closed:
                c.wake.clear()   # before taking fragments: a wake during the writes counts
                t = now_ms()
                link.poll(t)
                if link.failed is not None:
                    self.proxy.faults.note(link.failed, peer=c.addr[0])
                    await self._close(c, link.failed)
                    return
                frags = link.fragments_to_send(FRAGS_PER_TURN, t)
                for f in frags:
                    await c.client.write_gatt_char(c.rx, f, response=False)
                if len(frags) >= FRAGS_PER_TURN:
                    continue
                d = link.next_deadline()
                wait = PUMP_IDLE_S if d is None else max(0.001, min(PUMP_IDLE_S, (d - now_ms()) / 1000.0))
                try:
                    await asyncio.wait_for(c.wake.wait(), wait)
                except asyncio.TimeoutError:
                    pass
        except asyncio.CancelledError:
            raise
        except Exception as e:   # the adapter or the connection failed under us
            log.info("event=ble_pump_failed peer=%s error=%r", c.addr[0], str(e))
            await self._close(c, "write_failed")
