"""Helpers for the proxy's host tests: free ports, a proxy subprocess, RSS."""
import os
import socket
import subprocess
import sys
import time

from upsycle.ports import free_port  # noqa: F401 (re-exported for the tests)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "host") + os.pathsep + ROOT)




def wait_port(port, timeout=15.0, proc=None):
    end = time.time() + timeout
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("proxy exited %s: %s" % (proc.returncode, proc.stderr.read()[-2000:] if proc.stderr else ""))
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("nothing listens on %d" % port)


def start_proxy(data, port, *extra, stderr=subprocess.PIPE):
    proc = subprocess.Popen([sys.executable, "-m", "upsycle", "proxy", "--data", data,
                             "--listen", "127.0.0.1:%d" % port] + list(extra),
                            env=ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr)
    wait_port(port, proc=proc)
    return proc


def cli(*args, env=None, timeout=60, input=None):
    return subprocess.run([sys.executable, "-m", "upsycle"] + list(args), env=env or ENV, cwd=ROOT,
                          capture_output=True, timeout=timeout, input=input)


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for %d" % pid)
