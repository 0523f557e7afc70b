"""The virtual board's `bluetooth` module over the virtual medium
(host/upsycle/vboard/py/bluetooth.py, host/upsycle/ble/medium.py): two
boards, driven by the real mpremote, one a GATT peripheral, the other a
central, with MicroPython's API and irq numbering."""
import concurrent.futures
import time

from ble_rig import MediumProcess
from vboard_rig import VirtualBoard

PERIPHERAL = r'''
import bluetooth, asyncio
from micropython import const
SVC = bluetooth.UUID("6e400001-b5a3-f393-e0a9-e50e24dcca9e")
TX = (bluetooth.UUID("6e400003-b5a3-f393-e0a9-e50e24dcca9e"), bluetooth.FLAG_NOTIFY)
RX = (bluetooth.UUID("6e400002-b5a3-f393-e0a9-e50e24dcca9e"), bluetooth.FLAG_WRITE | bluetooth.FLAG_WRITE_NO_RESPONSE)
ble = bluetooth.BLE()
ble.active(True)
((tx, rx),) = ble.gatts_register_services(((SVC, (TX, RX)),))
ble.gatts_set_buffer(rx, 244)
done = asyncio.Event()
log = []
def irq(ev, data):
    if ev == 1:
        log.append("central_connect")
    elif ev == 3:
        conn, h = data
        v = ble.gatts_read(h)
        log.append("write %d %s" % (len(v), v[:5]))
        ble.gatts_notify(conn, tx, b"echo:" + v)
    elif ev == 21:
        log.append("mtu %d" % data[1])
    elif ev == 2:
        log.append("central_disconnect")
        done.set()
ble.irq(irq)
ble.gap_advertise(100000, b"\x02\x01\x06\x05\x09peri")
async def main():
    try:
        await asyncio.wait_for_ms(done.wait(), 15000)
    finally:
        print("PERI", log)
asyncio.run(main())
'''

CENTRAL = r'''
import bluetooth, asyncio
SVC = bluetooth.UUID("6e400001-b5a3-f393-e0a9-e50e24dcca9e")
RXU = bluetooth.UUID("6e400002-b5a3-f393-e0a9-e50e24dcca9e")
ble = bluetooth.BLE()
ble.active(True)
ble.config(mtu=247)
st = {"log": [], "addr": None, "conn": None, "rx": None, "range": None}
done = asyncio.Event()
def irq(ev, data):
    log = st["log"]
    if ev == 5:
        addr_type, addr, adv_type, rssi, adv = data
        if b"peri" in bytes(adv) and st["addr"] is None:
            st["addr"] = bytes(addr)
            ble.gap_scan(None)
    elif ev == 6:
        log.append("scan_done")
        if st["addr"] is not None and st["conn"] is None:
            ble.gap_connect(0, st["addr"])
    elif ev == 7:
        st["conn"] = data[0]
        log.append("connected")
        ble.gattc_exchange_mtu(data[0])
    elif ev == 21:
        log.append("mtu %d" % data[1])
        ble.gattc_discover_services(st["conn"])
    elif ev == 9:
        if data[3] == SVC:
            st["range"] = (data[1], data[2])
    elif ev == 10:
        ble.gattc_discover_characteristics(st["conn"], st["range"][0], st["range"][1])
    elif ev == 11:
        if data[4] == RXU:
            st["rx"] = data[2]
    elif ev == 12:
        ble.gattc_write(st["conn"], st["rx"], b"x" * 150, 0)
        ble.gattc_write(st["conn"], st["rx"], b"y" * 183, 0)   # over MTU - 3: refused
    elif ev == 18:
        log.append("notify %d %s" % (len(data[2]), bytes(data[2][:7])))
        ble.gap_disconnect(st["conn"])
    elif ev == 8:
        log.append("disconnected")
        done.set()
ble.irq(irq)
ble.gap_scan(5000, 30000, 30000)
async def main():
    try:
        await asyncio.wait_for_ms(done.wait(), 15000)
    finally:
        print("CENTRAL", st["log"])
asyncio.run(main())
'''


def test_two_boards_connect_exchange_mtu_discover_write_notify(tmp_path):
    with MediumProcess(mtu=185) as med:
        with VirtualBoard(tmp_path / "p", name="peri", ble=med.addr) as p, \
                VirtualBoard(tmp_path / "c", name="cent", ble=med.addr) as c:
            (tmp_path / "peri.py").write_text(PERIPHERAL)
            (tmp_path / "cent.py").write_text(CENTRAL)
            with concurrent.futures.ThreadPoolExecutor(2) as ex:
                fp = ex.submit(p.mpremote, "run", str(tmp_path / "peri.py"))
                time.sleep(1.0)   # the peripheral advertises before the central scans
                fc = ex.submit(c.mpremote, "run", str(tmp_path / "cent.py"))
                out_c = fc.result().stdout
                out_p = fp.result().stdout
    # MTU: min(central 247, peripheral default 256, medium cap 185)
    assert """CENTRAL ['scan_done', 'connected', 'mtu 185', "notify 155 b'echo:xx'", 'disconnected']""" in out_c, out_c
    assert "PERI ['central_connect', 'mtu 185', \"write 150 b'xxxxx'\", 'central_disconnect']" in out_p, out_p
