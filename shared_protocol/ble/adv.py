"""The upsycle GATT service and its advertisement, shared by boards and the
proxy.

A board is a GATT peripheral with one service and two characteristics:
TX (node -> peer, by notification) and RX (peer -> node, by write without
response); the fragments of link.py travel in their values. It advertises
(legacy advertising, at most 31 bytes: Core 5.3 Vol 3 Part C §11 and the
Core Specification Supplement Part A for the AD types):

    flags (3) | complete list of 128-bit service UUIDs (18) |
    manufacturer specific data (8): company 0xFFFF, the node's short id (4)

Company 0xFFFF is the Bluetooth SIG's value for tests and unassigned use
(Assigned Numbers §7, "Company Identifiers"). The short id (the node id's
first SHORT_ID bytes) lets a scanner tell boards apart before connecting
and pick which side connects: the smaller id is the central.
"""
from shared_protocol.ble.errors import BleRemoteError

try:
    from micropython import const
except ImportError:   # CPython (host and tests)
    def const(x):
        return x

SERVICE_UUID = "75707379-636c-6500-8000-00000000b1e0"
TX_UUID = "75707379-636c-6500-8000-00000000b1e1"
RX_UUID = "75707379-636c-6500-8000-00000000b1e2"
SHORT_ID = 4
COMPANY_TEST = 0xFFFF
# Legacy advertising data (Core 5.3 Vol 6 Part B §2.3.1.1: AdvData 0..31).
ADV_MAX = 31

_AD_FLAGS = const(0x01)
_AD_UUID128_ALL = const(0x07)
_AD_UUID128_SOME = const(0x06)
_AD_MANUFACTURER = const(0xFF)
# LE General Discoverable, BR/EDR not supported.
_FLAGS = const(0x06)


def uuid_le(s):
    """A 128-bit UUID string -> its 16 bytes as they go on the air (LE)."""
    b = bytes.fromhex(s.replace("-", ""))
    return bytes(reversed(b))


_SERVICE_LE = uuid_le(SERVICE_UUID)


def advert(node_id):
    """The advertising data of a board with this node id."""
    sid = bytes(node_id[:SHORT_ID])
    if len(sid) != SHORT_ID:
        raise ValueError("node id shorter than %d bytes" % SHORT_ID)
    return (bytes((2, _AD_FLAGS, _FLAGS, 17, _AD_UUID128_ALL)) + _SERVICE_LE
            + bytes((3 + SHORT_ID, _AD_MANUFACTURER, COMPANY_TEST & 0xFF, COMPANY_TEST >> 8)) + sid)


def short_id(data):
    """The short id in an upsycle board's advertising data, or None for
    any other advertiser. Raises BleRemoteError for malformed AD structures."""
    if len(data) > ADV_MAX:
        raise BleRemoteError("ble_adv_length", __debug__ and "%d bytes of advertising data" % len(data))
    i = 0
    ours = False
    sid = None
    n = len(data)
    while i < n:
        ln = data[i]
        if ln == 0:
            break   # padding (Core 5.3 Vol 3 Part C §11: the rest is zeros)
        if i + 1 + ln > n:
            raise BleRemoteError("ble_adv_truncated", __debug__ and "AD structure at %d runs past the end" % i)
        t = data[i + 1]
        v = data[i + 2:i + 1 + ln]
        if t == _AD_UUID128_ALL or t == _AD_UUID128_SOME:
            for k in range(0, len(v) - 15, 16):
                if bytes(v[k:k + 16]) == _SERVICE_LE:
                    ours = True
        elif t == _AD_MANUFACTURER and len(v) == 2 + SHORT_ID and v[0] | (v[1] << 8) == COMPANY_TEST:
            sid = bytes(v[2:])
        i += 1 + ln
    return sid if ours else None
