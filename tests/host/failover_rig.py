"""What the tests of a board with two federated proxies share
(test_node_failover.py, test_node_all_proxies.py)."""
import os
import time

from proxy_rig import free_port, start_proxy
from shared_protocol.groups.admin import Admin
from shared_protocol.groups.invite import invite_url

READINGS = 12
# Silence until the board declares its link lost (3 keepalives of 10 s),
# a handshake that times out (8 s), then the next proxy: under a minute.
FAILOVER_TIMEOUT_S = 90


def wait_line(p, text, timeout):
    """Until a line of board p's output holds text; AssertionError after timeout s."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if any(text in line for line in p.lines):
            return
        time.sleep(0.1)
    raise AssertionError("no %r from the board:\n%s" % (text, "\n".join(p.lines[-40:])))


def start_pair(tmp_path):
    """Two proxies that list each other, fast overlay and catch-up periods:
    (port a, port b, process a, process b)."""
    pa, pb = free_port(), free_port()
    fedargs = ["--overlay-period", "0.5", "--catchup-period", "1"]
    a = start_proxy(str(tmp_path / "a"), pa, "--peer", "127.0.0.1:%d" % pb, *fedargs)
    b = start_proxy(str(tmp_path / "b"), pb, "--peer", "127.0.0.1:%d" % pa, *fedargs)
    return pa, pb, a, b


def invites():
    """A new private topic's invites: (board's read-write, subscriber's read-only)."""
    admin = Admin(os.urandom(32), os.urandom(32), 0, "field")
    return (invite_url(admin.invite(os.urandom(32), read=True, write=True)),
            invite_url(admin.invite(os.urandom(32), read=True, write=False)))
