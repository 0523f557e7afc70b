# bluetooth for the virtual board: MicroPython's low-level BLE API (the
# `bluetooth` module of the ESP32 and RP2 ports: BLE, UUID, FLAG_*, the irq
# events with MicroPython's numbering and data tuples) over the virtual
# radio medium (host/upsycle/ble/medium.py), which the board server reaches
# at --ble HOST:PORT. Without a medium the radio works but hears nothing.
#
# As on a board: the irq handler gets addresses and values as memoryviews
# valid only during the call (copy them), characteristic buffers hold 20
# bytes until gatts_set_buffer, a peripheral stops advertising once a
# central connects, and a failed gap_connect ends in
# _IRQ_PERIPHERAL_DISCONNECT with conn_handle 65535.
import json
import sys

import _vboard_js as _js
from micropython import const

FLAG_READ = const(0x0002)
FLAG_WRITE_NO_RESPONSE = const(0x0004)
FLAG_WRITE = const(0x0008)
FLAG_NOTIFY = const(0x0010)
FLAG_INDICATE = const(0x0020)

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
_IRQ_GATTC_WRITE_DONE = const(17)
_IRQ_GATTC_NOTIFY = const(18)
_IRQ_MTU_EXCHANGED = const(21)

# A characteristic's value buffer until gatts_set_buffer (MicroPython's
# MP_BLUETOOTH_DEFAULT_ATTR_LEN).
_ATTR_LEN_DEFAULT = const(20)
_ATT_MTU_MIN = const(23)
_EPERM = const(1)
_EINVAL = const(22)
_ENOTCONN = const(107)


class UUID:
    def __init__(self, value):
        if isinstance(value, UUID):
            self._s = value._s
        elif isinstance(value, int):
            if not 0 <= value <= 0xFFFF:
                raise ValueError("invalid UUID")
            self._s = "0x%04x" % value
        elif isinstance(value, str):
            h = value.replace("-", "").lower()
            if len(h) != 32:
                raise ValueError("invalid UUID")
            bytes.fromhex(h)
            self._s = "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])
        elif isinstance(value, (bytes, bytearray, memoryview)):
            b = bytes(value)
            if len(b) == 2:
                self._s = "0x%04x" % (b[0] | b[1] << 8)
            elif len(b) == 16:
                self._s = UUID(bytes(reversed(b)).hex())._s
            else:
                raise ValueError("invalid UUID")
        else:
            raise TypeError("UUID from int, str or bytes")

    def __eq__(self, other):
        return isinstance(other, UUID) and other._s == self._s

    def __hash__(self):
        return hash(self._s)

    def __bytes__(self):
        if self._s.startswith("0x"):
            v = int(self._s, 16)
            return bytes((v & 0xFF, v >> 8))
        return bytes(reversed(bytes.fromhex(self._s.replace("-", ""))))

    def __repr__(self):
        return "UUID(%s)" % self._s if self._s.startswith("0x") else "UUID('%s')" % self._s


def _addr_str(b):
    return ":".join("%02X" % x for x in bytes(b))


def _addr_bytes(s):
    return bytes.fromhex(s.replace(":", ""))


_ble = None


