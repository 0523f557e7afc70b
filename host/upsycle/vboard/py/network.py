# network for the virtual board: a WLAN that joins the virtual board's
# configured access points at once (server option --wifi SSID:PASS) and whose
# address is loopback, so firmware reaches proxies and other virtual boards on
# 127.0.0.1. Status constants are the ESP32 port's.
import _vboard_js as _js
from micropython import const

STA_IF = const(0)
AP_IF = const(1)

STAT_IDLE = const(1000)
STAT_CONNECTING = const(1001)
STAT_GOT_IP = const(1010)
STAT_NO_AP_FOUND = const(201)
STAT_WRONG_PASSWORD = const(202)
STAT_BEACON_TIMEOUT = const(200)
STAT_ASSOC_FAIL = const(203)
STAT_HANDSHAKE_TIMEOUT = const(204)

_ADDR = ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")
_state = {}


def hostname(name=None):
    if name is None:
        return _js.boardName()


def country(code=None):
    if code is None:
        return "XX"


class WLAN:
    def __init__(self, interface=STA_IF):
        self._if = interface
        if interface not in _state:
            _state[interface] = {"active": False, "status": STAT_IDLE, "ssid": None}
        self._s = _state[interface]

    def active(self, on=None):
        if on is None:
            return self._s["active"]
        self._s["active"] = bool(on)
        if not on:
            self._s["status"] = STAT_IDLE

    def connect(self, ssid=None, key=None, *, bssid=None):
        if not self._s["active"]:
            raise OSError("WiFi Not Started")
        r = _js.wifiJoin(ssid or "", key or "")
        self._s["status"] = {"ok": STAT_GOT_IP, "no_ap": STAT_NO_AP_FOUND}.get(r, STAT_WRONG_PASSWORD)
        self._s["ssid"] = ssid if r == "ok" else None

    def disconnect(self):
        self._s["status"] = STAT_IDLE
        self._s["ssid"] = None

    def isconnected(self):
        return self._s["status"] == STAT_GOT_IP

    def status(self, param=None):
        if param == "rssi":
            return -42
        return self._s["status"]

    def ifconfig(self, cfg=None):
        if cfg is None:
            return _ADDR if self.isconnected() else ("0.0.0.0",) * 4

    def ipconfig(self, key):
        if key == "addr4":
            return (_ADDR[0], _ADDR[1]) if self.isconnected() else ("0.0.0.0", "0.0.0.0")
        raise ValueError("unknown config param")

    def config(self, *args, **kw):
        if args == ("mac",):
            return bytes.fromhex("02" + _js.uniqueId()[:10])
        if args == ("essid",) or args == ("ssid",):
            return self._s["ssid"] or ""
        if args:
            raise ValueError("unknown config param")

    def scan(self):
        return [(s.encode(), b"\x02\x00\x00\x00\x00\x01", 6, -42, 3, False) for s in _js.wifiNames().split("\n") if s]
