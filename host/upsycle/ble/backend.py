"""A bleak backend for the virtual radio medium (medium.py).

bleak's ``BleakScanner`` and ``BleakClient`` take a ``backend=`` class; on a
Pi they use BlueZ. ``virtual_backends(radio)`` gives a scanner class and a
client class bound to one ``VirtualRadio`` (this process's connection to
the medium), so the proxy's BLE code (central.py) runs unchanged over
either: it only ever calls bleak's public API.

What this backend does as BlueZ does: the client exchanges the MTU as part
of connecting (BlueZ asks for 517), discovers the services, and
``start_notify`` writes the characteristic's CCCD. What it does not model:
pairing (refused), reads (not used by upsycle), descriptors other than the
CCCD, and BlueZ's caching of devices between scans.
"""
import asyncio
import json
import os
import uuid as uuid_mod

from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakError

# BlueZ's preferred ATT MTU (its largest, 517).
CENTRAL_MTU = 517
# Longest a connect, MTU exchange or discovery may take before it fails.
GATT_TIMEOUT_S = 10.0
# The medium's "connection failed" handle (MicroPython's, medium.py NO_CONN).
NO_CONN = 0xFFFF
_PROPS = ((0x02, "read"), (0x04, "write-without-response"), (0x08, "write"), (0x10, "notify"),
          (0x20, "indicate"))
_BASE_UUID = "-0000-1000-8000-00805f9b34fb"


def random_address():
    """A random static address (Core 5.3 Vol 6 Part B §1.3.2.1: top bits 11)."""
    b = bytearray(os.urandom(6))
    b[0] |= 0xC0
    return ":".join("%02X" % x for x in b)


class VirtualRadio:
    """This process's radio on the medium: one TCP connection, JSON lines."""

    def __init__(self, host, port, addr=None, group="default", mtu=CENTRAL_MTU):
        self.host = host
        self.port = port
        self.addr = addr or random_address()
        self.group = group
        self.mtu = mtu
        self.scanners = set()
        self.clients = {}        # conn -> VirtualClient
        self.connecting = {}     # peer addr -> Future(conn)
        self.waiting = {}        # (kind, conn) -> Future
        self._writer = None
        self._reader_task = None

    async def open(self):
        reader, self._writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
        self.send(op="hello", addr=self.addr, name="upsycle-proxy", group=self.group, mtu=self.mtu)
        self._reader_task = asyncio.ensure_future(self._read(reader))

    async def close(self):
        if self._reader_task is not None:
            self._reader_task.cancel()
        if self._writer is not None:
            self._writer.close()

    def send(self, **m):
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(json.dumps(m, separators=(",", ":")).encode() + b"\n")

    def expect(self, key):
        """A future for the event ("mtu", conn), ("services", conn) or
        ("write_done", conn, handle)."""
        f = asyncio.get_running_loop().create_future()
        self.waiting[key] = f
        return f

    async def _read(self, reader):
        while True:
            line = await reader.readline()
            if not line:
                break
            m = json.loads(line)
            ev = m["ev"]
            if ev == "adv":
                for s in list(self.scanners):
                    s._advertisement(m["addr"], bytes.fromhex(m["data"]), m["rssi"])
            elif ev == "peripheral_connect":
                f = self.connecting.pop(m["addr"], None)
                if f is not None and not f.done():
                    f.set_result(m["conn"])
                else:
                    self.send(op="disconnect", conn=m["conn"])   # nobody wants it any more
            elif ev == "peripheral_disconnect":
                if m["conn"] == NO_CONN:
                    f = self.connecting.pop(m["addr"], None)
                    if f is not None and not f.done():
                        f.set_exception(BleakError("device %s not found or not connectable" % m["addr"]))
                    continue
                c = self.clients.pop(m["conn"], None)
                if c is not None:
                    c._gone()
            elif ev in ("mtu", "services", "write_done"):
                key = (ev, m["conn"]) if ev != "write_done" else (ev, m["conn"], m["handle"])
                f = self.waiting.pop(key, None)
                if f is not None and not f.done():
                    f.set_result(m)
            elif ev == "notify":
                c = self.clients.get(m["conn"])
                if c is not None:
                    c._notified(m["handle"], bytearray.fromhex(m["data"]))


def virtual_backends(radio):
    """(scanner class, client class) bound to ``radio``, for bleak's backend=."""
    return (type("VirtualBleakScanner", (VirtualScanner,), {"radio": radio}),
            type("VirtualBleakClient", (VirtualClient,), {"radio": radio}))


def _uuid_str(b):
    if len(b) == 2:
        return "0000%04x%s" % (b[0] | b[1] << 8, _BASE_UUID)
    return str(uuid_mod.UUID(bytes=bytes(reversed(b))))


def parse_advertisement(data, rssi):
    """AD structures (Core Specification Supplement Part A) -> bleak's AdvertisementData."""
    name = None
    mfr = {}
    uuids = []
    sdata = {}
    i = 0
    while i + 1 < len(data):
        ln = data[i]
        if ln == 0 or i + 1 + ln > len(data):
            break
        t, v = data[i + 1], data[i + 2:i + 1 + ln]
        if t in (0x02, 0x03):
            uuids += [_uuid_str(v[k:k + 2]) for k in range(0, len(v) - 1, 2)]
        elif t in (0x06, 0x07):
            uuids += [_uuid_str(v[k:k + 16]) for k in range(0, len(v) - 15, 16)]
        elif t in (0x08, 0x09):
            name = v.decode("utf-8", "replace")
        elif t == 0xFF and len(v) >= 2:
            mfr[v[0] | v[1] << 8] = bytes(v[2:])
        elif t == 0x16 and len(v) >= 2:
            sdata[_uuid_str(v[:2])] = bytes(v[2:])
        i += 1 + ln
    return AdvertisementData(local_name=name, manufacturer_data=mfr, service_data=sdata, service_uuids=uuids,
                             tx_power=None, rssi=rssi, platform_data=())


