"""Readings over the BLE link (shared_protocol/ble/link.py) against the UDP
link, in the same run.

    PYTHONPATH=host:.:tools/bench python tools/bench/bench_ble.py [--readings N] [--only air|time|heap]

1. Air (computed by running the links, no timing): bytes and packets per
   reading for one signed reading as the node sends it (s_pub_a in a Noise
   transport datagram) and its ack (s_ack_a), over BLE at ATT_MTU 23 and
   247 (ATT packets: notifications + writes, each value + the 3-byte ATT
   header + the 4-byte L2CAP header; our link's acks included) against UDP
   over IPv4 (the anchor: datagram + 28 bytes of IP and UDP headers).
2. Time (the virtual medium, host/upsycle/ble/medium.py, as a separate
   process): goodput and per-reading latency. A peripheral plays the board
   (raw medium protocol, BleLink), the proxy's side is bleak with the
   virtual backend (the code path of upsycle/ble/central.py). Latency: one
   reading in flight, from handing the datagram to the link until its ack
   datagram is back. Goodput: N readings back to back (the link's window).
   Run unpaced (the medium forwards at once: what our layers cost) and
   paced (7.5 ms connection interval, 4 packets per direction per
   interval: a model of the air, not a radio). The anchor is the same
   exchange over loopback UDP sockets. CPU: this process (both ends) and
   the medium's process.
3. Heap (--only heap): what importing the BLE layer from .mpy adds on the
   virtual board (gc.mem_alloc after a collection, like bench_node.py),
   after the node's own modules, and what 4 idle links hold. With
   ``--aioble DIR`` (a checkout's micropython-lib
   micropython/bluetooth/aioble, not shipped here) also what importing
   aioble from .mpy costs, for the choice docs/ble.md explains.
   With ``--micropython PATH`` (a 32-bit MicroPython with a hard heap, the
   unix port: the instrument heap figures come from) the same imports run
   there instead, from the .mpy files `upsycle flash` builds (bench_rig.py's
   build_mpy). The unix port has no ``bluetooth`` module: an empty one is
   imported before the first figure, so it costs nothing in the rows
   (firmware/ble_link.py touches the module only when the radio starts;
   aioble makes its BLE object at import, which the empty one allows).
"""
import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from table import render

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IP_UDP = 20 + 8
L2CAP = 4


def reading_datagrams():
    """(publish datagram, ack datagram) of one signed reading, steady state,
    the sizes the node's Noise link sends (bench_node.py's on_air)."""
    from firmware.topic import message_seq
    from shared_protocol.wire import envelope as E
    from shared_protocol.session import messages as W
    from shared_protocol.groups.admin import Admin
    from shared_protocol.groups.invite import member_from_invite
    from shared_protocol.noise.datagram import NONCE_PREFIX
    from shared_protocol.noise.symmetric import TAGLEN
    a = Admin(os.urandom(32), os.urandom(32), 0, "field")
    m = member_from_invite(a.invite(os.urandom(32), read=True, write=True))
    op = os.urandom(53)   # a DMC append op as a node sends it (bench_node.py _ops)
    m.seal_reading(op, os.urandom(32), 1763683201)   # the introduction, once
    sealed = m.seal_reading(op, os.urandom(32), 1763683201)
    node_id = os.urandom(32)
    author = os.urandom(8)
    mid = W.message_id(node_id, message_seq(author, 7))
    short = W.alias_for([(m.topic, message_seq(author, 0))], m.topic, mid, node_id)
    pub = E.REGISTRY.encode("s_pub_a", short[0], short[1], sealed)
    ack = E.REGISTRY.encode("s_ack_a", short[0], short[1])
    pad = NONCE_PREFIX + TAGLEN
    # kind 4 (noise/udp.py transport) | nonce | ciphertext | tag: the bytes
    # do not matter to the link, their number does
    return b"\x04" + os.urandom(pad + len(pub)), b"\x04" + os.urandom(pad + len(ack))


def air():
    from shared_protocol.ble.link import ATT_HEADER, BleLink
    pub, ack = reading_datagrams()
    n = 50
    udp = (len(pub) + IP_UDP + len(ack) + IP_UDP)
    rows = [["UDP/IPv4 (anchor)", len(pub) + len(ack), 2.0, float(udp), 1.0]]
    for mtu in (23, 247):
        node, proxy = BleLink(2, mtu), BleLink(4, mtu)
        pkts = 0
        octets = 0
        t = 0
        for _ in range(n):
            node.send(pub, t)
            for _ in range(20):
                for src, dst in ((node, proxy), (proxy, node)):
                    for f in src.fragments_to_send(1000, t):
                        pkts += 1
                        octets += len(f) + ATT_HEADER + L2CAP
                        dst.receive(f, t)
                for m in proxy.messages():
                    proxy.send(ack, t)
                node.messages()
        rows.append(["BLE, ATT_MTU %d" % mtu, len(pub) + len(ack), pkts / n, octets / n, octets / n / udp])
    print(render("Bytes on air per signed reading (publish %d B + ack %d B as Noise datagrams), "
                 "both directions; BLE: ATT values + 3 B ATT + 4 B L2CAP headers, our link's acks "
                 "included; UDP: + 28 B IPv4/UDP headers" % (len(pub), len(ack)),
                 ["link", "datagram bytes", "packets", "bytes on air", "vs UDP"], rows))


