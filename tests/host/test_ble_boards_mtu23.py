"""Two BLE-only virtual boards and no proxy at ATT_MTU 23 (the medium caps
every exchange there) with 5% of packets lost: they find each other, and
their replicas converge over BLE alone (a sealed sync datagram is up to
~80 fragments at this MTU)."""
import os
import subprocess
import sys
import threading
import time

from ble_rig import MediumProcess
from shared_protocol.groups.admin import Admin
from shared_protocol.groups.invite import invite_url
from upsycle import processes
from upsycle.commands import board as board_cmd
from upsycle.field_demo import Proc, load_board_replica

READINGS = 4
DEADLINE_S = 90


def test_two_boards_converge_at_mtu_23_with_loss(tmp_path):
    work = str(tmp_path)
    admin = Admin(os.urandom(32), os.urandom(32), 0, "field")
    procs = {}
    with MediumProcess(mtu=23, loss=0.05, seed=5) as med:
        try:
            for b in ("a", "b"):
                fs = os.path.join(work, b)
                os.makedirs(fs)
                procs[b] = Proc(board_cmd.server_command(0, fs, name=b, echo=True, ble=med.addr), b, None)
                procs[b].wait_url()
            res = {}
            # Invites before the threads: the pure-Python signer keeps
            # module-level buffers (crypto/sha512.py) and is not thread-safe.
            invites = dict((b, invite_url(admin.invite(os.urandom(32), True, True))) for b in procs)

            def flash(b):
                toml = os.path.join(work, b + ".toml")
                with open(toml, "w") as f:
                    f.write('transport = "ble"\n\n[app]\nreadings = %d\n' % READINGS)
                res[b] = subprocess.run(
                    [sys.executable, "-m", "upsycle", "flash", "--board", "virtual", "--port", procs[b].url,
                     "--config", toml, "--invite", invites[b], "--interval", "1"], env=processes.python_env(), capture_output=True, text=True, timeout=120)
            ts = [threading.Thread(target=flash, args=(b,)) for b in procs]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            for b in procs:
                assert res[b].returncode == 0, res[b].stderr
            t0 = time.monotonic()
            counts = None
            while time.monotonic() - t0 < DEADLINE_S:
                time.sleep(1)
                reps = [load_board_replica(os.path.join(work, b), admin.topic) for b in procs]
                counts = [None if r is None else len(r.readings("temp")) for r in reps]
                if counts == [2 * READINGS] * 2 and reps[0].snapshot() == reps[1].snapshot():
                    break
            stats = med.stats()
        finally:
            for p in procs.values():
                p.stop()
    assert counts == [2 * READINGS] * 2, (counts, [p.lines[-8:] for p in procs.values()])
    radios = [r for r in stats["radios"].values() if r["name"] in procs]
    assert sum(r["lost"] for r in radios) > 0
    # at MTU 23 every packet is at most 20 bytes of value
    assert all(r["tx_bytes"] <= 20 * r["tx_packets"] for r in radios)
