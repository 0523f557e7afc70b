"""Virtual boards and the real mpremote, for host tests.

`VirtualBoard` starts host/upsycle/vboard/server.mjs (one Node process, which runs
one child per boot) on a free loopback port with its flash in a directory,
and always stops it (and its children) on close.
"""
import os
import subprocess
import sys
import time

from upsycle import processes
from upsycle.commands import board as board_cmd

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MPREMOTE = [sys.executable, "-m", "mpremote"]
# A board that has not printed its URL by then is broken.
START_TIMEOUT_S = 20
# Every mpremote command here finishes in a few seconds; this catches a hang.
MPREMOTE_TIMEOUT_S = 60


class VirtualBoard:
    def __init__(self, fs_dir, name="testboard", wifi=(), ble=None, ble_group=None):
        self.fs = str(fs_dir)
        cmd = board_cmd.server_command(0, self.fs, name=name, wifi=wifi, ble=ble, ble_group=ble_group)
        # Own process group: close() ends the server and every boot it started.
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        line = ""
        while time.monotonic() < deadline and not line.startswith("socket://"):
            line = self.proc.stdout.readline().strip()
            if self.proc.poll() is not None:
                raise RuntimeError("virtual board exited: " + self.proc.stderr.read())
        if not line.startswith("socket://"):
            self.close()
            raise RuntimeError("virtual board did not start")
        self.url = line

    def mpremote(self, *args, check=True, timeout=MPREMOTE_TIMEOUT_S):
        r = subprocess.run(MPREMOTE + ["connect", self.url] + list(args),
                           capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        if check and r.returncode != 0:
            raise AssertionError("mpremote %s failed (%d):\n%s\n%s" % (args, r.returncode, r.stdout, r.stderr))
        return r

    def serial(self, timeout=0.2):
        import serial
        return serial.serial_for_url(self.url, timeout=timeout)

    def close(self):
        # The server lets the running boot mirror its flash, then exits.
        processes.stop(self.proc)
        for f in (self.proc.stdout, self.proc.stderr):
            f.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def read_until(ser, marker, timeout=10.0):
    """Read from a pyserial port until marker (bytes) has appeared."""
    buf = b""
    deadline = time.monotonic() + timeout
    while marker not in buf and time.monotonic() < deadline:
        buf += ser.read(4096)
    return buf