class BLE:
    def __new__(cls):
        global _ble
        if _ble is None:
            _ble = object.__new__(cls)
            _ble._init()
        return _ble

    def __init__(self):
        pass

    def _init(self):
        self._active = False
        self._handler = None
        self._mac = bytes.fromhex("02" + _js.uniqueId()[:10])
        self._name = ("upsycle-" + _js.boardName()).encode()
        self._mtu = 256   # MicroPython's default preferred MTU (ble.config('mtu'))
        self._adv = None
        self._attrs = {}  # value handle -> [bytearray value, buffer length, append]
        self._conns = {}  # conn_handle -> "c" (we are central) or "p" (peripheral)
        self._tables = {}

    # -- the medium ---------------------------------------------------------

    def _op(self, **m):
        _js.bleSend(json.dumps(m))

    def _event(self, line):
        try:
            self._dispatch(json.loads(line))
        except Exception as e:   # an irq handler's error is printed, as on a board
            sys.print_exception(e)

    def _irq(self, event, data):
        if self._handler is not None:
            self._handler(event, data)

    def _dispatch(self, m):
        ev = m["ev"]
        if ev == "adv":
            self._irq(_IRQ_SCAN_RESULT, (0, memoryview(_addr_bytes(m["addr"])), m["adv_type"], m["rssi"],
                                         memoryview(bytes.fromhex(m["data"]))))
        elif ev == "scan_done":
            self._irq(_IRQ_SCAN_DONE, ())
        elif ev == "central_connect":
            self._conns[m["conn"]] = "p"
            self._irq(_IRQ_CENTRAL_CONNECT, (m["conn"], 0, memoryview(_addr_bytes(m["addr"]))))
        elif ev == "peripheral_connect":
            self._conns[m["conn"]] = "c"
            self._irq(_IRQ_PERIPHERAL_CONNECT, (m["conn"], 0, memoryview(_addr_bytes(m["addr"]))))
        elif ev == "central_disconnect" or ev == "peripheral_disconnect":
            self._conns.pop(m["conn"], None)
            self._tables.pop(m["conn"], None)
            self._irq(_IRQ_CENTRAL_DISCONNECT if ev == "central_disconnect" else _IRQ_PERIPHERAL_DISCONNECT,
                      (m["conn"], 0, memoryview(_addr_bytes(m["addr"]))))
        elif ev == "mtu":
            self._irq(_IRQ_MTU_EXCHANGED, (m["conn"], m["mtu"]))
        elif ev == "services":
            self._discovered(m)
        elif ev == "write":
            a = self._attrs.get(m["handle"])
            if a is not None:
                data = bytes.fromhex(m["data"])
                if a[2]:
                    a[0] = (a[0] + data)[:a[1]]
                else:
                    a[0] = bytearray(data[:a[1]])
                self._irq(_IRQ_GATTS_WRITE, (m["conn"], m["handle"]))
        elif ev == "write_done":
            self._irq(_IRQ_GATTC_WRITE_DONE, (m["conn"], m["handle"], m["status"]))
        elif ev == "notify":
            self._irq(_IRQ_GATTC_NOTIFY, (m["conn"], m["handle"], memoryview(bytes.fromhex(m["data"]))))

    def _discovered(self, m):
        c = m["conn"]
        if m["what"] == "services":
            for svc in m["table"]:
                self._irq(_IRQ_GATTC_SERVICE_RESULT, (c, svc[1], svc[2], UUID(_uuid_in(svc[0]))))
            self._irq(_IRQ_GATTC_SERVICE_DONE, (c, 0))
            return
        for svc in m["table"]:
            for ch in svc[3]:
                if m["start"] <= ch[1] <= m["end"]:
                    self._irq(_IRQ_GATTC_CHARACTERISTIC_RESULT,
                              (c, ch[4], ch[2], ch[3], UUID(_uuid_in(ch[0]))))
        self._irq(_IRQ_GATTC_CHARACTERISTIC_DONE, (c, 0))

    def _need(self, conn=None):
        if not self._active:
            raise OSError(_EPERM)
        if conn is not None and conn not in self._conns:
            raise OSError(_ENOTCONN)

    # -- the API --------------------------------------------------------------

    def active(self, on=None):
        if on is None:
            return self._active
        if on and not self._active:
            _js.bleOpen(self._event)
            self._op(op="hello", addr=_addr_str(self._mac), name=_js.boardName(),
                     group=_js.bleGroup(), mtu=self._mtu)
        elif not on and self._active:
            _js.bleClose()
            self._conns = {}
        self._active = bool(on)
        return self._active

    def config(self, *args, **kw):
        if args:
            k = args[0]
            if k == "mac":
                return (0, self._mac)
            if k == "gap_name":
                return self._name
            if k == "mtu":
                return self._mtu
            if k in ("rxbuf", "addr_mode", "io", "le_secure", "mitm", "bond"):
                return 0
            raise ValueError("unknown config param")
        for k in kw:
            v = kw[k]
            if k == "mtu":
                if not _ATT_MTU_MIN <= v <= 517:
                    raise ValueError("mtu")
                self._mtu = v
                if self._active:
                    self._op(op="mtu_pref", mtu=v)
            elif k == "gap_name":
                self._name = v.encode() if isinstance(v, str) else bytes(v)
            elif k not in ("rxbuf", "addr_mode", "io", "le_secure", "mitm", "bond"):
                raise ValueError("unknown config param")

    def irq(self, handler):
        self._handler = handler

    def gap_advertise(self, interval_us, adv_data=None, *, resp_data=None, connectable=True):
        self._need()
        if interval_us is None:
            self._op(op="adv", data=None)
            return
        if adv_data is not None:
            if len(adv_data) > 31:
                raise OSError(_EINVAL)   # legacy advertising carries 31 bytes
            self._adv = bytes(adv_data)
        self._op(op="adv", data=(self._adv or b"").hex(), connectable=bool(connectable))

    def gap_scan(self, duration_ms, interval_us=1280000, window_us=11250, active=False):
        self._need()
        self._op(op="scan", ms=duration_ms)
        if duration_ms is None:
            self._irq(_IRQ_SCAN_DONE, ())

    def gap_connect(self, addr_type, addr, scan_duration_ms=2000, *args):
        self._need()
        self._op(op="connect", peer=_addr_str(addr))

    def gap_disconnect(self, conn_handle):
        self._need()
        if conn_handle not in self._conns:
            return False
        self._op(op="disconnect", conn=conn_handle)
        return True

    def gatts_register_services(self, services):
        self._need()
        self._attrs = {}
        table = []
        out = []
        h = 1
        for svc in services:
            suuid, chars = svc[0], svc[1]
            start = h
            h += 1
            handles = []
            rows = []
            for ch in chars:
                decl = h
                value = h + 1
                h += 2
                if ch[1] & (FLAG_NOTIFY | FLAG_INDICATE):
                    h += 1   # the client characteristic configuration descriptor
                self._attrs[value] = [bytearray(), _ATTR_LEN_DEFAULT, False]
                handles.append(value)
                rows.append([_uuid_out(ch[0]), decl, value, ch[1], 0])
            for i in range(len(rows)):
                rows[i][4] = (rows[i + 1][1] - 1) if i + 1 < len(rows) else h - 1
            table.append([_uuid_out(suuid), start, h - 1, rows])
            out.append(tuple(handles))
        self._op(op="services", table=table)
        return tuple(out)

    def gatts_read(self, value_handle):
        return bytes(self._attr(value_handle)[0])

    def gatts_write(self, value_handle, data, send_update=False):
        a = self._attr(value_handle)
        a[0] = bytearray(bytes(data)[:a[1]] if not a[2] else data)
        if send_update:
            for c in self._conns:
                if self._conns[c] == "p":
                    self.gatts_notify(c, value_handle)

    def gatts_set_buffer(self, value_handle, length, append=False):
        a = self._attr(value_handle)
        a[1] = length
        a[2] = append

    def gatts_notify(self, conn_handle, value_handle, data=None):
        self._need(conn_handle)
        if data is None:
            data = self._attr(value_handle)[0]
        self._op(op="notify", conn=conn_handle, handle=value_handle, data=bytes(data).hex())

    def _attr(self, h):
        a = self._attrs.get(h)
        if a is None:
            raise ValueError("invalid handle")
        return a

    def gattc_discover_services(self, conn_handle, uuid=None):
        self._need(conn_handle)
        self._op(op="discover", conn=conn_handle, what="services")

    def gattc_discover_characteristics(self, conn_handle, start_handle, end_handle, uuid=None):
        self._need(conn_handle)
        self._op(op="discover", conn=conn_handle, what="characteristics", start=start_handle, end=end_handle)

    def gattc_write(self, conn_handle, value_handle, data, mode=0):
        self._need(conn_handle)
        self._op(op="write", conn=conn_handle, handle=value_handle, data=bytes(data).hex(), ack=mode == 1)

    def gattc_exchange_mtu(self, conn_handle):
        self._need(conn_handle)
        self._op(op="mtu", conn=conn_handle)


def _uuid_out(u):
    return UUID(u)._s


def _uuid_in(s):
    return int(s, 16) if s.startswith("0x") else s
