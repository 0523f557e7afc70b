"""Bad BLE peers against `upsycle proxy --ble`: a board-like peripheral that
floods the proxy with garbage fragments, and two that connect and never
send anything, next to a real virtual board. The proxy keeps at most
max_ble_links connections, cuts the flooder (bad fragments, typed faults)
and the silent ones (idle), and the real board's readings are acknowledged
all the same."""
import asyncio
import json
import os
import subprocess
import sys
import threading
import time

from ble_rig import MediumProcess
from shared_protocol.ble import adv
from shared_protocol.groups.admin import Admin
from shared_protocol.groups.invite import invite_url
from upsycle import identity, processes
from upsycle.commands import board as board_cmd
from upsycle.field_demo import Proc

LINKS_MAX = 3
# TX value handle 3 (notify), RX value handle 6 (write), as a board registers them.
TABLE = [[adv.SERVICE_UUID, 1, 6, [[adv.TX_UUID, 2, 3, 0x10, 4], [adv.RX_UUID, 5, 6, 0x0C, 6]]]]


class BadPeer:
    """A peripheral on the medium that looks like an upsycle board."""

    def __init__(self, port, addr, mode):
        self.port = port
        self.addr = addr
        self.mode = mode
        self.connects = 0
        self.disconnects = 0
        self.sent = 0

    async def run(self, stop):
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)

        def send(**m):
            writer.write(json.dumps(m).encode() + b"\n")
        send(op="hello", addr=self.addr, name="bad-" + self.mode, group="default", mtu=247)
        send(op="services", table=TABLE)
        send(op="adv", data=adv.advert(os.urandom(32)).hex(), connectable=True)
        storm = None
        while not stop.is_set():
            try:
                line = await asyncio.wait_for(reader.readline(), 0.2)
            except asyncio.TimeoutError:
                continue
            if not line:
                break
            m = json.loads(line)
            if m["ev"] == "central_connect":
                self.connects += 1
                if self.mode == "storm":
                    storm = asyncio.ensure_future(self._storm(send, m["conn"]))
            elif m["ev"] == "central_disconnect":
                self.disconnects += 1
                if storm is not None:
                    storm.cancel()
                send(op="adv", data=adv.advert(os.urandom(32)).hex(), connectable=True)
        writer.close()

    async def _storm(self, send, conn):
        while True:
            send(op="notify", conn=conn, handle=3, data=os.urandom(200).hex())
            self.sent += 1
            await asyncio.sleep(0.002)


def test_flood_and_silent_peers_are_cut_and_a_real_board_is_served(tmp_path):
    work = str(tmp_path)
    procs = []
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()
    with MediumProcess() as med:
        bad = [BadPeer(med.port, "C0:00:00:00:00:0%d" % i, mode) for i, mode in
               enumerate(("storm", "silent", "silent"))]

        def bad_main():
            asyncio.set_event_loop(loop)
            loop.run_until_complete(asyncio.gather(*(b.run(stop) for b in bad)))
        th = threading.Thread(target=bad_main, daemon=True)
        th.start()
        try:
            port = processes.free_port()
            cfg = os.path.join(work, "proxy.toml")
            with open(cfg, "w") as f:
                f.write("ble = true\nble_medium = \"%s\"\n\n[limits]\nmax_ble_links = %d\nble_idle_s = 3\n"
                        % (med.addr, LINKS_MAX))
            proxy = Proc([sys.executable, "-m", "upsycle", "proxy", "--config", cfg, "--data",
                          os.path.join(work, "proxy"), "--listen", "127.0.0.1:%d" % port], "proxy", None)
            procs.append(proxy)
            proxy.wait_port(port)
            key = identity.public_key(identity.proxy_key(os.path.join(work, "proxy"))).hex()
            fs = os.path.join(work, "good")
            os.makedirs(fs)
            b = Proc(board_cmd.server_command(0, fs, name="good", echo=True, ble=med.addr), "good", None)
            procs.append(b)
            b.wait_url()
            admin = Admin(os.urandom(32), os.urandom(32), 0, "field")
            toml = os.path.join(work, "good.toml")
            with open(toml, "w") as f:
                f.write('transport = "ble"\nproxies = ["ble@%s"]\n\n[app]\nreadings = 3\n' % key)
            r = subprocess.run([sys.executable, "-m", "upsycle", "flash", "--board", "virtual", "--port", b.url,
                                "--config", toml, "--invite", invite_url(admin.invite(os.urandom(32), True, True)),
                                "--interval", "1"], env=processes.python_env(), capture_output=True, text=True,
                               timeout=120)
            assert r.returncode == 0, r.stderr
            most = 0
            acked = False
            end = time.monotonic() + 90
            while time.monotonic() < end and not (acked and bad[0].disconnects and bad[1].disconnects):
                time.sleep(0.5)
                st = med.stats()
                proxy_radio = [x for x in st["radios"].values() if x["name"] == "upsycle-proxy"]
                if proxy_radio:
                    most = max(most, proxy_radio[0]["conns"])
                acked = any("acked 3" in line for line in b.lines)
            out = subprocess.run([sys.executable, "-m", "upsycle", "proxy", "status", "--json", "--proxy",
                                  "127.0.0.1:%d" % port], env=processes.python_env(), capture_output=True,
                                 text=True, timeout=30)
            status = json.loads(out.stdout)
        finally:
            loop.call_soon_threadsafe(stop.set)
            th.join(timeout=5)
            for p in procs:
                p.stop()
    assert acked, "\n".join(b.lines[-20:])
    assert 0 < most <= LINKS_MAX
    faults = status["faults"]
    assert faults.get("ble_bad_fragments", 0) >= 1, faults         # the flooder's link failed
    assert faults.get("ble_link_idle", 0) >= 1, faults             # the silent ones were dropped
    assert bad[0].disconnects >= 1 and bad[1].connects >= 1 and bad[1].disconnects >= 1
    assert status["ble"]["connects"] >= 3 and status["ble"]["links"] <= LINKS_MAX


def test_proxy_without_a_radio_says_so_and_exits(tmp_path):
    # a closed port: no medium there (and no BlueZ on these machines)
    port = processes.free_port()
    r = subprocess.run([sys.executable, "-m", "upsycle", "proxy", "--data", str(tmp_path / "p"), "--listen",
                        "127.0.0.1:%d" % processes.free_port(), "--ble", "--ble-medium", "127.0.0.1:%d" % port],
                       env=processes.python_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 3, (r.returncode, r.stderr)
    assert "Bluetooth LE did not start" in r.stderr and "--ble-medium" in r.stderr, r.stderr
