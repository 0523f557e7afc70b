"""The BLE field scenario: three virtual boards with no WiFi, only their
Bluetooth LE radios on the virtual medium (host/upsycle/ble/medium.py, 2%
of notifications and writes lost), and a real proxy run with
`upsycle proxy --ble` (bleak over the medium's backend). The boards find
each other by advertising and scanning, gossip (CYCLON) and sync their
replicas over BLE, and publish sealed readings to the proxy over BLE; one
board walks out of radio range and comes back. Every reading ends in every
board's replica and at a host subscriber of the proxy: lost = 0."""
import asyncio
import os
import subprocess
import sys
import threading
import time

from ble_rig import MediumProcess
from shared_protocol.groups.admin import Admin
from shared_protocol.groups.invite import invite_url
from upsycle import identity, processes
from upsycle.commands import board as board_cmd
from upsycle.field_demo import Proc, Subscriber, load_board_replica, stop_sub

BOARDS = ("node1", "node2", "node3")
AWAY = "node3"
READINGS = 6
DEADLINE_S = 150
AWAY_S = 10


def _status_has(p, text):
    return any(text in line for line in p.lines)


def test_three_ble_boards_and_a_ble_proxy(tmp_path):
    work = str(tmp_path)
    admin = Admin(os.urandom(32), os.urandom(32), 0, "field")
    procs = []
    boards = {}
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    sub_thread = None
    with MediumProcess(mtu=247, loss=0.02, seed=3) as med:
        try:
            port = processes.free_port()
            proxy = Proc([sys.executable, "-m", "upsycle", "proxy", "--data", os.path.join(work, "proxy"),
                          "--listen", "127.0.0.1:%d" % port, "--ble", "--ble-medium", med.addr], "proxy", None)
            procs.append(proxy)
            proxy.wait_port(port)
            key = identity.public_key(identity.proxy_key(os.path.join(work, "proxy"))).hex()

            def start(name):
                fs = os.path.join(work, name)
                os.makedirs(fs, exist_ok=True)
                p = Proc(board_cmd.server_command(0, fs, name=name, echo=True, ble=med.addr), name, None)
                procs.append(p)
                p.wait_url()
                boards[name] = p
                return p

            results = {}
            # Invites before the threads: the pure-Python signer keeps
            # module-level buffers (crypto/sha512.py) and is not thread-safe.
            invites = dict((b, invite_url(admin.invite(os.urandom(32), read=True, write=True))) for b in BOARDS)

            def flash(name):
                toml = os.path.join(work, name + ".toml")
                with open(toml, "w") as f:
                    f.write('transport = "ble"\nproxies = ["ble@%s"]\n\n[app]\nreadings = %d\n' % (key, READINGS))
                results[name] = subprocess.run(
                    [sys.executable, "-m", "upsycle", "flash", "--board", "virtual", "--port", boards[name].url,
                     "--config", toml, "--invite", invites[name], "--interval", "1", "--no-tail"],
                    env=processes.python_env(), capture_output=True, text=True, timeout=120)

            for b in BOARDS:
                start(b)
            ts = [threading.Thread(target=flash, args=(b,)) for b in BOARDS]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            for b in BOARDS:
                assert results[b].returncode == 0, results[b].stderr
                boards[b].stop()      # power cycle: boot.py and main.py from power-on
                procs.remove(boards[b])
            sub = Subscriber(invite_url(admin.invite(os.urandom(32), read=True, write=False)), port,
                             lambda line: None, os.path.join(work, "subscriber"))

            def sub_main():
                asyncio.set_event_loop(loop)
                loop.run_until_complete(sub.run(stop))
            sub_thread = threading.Thread(target=sub_main, daemon=True)
            sub_thread.start()
            for b in BOARDS:
                start(b)
            t0 = time.monotonic()

            # node3 walks out of range once it has published a few readings.
            while time.monotonic() - t0 < 60 and not _status_has(boards[AWAY], "status published 2"):
                time.sleep(0.2)
            assert med.move(AWAY, "far-away")["ok"]
            time.sleep(AWAY_S)
            away_stats = med.stats()
            assert med.move(AWAY, "default")["ok"]

            converged = False
            while time.monotonic() - t0 < DEADLINE_S:
                time.sleep(1)
                per = sub.per_author()
                if len(per) == len(BOARDS) and all(n == READINGS for n in per.values()):
                    ref = sub.replica.snapshot()
                    states = [load_board_replica(os.path.join(work, b), admin.topic) for b in BOARDS]
                    if all(s is not None and s.snapshot() == ref for s in states):
                        converged = True
                        break
            per = sub.per_author()
            lost = len(BOARDS) * READINGS - sum(per.values())
            logs = "\n".join("%s: %s" % (b, "\n  ".join(boards[b].lines[-12:])) for b in BOARDS)
            assert converged and lost == 0, "lost %d, per author %s\n%s\n%s" % (
                lost, per, logs, "\n".join(proxy.lines[-30:]))
            # The gossip overlay forms too: every board ends with both
            # others in its CYCLON view (met over BLE; scans every 8 s).
            end = time.monotonic() + 60
            while time.monotonic() < end and not all(
                    _status_has(boards[b], " ble peers 2 ") for b in BOARDS):
                time.sleep(1)
            stats = med.stats()
        finally:
            if sub_thread is not None:
                stop_sub(loop, stop, sub_thread)
            for p in procs:
                p.stop()
    # While away, node3 had no connection; the boards gossiped (CYCLON
    # views of 2) over BLE, and the proxy served all three over BLE.
    # (Anti-entropy over BLE alone, without a proxy: test_ble_boards_mtu23.py.)
    radios = dict((r["name"], r) for r in away_stats["radios"].values())
    assert radios[AWAY]["conns"] == 0 and radios[AWAY]["group"] == "far-away"
    for b in BOARDS:
        lines = boards[b].lines
        assert any(" ble peers 2 " in line for line in lines), (b, lines[-5:])
        assert any("proxy session open" in line for line in lines), (b, lines[-5:])
    assert sum(r["lost"] for r in stats["radios"].values()) > 0   # the links did retransmit
    # The proxy reconnected to node3 once it was back in range.
    away_addr = [a for a, r in stats["radios"].items() if r["name"] == AWAY][0]
    connected = [line for line in proxy.lines if "event=ble_connected peer=%s" % away_addr in line]
    assert len(connected) >= 2, [line for line in proxy.lines if "ble_" in line]
