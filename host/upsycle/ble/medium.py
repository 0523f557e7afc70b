"""The virtual BLE radio medium: what the air between radios does, for tests.

No Bluetooth adapter exists where the tests run (no HCI, no /dev/vhci), so
every radio of a test (a virtual board's ``bluetooth`` module, the proxy's
bleak backend, host/upsycle/ble/backend.py) connects to this one process
over loopback TCP and speaks JSON lines (bytes as hex). The medium carries
advertisements to scanners, connects a central to a peripheral, and carries
the GATT operations of a connection: writes (central -> peripheral) and
notifications (peripheral -> central), with

- an ATT MTU cap (``mtu_max``): an exchange settles on min(both radios'
  preferred MTU, the cap); a packet longer than MTU - 3 is refused, as the
  stack refuses it;
- loss: each notification or write-without-response is dropped with
  probability ``loss`` (what a full buffer or a client that keeps only the
  latest value does above the link layer); writes with response always
  arrive or the write reports an error;
- range groups: radios hear each other only within one group; moving a
  radio to another group (a control message) drops its connections, as
  walking out of range does;
- optional pacing: ``interval_ms`` > 0 carries at most
  ``packets_per_event`` packets per direction per connection interval
  (Core 5.3 Vol 6 Part B §4.5.1 connection events), queueing up to
  QUEUE_MAX and dropping beyond (the sender's buffers full).

Radio -> medium:   {"op": "hello", "addr", "name", "group", "mtu"} first, then
  adv {data, connectable} (data null: stop) | scan {ms} (ms null: stop;
  0: until stopped) | services {table} | connect {peer} | disconnect {conn} |
  mtu {conn} | discover {conn} | write {conn, handle, data, ack} |
  notify {conn, handle, data}
Medium -> radio:   {"ev": ...} adv | scan_done | central_connect |
  peripheral_connect | central_disconnect | peripheral_disconnect | mtu |
  services | write | write_done | notify
Control (any connection, no hello needed): ctl_group {addr, group},
  ctl_loss {loss}, ctl_stats -> {"ev": "stats", ...}.
"""
import argparse
import asyncio
import json
import random
import sys

# How often a scanning radio gets a report of each advertiser in range: a
# board scanning with a 100 ms interval hears an advertiser about that often.
SCAN_REPEAT_S = 0.1
# Connections one radio takes part in (NimBLE's default in MicroPython's
# ESP32 port, MYNEWT_VAL_BLE_MAX_CONNECTIONS = 4).
CONNECTIONS_MAX = 4
# Packets queued per connection direction when paced, then dropped (a
# sender's notification buffers; NimBLE's msys pool holds a dozen or so).
QUEUE_MAX = 32
# A JSON line is one packet (at most 517 bytes, hex) or a service table.
LINE_MAX = 16384
# A connect to a radio out of range or not advertising fails after this
# (MicroPython's gap_connect default scan_duration_ms is 2000).
CONNECT_FAIL_S = 0.3
# The conn_handle of _IRQ_PERIPHERAL_DISCONNECT when a connect fails.
NO_CONN = 0xFFFF
ATT_MTU_MIN = 23


class Radio:
    def __init__(self, medium, writer):
        self.medium = medium
        self.writer = writer
        self.addr = None
        self.name = ""
        self.group = "default"
        self.mtu = ATT_MTU_MIN
        self.adv = None
        self.connectable = True
        self.table = []
        self.scan_task = None
        self.conns = set()
        self.stats = {"tx_packets": 0, "tx_bytes": 0, "rx_packets": 0, "lost": 0, "overflow": 0}

    def send(self, **ev):
        if self.writer is None or self.writer.is_closing():
            return
        self.writer.write(json.dumps(ev, separators=(",", ":")).encode() + b"\n")


class Conn:
    def __init__(self, cid, central, peripheral):
        self.id = cid
        self.central = central
        self.peripheral = peripheral
        self.mtu = ATT_MTU_MIN
        self.queues = {central: [], peripheral: []}   # by sender, when paced

    def other(self, r):
        return self.peripheral if r is self.central else self.central