# -- timed: through the virtual medium -------------------------------------------

class Peripheral:
    """The board's side over the raw medium protocol: TX notified, RX written."""

    def __init__(self, port, addr, mtu):
        from shared_protocol.ble.link import BleLink
        self.port = port
        self.addr = addr
        self.link = BleLink(2, 23)
        self.mtu = mtu
        self.conn = None
        self.got = asyncio.Queue()
        self.connected = asyncio.Event()

    async def open(self):
        from shared_protocol.ble import adv
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20)
        self.send(op="hello", addr=self.addr, name="bench-board", group="default", mtu=self.mtu)
        self.send(op="services", table=[[adv.SERVICE_UUID, 1, 6, [[adv.TX_UUID, 2, 3, 0x10, 4],
                                                                   [adv.RX_UUID, 5, 6, 0x0C, 6]]]])
        self.send(op="adv", data=adv.advert(os.urandom(32)).hex(), connectable=True)
        self.task = asyncio.ensure_future(self._read())

    def send(self, **m):
        self.writer.write(json.dumps(m, separators=(",", ":")).encode() + b"\n")

    async def _read(self):
        while True:
            line = await self.reader.readline()
            if not line:
                return
            m = json.loads(line)
            ev = m["ev"]
            if ev == "central_connect":
                self.conn = m["conn"]
                self.connected.set()
            elif ev == "mtu":
                self.link.set_mtu(m["mtu"])
            elif ev == "write" and m["handle"] == 6:
                self.link.receive(bytes.fromhex(m["data"]), _ms())
                for msg in self.link.messages():
                    self.got.put_nowait(msg)
                self.pump()

    def pump(self):
        for f in self.link.fragments_to_send(64, _ms()):
            self.send(op="notify", conn=self.conn, handle=3, data=f.hex())


def _ms():
    return int(time.monotonic() * 1000)


async def _ble_run(port, mtu, pub, ack, n):
    from bleak import BleakClient, BleakScanner
    from shared_protocol.ble import adv
    from shared_protocol.ble.link import BleLink
    from upsycle.ble.backend import VirtualRadio, virtual_backends
    board = Peripheral(port, "02:00:00:00:00:B1", mtu)
    await board.open()
    radio = VirtualRadio("127.0.0.1", port)
    await radio.open()
    scanner_cls, client_cls = virtual_backends(radio)
    dev = await BleakScanner.find_device_by_address(board.addr, timeout=5, backend=scanner_cls)
    client = BleakClient(dev, backend=client_cls)
    await client.connect()
    link = BleLink(4, client.mtu_size)
    acks = asyncio.Queue()
    rx = client.services.get_characteristic(adv.RX_UUID)
    wake = asyncio.Event()

    def notified(_c, data):
        link.receive(bytes(data), _ms())
        for m in link.messages():
            acks.put_nowait(m)
        wake.set()
    await client.start_notify(adv.TX_UUID, notified)

    async def pump():
        from bleak.exc import BleakError
        while True:
            wake.clear()
            t = _ms()
            link.poll(t)
            try:
                for f in link.fragments_to_send(64, t):
                    await client.write_gatt_char(rx, f, response=False)
            except BleakError:
                return   # disconnected at the end of the run
            try:
                await asyncio.wait_for(wake.wait(), 0.05)
            except asyncio.TimeoutError:
                pass

    async def board_side():
        while True:
            await board.got.get()
            board.link.send(ack, _ms())
            board.pump()
    tasks = [asyncio.ensure_future(pump()), asyncio.ensure_future(board_side())]

    def send(d):
        link.send(d, _ms())
        wake.set()
    res = await _exchange(send, acks, pub, n, lambda: link.can_send())
    for t in tasks:
        t.cancel()
    await client.disconnect()
    await radio.close()
    board.task.cancel()
    board.writer.close()
    return res


