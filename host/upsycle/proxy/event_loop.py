"""Which asyncio event loop the proxy runs on: uvloop where it is installed,
the standard library's otherwise.

uvloop (libuv under asyncio's API) does the loop's own work and the
TCP transports in C, where asyncio's selector loop runs them in Python: at
10,000 Noise TCP sessions it took 6-22% off the event loop thread's CPU per
publish and ~0.5 KB off each session (docs/proxy.md, "uvloop as the event
loop"; UDP goes through the proxy's own socket code on either loop). The
proxy uses only the public loop API (create_server, add_reader,
call_soon_threadsafe, transports' write/abort/get_write_buffer_size), which
both loops implement, so the same code runs on either. uvloop ships wheels for Linux on x86_64 and
aarch64 (a 64-bit Raspberry Pi OS); where pip has no wheel (32-bit ARM,
Windows) it is not installed (pyproject.toml's marker) and the proxy runs on
the standard loop, saying so once at start-up.
"""
import asyncio

from upsycle.errors import PROXY_CONFIG, HostError

# "auto": uvloop when it imports, else the standard loop; the other two
# insist (a benchmark or a test pinning one side).
LOOP_CHOICES = ("auto", "uvloop", "asyncio")


class EventLoopError(HostError):
    """The event loop asked for cannot be had (``--loop uvloop`` without it)."""
    code = PROXY_CONFIG


def choose(name="auto"):
    """(loop factory, the loop's name, why it is not uvloop or "") for
    ``name`` in LOOP_CHOICES."""
    if name not in LOOP_CHOICES:
        raise EventLoopError("event_loop must be one of %s, got %r" % (", ".join(LOOP_CHOICES), name))
    if name == "asyncio":
        return asyncio.new_event_loop, "asyncio", "asked for"
    try:
        import uvloop
    except ImportError as e:
        if name == "uvloop":
            raise EventLoopError("event_loop uvloop asked for but it does not import (%s); "
                                 "pip install uvloop, or use event_loop = \"auto\"" % e) from None
        return asyncio.new_event_loop, "asyncio", "uvloop not installed (%s)" % e
    return uvloop.new_event_loop, "uvloop", ""


def name_of(loop):
    """"uvloop" or "asyncio": the loop actually running (status, tests)."""
    return "uvloop" if type(loop).__module__.split(".")[0] == "uvloop" else "asyncio"


def run(main, factory):
    """Run coroutine ``main`` to completion on a new loop made by
    ``factory``, as asyncio.run does (Python 3.11's Runner takes the
    factory; asyncio.run takes one only from 3.12)."""
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