class VirtualScanner(BaseBleakScanner):
    radio = None

    def __init__(self, detection_callback, service_uuids, scanning_mode="active", **kwargs):
        super().__init__(detection_callback, service_uuids)

    async def start(self):
        self.seen_devices = {}
        self.radio.scanners.add(self)
        self.radio.send(op="scan", ms=0)

    async def stop(self):
        self.radio.scanners.discard(self)
        if not self.radio.scanners:
            self.radio.send(op="scan", ms=None)

    def _advertisement(self, addr, data, rssi):
        adv = parse_advertisement(data, rssi)
        if not self.is_allowed_uuid(adv.service_uuids):
            return
        device = self.create_or_update_device(addr, addr, adv.local_name, {"medium": True}, adv)
        self.call_detection_callbacks(device, adv)


class VirtualClient(BaseBleakClient):
    radio = None

    def __init__(self, address_or_ble_device, **kwargs):
        super().__init__(address_or_ble_device, disconnected_callback=kwargs.get("disconnected_callback"),
                         timeout=kwargs.get("timeout", GATT_TIMEOUT_S))
        self._conn = None
        self._mtu = 23
        self._notify = {}

    @property
    def name(self):
        return self.address

    @property
    def mtu_size(self):
        return self._mtu

    @property
    def is_connected(self):
        return self._conn is not None

    async def connect(self, pair, **kwargs):
        r = self.radio
        f = asyncio.get_running_loop().create_future()
        r.connecting[self.address] = f
        r.send(op="connect", peer=self.address)
        try:
            conn = await asyncio.wait_for(f, self._timeout)
        except asyncio.TimeoutError:
            r.connecting.pop(self.address, None)
            raise BleakError("connecting to %s timed out" % self.address) from None
        self._conn = conn
        r.clients[conn] = self
        try:
            fm = r.expect(("mtu", conn))
            r.send(op="mtu", conn=conn)
            self._mtu = (await asyncio.wait_for(fm, GATT_TIMEOUT_S))["mtu"]
            fs = r.expect(("services", conn))
            r.send(op="discover", conn=conn, what="services")
            table = (await asyncio.wait_for(fs, GATT_TIMEOUT_S))["table"]
        except (asyncio.TimeoutError, BleakError):
            await self.disconnect()
            raise BleakError("GATT set-up with %s failed" % self.address) from None
        self.services = self._collection(table)

    def _collection(self, table):
        coll = BleakGATTServiceCollection()
        for suuid, start, end, chars in table:
            svc = BleakGATTService(None, start, _full(suuid))
            coll.add_service(svc)
            for cuuid, decl, value, props, cend in chars:
                names = [n for bit, n in _PROPS if props & bit]
                ch = BleakGATTCharacteristic(None, value, _full(cuuid), names, lambda: self._mtu - 3, svc)
                coll.add_characteristic(ch)
        return coll

    async def disconnect(self):
        if self._conn is not None:
            self.radio.send(op="disconnect", conn=self._conn)
            self.radio.clients.pop(self._conn, None)
            self._conn = None

    def _gone(self):
        self._conn = None
        if self._disconnected_callback is not None:
            self._disconnected_callback()

    async def pair(self, *args, **kwargs):
        raise BleakError("pairing is not modelled by the virtual radio")

    async def unpair(self):
        raise BleakError("pairing is not modelled by the virtual radio")

    async def read_gatt_char(self, characteristic, **kwargs):
        raise BleakError("reads are not modelled by the virtual radio")

    async def read_gatt_descriptor(self, descriptor, **kwargs):
        raise BleakError("reads are not modelled by the virtual radio")

    async def write_gatt_char(self, characteristic, data, response):
        if self._conn is None:
            raise BleakError("not connected")
        h = characteristic.handle
        if not response and len(data) > self._mtu - 3:
            raise BleakError("%d bytes: a write without response carries at most %d" % (len(data), self._mtu - 3))
        f = self.radio.expect(("write_done", self._conn, h)) if response else None
        self.radio.send(op="write", conn=self._conn, handle=h, data=bytes(data).hex(), ack=bool(response))
        if f is not None:
            m = await asyncio.wait_for(f, GATT_TIMEOUT_S)
            if m["status"]:
                raise BleakError("write failed: ATT error 0x%02x" % m["status"])

    async def write_gatt_descriptor(self, descriptor, data):
        raise BleakError("descriptors are not modelled by the virtual radio")

    async def start_notify(self, characteristic, callback, **kwargs):
        self._notify[characteristic.handle] = callback
        # Subscribe as BlueZ does: write 0x0001 to the CCCD after the value.
        await self.write_gatt_char(_Handle(characteristic.handle + 1), b"\x01\x00", True)

    async def stop_notify(self, characteristic):
        self._notify.pop(characteristic.handle, None)

    def _notified(self, handle, data):
        cb = self._notify.get(handle)
        if cb is not None:
            cb(data)


class _Handle:
    def __init__(self, handle):
        self.handle = handle


def _full(u):
    return "0000%s%s" % (u[2:], _BASE_UUID) if u.startswith("0x") else u
