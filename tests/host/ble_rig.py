"""The virtual BLE medium for host tests: `upsycle ble medium` as a child
process on a free loopback port, always stopped on close."""
import asyncio
import subprocess
import sys
import time

from upsycle import processes
from upsycle.ble import medium as medium_mod

START_TIMEOUT_S = 15


class MediumProcess:
    def __init__(self, mtu=247, loss=0.0, interval_ms=0.0, seed=1):
        cmd = [sys.executable, "-m", "upsycle", "ble", "medium", "--port", "0", "--mtu", str(mtu),
               "--loss", str(loss), "--interval-ms", str(interval_ms), "--seed", str(seed)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=processes.python_env(), start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        line = ""
        while time.monotonic() < deadline and not line.startswith("ble-medium://"):
            line = self.proc.stdout.readline().strip()
            if self.proc.poll() is not None:
                raise RuntimeError("ble medium exited: " + self.proc.stderr.read())
        if not line.startswith("ble-medium://"):
            self.close()
            raise RuntimeError("ble medium did not start")
        self.addr = line[len("ble-medium://"):]
        self.port = int(self.addr.rpartition(":")[2])

    def control(self, **msg):
        return asyncio.run(medium_mod.control("127.0.0.1", self.port, **msg))

    def move(self, radio, group):
        return self.control(op="ctl_group", addr=radio, group=group)

    def stats(self):
        return self.control(op="ctl_stats")

    def close(self):
        processes.stop(self.proc)
        for f in (self.proc.stdout, self.proc.stderr):
            f.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()
