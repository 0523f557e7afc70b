"""Helpers for the proxy's host tests: free ports, a proxy subprocess, RSS."""
import os
import subprocess
import sys

from upsycle.processes import free_port, stop, wait_port  # noqa: F401 (re-exported for the tests)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "host") + os.pathsep + ROOT)




def start_proxy(data, port, *extra, stderr=subprocess.PIPE):
    proc = subprocess.Popen([sys.executable, "-m", "upsycle", "proxy", "--data", data,
                             "--listen", "127.0.0.1:%d" % port] + list(extra),
                            env=ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr)
    wait_port(port, proc=proc, output=lambda: proc.stderr.read()[-2000:] if proc.stderr else "")
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