class Medium:
    def __init__(self, mtu_max=247, loss=0.0, seed=1, interval_ms=0.0, packets_per_event=4):
        self.mtu_max = mtu_max
        self.loss = loss
        self.rng = random.Random(seed)
        self.interval_s = interval_ms / 1000.0
        self.packets_per_event = packets_per_event
        self.radios = {}      # addr -> Radio
        self.conns = {}       # id -> Conn
        self.next_conn = 1
        self.server = None
        self.pacer = None

    async def start(self, host="127.0.0.1", port=0):
        self.server = await asyncio.start_server(self._client, host, port, limit=LINE_MAX)
        if self.interval_s > 0:
            self.pacer = asyncio.ensure_future(self._pace())
        return self.server.sockets[0].getsockname()[1]

    async def stop(self):
        if self.pacer is not None:
            self.pacer.cancel()
        for r in list(self.radios.values()):
            if r.writer is not None:
                r.writer.close()
        if self.server is not None:
            self.server.close()

    def in_range(self, a, b):
        return a is not b and a.group == b.group

    # -- one radio's connection ------------------------------------------

    async def _client(self, reader, writer):
        r = Radio(self, writer)
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, ConnectionError):
                    break   # a line over LINE_MAX, or the radio went away
                if not line:
                    break
                try:
                    m = json.loads(line)
                    self.handle(r, m)
                except (ValueError, KeyError, TypeError) as e:
                    print("ble medium: bad line from %s: %s" % (r.addr, e), file=sys.stderr)
        finally:
            self._gone(r)
            writer.close()

    def _gone(self, r):
        if r.scan_task is not None:
            r.scan_task.cancel()
        for c in list(r.conns):
            self._drop(c)
        if r.addr is not None and self.radios.get(r.addr) is r:
            del self.radios[r.addr]

    def handle(self, r, m):
        op = m["op"]
        if op.startswith("ctl_"):
            self._control(r, op, m)
            return
        if op == "hello":
            old = self.radios.get(m["addr"])
            if old is not None and old is not r:
                self._gone(old)   # the board reset: its old radio is gone
            r.addr = m["addr"]
            r.name = m.get("name", "")
            r.group = m.get("group", "default")
            r.mtu = max(ATT_MTU_MIN, int(m.get("mtu", ATT_MTU_MIN)))
            self.radios[r.addr] = r
            r.send(ev="hello", mtu_max=self.mtu_max)
            return
        if r.addr is None:
            raise ValueError("hello first")
        if op == "adv":
            r.adv = bytes.fromhex(m["data"]) if m.get("data") is not None else None
            r.connectable = bool(m.get("connectable", True))
        elif op == "scan":
            if r.scan_task is not None:
                r.scan_task.cancel()
                r.scan_task = None
            if m.get("ms") is not None:
                r.scan_task = asyncio.ensure_future(self._scan(r, m["ms"]))
        elif op == "services":
            r.table = m["table"]
        elif op == "connect":
            self._connect(r, m["peer"])
        elif op == "disconnect":
            c = self.conns.get(m["conn"])
            if c is not None and r in c.queues:
                self._drop(c)
        elif op == "mtu":
            c = self._conn(r, m)
            if c is not None:
                c.mtu = min(c.central.mtu, c.peripheral.mtu, self.mtu_max)
                for x in (c.central, c.peripheral):
                    x.send(ev="mtu", conn=c.id, mtu=c.mtu)
        elif op == "discover":
            c = self._conn(r, m)
            if c is not None:
                r.send(ev="services", conn=c.id, table=c.other(r).table, what=m.get("what", "services"),
                       start=m.get("start", 0), end=m.get("end", 0xFFFF))
        elif op == "write" or op == "notify":
            c = self._conn(r, m)
            if c is not None:
                self._packet(c, r, op, m)
        elif op == "mtu_pref":
            r.mtu = max(ATT_MTU_MIN, int(m["mtu"]))

    def _control(self, r, op, m):
        if op == "ctl_group":
            t = self.radios.get(m["addr"])
            if t is None:
                for x in self.radios.values():   # by name too (boards' --name)
                    if x.name == m["addr"]:
                        t = x
            if t is not None:
                t.group = m["group"]
                for c in list(t.conns):
                    if not self.in_range(c.central, c.peripheral):
                        self._drop(c)
            r.send(ev="ctl", ok=t is not None)
        elif op == "ctl_loss":
            self.loss = float(m["loss"])
            r.send(ev="ctl", ok=True)
        elif op == "ctl_stats":
            st = {}
            for a, x in self.radios.items():
                st[a] = dict(x.stats, name=x.name, group=x.group, conns=len(x.conns))
            r.send(ev="stats", radios=st, conns=len(self.conns))

    def _conn(self, r, m):
        c = self.conns.get(m["conn"])
        return c if c is not None and r in c.queues else None

    async def _scan(self, r, ms):
        loop = asyncio.get_running_loop()
        end = None if not ms else loop.time() + ms / 1000.0
        try:
            while end is None or loop.time() < end:
                for x in list(self.radios.values()):
                    if x.adv is not None and self.in_range(r, x):
                        r.send(ev="adv", addr=x.addr, adv_type=0 if x.connectable else 3,
                               rssi=-50, data=x.adv.hex())
                await asyncio.sleep(SCAN_REPEAT_S)
            r.scan_task = None
            r.send(ev="scan_done")
        except asyncio.CancelledError:
            pass

    def _connect(self, r, peer):
        p = self.radios.get(peer)
        if (p is None or not self.in_range(r, p) or p.adv is None or not p.connectable
                or len(p.conns) >= CONNECTIONS_MAX or len(r.conns) >= CONNECTIONS_MAX):
            asyncio.get_running_loop().call_later(
                CONNECT_FAIL_S, lambda: r.send(ev="peripheral_disconnect", conn=NO_CONN, addr=peer))
            return
        c = Conn(self.next_conn, r, p)
        self.next_conn = self.next_conn % 0xFFFE + 1
        self.conns[c.id] = c
        r.conns.add(c)
        p.conns.add(c)
        p.adv = None   # a peripheral stops advertising once connected (NimBLE, BTstack)
        p.send(ev="central_connect", conn=c.id, addr=r.addr)
        r.send(ev="peripheral_connect", conn=c.id, addr=p.addr)

    def _drop(self, c):
        if self.conns.pop(c.id, None) is None:
            return
        c.central.conns.discard(c)
        c.peripheral.conns.discard(c)
        c.central.send(ev="peripheral_disconnect", conn=c.id, addr=c.peripheral.addr)
        c.peripheral.send(ev="central_disconnect", conn=c.id, addr=c.central.addr)

    def _packet(self, c, r, op, m):
        data = bytes.fromhex(m["data"])
        ack = op == "write" and m.get("ack")
        if len(data) > (512 if ack else c.mtu - 3):
            if ack:
                r.send(ev="write_done", conn=c.id, handle=m["handle"], status=13)  # invalid attribute length
            return
        r.stats["tx_packets"] += 1
        r.stats["tx_bytes"] += len(data)
        if not ack and self.loss and self.rng.random() < self.loss:
            r.stats["lost"] += 1
            return
        pkt = (op, m["handle"], data, ack)
        if self.interval_s > 0:
            q = c.queues[r]
            if len(q) >= QUEUE_MAX:
                r.stats["overflow"] += 1
                if ack:
                    r.send(ev="write_done", conn=c.id, handle=m["handle"], status=0x11)  # insufficient resources
                return
            q.append(pkt)
        else:
            self._deliver(c, r, pkt)

    def _deliver(self, c, r, pkt):
        op, handle, data, ack = pkt
        dst = c.other(r)
        dst.stats["rx_packets"] += 1
        dst.send(ev=op, conn=c.id, handle=handle, data=data.hex())
        if ack:
            r.send(ev="write_done", conn=c.id, handle=handle, status=0)

    async def _pace(self):
        while True:
            await asyncio.sleep(self.interval_s)
            for c in list(self.conns.values()):
                for r, q in c.queues.items():
                    n = min(len(q), self.packets_per_event)
                    for pkt in q[:n]:
                        self._deliver(c, r, pkt)
                    del q[:n]


