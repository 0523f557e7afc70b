"""The proxy's event loop (upsycle/proxy/event_loop.py): uvloop where it is
installed, asyncio's own where it is not, said once at start-up; the loop
actually running is the one `upsycle proxy status` names, and messages flow
on either."""
import asyncio
import hashlib
import platform
import subprocess
import sys

import pytest

from proxy_rig import ENV, ROOT, free_port, start_proxy, wait_port
from proxy_rig import stop as stop_process
from upsycle.client import Client
from upsycle.proxy import event_loop
from upsycle.proxy.config import Config, ConfigError
from upsycle.proxy.status import fetch_status

# Where pyproject.toml's marker installs uvloop (its wheels' platforms).
UVLOOP_PLATFORM = sys.platform == "linux" and platform.machine() in ("x86_64", "aarch64")

# The proxy's command line with uvloop made unimportable, as on a platform
# where pip left it out (None in sys.modules: `import uvloop` raises
# ImportError, as a missing package does).
WITHOUT_UVLOOP = ("import sys; sys.modules['uvloop'] = None; "
                  "from upsycle.cli import main; sys.argv = ['upsycle'] + sys.argv[1:]; sys.exit(main())")


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("UPSYCLE_HOME", str(tmp_path / "home"))


def key(name):
    return hashlib.sha256(b"test-node-key:" + name).digest()


async def round_trip(port, tag):
    """A secure subscriber and publisher through the proxy: 50 messages in order."""
    async with Client("127.0.0.1", port, identity=key(b"sub-" + tag)) as sub, \
            Client("127.0.0.1", port, identity=key(b"pub-" + tag)) as pub:
        await sub.subscribe(b"loop/" + tag)
        for i in range(50):
            await pub.publish(b"loop/" + tag, b"%d" % i)
        got = [(await sub.next_delivery(timeout=10)).payload for _ in range(50)]
        assert got == [b"%d" % i for i in range(50)]
        return (await fetch_status("127.0.0.1", port))["event_loop"]


def loop_lines(stderr):
    return [ln for ln in stderr.decode(errors="replace").splitlines() if "event=event_loop" in ln]


def test_the_installed_uvloop_is_the_loop_the_proxy_runs(tmp_path):
    if UVLOOP_PLATFORM:
        import uvloop   # pinned for this platform (pyproject.toml): its absence is a broken install
        assert uvloop.__version__ == "0.23.0"
    expected = "uvloop" if UVLOOP_PLATFORM else "asyncio"
    port = free_port()
    proc = start_proxy(str(tmp_path / "d"), port)
    try:
        assert asyncio.run(round_trip(port, b"auto")) == expected
    finally:
        stop_process(proc)
    lines = loop_lines(proc.stderr.read())
    assert len(lines) == 1 and "loop=%s" % expected in lines[0], lines


def test_without_uvloop_the_proxy_runs_on_asyncio_and_says_so_once(tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", WITHOUT_UVLOOP, "proxy", "--data", str(tmp_path / "d"),
                             "--listen", "127.0.0.1:%d" % port], env=ENV, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_port(port, proc=proc)
        assert asyncio.run(round_trip(port, b"fallback")) == "asyncio"
        assert asyncio.run(round_trip(port, b"again")) == "asyncio"
    finally:
        stop_process(proc)
    assert proc.returncode == 0
    lines = loop_lines(proc.stderr.read())
    assert len(lines) == 1, lines
    assert "loop=asyncio" in lines[0] and "uvloop not installed" in lines[0]


def test_asking_for_asyncio_runs_it_where_uvloop_is_installed(tmp_path):
    port = free_port()
    proc = start_proxy(str(tmp_path / "d"), port, "--loop", "asyncio")
    try:
        assert asyncio.run(round_trip(port, b"asyncio")) == "asyncio"
    finally:
        stop_process(proc)


def test_asking_for_uvloop_where_it_is_missing_is_a_typed_start_error(tmp_path):
    r = subprocess.run([sys.executable, "-c", WITHOUT_UVLOOP, "proxy", "--data", str(tmp_path / "d"),
                        "--listen", "127.0.0.1:%d" % free_port(), "--loop", "uvloop"],
                       env=ENV, cwd=ROOT, capture_output=True, timeout=60)
    assert r.returncode == 2
    assert b"event_loop uvloop asked for but it does not import" in r.stderr
    with pytest.raises(event_loop.EventLoopError):
        event_loop.choose("libuv")


def test_config_event_loop_is_checked(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('event_loop = "asyncio"\n')
    assert Config.load(str(path)).event_loop == "asyncio"
    path.write_text('event_loop = "fast"\n')
    with pytest.raises(ConfigError, match="event_loop must be one of"):
        Config.load(str(path))
