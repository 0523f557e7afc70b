"""Helpers for the proxy's host tests: free ports, a proxy subprocess, RSS."""
import os
import subprocess
import sys
from collections.abc import Mapping

from upsycle.processes import free_port, stop, wait_port  # noqa: F401 (re-exported for the tests)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYTHONPATH = os.path.join(ROOT, "host") + os.pathsep + ROOT


class _LiveEnv(Mapping):
    """The environment as it is when a process starts, not when this module
    was imported: each test's own $UPSYCLE_HOME (tests/conftest.py) reaches
    the proxies, CLIs and attackers it starts."""

    def _now(self):
        return dict(os.environ, PYTHONPATH=PYTHONPATH)

    def __getitem__(self, key):
        return self._now()[key]

    def __iter__(self):
        return iter(self._now())

    def __len__(self):
        return len(self._now())


ENV = _LiveEnv()




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
