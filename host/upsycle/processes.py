"""Child processes and loopback ports, one copy of each rule for the demo,
the tests and the benchmarks that start their own proxies and boards."""
import os
import signal
import socket
import subprocess
import time

from upsycle.errors import PROCESS, HostError

# Time a child gets after SIGTERM to finish cleanly (a proxy commits its
# store, a virtual board mirrors its flash) before SIGKILL.
STOP_GRACE_S = 5.0
# Time a proxy or board gets to listen after it started: both take well under
# a second when idle; a loaded CI machine needs more.
LISTEN_TIMEOUT_S = 15.0
# Between two looks at a port that is not listening yet.
POLL_S = 0.02


class ProcessError(HostError):
    code = PROCESS


def python_env():
    """The environment for a child ``python -m upsycle ...`` that runs this
    very upsycle and board code, from a checkout as from an installed
    package."""
    from upsycle import paths
    dirs = []
    for d in (paths.PACKAGE_DIR, paths.SHARED_PROTOCOL_DIR, paths.FIRMWARE_DIR):
        parent = os.path.dirname(d)
        if parent not in dirs:
            dirs.append(parent)
    old = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=os.pathsep.join(dirs + ([old] if old else [])))


def free_port():
    """A port free on 127.0.0.1 for both TCP and UDP (the proxy listens on both)."""
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            u.close()


def wait_port(port, timeout=LISTEN_TIMEOUT_S, proc=None, host="127.0.0.1", output=None):
    """Return once host:port accepts TCP. ProcessError if proc (a Popen)
    exits first or nothing listens within timeout; output() gives the
    child's last words for the message."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise ProcessError("process exited %s before listening on %d: %s"
                               % (proc.returncode, port, output() if output else ""))
        try:
            socket.create_connection((host, port), 0.2).close()
            return
        except OSError:
            time.sleep(POLL_S)
    raise ProcessError("nothing listens on %s:%d after %.0f s" % (host, port, timeout))


def kill(proc, wait_s=STOP_GRACE_S):
    """SIGKILL now (a power cut) to proc and, if it leads a process group, to
    what is left of the group even once proc itself is gone (a virtual
    board's server and its boots); then reap proc."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass   # no such group: proc did not lead one, or it is empty
    if proc.poll() is None:
        proc.kill()
    proc.wait(wait_s)


def stop(proc, grace=STOP_GRACE_S):
    """End proc: SIGTERM, up to grace seconds to exit cleanly, then kill()
    whatever is left of it and its group. Returns its exit code."""
    if proc.poll() is None:
        try:
            proc.terminate()
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    code = proc.returncode
    kill(proc)
    return code if code is not None else proc.returncode