async def _exchange(send, acks, pub, n, can_send):
    """(median latency ms, goodput bytes/s) of n readings."""
    lat = []
    for _ in range(max(5, n // 4)):
        t0 = time.perf_counter()
        send(pub)
        await asyncio.wait_for(acks.get(), 10)
        lat.append((time.perf_counter() - t0) * 1000)
    lat.sort()
    t0 = time.perf_counter()
    sent = got = 0
    while got < n:
        while sent < n and sent - got < 8 and can_send():
            send(pub)
            sent += 1
        await asyncio.wait_for(acks.get(), 10)
        got += 1
    el = time.perf_counter() - t0
    return lat[len(lat) // 2], n * len(pub) / el


async def _udp_run(pub, ack, n):
    loop = asyncio.get_running_loop()
    acks = asyncio.Queue()

    class Proxy(asyncio.DatagramProtocol):
        def connection_made(self, tr):
            self.tr = tr

        def datagram_received(self, data, addr):
            self.tr.sendto(ack, addr)

    class Node(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            acks.put_nowait(data)
    ptr, _ = await loop.create_datagram_endpoint(Proxy, local_addr=("127.0.0.1", 0))
    paddr = ptr.get_extra_info("sockname")
    ntr, _ = await loop.create_datagram_endpoint(Node, local_addr=("127.0.0.1", 0))
    res = await _exchange(lambda d: ntr.sendto(d, paddr), acks, pub, n, lambda: True)
    ptr.close()
    ntr.close()
    return res


def _proc_cpu(pid):
    with open("/proc/%d/stat" % pid) as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def _self_cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(n):
    sys.path.insert(0, os.path.join(ROOT, "tests", "host"))
    from ble_rig import MediumProcess
    pub, ack = reading_datagrams()
    rows = []
    c0 = _self_cpu()
    lat_u, gp_u = asyncio.run(_udp_run(pub, ack, n))
    rows.append(["UDP loopback (anchor)", lat_u, gp_u / 1000, 1.0, _self_cpu() - c0, 0.0])
    for paced in (False, True):
        for mtu in (23, 247):
            with MediumProcess(mtu=mtu, interval_ms=7.5 if paced else 0) as med:
                m0 = _proc_cpu(med.proc.pid)
                c0 = _self_cpu()
                lat, gp = asyncio.run(_ble_run(med.port, mtu, pub, ack, n))
                rows.append(["BLE ATT_MTU %d, %s" % (mtu, "paced 7.5 ms x 4" if paced else "unpaced"),
                             lat, gp / 1000, gp / gp_u, _self_cpu() - c0, _proc_cpu(med.proc.pid) - m0])
    print(render("%d signed readings (publish %d B, ack %d B) over the virtual BLE medium vs loopback UDP; "
                 "latency: median round trip of one reading in flight; goodput: publish bytes/s with up to "
                 "8 in flight" % (n, len(pub), len(ack)),
                 ["link", "latency ms", "goodput KB/s", "goodput vs UDP", "CPU s (both ends)",
                  "CPU s (medium)"], rows))
    print("the medium is a model: real BLE throughput depends on the controllers' packets per connection "
          "event and the PHY; unpaced rows measure what our layers and the medium's JSON cost")


# -- heap on the virtual board -----------------------------------------------------

def _aioble_files(src):
    """[(board path, .mpy bytes)] of aioble's modules compiled here."""
    from upsycle.firmware_build import MPY_CROSS_FLAGS, mpy_cross_path
    out = []
    pkg = os.path.join(src, "aioble")
    with tempfile.TemporaryDirectory() as d:
        for f in sorted(os.listdir(pkg)):
            if f.endswith(".py"):
                dst = os.path.join(d, f[:-3] + ".mpy")
                # the flags `upsycle flash` compiles ours with: a fair comparison
                subprocess.run([mpy_cross_path()] + list(MPY_CROSS_FLAGS) + ["-o", dst, os.path.join(pkg, f)],
                               check=True)
                with open(dst, "rb") as fh:
                    out.append(("lib/aioble/" + f[:-3] + ".mpy", fh.read()))
    return out


def _heap_steps(aioble):
    """The import steps, each followed by a figure line 'M bytes'."""
    from firmware import preload
    base = list(preload.TOPICS + preload.LINK)
    lan = [m for m in preload.BLE if "ble" not in m]
    ble = [m for m in preload.BLE if "ble" in m]
    steps = ["import gc", "gc.collect()", "print('M', gc.mem_alloc())"]
    for group in (base, lan, ble):
        steps += ["\n".join("import " + m for m in group), "gc.collect()", "print('M', gc.mem_alloc())"]
    steps += ["from shared_protocol.ble.link import BleLink\n_l = [BleLink(2, 247, 2) for i in range(4)]",
              "gc.collect()", "print('M', gc.mem_alloc())"]
    if aioble:
        steps += ["import aioble\nimport aioble.server, aioble.client, aioble.central, aioble.peripheral",
                  "gc.collect()", "print('M', gc.mem_alloc())"]
    return steps


def _heap_rig(mp, aioble):
    """stdout of the import steps on a unix MicroPython (see 3. above)."""
    from bench_rig import build_mpy
    with tempfile.TemporaryDirectory() as d:
        lib = build_mpy(d)
        if aioble:
            for remote, data in _aioble_files(aioble):
                target = os.path.join(lib, remote[len("lib/"):])
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with open(target, "wb") as f:
                    f.write(data)
        radio = os.path.join(d, "radio")
        os.makedirs(radio)
        with open(os.path.join(radio, "bluetooth.py"), "w") as f:
            # What importing aioble touches (it makes its BLE object at import).
            f.write("# stands in for the boards' C module\nclass UUID:\n    def __init__(self, v):\n        self.v = v\n"
                    "class BLE:\n    def irq(self, handler):\n        pass\n")
        code = "import bluetooth\n" + "\n".join(_heap_steps(aioble))
        r = subprocess.run([mp, "-X", "heapsize=1024k", "-c", code], capture_output=True, text=True, cwd=d,
                           env=dict(os.environ, MICROPYPATH=".frozen:" + radio + ":" + lib), timeout=300)
    if r.returncode != 0:
        raise RuntimeError(r.stdout[-2000:] + r.stderr[-2000:])
    return r.stdout


def heap(aioble=None, micropython=None):
    if micropython:
        out = _heap_rig(micropython, aioble)
        where = "on %s (32-bit, hard heap)" % os.path.basename(micropython)
    else:
        out = _heap_vboard(aioble)
        where = "on the virtual board (its heap grows: figures for comparison only)"
    v = [int(line.split()[1]) for line in out.splitlines() if line.startswith("M ")]
    node = v[1] - v[0]
    rows = [["the node's modules (anchor: a node without BLE)", node, 1.0],
            ["+ LAN layers BLE gossip uses (lan, cyclon, dmc.sync, framing, rand)", v[2] - v[1], (v[2] - v[1]) / node],
            ["+ the BLE layer (shared_protocol.ble.*, firmware.ble_link)", v[3] - v[2], (v[3] - v[2]) / node],
            ["+ 4 idle BleLinks (window 2, queue 2)", v[4] - v[3], (v[4] - v[3]) / node]]
    if aioble:
        rows.append(["aioble instead (server, client, central, peripheral), for comparison", v[5] - v[4],
                     (v[5] - v[4]) / node])
    print(render("Heap %s, modules imported from .mpy, bytes (gc.mem_alloc after collect)" % where,
                 ["what", "bytes", "vs node"], rows))
    from shared_protocol.ble.link import MESSAGE_MAX
    print("in use a link holds at most 2 x %d B reassembling + 2 in flight + 2 queued each way: "
          "<= %d B per link, %d B for 4" % (MESSAGE_MAX, 6 * MESSAGE_MAX, 24 * MESSAGE_MAX))


def _heap_vboard(aioble):
    """stdout of the import steps on the virtual board (WebAssembly VM)."""
    from bench_node import _flash, _invites, _start_board
    mp = [sys.executable, "-m", "mpremote"]
    with tempfile.TemporaryDirectory() as d:
        fs = os.path.join(d, "flash")
        os.makedirs(fs)
        p = _start_board(fs, "bleheap")
        try:
            _flash(p.url, proxies=["127.0.0.1:9"], invites=_invites(1))
            if aioble:
                from upsycle import flashing
                b = flashing.Board(p.url)
                try:
                    b.mkdirs(["lib/aioble"])
                    b.write_files(_aioble_files(aioble))
                finally:
                    b.close()
            steps = _heap_steps(aioble)
            r = subprocess.run(mp + ["connect", p.url] + [x for s in steps for x in ("exec", s)],
                               capture_output=True, text=True, timeout=600, cwd=ROOT)
            if r.returncode != 0:
                raise RuntimeError(r.stdout[-2000:] + r.stderr[-2000:])
        finally:
            p.stop()
    return r.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--readings", type=int, default=200)
    ap.add_argument("--only", choices=["air", "time", "heap"])
    ap.add_argument("--aioble", metavar="DIR", help="micropython-lib's micropython/bluetooth/aioble directory: "
                    "also measure importing aioble (--only heap)")
    ap.add_argument("--micropython", metavar="PATH", help="--only heap on this unix MicroPython (32-bit, hard "
                    "heap) instead of the virtual board")
    a = ap.parse_args()
    if a.only in (None, "air"):
        air()
    if a.only in (None, "time"):
        timed(a.readings)
    if a.only in (None, "heap"):
        heap(a.aioble, a.micropython)


if __name__ == "__main__":
    main()