async def control(host, port, **msg):
    """Send one control message to a running medium; its answer (a dict)."""
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
    try:
        writer.write(json.dumps(msg).encode() + b"\n")
        await writer.drain()
        return json.loads(await asyncio.wait_for(reader.readline(), 5))
    finally:
        writer.close()


def main(argv=None):
    ap = argparse.ArgumentParser(prog="upsycle ble medium", description=__doc__.split("\n")[0])
    add_arguments(ap)
    return run(ap.parse_args(argv))


def add_arguments(ap):
    ap.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free port)")
    ap.add_argument("--mtu", type=int, default=247, help="largest ATT MTU an exchange may settle on (23..517)")
    ap.add_argument("--loss", type=float, default=0.0, help="probability a notification or write "
                    "without response is lost")
    ap.add_argument("--interval-ms", type=float, default=0.0, help="connection interval for pacing (0: none)")
    ap.add_argument("--packets-per-event", type=int, default=4, help="packets per direction per interval")
    ap.add_argument("--seed", type=int, default=1)


def run(args):
    async def serve():
        m = Medium(args.mtu, args.loss, args.seed, args.interval_ms, args.packets_per_event)
        port = await m.start("127.0.0.1", args.port)
        print("ble-medium://127.0.0.1:%d" % port, flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await m.stop()
    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
